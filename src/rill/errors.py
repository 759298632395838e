"""Rill's one exception tree, and the single place that turns it into OpenAI-shaped JSON.

    RillError                       500 server_error (never raised for client input)
    ├── ConfigError                 bad flags/config at start-up (not an HTTP error)
    ├── InvalidRequest              400 invalid_request_error, `param` names the field
    │   ├── UnsupportedParameter    400 a field whose behaviour is not built (yet)
    │   └── ContextLengthExceeded   400 prompt + completion cap beyond the context
    ├── AuthenticationError         401
    ├── HostNotAllowed              403 a Host header the server does not answer to (DNS rebinding)
    ├── OriginNotAllowed            403 a browser request from an origin not in --cors-origins
    ├── ModelNotFound               404 model_not_found
    ├── NotFound                    404 a stored object that does not exist (for this key)
    ├── RequestTimeout              408 a request head or body that did not arrive in time
    ├── PayloadTooLarge             413
    ├── UriTooLong                  414
    ├── UnsupportedMediaType        415 a browser's body that is not JSON
    ├── RateLimited                 429 with Retry-After
    ├── HeadTooLarge                431
    ├── ClientGone                  499 the client left before the answer began (nobody reads it)
    ├── NotReady                    503 while the model loads, with Retry-After
    │   └── EngineUnavailable       503 the model's engine stalled or died (docs/faults.md)
    ├── ShuttingDown                503 a request cut short by shutdown
    ├── TooManyConnections          503 past --max-connections, with Retry-After
    ├── EngineError                 500 inference failed (foreign errors wrapped here)
    ├── SearchFailed                502 the web search provider failed (web_search_options)
    ├── StoreFailed                 500 a `store: true` completion could not be written
    └── StoreUnavailable            503 the database cannot be reached (keys, spans, stored completions)
"""

from __future__ import annotations

from typing import Any


class RillError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        return {}


class ConfigError(RillError):
    """Invalid configuration; raised at start-up, never mapped to HTTP."""


class InvalidRequest(RillError):
    status = 400
    type = "invalid_request_error"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class AuthenticationError(RillError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}  # RFC 6750: the scheme the client should use


class PermissionDenied(RillError):
    status = 403
    type = "invalid_request_error"
    code = "insufficient_permissions"


class HostNotAllowed(RillError):
    status = 403
    type = "invalid_request_error"
    code = "host_not_allowed"


class OriginNotAllowed(RillError):
    status = 403
    type = "invalid_request_error"
    code = "origin_not_allowed"


class UnsupportedMediaType(RillError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class RequestTimeout(RillError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class ModelNotFound(RillError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(RillError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(RillError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UriTooLong(RillError):
    status = 414
    type = "invalid_request_error"
    code = "uri_too_long"


class HeadTooLarge(RillError):
    status = 431
    type = "invalid_request_error"
    code = "request_header_fields_too_large"


class ClientGone(RillError):
    """The client disconnected while its request was being prepared; the work stopped. The
    status (nginx's 499, "client closed request") shows in logs and metrics only."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class RateLimited(RillError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class NotReady(RillError):
    status = 503
    type = "server_error"
    code = "model_loading"
    retry_after = 5  # loading takes seconds: the openai SDK's two retries then span about 10 s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class EngineUnavailable(NotReady):
    """The engine stalled (the watchdog) or its thread died: another server (or this one, once
    restarted or recovered) may serve the request. A fallback model is tried, as for NotReady."""

    code = "engine_unavailable"


class ShuttingDown(RillError):
    status = 503
    type = "server_error"
    code = "server_shutting_down"


class TooManyConnections(RillError):
    status = 503
    type = "server_error"
    code = "too_many_connections"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class EngineError(RillError):
    status = 500
    type = "server_error"
    code = "engine_error"


class SearchFailed(RillError):
    status = 502
    type = "server_error"
    code = "search_failed"


class StoreFailed(RillError):
    status = 500
    type = "server_error"
    code = "store_failed"


class StoreUnavailable(RillError):
    status = 503
    type = "server_error"
    code = "store_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


def error_body(exc: RillError) -> dict[str, Any]:
    """The OpenAI error object: {"error": {message, type, param, code}}."""
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}
