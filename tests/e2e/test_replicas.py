"""Replica routing end to end: two `rill serve --config` gateways in front of three simulated
replicas with real prefix caches (benchmarks/replica_sim.py) and one dead one, with the official
openai client. A conversation's turns, sent through either gateway, land on one replica and hit
its cache; the dead replica is ejected without a client seeing an error; /v1/upstreams says so."""

from __future__ import annotations

from typing import Iterator

import httpx
import openai
import pytest

from tests.e2e.replica_cluster import gateway_config, sim_replicas, stats
from tests.e2e.support import CLIENT_TIMEOUT_S, RillFactory, free_port, make_client

pytestmark = pytest.mark.e2e

SYSTEM = "You are a guide to the sea. Answer in one sentence, plainly, and never invent facts."


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[str]]:
    with sim_replicas(3) as urls:
        yield urls


@pytest.fixture(scope="module")
def dead() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture(scope="module")
def clients(gateways: tuple[str, str]) -> Iterator[list[openai.OpenAI]]:
    """An openai client per gateway, closed at the end (their pooled sockets with them)."""
    made = [make_client(g) for g in gateways]
    yield made
    for client in made:
        client.close()


@pytest.fixture(scope="module")
def gateways(rill_factory: RillFactory, replicas: list[str], dead: str, tmp_path_factory) -> tuple[str, str]:
    config = gateway_config(tmp_path_factory.mktemp("replicas") / "rill.toml", [*replicas, dead])
    first = rill_factory("--config", str(config), cached=False).url
    second = rill_factory("--config", str(config), cached=False).url
    return first, second


def served_by(replicas: list[str]) -> list[int]:
    return [stats(url)["requests"] for url in replicas]


def test_a_conversations_turns_through_either_gateway_land_on_one_replica_and_hit_its_cache(
        clients: list[openai.OpenAI], replicas: list[str]) -> None:
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Why do tides rise and fall twice a day? " * 6}]
    before = served_by(replicas)
    cached = []
    for turn in range(6):
        reply = clients[turn % 2].chat.completions.create(model="sea", messages=messages, max_tokens=8)
        cached.append(reply.usage.prompt_tokens_details.cached_tokens)
        messages += [{"role": "assistant", "content": reply.choices[0].message.content},
                     {"role": "user", "content": f"And question {turn} about the moon's pull on the water?"}]
    after = served_by(replicas)
    grew = [i for i, (a, b) in enumerate(zip(before, after)) if b > a]
    assert len(grew) == 1 and after[grew[0]] - before[grew[0]] == 6, (before, after)
    assert cached[0] == 0 and all(c > 0 for c in cached[1:]), cached


def test_conversations_spread_over_the_replicas(clients: list[openai.OpenAI], replicas: list[str]) -> None:
    client = clients[0]
    before = served_by(replicas)
    for n in range(24):
        client.chat.completions.create(model="sea", max_tokens=4, messages=[
            {"role": "user", "content": f"Tell me one fact about sea creature number {n}."}])
    after = served_by(replicas)
    assert all(b > a for a, b in zip(before, after)), (before, after)


def test_the_dead_replica_is_ejected_and_no_client_sees_it(gateways: tuple[str, str], clients: list[openai.OpenAI],
                                                           dead: str) -> None:
    client = clients[1]
    for n in range(12):  # one of these may be routed to the dead replica first: it is retried elsewhere
        reply = client.chat.completions.create(model="sea", max_tokens=4, stream=False,
                                               messages=[{"role": "user", "content": f"Question {n} about waves?"}])
        assert reply.choices[0].message.content
    upstreams = httpx.get(gateways[1] + "/v1/upstreams", timeout=CLIENT_TIMEOUT_S).json()["data"]
    (sea,) = upstreams
    states = {r["url"]: r["state"] for r in sea["replicas"]}
    assert states.pop(dead) == "ejected" and set(states.values()) == {"healthy"}
    assert next(r for r in sea["replicas"] if r["url"] == dead)["ejected_since"]


def test_the_gateway_lists_one_model(clients: list[openai.OpenAI]) -> None:
    models = clients[0].models.list().data
    assert [m.id for m in models] == ["sea"]
    with pytest.raises(openai.NotFoundError):
        clients[0].chat.completions.create(model="lake", messages=[{"role": "user", "content": "?"}])


def test_a_replicas_prefix_hit_rate_is_reported(gateways: tuple[str, str], replicas: list[str]) -> None:
    sea = httpx.get(gateways[0] + "/v1/upstreams", timeout=CLIENT_TIMEOUT_S).json()["data"][0]
    rates = [r["prefix_hit_rate"] for r in sea["replicas"] if r["url"] in replicas and r["requests"]]
    assert rates and max(rates) > 0
    metrics = httpx.get(gateways[0] + "/metrics", timeout=CLIENT_TIMEOUT_S).text
    assert "rill_upstream_replica_cached_tokens_total{" in metrics
