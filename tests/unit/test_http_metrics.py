"""The request-counting middleware on tiny ASGI apps: statuses of responses that never started."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.routing import Route, Router

from rill.api.metrics.http import HTTPMetrics
from rill.api.metrics.requests import RequestMetrics

ROUTER = Router(routes=[Route("/items/{item_id}", endpoint=lambda request: None, methods=["GET"])])


async def call(app: Any, path: str, method: str = "GET") -> list[dict]:
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [],
             "query_string": b""}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def count(metrics: RequestMetrics, route: str, method: str, status: str) -> float | None:
    return metrics.registry.get_sample_value("rill_http_requests_total",
                                             {"route": route, "method": method, "status": status})


async def test_an_answer_before_routing_is_counted_under_the_route_it_would_have_reached():
    async def unauthorized(scope, receive, send) -> None:  # what an auth middleware does
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    metrics = RequestMetrics()
    await call(HTTPMetrics(unauthorized, metrics, ROUTER), "/items/42")
    await call(HTTPMetrics(unauthorized, metrics, ROUTER), "/items/42", method="POST")
    await call(HTTPMetrics(unauthorized, metrics, ROUTER), "/elsewhere")
    assert count(metrics, "/items/{item_id}", "GET", "401") == 1
    assert count(metrics, "/items/{item_id}", "POST", "401") == 1  # path matches, method does not
    assert count(metrics, "unmatched", "GET", "401") == 1


async def test_an_app_that_raises_before_responding_counts_500_and_the_error_propagates():
    async def broken(scope, receive, send) -> None:
        raise RuntimeError("boom")

    metrics = RequestMetrics()
    with pytest.raises(RuntimeError):
        await call(HTTPMetrics(broken, metrics, ROUTER), "/items/1")
    assert count(metrics, "/items/{item_id}", "GET", "500") == 1


async def test_an_app_that_ends_without_responding_counts_499():
    async def client_left(scope, receive, send) -> None:
        return None

    metrics = RequestMetrics()
    await call(HTTPMetrics(client_left, metrics, ROUTER), "/items/1")
    assert count(metrics, "/items/{item_id}", "GET", "499") == 1
    assert metrics.registry.get_sample_value("rill_http_request_duration_seconds_count",
                                             {"route": "/items/{item_id}", "method": "GET"}) == 1


async def test_non_http_scopes_pass_through_uncounted():
    seen = []

    async def app(scope, receive, send) -> None:
        seen.append(scope["type"])

    metrics = RequestMetrics()
    await HTTPMetrics(app, metrics, ROUTER)({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"]
    assert "rill_http_requests_total" not in str(
        [s.name for f in metrics.registry.collect() for s in f.samples])
