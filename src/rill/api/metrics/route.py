"""GET /metrics: the app's registry in Prometheus text, with the engines' and the trace writer's
state read from app.state at scrape time."""

from __future__ import annotations

from typing import Any, Iterator

from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import PlainTextResponse, Response

from rill.api.metrics.http import HTTPMetrics
from rill.api.metrics.requests import RequestMetrics
from rill.router import UpstreamModel

router = APIRouter()

# Engine.stats() key -> (type, help); exposed as rill_engine_<key>{model}.
ENGINE_STATS = {
    "running_sequences": ("gauge", "Sequences in the engine's batch (prefilling or decoding)."),
    "waiting_requests": ("gauge", "Requests waiting for a sequence slot."),
    "kv_cache_used_tokens": ("gauge", "KV cache cells held by running sequences."),
    "kv_cache_capacity_tokens": ("gauge", "KV cache size in tokens."),
    "max_sequences": ("gauge", "Sequence slots (--parallel)."),
    "preemptions_total": ("counter", "Sequences preempted because the KV cache was full."),
    "steps_total": ("counter", "Engine steps (one forward pass each)."),
    "prefix_cache_tokens": ("gauge", "KV cache cells idle slots keep for prefix reuse."),
    "prefix_cache_hits_total": ("counter", "Admissions that reused a cached prompt prefix."),
    "prefix_cache_reused_tokens_total": ("counter", "Prompt tokens taken from the prefix cache."),
    "prediction_accepted_tokens_total": ("counter", "Predicted tokens verified and kept (`prediction`)."),
    "prediction_rejected_tokens_total": ("counter", "Predicted tokens verified and not kept."),
    "busy_seconds_total": ("counter", "Engine thread time spent in steps (scheduling, forward pass, "
                           "sampling, detokenizing)."),
    "forward_seconds_total": ("counter", "Engine thread time inside the backend's forward pass; "
                              "1 - forward/busy is the share spent in Python."),
    "healthy": ("gauge", "1 while the engine can serve; 0 when a step stalled past --step-timeout or "
                "the engine crashed (docs/faults.md)."),
    "failed_steps_total": ("counter", "Engine steps that raised or stalled; their requests got an error."),
}


class AppStateCollector(Collector):
    """Engine gauges and counters per served model, and the trace writer's queue, read from the
    app's state when scraped (both may be absent: while loading, or without a span writer)."""

    def __init__(self, state: Any):
        self.state = state

    def collect(self) -> Iterator[Metric]:
        model_router = getattr(self.state, "router", None)
        stats = {m.id: m.engine.stats() for m in model_router.local_models()} if model_router is not None else {}
        for key, (kind, help_text) in ENGINE_STATS.items():
            family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_type(f"rill_engine_{key}", help_text, labels=["model"])
            for model_id, values in stats.items():
                family.add_metric([model_id], values[key])
            yield family
        upstreams = [m for m in model_router.models() if isinstance(m, UpstreamModel)] if model_router else []
        in_flight = GaugeMetricFamily("rill_upstream_in_flight", "Requests in flight to an upstream model.",
                                      labels=["model"])
        limit = GaugeMetricFamily("rill_upstream_max_concurrency", "An upstream model's max_concurrency.",
                                  labels=["model"])
        for model in upstreams:
            in_flight.add_metric([model.id], model.upstream.in_flight)
            limit.add_metric([model.id], model.upstream.config.max_concurrency)
        yield in_flight
        yield limit
        yield from replica_metrics(upstreams)
        writer = getattr(self.state, "span_writer", None)
        if writer is not None:
            yield CounterMetricFamily("rill_trace_records_dropped",
                                      "Span records dropped because the trace writer's queue was full or the "
                                      "database refused them.", value=writer.num_dropped)
            yield CounterMetricFamily("rill_trace_records_degraded",
                                      "Span records written with a note in place of a field the database refused.",
                                      value=writer.num_degraded)
            yield GaugeMetricFamily("rill_trace_queue_depth", "Span records waiting to be written.",
                                    value=writer.queue_depth)
        telemetry = getattr(self.state, "telemetry", None)
        if telemetry is not None:  # OpenTelemetry export (--otlp-endpoint)
            processor = telemetry.processor
            yield CounterMetricFamily("rill_otel_spans_exported", "OpenTelemetry spans the collector accepted.",
                                      value=processor.exported)
            dropped = CounterMetricFamily("rill_otel_spans_dropped", "OpenTelemetry spans lost: the export queue "
                                          "was full, or the collector did not take them.", labels=["reason"])
            dropped.add_metric(["queue_full"], processor.dropped_queue_full)
            dropped.add_metric(["export_failed"], processor.dropped_export_failed)
            yield dropped
            yield GaugeMetricFamily("rill_otel_queue_depth", "OpenTelemetry spans waiting to be exported.",
                                    value=processor.queued)


REPLICA_GAUGES = {"in_flight": "Requests in flight to a replica of an upstream model.",
                  "consecutive_failures": "A replica's failures since its last success."}
REPLICA_COUNTERS = {
    "requests": "Requests sent to a replica (retries on it included).",
    "errors": "Requests a replica failed (connect errors, timeouts, 5xx).",
    "ejections": "Times a replica was ejected (docs/gateway.md, \"Replicas\").",
    "prompt_tokens": "Prompt tokens a replica reported.",
    "cached_tokens": "Prompt tokens a replica reported taking from its prefix cache.",
}
STATES = ("healthy", "half_open", "ejected")


def replica_metrics(upstreams: list[UpstreamModel]) -> Iterator[Metric]:
    """rill_upstream_replica_*{model,replica}, and why the gateway picked each replica."""
    labels = ["model", "replica"]
    gauges = {k: GaugeMetricFamily(f"rill_upstream_replica_{k}", h, labels=labels) for k, h in REPLICA_GAUGES.items()}
    counters = {k: CounterMetricFamily(f"rill_upstream_replica_{k}", h, labels=labels)
                for k, h in REPLICA_COUNTERS.items()}
    state = GaugeMetricFamily("rill_upstream_replica_state", "1 for a replica's state: healthy, half_open (one "
                              "trial request at a time) or ejected.", labels=[*labels, "state"])
    routed = CounterMetricFamily("rill_upstream_replica_routed", "Requests routed to a replica first, by why: "
                                 "prefix, home, load, round_robin, least_busy or only (the one replica that could "
                                 "take it).", labels=[*labels, "reason"])
    for model in upstreams:
        for replica in model.upstream.snapshot()["replicas"]:
            key = [model.id, replica["url"]]
            for name, family in (*gauges.items(), *counters.items()):
                family.add_metric(key, replica[name])
            for name in STATES:
                state.add_metric([*key, name], float(replica["state"] == name))
            for reason, count in replica["routed"].items():
                routed.add_metric([*key, reason], count)
    yield from gauges.values()
    yield from counters.values()
    yield state
    yield routed


def install_metrics(app: FastAPI) -> RequestMetrics:
    """Build the app's metrics, keep them on app.state.metrics and count every HTTP request.
    Call it after every other add_middleware: the last one added is the outermost."""
    metrics = RequestMetrics()
    metrics.register(AppStateCollector(app.state))
    app.state.metrics = metrics
    app.add_middleware(HTTPMetrics, metrics=metrics, router=app.router)
    return metrics


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
