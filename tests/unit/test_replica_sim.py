"""benchmarks/replica_sim.py, two replicas in-process on free ports with near-zero costs: prefix
hits on a repeat and on an extended conversation (and none on the other replica), LRU eviction,
the stream's chunks and usage, failing replicas, the in-flight limit, /stats, and the timing
model's serialised prefill."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from pathlib import Path

import httpx
import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "replica_sim.py"
_spec = importlib.util.spec_from_file_location("replica_sim", _PATH)
replica_sim = importlib.util.module_from_spec(_spec)
sys.modules["replica_sim"] = replica_sim
_spec.loader.exec_module(replica_sim)

FAST = {"prefill_ms_per_token": 0.01, "base_ttft_ms": 0, "itl_ms": 0}
# ~16 tokens a sentence: a few of them fill several 16-token blocks
SENTENCE = "The quick brown fox jumps over the lazy dog near the riverbank. "


def conversation(*turns: str) -> dict:
    return {"model": "sim", "max_tokens": 4,
            "messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]}


@pytest.fixture
async def sim(request):
    options = {**FAST, **getattr(request, "param", {})}
    cluster = await replica_sim.start(2, **options)
    async with httpx.AsyncClient(timeout=10) as client:
        yield cluster, client
    await cluster.close()


async def chat(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    r = await client.post(url + "/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def cached(answer: dict) -> int:
    return answer["usage"]["prompt_tokens_details"]["cached_tokens"]


async def test_a_repeat_hits_the_cache_of_its_replica_only(sim):
    cluster, client = sim
    body = conversation(SENTENCE * 4)
    first = await chat(client, cluster.urls[0], body)
    second = await chat(client, cluster.urls[0], body)
    elsewhere = await chat(client, cluster.urls[1], body)
    assert cached(first) == 0
    assert cached(second) == first["usage"]["prompt_tokens"] // 16 * 16 > 0
    assert cached(elsewhere) == 0
    assert cluster.replicas[1].stats_dict()["cached_tokens"] == 0


async def test_an_extended_conversation_reuses_the_earlier_prompts_whole_blocks(sim):
    cluster, client = sim
    first = await chat(client, cluster.urls[0], conversation(SENTENCE * 3))
    longer = await chat(client, cluster.urls[0], conversation(SENTENCE * 3, "tok ken", "and a follow-up question"))
    whole_blocks = first["usage"]["prompt_tokens"] // 16 * 16
    assert whole_blocks > 0
    assert cached(longer) == whole_blocks
    assert longer["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]
    # a different first turn shares nothing
    other = await chat(client, cluster.urls[0], conversation("Another opening. " + SENTENCE * 3))
    assert cached(other) == 0


def test_tools_and_content_parts_render_into_the_prompt():
    plain = replica_sim.render_prompt(conversation("hello"))
    parts = replica_sim.render_prompt({"messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]})
    with_tools = replica_sim.render_prompt({**conversation("hello"), "tools": [{"type": "function"}]})
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f"}}]}
    with_call = replica_sim.render_prompt({"messages": [*conversation("hello")["messages"], call]})
    assert parts == plain
    assert with_tools.endswith(plain) and len(with_tools) > len(plain)
    assert with_call.startswith(plain) and '"name":"f"' in with_call


@pytest.mark.parametrize("sim", [{"cache_tokens": 64}], indirect=True)  # four 16-token blocks
async def test_lru_eviction_bounds_the_cache_and_drops_the_old_prefix(sim):
    cluster, client = sim
    replica = cluster.replicas[0]
    old, new = conversation(SENTENCE * 5), conversation("Something else entirely. " + SENTENCE * 5)
    for body in (old, old, new, new):
        await chat(client, cluster.urls[0], body)
        assert replica.stats_dict()["cache_tokens"] <= 64
    assert replica.stats_dict()["cache_tokens"] == 64
    assert cached(await chat(client, cluster.urls[0], new)) == 64  # the newest prefix stays, up to the bound
    assert cached(await chat(client, cluster.urls[0], old)) == 0  # the old one was evicted


def test_eviction_trims_a_chain_from_its_tail():
    cache = replica_sim.PrefixCache(capacity_blocks=4)
    a = replica_sim.block_hashes("a" * 64 * 3, 16)
    b = replica_sim.block_hashes("b" * 64 * 3, 16)
    cache.insert(a)
    cache.insert(b)
    assert len(cache) == 4
    assert cache.cached_blocks(b) == 3
    assert cache.cached_blocks(a) == 1  # a's head survives; its tail went first


async def test_a_stream_has_one_chunk_per_token_and_the_usage(sim):
    cluster, client = sim
    body = {**conversation(SENTENCE * 2), "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}}
    async with client.stream("POST", cluster.urls[1] + "/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["x-replica"] == "1"
        text = (await r.aread()).decode()
    data = [e.removeprefix("data: ") for e in text.split("\n\n") if e.startswith("data: ")]
    assert data[-1] == "[DONE]"
    events = [json.loads(d) for d in data[:-1]]
    tokens = [e for e in events if e["choices"] and e["choices"][0]["delta"].get("content")]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert len(tokens) == 5
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["completion_tokens"] == 5
    assert events[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


@pytest.mark.parametrize("sim", [{"fail_replicas": {1}}], indirect=True)
async def test_failing_replicas_answer_500_and_unhealthy(sim):
    cluster, client = sim
    base = [url.removesuffix("/v1") for url in cluster.urls]
    assert (await client.get(base[0] + "/health")).status_code == 200
    assert (await client.get(base[1] + "/health")).status_code == 503
    r = await client.post(cluster.urls[1] + "/chat/completions", json=conversation("hi"))
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert r.headers["x-replica"] == "1"
    cluster.replicas[1].failing = False  # recovers at run time
    await chat(client, cluster.urls[1], conversation("hi"))


@pytest.mark.parametrize("sim", [{"max_in_flight": 1, "base_ttft_ms": 150}], indirect=True)
async def test_over_max_in_flight_answers_429(sim):
    cluster, client = sim
    first = asyncio.create_task(chat(client, cluster.urls[0], conversation("one")))
    while cluster.replicas[0].in_flight == 0:
        await asyncio.sleep(0.005)
    r = await client.post(cluster.urls[0] + "/chat/completions", json=conversation("two"))
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
    await first
    assert cluster.replicas[0].stats_dict()["rejected"] == 1


async def test_stats_report_the_hit_rate(sim):
    cluster, client = sim
    body = conversation(SENTENCE * 4)
    first = await chat(client, cluster.urls[0], body)
    second = await chat(client, cluster.urls[0], body)
    stats = (await client.get(cluster.urls[0].removesuffix("/v1") + "/stats")).json()
    prompt = first["usage"]["prompt_tokens"]
    assert stats["requests"] == 2 and stats["in_flight"] == 0
    assert stats["prompt_tokens"] == 2 * prompt
    assert stats["cached_tokens"] == cached(second)
    assert stats["hit_rate"] == pytest.approx(cached(second) / (2 * prompt))
    assert stats["cache_tokens"] == prompt // 16 * 16


@pytest.mark.parametrize("sim", [{"prefill_ms_per_token": 1.0}], indirect=True)
async def test_uncached_prefills_queue_and_cached_ones_are_cheap(sim):
    cluster, client = sim
    a, b = conversation("A. " + SENTENCE * 8), conversation("B. " + SENTENCE * 8)  # ~130 tokens: >= 130 ms each
    began = time.perf_counter()
    await asyncio.gather(chat(client, cluster.urls[0], a), chat(client, cluster.urls[0], b))
    assert time.perf_counter() - began >= 0.25  # one after the other, not side by side
    assert cached(await chat(client, cluster.urls[0], a)) >= 128  # what it costs follows: a few uncached tokens


@pytest.mark.parametrize("sim", [{"itl_ms": 10}], indirect=True)
async def test_tokens_are_paced_by_the_inter_token_latency(sim):
    cluster, client = sim
    began = time.perf_counter()
    answer = await chat(client, cluster.urls[0], {**conversation("hi"), "max_tokens": 6})
    assert time.perf_counter() - began >= 0.05  # five gaps after the first token
    assert answer["choices"][0]["message"]["content"] == "tok ken word more text here "


def test_other_requests_in_flight_stretch_the_token_gap():
    replica = replica_sim.Replica(0, replica_sim.Costs(itl_ms=10, decode_parallelism=2))
    replica.in_flight = 1
    assert replica._token_gap() == pytest.approx(0.010)  # alone: exactly --itl-ms
    replica.in_flight = 5
    assert replica._token_gap() == pytest.approx(0.030)


def test_costs_reject_impossible_values():
    with pytest.raises(ValueError):
        replica_sim.Costs(block_tokens=0)
    with pytest.raises(ValueError):
        replica_sim.Costs(itl_ms=-1)


async def test_late_tokens_go_out_together():
    replica = replica_sim.Replica(0, replica_sim.Costs(itl_ms=10))
    replica.in_flight = 1
    batches = []
    async for batch in replica._paced(10):
        batches.append(batch)
        if len(batches) == 1:
            time.sleep(0.05)  # the loop is busy for five gaps
    assert sum(batches) == 10
    assert batches[0] == 1 and batches[1] >= 4
