"""How an upstream fails: before the first event (UpstreamError, which says whether another try
may do better) or after it (UpstreamBroken); what the network raises; an error body's fields; an
answer whose shape Rill cannot read."""

from __future__ import annotations

from typing import Any

import httpcore
import orjson


class UpstreamError(Exception):
    """Failed before the first byte of the answer."""

    def __init__(self, message: str, *, status: int, retryable: bool, type: str | None = None,
                 code: str | None = None, param: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message, self.status, self.retryable = message, status, retryable
        self.type, self.code, self.param, self.retry_after = type, code, param, retry_after


class UpstreamBroken(Exception):
    """The stream failed after it started."""


class UpstreamStalled(UpstreamBroken):
    """The stream sent nothing for the upstream's timeout (before its first event: a 504)."""


# What the network can raise: httpcore's errors (timeouts first, to say which it was)
TIMEOUTS = (httpcore.TimeoutException, TimeoutError)
NETWORK_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, OSError)


def error_fields(raw: bytes) -> tuple[str, str | None, str | None, str | None]:
    """(message, type, code, param) of an error body: OpenAI's {"error": {...}}, FastAPI's
    {"detail": ...}, {"message": ...}, or plain text."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace").strip()
        return (text[:500] or "no message"), None, None, None
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        message = err.get("message") or err.get("detail") or orjson.dumps(err).decode()
        code = err.get("code")
        return (str(message), _str(err.get("type")), None if code is None else str(code), _str(err.get("param")))
    return str(err), None, None, None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def chunk_problem(event: dict[str, Any]) -> str | None:
    """What makes a streamed event unreadable as a chat.completion.chunk (the relay reads its
    choices and deltas), or None."""
    if not isinstance(event.get("usage") or {}, dict):
        return "`usage` is not an object"
    choices = event.get("choices")
    if choices is None:
        return None
    if not isinstance(choices, list):
        return "`choices` is not a list"
    for choice in choices:
        if not isinstance(choice, dict):
            return "a choice is not an object"
        delta = choice.get("delta")
        if delta is not None and not isinstance(delta, dict):
            return "a `delta` is not an object"
        if delta and not isinstance(delta.get("content") or "", str):
            return "a `content` is not a string"
    return None


def completion_problem(body: Any) -> str | None:
    """What makes a JSON answer unreadable as a chat.completion, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        return "it has no `choices` list"
    if not isinstance(body.get("usage") or {}, dict):
        return "`usage` is not an object"
    for choice in body["choices"]:
        if not isinstance(choice, dict) or not isinstance(choice.get("message") or {}, dict):
            return "a choice or its `message` is not an object"
        if not isinstance(choice.get("message", {}).get("content") or "", str):
            return "a `content` is not a string"
    return None
