"""The gateway end to end: `rill serve --config rill.toml` in front of another real Rill (the
shared server, an OpenAI-compatible upstream), with the official openai client: streams and
JSON answers come through in Rill's shape, a dead upstream falls back, the upstream's 400s come
back as they were, stored completions and traces are kept by the gateway."""

from __future__ import annotations


import httpx
import openai
import pytest

from tests.e2e.support import CLIENT_TIMEOUT_S, MODEL, RillFactory, free_port, make_client

pytestmark = pytest.mark.e2e

ASK = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def gateway(rill_factory: RillFactory, root: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    config = tmp_path_factory.mktemp("gateway") / "rill.toml"
    config.write_text(f"""
default_model = "remote"

[[models]]
name = "remote"
base_url = "{root}/v1"
model = "{MODEL}"
timeout = 60
max_concurrency = 8

[[models]]
name = "dead"
base_url = "http://127.0.0.1:{free_port()}/v1"
timeout = 5
retries = 1
fallbacks = ["remote"]
""")
    return rill_factory("--config", str(config), cached=False).url


@pytest.fixture(scope="module")
def via(gateway: str) -> openai.OpenAI:
    return make_client(gateway)


def test_a_stream_through_the_gateway_matches_the_upstream(via: openai.OpenAI, client: openai.OpenAI) -> None:
    direct = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, temperature=0)
    chunks = list(via.chat.completions.create(model="remote", messages=ASK, max_tokens=12, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    assert {c.model for c in chunks} == {"remote"} and len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == direct.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == direct.usage.completion_tokens


def test_a_json_answer_and_the_default_model(via: openai.OpenAI) -> None:
    r = via.chat.completions.create(model="remote", messages=ASK, max_tokens=6)
    assert r.model == "remote" and r.id.startswith("chatcmpl-") and r.choices[0].message.content
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    raw = httpx.post(f"{via.base_url}chat/completions", json={"messages": ASK, "max_tokens": 4},
                     timeout=CLIENT_TIMEOUT_S)
    assert raw.status_code == 200 and raw.json()["model"] == "remote"


def test_a_dead_upstream_falls_back_before_the_first_byte(via: openai.OpenAI, gateway: str) -> None:
    chunks = list(via.chat.completions.create(model="dead", messages=ASK, max_tokens=6, stream=True))
    assert {c.model for c in chunks} == {"remote"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_the_upstreams_400_comes_back_with_its_param(via: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        via.chat.completions.create(model="remote", messages=ASK, max_tokens=4, logit_bias={"99999999": 1})
    assert e.value.body["param"] == "logit_bias.99999999"


def test_the_gateway_stores_and_traces_upstream_completions(via: openai.OpenAI, gateway: str) -> None:
    root_span = httpx.post(f"{gateway}/v1/spans", json={"name": "gateway-e2e"}, timeout=CLIENT_TIMEOUT_S).json()
    stream = via.chat.completions.create(model="remote", messages=ASK, max_tokens=6, stream=True, store=True,
                                         metadata={"via": "gateway"},
                                         extra_body={"tags": {"suite": "gateway"}, "parent_span_id": root_span["id"]})
    chunks = list(stream)
    stored = via.chat.completions.retrieve(chunks[0].id)
    assert stored.model == "remote" and stored.metadata == {"via": "gateway"}
    assert stored.choices[0].message.content == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # by the completion's id: found even while the span waits in the writer's queue
    span = httpx.get(f"{gateway}/v1/spans/{chunks[0].id}", timeout=CLIENT_TIMEOUT_S).json()
    assert span["parent_id"] == root_span["id"] and span["trace_id"] == root_span["trace_id"]
    assert span["model"] == "remote" and span["tags"] == {"suite": "gateway"}
    assert span["usage"]["completion_tokens"] == stored.usage.completion_tokens


def test_models_lists_every_configured_model(via: openai.OpenAI) -> None:
    assert {m.id for m in via.models.list().data} == {"remote", "dead"}
