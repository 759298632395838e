"""GET /metrics: the engine's state in Prometheus text, per model."""

from __future__ import annotations

import pytest

from tests.api.conftest import CHAT_URL, MODEL, chat, chunks_of, engine_of, parse_sse, wait_until

SLOW = pytest.mark.parametrize("backend", [{"step_delay": 0.01}], indirect=True)


def parse_metrics(text: str) -> dict[str, float]:
    """`name{model="m"} value` lines -> {name: value}; comments must be HELP/TYPE."""
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.split()[1] in ("HELP", "TYPE"), line
            continue
        series, value = line.rsplit(" ", 1)
        name, labels = series.split("{", 1)
        assert labels == f'model="{MODEL}"}}', line
        values[name] = float(value)
    return values


async def test_metrics_is_prometheus_text_with_the_engine_gauges(client):
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    values = parse_metrics(r.text)
    assert values["rill_engine_running_sequences"] == 0
    assert values["rill_engine_waiting_requests"] == 0
    assert values["rill_engine_kv_cache_capacity_tokens"] > 0


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
    assert before["rill_engine_prefix_cache_tokens"] == first["prompt_tokens"]  # the prompt is kept

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
