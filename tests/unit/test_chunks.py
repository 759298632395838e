"""rill.api.protocols.chat.chunks (chunk and completion objects) and the SSE framing of rill.api.protocols.chat.stream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from rill.api.protocols.chat.chunks import ChunkBuilder, completion
from rill.api.core.output import ChoiceOutput
from rill.api.core.plan import Plan
from rill.api.protocols.chat.plan import plan_chat
from rill.api.protocols.chat.schemas import ChatCompletionRequest
from rill.api.http.response import sse
from rill.api.protocols.chat.stream import DONE, sse_events
from rill.backends.fake import FakeBackend
from rill.engine.engine import Engine
from rill.engine.types import Failed, FinishReason, Finished, TextDelta
from rill.router import LocalModel
from rill.sampling.template import ChatTemplate

SHARED = ("id", "object", "created", "model", "system_fingerprint", "service_tier")
FINISHED = Finished(FinishReason.STOP, num_prompt_tokens=12, num_completion_tokens=5)


def make_plan(**fields: Any) -> Plan:
    """A real plan over the fake backend; the engine thread is never started."""
    backend = FakeBackend()
    info = backend.info
    model = LocalModel(id="fake-echo", engine=Engine(backend),
                       template=ChatTemplate(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token))
    body = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}], "stream": True, **fields})
    return plan_chat(body, model, max_n=16)


def all_chunks(plan: Plan) -> list[dict[str, Any]]:
    chunks = ChunkBuilder(plan)
    out = [chunks.role(), chunks.content("Hel"), chunks.content("lo"), chunks.finish(FINISHED)]
    if plan.include_usage:
        out.append(chunks.usage([FINISHED]))
    return out


@pytest.mark.parametrize("options", [None, {"include_usage": True}, {"include_obfuscation": False}])
def test_every_chunk_shares_id_object_created_model_fingerprint_and_tier(options):
    plan = make_plan(stream_options=options)
    chunks = all_chunks(plan)
    expected = {"id": plan.id, "object": "chat.completion.chunk", "created": plan.created, "model": "fake-echo",
                "system_fingerprint": "fp_fake", "service_tier": "default"}
    assert plan.id.startswith("chatcmpl-")
    for chunk in chunks:
        assert {k: chunk[k] for k in SHARED} == expected


def test_role_chunk_content_chunk_and_finish_chunk():
    role, content, _, finish = all_chunks(make_plan())
    assert role["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                "logprobs": None, "finish_reason": None}]
    assert content["choices"] == [{"index": 0, "delta": {"content": "Hel"}, "logprobs": None, "finish_reason": None}]
    assert finish["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]


def test_finish_reason_length():
    chunk = ChunkBuilder(make_plan()).finish(Finished(FinishReason.LENGTH, 3, 4))
    assert chunk["choices"][0]["finish_reason"] == "length"


def test_include_usage_puts_null_usage_on_every_chunk_and_totals_on_a_last_empty_one():
    *chunks, last = all_chunks(make_plan(stream_options={"include_usage": True}))
    assert all("usage" in c and c["usage"] is None for c in chunks)
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == 12
    assert last["usage"]["completion_tokens"] == 5
    assert last["usage"]["total_tokens"] == 17
    assert last["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0


@pytest.mark.parametrize("options", [None, {"include_usage": False}, {"include_obfuscation": True}])
def test_without_include_usage_no_chunk_has_a_usage_key(options):
    assert all("usage" not in c for c in all_chunks(make_plan(stream_options=options)))


@pytest.mark.parametrize("options", [None, {"include_obfuscation": True}, {"include_usage": True}])
def test_obfuscation_is_on_content_chunks_only_by_default(options):
    plan = make_plan(stream_options=options)
    chunks = ChunkBuilder(plan)
    contents = [chunks.content("x") for _ in range(50)]
    for chunk in contents:
        assert isinstance(chunk["obfuscation"], str) and 1 <= len(chunk["obfuscation"]) <= 24
        assert chunk["obfuscation"].isalnum()
    assert len({len(c["obfuscation"]) for c in contents}) > 1  # random length
    for chunk in (chunks.role(), chunks.finish(FINISHED), chunks.usage([FINISHED])):
        assert "obfuscation" not in chunk


def test_obfuscation_is_absent_when_turned_off():
    plan = make_plan(stream_options={"include_obfuscation": False, "include_usage": True})
    assert all("obfuscation" not in c for c in all_chunks(plan))


def test_non_streamed_completion_object():
    plan = make_plan()
    output = ChoiceOutput()
    output.feed("Hel")
    output.feed("lo")
    body = completion(plan, [FINISHED], [output])
    assert {k: body[k] for k in SHARED} == {
        "id": plan.id, "object": "chat.completion", "created": plan.created, "model": "fake-echo",
        "system_fingerprint": "fp_fake", "service_tier": "default"}
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": None,
                                                        "annotations": []},
                                "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"]["total_tokens"] == 17


# ---- SSE framing -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["Hello", "line\nbreak\r\n\n", "héllo 😀 \u2028", 'data: "quoted"'])
def test_sse_frames_one_event_that_round_trips(text):
    chunk = ChunkBuilder(make_plan()).content(text)
    frame = sse(chunk)
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    payload = frame[len(b"data: "):-2]
    assert b"\n" not in payload and b"\r" not in payload  # one event, one line
    assert orjson.loads(payload) == chunk


class ScriptedStream:
    """A RequestStream stand-in that yields scripted events and records close()."""

    def __init__(self, events):
        self._events = list(events)
        self.closed = False

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self._events:
            raise StopAsyncIteration
        return self._events.pop(0)

    def close(self):
        self.closed = True


async def frames(plan: Plan, events) -> tuple[list[bytes], ScriptedStream]:
    stream = ScriptedStream(events)
    return [f async for f in sse_events(plan, stream)], stream


async def test_sse_events_order_role_content_finish_usage_done():
    plan = make_plan(stream_options={"include_usage": True})
    out, stream = await frames(plan, [TextDelta("Hi", 2), TextDelta("!", 1), FINISHED])
    assert out[-1] == DONE == b"data: [DONE]\n\n"
    events = [orjson.loads(f[len(b"data: "):]) for f in out[:-1]]
    assert [e["choices"][0]["delta"] if e["choices"] else "usage" for e in events] == [
        {"role": "assistant", "content": ""}, {"content": "Hi"}, {"content": "!"}, {}, "usage"]
    assert stream.closed


async def test_sse_events_failure_mid_stream_is_one_error_event_without_done():
    out, stream = await frames(make_plan(), [TextDelta("Hi", 2), Failed("backend exploded")])
    assert DONE not in out
    assert orjson.loads(out[-1][len(b"data: "):]) == {
        "error": {"message": "backend exploded", "type": "server_error", "param": None, "code": "engine_error"}}
    assert stream.closed
