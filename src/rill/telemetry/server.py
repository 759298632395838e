"""The SERVER span of each generation request (an ASGI middleware, installed only when spans are
exported): a child of the caller's W3C `traceparent` / `tracestate` when it sent them, current
while the request is handled (so the completion's spans nest under it), ended when the last
byte of the answer is sent or the exchange breaks off."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from rill.telemetry.tracer import PROPAGATOR, Telemetry

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class ServerSpans:
    def __init__(self, app: ASGIApp, *, telemetry: Telemetry, paths: frozenset[str]):
        self.app, self.telemetry, self.paths = app, telemetry, paths

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or ()
                   if k in (b"traceparent", b"tracestate")}
        parent = PROPAGATOR.extract(carrier) if carrier else otel_context.Context()
        attributes: dict[str, Any] = {"http.request.method": "POST", "url.path": scope["path"], "http.route": scope["path"],
                                      "url.scheme": scope.get("scheme", "http")}
        server, client = scope.get("server"), scope.get("client")
        if server:
            attributes["server.address"], attributes["server.port"] = server[0], server[1]
        if client:
            attributes["client.address"] = client[0]
        agent = next((v.decode("latin-1") for k, v in scope.get("headers") or () if k == b"user-agent"), None)
        if agent:
            attributes["user_agent.original"] = agent
        span = self.telemetry.tracer.start_span(f"POST {scope['path']}", context=parent, kind=SpanKind.SERVER,
                                                attributes=attributes)
        ended = False

        def end(status: int | None, error: str | None = None) -> None:
            nonlocal ended
            if ended:
                return
            ended = True
            if status is not None:
                span.set_attribute("http.response.status_code", status)
            if error is not None or (status is not None and status >= 500):
                span.set_attribute("error.type", error or str(status))
                span.set_status(Status(StatusCode.ERROR, error))
            span.end()

        status: int | None = None

        async def traced_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            try:
                await send(message)
            except BaseException as exc:  # the client went away mid-answer
                end(status, type(exc).__name__)
                raise
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                end(status)

        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            end(status or 500, type(exc).__name__)
            raise
        finally:
            otel_context.detach(token)
            end(status, "incomplete")  # no-op if the answer's last byte went out; else it broke off
