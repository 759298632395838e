"""The SSE stream on the wire: event framing, chunk shape, usage, obfuscation, UTF-8 safety,
and the Opper SDK's paths and Accept header."""

from __future__ import annotations

import asyncio

import pytest

import rill.api.core.run
import rill.api.protocols.chat.stream
from tests.api.conftest import (
    CHAT_URL,
    DONE,
    MODEL,
    GatedBackend,
    chat,
    chatml_prompt_tokens,
    chunks_of,
    engine_of,
    finish_reason_of,
    parse_sse,
    stream_text,
)

OPPER_PATHS = ["/v1/openai/chat/completions", "/openai/chat/completions", "/v2/openai/chat/completions"]
MULTIBYTE = "naïve café, Ωμέγα, 日本語のテキスト, 한국어, emoji 🙂🎉👍🏽 and 🇸🇪 flags"


async def stream(client, body: dict, url: str = CHAT_URL, **kwargs) -> list:
    r = await client.post(url, json=body, **kwargs)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream"), r.headers["content-type"]
    return parse_sse(r.text)


def assert_stream_shape(events: list, *, finish_reason: str = "stop", include_usage: bool = False) -> None:
    """The contract's stream: role chunk, content chunks, finish chunk, [usage chunk], [DONE];
    every chunk shares id, created, model, system_fingerprint, service_tier and object."""
    assert events[-1] == DONE
    chunks = chunks_of(events)
    first = chunks[0]
    assert first["id"].startswith("chatcmpl-")
    assert isinstance(first["created"], int)
    assert first["model"] == MODEL
    assert isinstance(first["system_fingerprint"], str) and first["system_fingerprint"]
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            assert c[key] == first[key], (key, c)

    if include_usage:
        *chunks, usage_chunk = chunks
        assert usage_chunk["choices"] == []
        assert isinstance(usage_chunk["usage"], dict)
        assert all("usage" in c and c["usage"] is None for c in chunks), "usage must be null before the last chunk"
    else:
        assert all(c.get("usage") is None and c["choices"] for c in chunks)

    role, *content, finish = chunks
    assert role["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                "logprobs": None, "finish_reason": None}]
    for c in content:
        [choice] = c["choices"]
        assert choice["index"] == 0 and choice["finish_reason"] is None
        assert set(choice["delta"]) == {"content"}, choice["delta"]
        assert isinstance(choice["delta"]["content"], str) and choice["delta"]["content"]
    [choice] = finish["choices"]
    assert choice["index"] == 0
    assert choice["delta"] == {}
    assert choice["finish_reason"] == finish_reason


async def test_stream_has_the_contract_shape(client):
    events = await stream(client, chat("hello there", stream=True, temperature=0))
    assert_stream_shape(events)
    assert stream_text(events) == "hello there"


async def test_stream_is_served_as_event_stream_without_caching(client):
    r = await client.post(CHAT_URL, json=chat("hi", stream=True, temperature=0))
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    # strict framing: nothing but `data: ...\n\n` events, [DONE] last
    assert r.text.startswith("data: {")
    assert r.text.endswith("\n\ndata: [DONE]\n\n")


async def test_each_stream_gets_its_own_id(client):
    a = await stream(client, chat("one", stream=True, temperature=0))
    b = await stream(client, chat("one", stream=True, temperature=0))
    assert chunks_of(a)[0]["id"] != chunks_of(b)[0]["id"]


@pytest.mark.parametrize("message", ["hi", "hello world", MULTIBYTE])
async def test_include_usage_adds_a_final_usage_chunk(client, message):
    events = await stream(client, chat(message, stream=True, temperature=0,
                                       stream_options={"include_usage": True}))
    assert_stream_shape(events, include_usage=True)
    usage = chunks_of(events)[-1]["usage"]
    prompt = chatml_prompt_tokens([{"role": "user", "content": message}])
    completion = len(message.encode())  # one token per UTF-8 byte
    assert usage["prompt_tokens"] == prompt
    assert usage["completion_tokens"] == completion
    assert usage["total_tokens"] == prompt + completion


async def test_usage_counts_tokens_cut_by_max_tokens(client):
    events = await stream(client, chat("hello world", stream=True, temperature=0, max_tokens=4,
                                       stream_options={"include_usage": True}))
    assert_stream_shape(events, finish_reason="length", include_usage=True)
    assert chunks_of(events)[-1]["usage"]["completion_tokens"] == 4


async def test_include_usage_false_sends_no_usage(client):
    events = await stream(client, chat("hi", stream=True, temperature=0,
                                       stream_options={"include_usage": False}))
    assert_stream_shape(events, include_usage=False)


async def test_content_chunks_carry_obfuscation_by_default(client):
    events = await stream(client, chat("a message long enough for many chunks", stream=True, temperature=0))
    content = [c for c in chunks_of(events) if c["choices"][0]["delta"].get("content")]
    assert content
    pads = [c.get("obfuscation") for c in content]
    assert all(isinstance(p, str) and p for p in pads), pads
    assert len({len(p) for p in pads}) > 1, "obfuscation should have random lengths"


@pytest.mark.parametrize("options", [{"include_obfuscation": True}, {"include_usage": True}])
async def test_obfuscation_stays_on_with_other_stream_options(client, options):
    events = await stream(client, chat("hello", stream=True, temperature=0, stream_options=options))
    content = [c for c in chunks_of(events) if c.get("choices") and c["choices"][0]["delta"].get("content")]
    assert content and all(c.get("obfuscation") for c in content)


async def test_include_obfuscation_false_removes_it(client):
    events = await stream(client, chat("hello world", stream=True, temperature=0,
                                       stream_options={"include_obfuscation": False}))
    assert_stream_shape(events)
    assert all("obfuscation" not in c for c in chunks_of(events))
    assert stream_text(events) == "hello world"


@pytest.mark.parametrize("seed", [0, 7, 123456789])
async def test_streamed_text_equals_non_streamed_for_the_same_seed(client, seed):
    fields = dict(temperature=1.0, seed=seed, max_tokens=40)
    r = await client.post(CHAT_URL, json=chat("sample me something", **fields))
    assert r.status_code == 200, r.text
    whole = r.json()["choices"][0]
    events = await stream(client, chat("sample me something", stream=True, **fields))
    assert stream_text(events) == whole["message"]["content"]
    assert finish_reason_of(events) == whole["finish_reason"]


async def test_multibyte_characters_arrive_whole_in_every_delta(client):
    r = await client.post(CHAT_URL, json=chat(MULTIBYTE, stream=True, temperature=0))
    assert r.status_code == 200
    r.content.decode("utf-8", errors="strict")  # the raw bytes are valid UTF-8
    events = parse_sse(r.text)
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks_of(events)[1:-1]]
    for d in deltas:
        assert "\ufffd" not in d, d
        d.encode("utf-8", errors="strict")  # no lone surrogates: every delta is valid text
    assert "".join(deltas) == MULTIBYTE


async def test_multibyte_text_is_the_same_streamed_and_not(client):
    r = await client.post(CHAT_URL, json=chat(MULTIBYTE, temperature=0))
    assert r.json()["choices"][0]["message"]["content"] == MULTIBYTE


async def test_streams_even_when_the_client_accepts_json(client):
    """The Opper SDK sends `Accept: application/json` on streaming calls."""
    events = await stream(client, chat("hello", stream=True, temperature=0),
                          headers={"accept": "application/json"})
    assert_stream_shape(events)
    assert stream_text(events) == "hello"


async def test_stream_false_is_json_even_when_the_client_accepts_event_streams(client):
    r = await client.post(CHAT_URL, json=chat("hello", temperature=0), headers={"accept": "text/event-stream"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "hello"


@pytest.mark.parametrize("path", OPPER_PATHS)
async def test_opper_paths_stream_like_the_main_path(client, path):
    events = await stream(client, chat("hello opper", stream=True, temperature=0,
                                       stream_options={"include_usage": True}), url=path)
    assert_stream_shape(events, include_usage=True)
    assert stream_text(events) == "hello opper"


@pytest.mark.parametrize("path", OPPER_PATHS)
async def test_opper_paths_answer_like_the_main_path(client, path):
    body = chat("hello opper", temperature=0)
    main = (await client.post(CHAT_URL, json=body)).json()
    r = await client.post(path, json=body)
    assert r.status_code == 200, r.text
    other = r.json()
    assert other["usage"]["prompt_tokens_details"].pop("cached_tokens") > 0  # the same prompt again
    main["usage"]["prompt_tokens_details"].pop("cached_tokens")
    for key in ("object", "model", "system_fingerprint", "choices", "usage"):
        assert other[key] == main[key], key


@pytest.mark.parametrize("path", OPPER_PATHS)
async def test_opper_paths_validate_like_the_main_path(client, path):
    r = await client.post(path, json=chat("hi", temperature=3))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "temperature"


async def test_empty_reply_still_has_role_and_finish_chunks(client):
    """A stop string at the very start leaves no content: role chunk, finish chunk, [DONE]."""
    events = await stream(client, chat("STOP now", stream=True, temperature=0, stop="STOP"))
    assert_stream_shape(events)
    assert len(chunks_of(events)) == 2
    assert stream_text(events) == ""


@pytest.mark.parametrize("backend", [{"cls": GatedBackend}], indirect=True)
async def test_waiting_stream_sends_keepalive_comments_then_completes(app, live_client, gate, monkeypatch):
    monkeypatch.setattr(rill.api.core.run, "KEEPALIVE_SECONDS", 0.01)
    monkeypatch.setattr(rill.api.protocols.chat.stream, "KEEPALIVE_SECONDS", 0.01)
    engine = engine_of(app)
    async with live_client.stream("POST", CHAT_URL, json=chat("after a wait", stream=True, temperature=0)) as r:
        assert r.status_code == 200
        pieces = r.aiter_raw()
        received = b""
        while b": keep-alive\n\n" not in received:  # the engine is stuck on the gate: only keep-alives come
            received += await asyncio.wait_for(anext(pieces), 10)
        assert engine.num_running == 1
        gate.set()
        async for piece in pieces:
            received += piece
    text = received.decode()
    assert text.endswith("data: [DONE]\n\n")
    # keep-alives are SSE comments between whole events; without them the stream is the usual one
    events = [e for e in text[:-2].split("\n\n") if not e.startswith(": ")]
    assert all(e.startswith(": ") or e.startswith("data: ") for e in text[:-2].split("\n\n"))
    assert stream_text(parse_sse("\n\n".join(events) + "\n\n")) == "after a wait"


@pytest.mark.parametrize(("asked", "echoed"), [
    (None, "default"), ("auto", "default"), ("default", "default"),
    ("flex", "flex"), ("scale", "scale"), ("priority", "priority"),
])
async def test_every_chunk_and_the_completion_echo_the_service_tier_used(client, asked, echoed):
    fields = {} if asked is None else {"service_tier": asked}
    r = await client.post(CHAT_URL, json=chat("hi", stream=True, **fields))
    assert {c["service_tier"] for c in chunks_of(parse_sse(r.text))} == {echoed}
    r = await client.post(CHAT_URL, json=chat("hi", **fields))
    assert r.json()["service_tier"] == echoed
