"""Pure ASGI middleware that counts every HTTP request by route template, method and status.

Installed outermost, so the answers of the other middlewares (401 from API keys, 413 from the body
limit) are counted too. Labels stay bounded: the route is the matched route's path template
(`/v1/chat/completions/{completion_id}`, never the id), "unmatched" when no route matches; methods
outside the standard ones are "other". The status is the one the response started with; a request
that ended without starting one is "500" when the app raised, else "499" (nginx's "client closed
request": the client left before an answer began)."""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator

from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rill.api.metrics.requests import RequestMetrics

UNMATCHED = "unmatched"
NO_RESPONSE_CLIENT_GONE = "499"
NO_RESPONSE_APP_FAILED = "500"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope, before: dict[str, Any], routes: Iterable[BaseRoute]) -> str:
    """The path template of the route that handled (or would have handled) this request.

    FastAPI's routes leave themselves at scope["route"] once matched; requests answered before
    routing (401, 413) or by plain Starlette routes (/docs) are matched again here, against the
    scope as it arrived (`before`: routing rewrites root_path inside mounts)."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    partial: str | None = None
    for candidate in _leaf_routes(routes):
        path = candidate.path  # type: ignore[attr-defined]
        match, _ = candidate.matches(before)
        if match is Match.FULL:
            return str(path)
        if match is Match.PARTIAL and partial is None:  # path matches, method does not: a 405
            partial = str(path)
    return partial or UNMATCHED


def _leaf_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Routes with a path template, in routing order. Recent FastAPI releases keep an included
    router whole (its routes under `original_router`) instead of copying its routes in; a Mount
    counts as one route (its own path)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _leaf_routes(included.routes)
        elif hasattr(route, "path"):
            yield route


class HTTPMetrics:
    def __init__(self, app: ASGIApp, metrics: RequestMetrics, router: Router):
        self.app = app
        self.metrics = metrics
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        before = {"type": "http", "path": scope["path"], "root_path": scope.get("root_path", ""),
                  "method": scope["method"], "path_params": {}}
        status: int | None = None

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        app_failed = False
        try:
            await self.app(scope, receive, send_and_note_status)
        except Exception:
            app_failed = True
            raise
        finally:
            if status is not None:
                label = str(status)
            else:
                label = NO_RESPONSE_APP_FAILED if app_failed else NO_RESPONSE_CLIENT_GONE
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.observe_http_request(route_template(scope, before, self.router.routes), method,
                                              label, time.perf_counter() - started)
