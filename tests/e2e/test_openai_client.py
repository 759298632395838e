"""The official `openai` client against `rill serve` on the real SmolLM2 model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

import httpx
import openai
import pytest

from tests.e2e.support import CLIENT_TIMEOUT_S, MODEL, RillFactory, RillServer, make_client

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]

WATER = [{"role": "user", "content": "Describe the water cycle in a few sentences."}]
STORY = [{"role": "user", "content": "Tell me a long story about a dragon."}]
GREEDY_TOKENS = 28  # the greedy STORY answer the stop-string tests cut up


def ask(client: openai.OpenAI, messages: list[dict[str, Any]] = WATER, **kw: Any):
    kw.setdefault("max_tokens", 24)
    return client.chat.completions.create(model=MODEL, messages=messages, **kw)


@dataclass
class Streamed:
    chunks: list[Any]
    text: str
    finish_reason: str | None
    usage: Any


def stream(client: openai.OpenAI, messages: list[dict[str, Any]] = WATER, **kw: Any) -> Streamed:
    kw.setdefault("max_tokens", 24)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) <= 1, f"more than one finish chunk: {finish}"
    usage = [c.usage for c in chunks if c.usage is not None]
    return Streamed(chunks, text, finish[0] if finish else None, usage[-1] if usage else None)


# ---- non-streaming ----------------------------------------------------------------------------


def test_non_streaming_completion(client: openai.OpenAI) -> None:
    r = ask(client, max_tokens=32)
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.model == MODEL
    assert r.system_fingerprint
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    u = r.usage
    assert u is not None
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.completion_tokens <= 32
    if choice.finish_reason == "length":
        assert u.completion_tokens == 32


def test_system_and_developer_messages_are_accepted(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "developer", "content": "Answer in English."},
                {"role": "user", "content": [{"type": "text", "text": "Name a color."}]}]
    r = ask(client, messages, max_tokens=8)
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")


# ---- streaming --------------------------------------------------------------------------------


def test_streaming_chunk_sequence_with_usage(client: openai.OpenAI) -> None:
    s = stream(client, max_tokens=16, stream_options={"include_usage": True})
    chunks = s.chunks
    assert len(chunks) >= 4  # role, >= 1 content, finish, usage
    first = chunks[0]
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert first.choices[0].finish_reason is None

    ids = {c.id for c in chunks}
    assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-")
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {MODEL}
    assert len({c.created for c in chunks}) == 1

    # the last chunk carries the usage and no choices; every other chunk has usage None
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    u = last.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert 0 < u.completion_tokens <= 16

    # the one before it finishes the choice with an empty delta
    finish = chunks[-2]
    assert finish.choices[0].finish_reason in ("stop", "length")
    assert not finish.choices[0].delta.content and finish.choices[0].delta.role is None
    if finish.choices[0].finish_reason == "length":
        assert u.completion_tokens == 16

    content = chunks[1:-2]
    assert content, "no content chunks"
    for c in content:
        assert c.choices[0].finish_reason is None
        assert c.choices[0].delta.content, "a content chunk with empty content"
    assert s.text.strip()


def test_streaming_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    s = stream(client, max_tokens=8)
    assert all(c.choices for c in s.chunks)
    assert all(c.usage is None for c in s.chunks)
    assert s.finish_reason in ("stop", "length")
    assert s.chunks[-1].choices[0].finish_reason == s.finish_reason


def test_raw_sse_framing(root: str) -> None:
    """The wire format itself: text/event-stream, `data: <json>\\n\\n` events, `data: [DONE]` last,
    and with include_usage an explicit `"usage": null` on every chunk but the last."""
    body = {"model": MODEL, "messages": WATER, "max_tokens": 8, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
        with http.stream("POST", root + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            raw = r.read().decode("utf-8")
    assert raw.endswith("data: [DONE]\n\n")
    events = [e for e in raw.split("\n\n") if e]
    datas = []
    for e in events:
        if e.startswith(":"):  # an SSE comment (keep-alive)
            continue
        assert e.startswith("data: "), f"not a data event: {e!r}"
        datas.append(e[len("data: "):])
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    for c in chunks[:-1]:
        assert "usage" in c and c["usage"] is None
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


@pytest.mark.parametrize("temperature", [0.8, 0.0])
def test_streamed_text_equals_non_streamed(client: openai.OpenAI, temperature: float) -> None:
    kw = dict(temperature=temperature, seed=1234, max_tokens=24)
    full = ask(client, **kw)
    s = stream(client, stream_options={"include_usage": True}, **kw)
    assert s.text == full.choices[0].message.content
    assert s.finish_reason == full.choices[0].finish_reason
    assert s.usage.completion_tokens == full.usage.completion_tokens
    assert s.usage.prompt_tokens == full.usage.prompt_tokens


def test_same_seed_same_output_and_seed_matters(client: openai.OpenAI) -> None:
    kw = dict(messages=STORY, temperature=1.5, max_tokens=8)
    a = ask(client, seed=42, **kw).choices[0].message.content
    b = ask(client, seed=42, **kw).choices[0].message.content
    assert a == b
    # at temperature 1.5, eight tokens from three different seeds all agreeing would mean the
    # seed is ignored (or sampling is greedy)
    others = {ask(client, seed=s, **kw).choices[0].message.content for s in (7, 2**40 + 3)}
    assert len(others | {a}) > 1


async def test_async_client_streams_the_same_text(client: openai.OpenAI,
                                                  async_client: openai.AsyncOpenAI) -> None:
    full = ask(client, temperature=0, max_tokens=16).choices[0].message.content
    parts = []
    s = await async_client.chat.completions.create(model=MODEL, messages=WATER, temperature=0,
                                                   max_tokens=16, stream=True)
    async for chunk in s:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    assert "".join(parts) == full


# ---- length -----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("streaming", [False, True], ids=["json", "sse"])
def test_token_cap_gives_length(client: openai.OpenAI, field: str, streaming: bool) -> None:
    kw = {field: 5, "temperature": 0}
    if streaming:
        s = stream(client, STORY, stream_options={"include_usage": True}, **kw)
        reason, usage, text = s.finish_reason, s.usage, s.text
    else:
        r = ask(client, STORY, **kw)
        reason, usage, text = r.choices[0].finish_reason, r.usage, r.choices[0].message.content
    assert reason == "length"
    assert usage.completion_tokens == 5
    assert text


def test_both_caps_take_the_smaller(client: openai.OpenAI) -> None:
    r = ask(client, STORY, max_tokens=9, max_completion_tokens=4, temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4
    r = ask(client, STORY, max_tokens=3, max_completion_tokens=6, temperature=0)
    assert r.usage.completion_tokens == 3


# ---- stop strings -----------------------------------------------------------------------------


@dataclass
class Greedy:
    text: str
    finish_reason: str
    stop: str  # a multi-word substring from the middle of `text`
    before_stop: str  # `text` up to the first occurrence of `stop`


@pytest.fixture(scope="module")
def greedy(rill_server: RillServer) -> Greedy:
    client = make_client(rill_server.url)
    r = ask(client, STORY, temperature=0, max_tokens=GREEDY_TOKENS)
    text = r.choices[0].message.content
    words = text.split(" ")
    assert len(words) >= 12, f"the greedy answer is too short to pick a stop string from: {text!r}"
    mid = len(words) // 2
    stop = " ".join(words[mid:mid + 3])
    assert len(stop) >= 6 and stop.strip()
    cut = text.index(stop)
    assert cut > 0
    client.close()
    return Greedy(text, r.choices[0].finish_reason, stop, text[:cut])


@pytest.mark.parametrize("form", ["list", "string"])
def test_stop_string_non_streaming(client: openai.OpenAI, greedy: Greedy, form: str) -> None:
    stop: Any = [greedy.stop] if form == "list" else greedy.stop
    r = ask(client, STORY, temperature=0, max_tokens=GREEDY_TOKENS, stop=stop)
    assert r.choices[0].message.content == greedy.before_stop
    assert r.choices[0].finish_reason == "stop"


def test_stop_string_streaming(client: openai.OpenAI, greedy: Greedy) -> None:
    """The concatenated deltas equal the greedy text up to the stop string: no part of the stop
    string (not even a prefix held back while undecided) reached the client."""
    s = stream(client, STORY, temperature=0, max_tokens=GREEDY_TOKENS, stop=[greedy.stop],
               stream_options={"include_usage": True})
    assert s.text == greedy.before_stop
    assert s.finish_reason == "stop"
    assert s.usage.completion_tokens < GREEDY_TOKENS


def test_earliest_of_several_stop_strings_wins(client: openai.OpenAI, greedy: Greedy) -> None:
    words = greedy.text.split(" ")
    later = " ".join(words[-4:-2])
    assert later and greedy.text.index(later) > len(greedy.before_stop)
    r = ask(client, STORY, temperature=0, max_tokens=GREEDY_TOKENS, stop=["qqq-never-zzz", later, greedy.stop])
    assert r.choices[0].message.content == greedy.before_stop
    assert r.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(("kind", "streaming"), [
    ("absent", False), ("prefix-mid", False), ("prefix-mid", True), ("prefix-at-end", True),
])
def test_stop_string_that_never_matches_changes_nothing(client: openai.OpenAI, greedy: Greedy,
                                                        kind: str, streaming: bool) -> None:
    """A stop string that never occurs changes nothing, including ones whose beginning does occur
    (held back, then released) and one whose beginning is the very end of the answer (released by
    the final flush)."""
    stop = {
        "absent": "qqq-never-zzz",
        "prefix-mid": greedy.stop + "QQQ",
        "prefix-at-end": greedy.text[-4:] + "QQQ",
    }[kind]
    assert stop not in greedy.text
    if streaming:
        s = stream(client, STORY, temperature=0, max_tokens=GREEDY_TOKENS, stop=[stop])
        text, reason = s.text, s.finish_reason
    else:
        r = ask(client, STORY, temperature=0, max_tokens=GREEDY_TOKENS, stop=[stop])
        text, reason = r.choices[0].message.content, r.choices[0].finish_reason
    assert text == greedy.text
    assert reason == greedy.finish_reason


# ---- context ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_ctx(rill_factory: RillFactory) -> Iterator[openai.OpenAI]:
    client = make_client(rill_factory("--ctx", "512").url)
    yield client
    client.close()


def test_context_overflow_from_max_tokens(small_ctx: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        ask(small_ctx, max_tokens=600)
    assert e.value.code == "context_length_exceeded"
    assert e.value.param == "max_tokens"
    assert "512" in e.value.message


def test_context_overflow_streaming_fails_before_the_stream(small_ctx: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        stream(small_ctx, max_tokens=None, max_completion_tokens=600)
    assert e.value.code == "context_length_exceeded"
    assert e.value.param == "max_completion_tokens"


def test_context_overflow_from_the_prompt(small_ctx: openai.OpenAI) -> None:
    long = [{"role": "user", "content": "apple " * 700}]
    with pytest.raises(openai.BadRequestError) as e:
        ask(small_ctx, long, max_tokens=None)
    assert e.value.code == "context_length_exceeded"
    assert e.value.param == "messages"


def apples(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": "Repeat after me: " + "apple " * n}]


def test_generation_up_to_the_last_context_slot(small_ctx: openai.OpenAI) -> None:
    """A prompt near the end of a 512-token context: prompt + max_tokens == 512 is accepted and
    generates up to the very last slot of the KV cache; one token more is refused; no max_tokens
    means "whatever room is left"."""
    n = 470
    p = ask(small_ctx, apples(n), max_tokens=1).usage.prompt_tokens
    n += 500 - p  # one token per " apple" in SmolLM2's vocabulary; checked below
    p = ask(small_ctx, apples(n), max_tokens=1).usage.prompt_tokens
    assert 495 <= p <= 505, f"could not size the prompt near 500 tokens (got {p})"
    room = 512 - p

    with pytest.raises(openai.BadRequestError) as e:
        ask(small_ctx, apples(n), max_tokens=room + 1)
    assert e.value.code == "context_length_exceeded"

    r = ask(small_ctx, apples(n), max_tokens=room, temperature=0)
    assert r.usage.prompt_tokens == p
    assert r.usage.completion_tokens <= room
    if r.choices[0].finish_reason == "length":
        assert r.usage.completion_tokens == room

    r = ask(small_ctx, apples(n), max_tokens=None, temperature=0)
    assert r.usage.completion_tokens <= room
    if r.choices[0].finish_reason == "length":
        assert r.usage.completion_tokens == room


def test_prompt_longer_than_one_prefill_batch(client: openai.OpenAI) -> None:
    """~1200 prompt tokens are prefilled in 512-token chunks (the default --batch)."""
    r = ask(client, apples(1200), max_tokens=4, temperature=0)
    assert r.usage.prompt_tokens > 1024
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 4


# ---- errors -------------------------------------------------------------------------------------


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-nonexistent", messages=WATER, max_tokens=4)
    assert e.value.code == "model_not_found"
    assert e.value.param == "model"
    assert "gpt-nonexistent" in e.value.message


@pytest.mark.parametrize(("fields", "param"), [
    ({"temperature": 3}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"user": "u" * 257}, "user"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream: true
])
def test_invalid_value_names_the_param(client: openai.OpenAI, fields: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=WATER, **fields)
    assert e.value.type == "invalid_request_error"
    assert e.value.param == param
    assert param in e.value.message


def test_empty_messages_names_the_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[], max_tokens=4)
    assert e.value.param == "messages"


@pytest.mark.parametrize(("fields", "param"), [
    ({"web_search_options": {}}, "web_search_options"),
])
@pytest.mark.parametrize("streaming", [False, True], ids=["json", "sse"])
def test_unsupported_field_is_refused(client: openai.OpenAI, fields: dict[str, Any], param: str,
                                      streaming: bool) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=WATER, max_tokens=4, stream=streaming, **fields)
    assert e.value.code == "unsupported_parameter"
    assert e.value.param == param
    assert param in e.value.message


# ---- text ---------------------------------------------------------------------------------------


def test_multibyte_text_streams_whole_characters(client: openai.OpenAI) -> None:
    """The greedy answer contains hiragana, some of them split across tokens; every delta must be
    whole characters (no U+FFFD, no lone surrogates) and the stream must equal the JSON answer.
    (A copying task: a free answer's wording moves with the build's numerics.)"""
    messages = [{"role": "user", "content": "Repeat exactly: こんにちは、ねこです"}]
    kw = dict(temperature=0, max_tokens=32, stop=["."])
    s = stream(client, messages, **kw)
    deltas = [c.choices[0].delta.content for c in s.chunks if c.choices and c.choices[0].delta.content]
    for d in deltas:
        assert "\ufffd" not in d, f"replacement character in delta {d!r}"
        d.encode("utf-8")  # raises on a lone surrogate
    assert "\ufffd" not in s.text
    assert any(ord(ch) > 0x7F for ch in s.text), f"no multi-byte text in the answer: {s.text!r}"
    assert s.finish_reason == "stop"
    assert ask(client, messages, **kw).choices[0].message.content == s.text


def test_user_field_is_accepted(client: openai.OpenAI) -> None:
    r = ask(client, max_tokens=4, user="e2e-user-42")
    assert r.choices[0].message.content
    assert r.usage.completion_tokens <= 4


# ---- models -------------------------------------------------------------------------------------


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    ids = [m.id for m in models]
    assert MODEL in ids
    m = client.models.retrieve(MODEL)
    assert m.id == MODEL and m.object == "model"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.code == "model_not_found"
