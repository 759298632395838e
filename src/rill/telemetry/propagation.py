"""What an upstream call sends on for tracing: the W3C `traceparent` / `tracestate` of the span
that stands for the call, set by the request's task just before the call (ContextVar: one per
request task, so concurrent requests never see each other's). The upstream client reads it and
says which server it sent to. Without OpenTelemetry export, the caller's own headers go on as
they came, as a proxy that does not trace passes them: a traced upstream still joins the caller's
trace. No OpenTelemetry import: backends/upstream.py reads this always."""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Mapping, Protocol


class Forward(Protocol):
    headers: list[tuple[bytes, bytes]]

    def sent_to(self, host: str, port: int) -> None: ...


CURRENT_FORWARD: ContextVar[Forward | None] = ContextVar("rill_otel_forward", default=None)


def forward_headers(host: str, port: int) -> list[tuple[bytes, bytes]]:
    """The headers for a call to host:port (none when no span stands for it), noting the server."""
    forward = CURRENT_FORWARD.get()
    if forward is None:
        return []
    forward.sent_to(host, port)
    return forward.headers


TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
MAX_TRACESTATE = 512  # the W3C limit is 32 members; a longer header is dropped, not cut


class _AsReceived:
    """The caller's trace headers, passed on unchanged (no span of Rill's stands for the call)."""

    def __init__(self, headers: list[tuple[bytes, bytes]]):
        self.headers = headers

    def sent_to(self, host: str, port: int) -> None:
        pass


def begin_request(headers: Mapping[str, str], *, exporting: bool) -> None:
    """A generation request begins: nothing to send on yet when Rill's spans will stand for its
    calls (exporting); otherwise the caller's well-formed traceparent (and tracestate), if any.
    Set every time: a task that serves several requests (an in-process ASGI client) must not pass
    one request's headers on for the next."""
    CURRENT_FORWARD.set(None)
    parent = headers.get("traceparent", "").strip().lower()
    if exporting or not TRACEPARENT.fullmatch(parent) or parent.startswith("ff"):
        return
    out = [(b"traceparent", parent.encode())]
    state = headers.get("tracestate", "").strip()
    if state and len(state) <= MAX_TRACESTATE and state.isascii() and state.isprintable():
        out.append((b"tracestate", state.encode()))
    CURRENT_FORWARD.set(_AsReceived(out))
