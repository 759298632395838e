"""Rill's errors in Anthropic's shape, for every answer under /v1/messages:
`{"type": "error", "error": {"type": ..., "message": ...}}`, with the status Rill's error has.

The type follows the status as Anthropic documents it (400 invalid_request_error, 401
authentication_error, 403 permission_error, 404 not_found_error, 413 request_too_large, 429
rate_limit_error, 500 api_error, 503/529 overloaded_error; any other 4xx invalid_request_error,
any other 5xx api_error). A prompt that does not fit the context reads as Anthropic's own:
"prompt is too long: N tokens > M maximum" (Claude Code stops on it with `prompt_too_long`)."""

from __future__ import annotations

import re
from typing import Any

from rill.errors import ContextLengthExceeded, RillError

PATH_PREFIX = "/v1/messages"  # every route of this protocol: its errors leave in this shape

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
          503: "overloaded_error", 529: "overloaded_error"}

# The core's over-the-context messages: "maximum context length is M tokens. However, your
# messages resulted in [at least] N tokens"
_TOO_LONG = re.compile(r"maximum context length is (\d+) tokens\. However, your messages resulted in "
                       r"(?:at least )?(\d+) tokens")


def error_type(status: int) -> str:
    if status in _TYPES:
        return _TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def message_of(exc: RillError) -> str:
    if isinstance(exc, ContextLengthExceeded):
        tokens, limit = getattr(exc, "tokens", None), getattr(exc, "limit", None)
        if tokens is None or limit is None:
            found = _TOO_LONG.search(exc.message)
            if found is not None:
                limit, tokens = int(found.group(1)), int(found.group(2))
        if tokens is not None and limit is not None:
            return f"prompt is too long: {tokens} tokens > {limit} maximum"
    return exc.message


def error_body(exc: RillError) -> dict[str, Any]:
    """Anthropic's error object for a Rill error (the status stays the error's own)."""
    return {"type": "error", "error": {"type": error_type(exc.status), "message": message_of(exc)}}
