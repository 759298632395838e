"""Request-level Prometheus metrics: one CollectorRegistry per app (never the global default one),
kept on `app.state.metrics`, with the methods the HTTP middleware and the chat path record into."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.registry import Collector

from rill.api.metrics.weighted_histogram import WeightedHistogram

# Time to first token spans a prefix-cache hit on a short prompt on a GPU (a few ms) to a long
# prompt prefilled on CPU behind a full batch (tens of seconds); past 60 s it hardly matters how far.
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 7.5,
                10.0, 15.0, 20.0, 30.0, 45.0, 60.0)
# One decode step: ~1-10 ms for a small model on a GPU, 10-100 ms on CPU, stretching with batch
# size and prefill chunks sharing the step; over 2 s a stream looks stalled to its reader anyway.
INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1,
                       0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0)
# A whole completion: from a one-token answer to minutes of generation.
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Any HTTP request: ms for /health, /metrics, stored reads; seconds to minutes for a completion.
HTTP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                300.0, 600.0)


class RequestMetrics:
    """Owns the app's registry. `model` labels must be served model ids (the router's resolved id),
    never a client's raw string, so that label values stay bounded."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._http_requests = Counter(
            "rill_http_requests", "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"], registry=r)
        self._http_duration = Histogram(
            "rill_http_request_duration_seconds",
            "HTTP request time, from the request's arrival to the end of its response body.",
            ["route", "method"], buckets=HTTP_BUCKETS, registry=r)
        self._prompt_tokens = Counter(
            "rill_prompt_tokens", "Prompt tokens of finished completions.", ["model"], registry=r)
        self._completion_tokens = Counter(
            "rill_completion_tokens", "Generated tokens of finished completions.", ["model"], registry=r)
        self._first_token = Histogram(
            "rill_time_to_first_token_seconds",
            "Time from a completion's arrival to its first generated token.",
            ["model"], buckets=TTFT_BUCKETS, registry=r)
        self._inter_token = WeightedHistogram(
            "rill_inter_token_seconds", "Time between consecutive generated tokens of a completion.",
            "model", INTER_TOKEN_BUCKETS)
        r.register(self._inter_token)
        self._failed_tries = Counter(
            "rill_gateway_failed_tries", "Tries of a model that failed before the first byte and moved on "
            "(retry, fallback) or gave up, by model and HTTP status.", ["model", "status"], registry=r)
        self._request_duration = Histogram(
            "rill_request_duration_seconds", "Time from a completion's arrival to its last token.",
            ["model"], buckets=REQUEST_BUCKETS, registry=r)

    def observe_failed_try(self, model: str, status: int) -> None:
        self._failed_tries.labels(model, str(status)).inc()

    def register(self, collector: Collector) -> None:
        """Add a collector read at scrape time (engine and trace-writer state)."""
        self.registry.register(collector)

    def observe_http_request(self, route: str, method: str, status: str, seconds: float) -> None:
        self._http_requests.labels(route, method, status).inc()
        self._http_duration.labels(route, method).observe(seconds)

    def observe_first_token(self, model: str, seconds: float) -> None:
        self._first_token.labels(model).observe(seconds)

    def observe_inter_token(self, model: str, seconds: float, count: int = 1) -> None:
        """`count` tokens, each `seconds` after the one before (one streamed delta's gap divided
        by its tokens): one call, whatever `count` is."""
        self._inter_token.observe(model, seconds, count)

    def observe_tokens(self, model: str, prompt: int, completion: int) -> None:
        self._prompt_tokens.labels(model).inc(prompt)
        self._completion_tokens.labels(model).inc(completion)

    def observe_request_duration(self, model: str, seconds: float) -> None:
        self._request_duration.labels(model).observe(seconds)
