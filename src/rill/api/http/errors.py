"""HTTP error handling: every error leaves as OpenAI's {"error": {message, type, param, code}},
but under the path prefixes in ERROR_SHAPES, whose protocols' clients read another shape
(the Messages API's Anthropic shape under /v1/messages)."""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Sequence

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rill.errors import InvalidRequest, PayloadTooLarge, RillError, StoreUnavailable, error_body

log = logging.getLogger("rill.api")


_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "bytes"})


def param_from_loc(loc: Sequence[Any], body: Any) -> str | None:
    """Pydantic's error location -> the field path as the client wrote it (`messages[0].content`).

    Union members and discriminator tags also appear in `loc`; walking the actual body keeps only
    the steps that exist in it, plus a final missing key when it looks like a field name (union
    member names look like `str`, `constrained-str`, `literal[...]` or `ClassName`)."""
    parts: list[str] = []
    cur = body
    items = list(loc[1:] if loc and loc[0] == "body" else loc)
    for i, item in enumerate(items):
        if isinstance(item, int) and isinstance(cur, list) and 0 <= item < len(cur):
            parts.append(f"[{item}]")
            cur = cur[item]
        elif isinstance(item, str) and isinstance(cur, dict) and (
            item in cur or (i == len(items) - 1 and _FIELD_NAME.match(item) and item not in _TYPE_NAMES)
        ):
            parts.append(f".{item}" if parts else item)
            cur = cur.get(item)
    return "".join(parts) or None


def validation_error(exc: RequestValidationError) -> InvalidRequest:
    """FastAPI's validation error (routes with declared bodies) -> one OpenAI-style 400."""
    errors = list(exc.errors())
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    if first["type"] == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return InvalidRequest(f"The request body is not valid JSON: {detail}".rstrip(": "))
    if first["type"] == "missing" and tuple(first["loc"]) == ("body",):
        return InvalidRequest("The request body is empty; send a JSON object.")
    loc = tuple(first["loc"])
    if loc and loc[0] in ("query", "path"):  # e.g. ?limit=0 on a list
        name = ".".join(str(part) for part in loc[1:])
        return InvalidRequest(f"`{name}`: {first['msg']}", param=name)
    return invalid_body(errors, getattr(exc, "body", None))


def invalid_body(errors: Sequence[Any], body: Any) -> InvalidRequest:
    """Pydantic errors for a parsed JSON body -> one 400 naming the most useful field."""
    if not isinstance(body, dict):
        return InvalidRequest("The request body must be a JSON object.")
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    # A union field reports one error per member. A member's real complaint (too long, out of
    # range, at any depth) beats "not a string"; if every member just has the wrong type, the
    # message lists them all.
    specific = [e for e in errors if not e["type"].endswith("_type")]
    if specific:
        param = param_from_loc(specific[0]["loc"], body)
        msg = specific[0]["msg"]
    else:
        param = param_from_loc(first["loc"], body)
        same = [e for e in errors if param_from_loc(e["loc"], body) == param]
        msg = " or ".join(dict.fromkeys(e["msg"] for e in same))
    return InvalidRequest(f"`{param}`: {msg}" if param else msg, param=param)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


STORE_UNAVAILABLE = StoreUnavailable("The server's database is unavailable; retry shortly.")


# path prefix -> the error body its protocol's clients read; a protocol registers its own
ERROR_SHAPES: dict[str, Callable[[RillError], dict[str, Any]]] = {}


def error_response(exc: RillError, path: str) -> JSONResponse:
    """The error as the protocol that `path` belongs to shapes it (OpenAI's by default)."""
    body = None
    for prefix, shape in ERROR_SHAPES.items():
        if path == prefix or path.startswith(prefix + "/"):
            body = shape(exc)
            break
    return JSONResponse(error_body(exc) if body is None else body, status_code=exc.status, headers=exc.headers())


def install_error_handlers(app: FastAPI) -> None:
    async def on_rill_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RillError)
        if exc.status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc.message)
        return error_response(exc, request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc), request.url.path)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        err = RillError(str(exc.detail))
        err.status = exc.status_code
        err.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        err.code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(err, request.url.path)

    async def on_client_gone(request: Request, exc: Exception) -> Response:
        # the client left while its body was read (or paused past --body-timeout and was answered
        # 408 by the protocol): no one to answer, nothing to log; /metrics counts it as 499
        return Response(status_code=499)

    async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s: the database failed: %s", request.method, request.url.path, exc)
        return error_response(STORE_UNAVAILABLE, request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(RillError("The server had an internal error; it has been logged."), request.url.path)

    app.add_exception_handler(RillError, on_rill_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(SQLAlchemyError, on_database_error)
    app.add_exception_handler(Exception, on_unexpected)


class BodyLimit:
    """413 for a body over the limit: at once from Content-Length, or as soon as the streamed
    body passes the limit (chunked uploads), before any of it is parsed."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = PayloadTooLarge(f"The request body exceeds this server's limit of {self.max_bytes} bytes.")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await error_response(too_large, scope["path"])(scope, receive, send)
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise too_large
            return message

        await self.app(scope, limited_receive, send)
