"""What an upstream call sends on for tracing: the W3C `traceparent` / `tracestate` of the span
that stands for the call, set by the request's task just before the call (ContextVar: one per
request task, so concurrent requests never see each other's). The upstream client reads it and
says which server it sent to. No OpenTelemetry import: backends/upstream.py reads this always."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Protocol


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
