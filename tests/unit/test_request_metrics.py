"""RequestMetrics and its weighted histogram: exact bucket counts, one registry per instance."""

from __future__ import annotations

import math

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
import pytest

from rill.api.metrics.requests import INTER_TOKEN_BUCKETS, TTFT_BUCKETS, RequestMetrics
from rill.api.metrics.weighted_histogram import WeightedHistogram


def buckets(metrics: RequestMetrics, name: str, model: str) -> dict[str, float]:
    """le -> cumulative count of one model's histogram, from the parsed exposition."""
    text = generate_latest(metrics.registry).decode()
    return {s.labels["le"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == f"{name}_bucket" and s.labels["model"] == model}


def value(metrics: RequestMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_inter_token_count_adds_that_many_observations_to_one_bucket():
    metrics = RequestMetrics()
    metrics.observe_inter_token("m", 0.004, count=5)   # -> le=0.005
    metrics.observe_inter_token("m", 0.005)            # a bound is inclusive -> le=0.005
    metrics.observe_inter_token("m", 0.06, count=2)    # -> le=0.075
    metrics.observe_inter_token("m", 9.0)              # past the last bound -> +Inf only
    metrics.observe_inter_token("m", 0.5, count=0)     # nothing
    got = buckets(metrics, "rill_inter_token_seconds", "m")
    assert got["0.0025"] == 0
    assert got["0.005"] == 6
    assert got["0.05"] == 6
    assert got["0.075"] == 8
    assert got["2.0"] == 8
    assert got["+Inf"] == 9
    assert value(metrics, "rill_inter_token_seconds_count", model="m") == 9
    assert value(metrics, "rill_inter_token_seconds_sum", model="m") == pytest.approx(
        0.004 * 5 + 0.005 + 0.06 * 2 + 9.0)
    assert len(got) == len(INTER_TOKEN_BUCKETS) + 1


def test_models_are_separate_series():
    metrics = RequestMetrics()
    metrics.observe_inter_token("a", 0.01, count=4)
    metrics.observe_inter_token("b", 0.01)
    assert value(metrics, "rill_inter_token_seconds_count", model="a") == 4
    assert value(metrics, "rill_inter_token_seconds_count", model="b") == 1


def test_time_to_first_token_buckets():
    metrics = RequestMetrics()
    for seconds in (0.003, 0.2, 0.2, 61.0):
        metrics.observe_first_token("m", seconds)
    got = buckets(metrics, "rill_time_to_first_token_seconds", "m")
    assert (got["0.005"], got["0.15"], got["0.25"], got["60.0"], got["+Inf"]) == (1, 1, 3, 3, 4)
    assert TTFT_BUCKETS[0] == 0.005 and TTFT_BUCKETS[-1] == 60.0


def test_tokens_and_request_duration():
    metrics = RequestMetrics()
    metrics.observe_tokens("m", prompt=10, completion=4)
    metrics.observe_tokens("m", prompt=2, completion=0)
    metrics.observe_request_duration("m", 3.0)
    assert value(metrics, "rill_prompt_tokens_total", model="m") == 12
    assert value(metrics, "rill_completion_tokens_total", model="m") == 4
    assert value(metrics, "rill_request_duration_seconds_bucket", model="m", le="2.5") == 0
    assert value(metrics, "rill_request_duration_seconds_bucket", model="m", le="5.0") == 1


def test_each_instance_has_its_own_registry_and_never_the_global_one():
    first, second = RequestMetrics(), RequestMetrics()  # a second app must not clash on names
    first.observe_tokens("m", prompt=1, completion=1)
    assert value(second, "rill_prompt_tokens_total", model="m") is None
    assert REGISTRY.get_sample_value("rill_prompt_tokens_total", {"model": "m"}) is None


def test_a_histogram_needs_a_finite_bucket():
    with pytest.raises(ValueError):
        WeightedHistogram("x_seconds", "x", "model", [math.inf])


def test_app_state_without_router_or_trace_writer_still_collects():
    from types import SimpleNamespace

    from rill.api.metrics.route import AppStateCollector

    families = {f.name: f for f in AppStateCollector(SimpleNamespace()).collect()}
    assert "rill_engine_running_sequences" in families and not families["rill_engine_running_sequences"].samples
    assert "rill_trace_queue_depth" not in families and "rill_trace_records_dropped" not in families
