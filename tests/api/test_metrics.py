"""GET /metrics: the app's registry in Prometheus text: HTTP requests by route template and status,
the chat path's token counters and latency histograms, the engines' state per model and the trace
writer's queue."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families
import pytest

from tests.api.conftest import CHAT_URL, MODEL, GatedBackend, chat, chunks_of, engine_of, parse_sse, wait_until

SLOW = pytest.mark.parametrize("backend", [{"step_delay": 0.01}], indirect=True)
GATED = pytest.mark.parametrize("backend", [{"cls": GatedBackend}], indirect=True)


def parse_metrics(text: str) -> dict[str, float]:
    """The rill_engine_* series -> {name: value}; each must carry exactly the model's label."""
    values = {}
    for line in text.splitlines():
        if not line.startswith("rill_engine_"):
            continue
        series, value = line.rsplit(" ", 1)
        name, labels = series.split("{", 1)
        assert labels == f'model="{MODEL}"}}', line
        values[name] = float(value)
    return values


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a strictly parsed exposition: (name, labels) -> value."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


async def scrape(client) -> str:
    r = await client.get("/metrics")
    assert r.status_code == 200
    return r.text


async def test_metrics_is_prometheus_text_with_the_engine_gauges(client):
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    values = parse_metrics(r.text)
    assert values["rill_engine_running_sequences"] == 0
    assert values["rill_engine_waiting_requests"] == 0
    assert values["rill_engine_kv_cache_capacity_tokens"] > 0


async def test_every_family_parses_with_help_and_type(client, app):
    app.state.metrics.observe_first_token(MODEL, 0.1)
    app.state.metrics.observe_inter_token(MODEL, 0.01)
    text = await scrape(client)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "rill_http_requests": "counter", "rill_http_request_duration_seconds": "histogram",
        "rill_prompt_tokens": "counter", "rill_completion_tokens": "counter",
        "rill_time_to_first_token_seconds": "histogram", "rill_inter_token_seconds": "histogram",
        "rill_request_duration_seconds": "histogram",
        "rill_engine_running_sequences": "gauge", "rill_engine_waiting_requests": "gauge",
        "rill_engine_kv_cache_used_tokens": "gauge", "rill_engine_kv_cache_capacity_tokens": "gauge",
        "rill_engine_max_sequences": "gauge", "rill_engine_preemptions": "counter",
        "rill_engine_steps": "counter", "rill_engine_prefix_cache_tokens": "gauge",
        "rill_engine_prefix_cache_hits": "counter", "rill_engine_prefix_cache_reused_tokens": "counter",
        "rill_engine_busy_seconds": "counter", "rill_engine_forward_seconds": "counter",
        "rill_trace_records_dropped": "counter", "rill_trace_records_degraded": "counter",
        "rill_trace_queue_depth": "gauge",
    }
    assert {name: families[name].type for name in expected if name in families} == expected
    for name, kind in expected.items():
        exposed = f"{name}_total" if kind == "counter" else name
        assert f"# HELP {exposed} " in text and families[name].documentation, name
        assert f"# TYPE {exposed} {kind}\n" in text, name
    assert all(f.name.startswith("rill_") for f in families.values()), sorted(families)  # no process_*/python_*


async def test_requests_are_counted_by_route_template_method_and_status(client):
    assert (await client.post(CHAT_URL, json=chat("hi", temperature=0))).status_code == 200
    assert (await client.post(CHAT_URL, json=chat("hi", temperature=5))).status_code == 400
    assert (await client.post(CHAT_URL, json={**chat("hi"), "model": "no-such-model"})).status_code == 404
    assert (await client.get(f"{CHAT_URL}/chatcmpl-missing")).status_code == 404
    assert (await client.get(f"{CHAT_URL}/chatcmpl-missing/messages")).status_code == 404
    assert (await client.get("/no/such/path")).status_code == 404
    assert (await client.delete("/metrics")).status_code == 405
    text = await scrape(client)

    def requests(route: str, method: str, status: str) -> float | None:
        return sample(text, "rill_http_requests_total", route=route, method=method, status=status)

    assert requests(CHAT_URL, "POST", "200") == 1
    assert requests(CHAT_URL, "POST", "400") == 1
    assert requests(CHAT_URL, "POST", "404") == 1
    assert requests(f"{CHAT_URL}/{{completion_id}}", "GET", "404") == 1
    assert requests(f"{CHAT_URL}/{{completion_id}}/messages", "GET", "404") == 1
    assert requests("unmatched", "GET", "404") == 1
    assert requests("/metrics", "DELETE", "405") == 1
    assert "chatcmpl-missing" not in text and "/no/such/path" not in text  # bounded labels
    chat_duration = sample(text, "rill_http_request_duration_seconds_count", route=CHAT_URL, method="POST")
    assert chat_duration == 3


@pytest.mark.parametrize("config", [{"max_body_bytes": 1024}], indirect=True)
async def test_a_413_before_routing_is_counted_under_its_route(client):
    r = await client.post(CHAT_URL, json=chat("x" * 2000))
    assert r.status_code == 413
    text = await scrape(client)
    assert sample(text, "rill_http_requests_total", route=CHAT_URL, method="POST", status="413") == 1


@pytest.mark.parametrize("config", [{"api_keys": ("metrics-operator-key-0123456789",)}], indirect=True)
async def test_a_401_from_the_key_check_is_counted_under_its_route(client):
    assert (await client.get(f"{CHAT_URL}/chatcmpl-x")).status_code == 401
    assert (await client.get("/v1/nowhere")).status_code == 401
    r = await client.get("/metrics", headers={"authorization": "Bearer metrics-operator-key-0123456789"})
    assert r.status_code == 200
    assert sample(r.text, "rill_http_requests_total", route=f"{CHAT_URL}/{{completion_id}}", method="GET",
                  status="401") == 1
    assert sample(r.text, "rill_http_requests_total", route="unmatched", method="GET", status="401") == 1


async def test_streamed_chats_and_odd_methods_are_counted(client):
    r = await client.post(CHAT_URL, json=chat("abc", stream=True, temperature=0))
    assert r.status_code == 200 and parse_sse(r.text)[-1] == "[DONE]"
    assert (await client.request("BREW", "/metrics")).status_code == 405
    text = await scrape(client)
    assert sample(text, "rill_http_requests_total", route=CHAT_URL, method="POST", status="200") == 1
    assert sample(text, "rill_http_requests_total", route="/metrics", method="other", status="405") == 1


@GATED
async def test_a_client_gone_before_the_response_started_counts_as_499(app, live_client, client, gate):
    request = asyncio.create_task(live_client.post(CHAT_URL, json=chat("never answered", temperature=0)))
    await wait_until(lambda: engine_of(app).num_running == 1, what="the request reached the engine")
    request.cancel()  # the client leaves; the transport answers http.disconnect and awaits the app
    with pytest.raises(asyncio.CancelledError):
        await request
    text = await scrape(client)
    assert sample(text, "rill_http_requests_total", route=CHAT_URL, method="POST", status="499") == 1
    gate.set()


async def test_request_metrics_calls_show_in_the_scrape(app, client):
    metrics = app.state.metrics
    metrics.observe_tokens(MODEL, prompt=12, completion=5)
    metrics.observe_tokens(MODEL, prompt=3, completion=1)
    metrics.observe_first_token(MODEL, 0.2)
    metrics.observe_inter_token(MODEL, 0.004, count=3)
    metrics.observe_request_duration(MODEL, 1.5)
    text = await scrape(client)
    assert sample(text, "rill_prompt_tokens_total", model=MODEL) == 15
    assert sample(text, "rill_completion_tokens_total", model=MODEL) == 6
    assert sample(text, "rill_time_to_first_token_seconds_count", model=MODEL) == 1
    assert sample(text, "rill_time_to_first_token_seconds_bucket", model=MODEL, le="0.15") == 0
    assert sample(text, "rill_time_to_first_token_seconds_bucket", model=MODEL, le="0.25") == 1
    assert sample(text, "rill_inter_token_seconds_count", model=MODEL) == 3
    assert sample(text, "rill_inter_token_seconds_bucket", model=MODEL, le="0.005") == 3
    assert sample(text, "rill_inter_token_seconds_sum", model=MODEL) == pytest.approx(0.012)
    assert sample(text, "rill_request_duration_seconds_count", model=MODEL) == 1


async def test_the_trace_writer_numbers_are_read_at_scrape_time(app, client, monkeypatch):
    text = await scrape(client)
    assert sample(text, "rill_trace_records_dropped_total") == app.state.span_writer.num_dropped == 0
    assert sample(text, "rill_trace_queue_depth") == app.state.span_writer.queue_depth
    assert sample(text, "rill_trace_records_degraded_total") == app.state.span_writer.num_degraded == 0
    monkeypatch.setattr(app.state, "span_writer", SimpleNamespace(num_dropped=3, num_degraded=2, queue_depth=7))
    text = await scrape(client)
    assert sample(text, "rill_trace_records_dropped_total") == 3
    assert sample(text, "rill_trace_records_degraded_total") == 2
    assert sample(text, "rill_trace_queue_depth") == 7
    app.state.span_writer.num_dropped = 5  # read at scrape time, not copied once
    assert sample(await scrape(client), "rill_trace_records_dropped_total") == 5


async def test_steps_count_up_as_requests_are_served(client):
    before = parse_metrics((await client.get("/metrics")).text)["rill_engine_steps_total"]
    r = await client.post(CHAT_URL, json=chat("twelve chars", temperature=0))
    assert r.status_code == 200
    after = parse_metrics((await client.get("/metrics")).text)["rill_engine_steps_total"]
    assert after - before == 1 + len("twelve chars")  # one prefill step, then one per token incl. EOS


@SLOW
async def test_running_gauge_shows_a_stream_and_drops_to_zero_after_its_client_leaves(app, live_client, client):
    async with live_client.stream("POST", CHAT_URL, json=chat("x" * 400, stream=True, temperature=0)) as r:
        received = b""
        async for piece in r.aiter_raw():
            received += piece
            if received.count(b"data: ") >= 2:  # role chunk + a content chunk: it is decoding
                break
        running = parse_metrics((await client.get("/metrics")).text)["rill_engine_running_sequences"]
        assert running == 1
    await wait_until(lambda: engine_of(app).num_running == 0, what="the aborted request left the engine")
    values = parse_metrics((await client.get("/metrics")).text)
    assert values["rill_engine_running_sequences"] == 0
    assert values["rill_engine_kv_cache_used_tokens"] == 0


async def test_a_repeated_prompt_reports_cached_tokens_in_usage_and_metrics(client):
    body = chat("the same question twice", temperature=0)
    first = (await client.post(CHAT_URL, json=body)).json()["usage"]
    before = parse_metrics((await client.get("/metrics")).text)
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    # the prompt and the answer are kept (the fake backend is batch-invariant: docs/prediction.md)
    assert before["rill_engine_prefix_cache_tokens"] == first["prompt_tokens"] + first["completion_tokens"]

    r = await client.post(CHAT_URL, json={**body, "stream": True, "stream_options": {"include_usage": True}})
    second = [c for c in chunks_of(parse_sse(r.text)) if c.get("usage")][0]["usage"]
    assert second["prompt_tokens"] == first["prompt_tokens"]
    assert second["prompt_tokens_details"]["cached_tokens"] == first["prompt_tokens"] - 2
    after = parse_metrics((await client.get("/metrics")).text)
    assert after["rill_engine_prefix_cache_hits_total"] == before["rill_engine_prefix_cache_hits_total"] + 1
    assert (after["rill_engine_prefix_cache_reused_tokens_total"]
            - before["rill_engine_prefix_cache_reused_tokens_total"]) == first["prompt_tokens"] - 2


async def test_engine_time_is_counted_with_the_forward_pass_inside_it(app, client):
    engine = engine_of(app)
    before = engine.stats()
    assert (await client.post(CHAT_URL, json=chat("time me", temperature=0))).status_code == 200
    # busy time is added after the step that published the answer: wait for it (bounded)
    await wait_until(lambda: engine.stats()["busy_seconds_total"] - before["busy_seconds_total"]
                     >= engine.stats()["forward_seconds_total"] - before["forward_seconds_total"] > 0,
                     what="the step's time was counted")
    values = parse_metrics((await client.get("/metrics")).text)
    assert 0 < values["rill_engine_forward_seconds_total"] <= values["rill_engine_busy_seconds_total"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_chat_completion_feeds_the_token_counters_and_latency_histograms(client, stream):
    r = await client.post(CHAT_URL, json=chat("one two three four", temperature=0, stream=stream,
                                              stream_options={"include_usage": True} if stream else None))
    usage = parse_sse(r.text)[-2]["usage"] if stream else r.json()["usage"]
    text = await scrape(client)
    assert sample(text, "rill_prompt_tokens_total", model=MODEL) == usage["prompt_tokens"]
    assert sample(text, "rill_completion_tokens_total", model=MODEL) == usage["completion_tokens"]
    assert sample(text, "rill_time_to_first_token_seconds_count", model=MODEL) == 1
    assert sample(text, "rill_request_duration_seconds_count", model=MODEL) == 1
    # the fake model sends a delta per token: every token after the first is one inter-token gap
    assert sample(text, "rill_inter_token_seconds_count", model=MODEL) == usage["completion_tokens"] - 1
