"""The two SDKs whose request models Rill's request is the union of: atoma-sdk and opperai."""

from __future__ import annotations

import datetime
import json
from typing import Any

import httpx
import pytest
from atoma_sdk import AtomaSDK
from opperai import Opper
from opperai import errors as opper_errors

from tests.e2e.support import CLIENT_TIMEOUT_S, MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]

QUESTION = [{"role": "user", "content": "Describe the water cycle in a few sentences."}]
TIMEOUT_MS = int(CLIENT_TIMEOUT_S * 1000)


# ---- atoma-sdk --------------------------------------------------------------------------------

# atoma-sdk 0.1.3's generated serializers read `self.model_fields`, deprecated in pydantic 2.11
atoma_warning = pytest.mark.filterwarnings(
    "ignore:Accessing the 'model_fields' attribute on the instance is deprecated"
    ":pydantic.warnings.PydanticDeprecatedSince211")


@pytest.fixture
def atoma(root: str):
    with AtomaSDK(bearer_auth="unused", server_url=root, timeout_ms=TIMEOUT_MS) as sdk:
        yield sdk


def atoma_stream(sdk: AtomaSDK, **kw: Any) -> tuple[list[Any], str, list[str]]:
    events = list(sdk.chat.create_stream(messages=QUESTION, model=MODEL, **kw))
    chunks = [e.data for e in events]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    return chunks, text, finish


@atoma_warning
def test_atoma_create_stream(atoma: AtomaSDK) -> None:
    chunks, text, finish = atoma_stream(atoma, max_tokens=16)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {MODEL}
    assert text.strip()
    assert finish in (["stop"], ["length"])
    assert chunks[-1].choices[0].finish_reason == finish[0]


@atoma_warning
def test_atoma_stop_list_and_seed(atoma: AtomaSDK) -> None:
    """Atoma sends `stop` as a list; with a seed the output repeats, and a stop string taken from
    the middle of that output cuts it there."""
    kw = dict(max_tokens=24, seed=99, temperature=0.7)
    _, text, _ = atoma_stream(atoma, **kw)
    _, again, _ = atoma_stream(atoma, **kw)
    assert again == text
    words = text.split(" ")
    assert len(words) >= 8, text
    stop = " ".join(words[4:6])
    _, cut, finish = atoma_stream(atoma, stop=[stop, "qqq-never"], **kw)
    assert cut == text[: text.index(stop)]
    assert finish == ["stop"]


@atoma_warning
def test_atoma_error_is_an_api_error(atoma: AtomaSDK) -> None:
    from atoma_sdk import models as atoma_models

    with pytest.raises(atoma_models.APIError) as e:
        list(atoma.chat.create_stream(messages=QUESTION, model="no-such-model", max_tokens=4))
    assert e.value.status_code == 404
    assert json.loads(e.value.body)["error"]["code"] == "model_not_found"


# ---- opperai ----------------------------------------------------------------------------------


@pytest.fixture(params=["/v1", "/v2"])
def opper(root: str, request: pytest.FixtureRequest):
    """Opper's SDK with server_url <root>/v1 or <root>/v2: it POSTs to <server_url>/openai/chat/completions."""
    with Opper(http_bearer="unused", server_url=root + request.param, timeout_ms=TIMEOUT_MS) as sdk:
        yield sdk


def test_opper_chat_completion(opper: Opper) -> None:
    r = opper.openai.create_chat_completion(request={"messages": QUESTION, "model": MODEL, "max_tokens": 12})
    assert r.id.startswith("chatcmpl-")
    assert r.model == MODEL
    content = r.choices[0].message.content
    assert isinstance(content, str) and content.strip()
    assert str(getattr(r.choices[0].finish_reason, "value", r.choices[0].finish_reason)) in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_opper_default_model(opper: Opper) -> None:
    """Opper's `model` is optional: absent means the server's default model."""
    r = opper.openai.create_chat_completion(request={"messages": QUESTION, "max_tokens": 4})
    assert r.model == MODEL
    assert r.choices[0].message.content


def test_opper_streaming_request_still_streams(opper: Opper) -> None:
    """The SDK sends `Accept: application/json` and cannot parse SSE, so it raises; the raw
    response it carries must still be Rill's stream."""
    with pytest.raises(opper_errors.OpperError) as e:
        opper.openai.create_chat_completion(
            request={"messages": QUESTION, "model": MODEL, "max_tokens": 8, "stream": True,
                     "stream_options": {"include_usage": True}})
    raw = e.value.raw_response
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("text/event-stream")
    body = e.value.body
    assert body.endswith("data: [DONE]\n\n")
    events = [ev for ev in body.split("\n\n") if ev and not ev.startswith(":")]
    assert all(ev.startswith("data: ") for ev in events)
    chunks = [json.loads(ev[len("data: "):]) for ev in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).strip()
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_opper_spans_and_traces_show_the_nesting(root: str) -> None:
    """The SDK's own span and trace calls (relative to server_url <root>/v1) against Rill's span
    API, with its models parsing Rill's responses: a workflow span, a completion nested under it
    with `tags` and `parent_span_id`, the span closed, the trace tree read back."""
    with Opper(http_bearer="unused", server_url=root + "/v1", timeout_ms=TIMEOUT_MS) as sdk:
        workflow = sdk.spans.create(name="answer-question", input="What is rain?", meta={"step": "plan"})
        assert workflow.id and workflow.trace_id and workflow.end_time is None
        r = sdk.openai.create_chat_completion(request={
            "messages": QUESTION, "model": MODEL, "max_tokens": 8,
            "tags": {"team": "e2e", "attempt": 1}, "parent_span_id": workflow.id})
        assert r.choices[0].message.content
        ended = sdk.spans.update(span_id=workflow.id, end_time=datetime.datetime.now(datetime.timezone.utc),
                                 output="It falls.")
        assert ended.output == "It falls." and ended.end_time is not None
        got = sdk.spans.get(span_id=workflow.id)
        assert got.name == "answer-question" and got.meta == {"step": "plan"}

        trace = sdk.traces.get(trace_id=workflow.trace_id)
        assert trace.id == workflow.trace_id and trace.name == "answer-question" and trace.status == "ok"
        assert [s.id for s in trace.spans][0] == workflow.id
        (chat_span,) = [s for s in trace.spans if s.parent_id == workflow.id]
        assert chat_span.type == "chat.completion" and chat_span.data.model == MODEL
        assert json.loads(chat_span.data.input) == QUESTION and chat_span.data.total_tokens == r.usage.total_tokens
        assert trace.total_tokens == r.usage.total_tokens

        listed = sdk.traces.list(limit=100)
        assert listed.meta.total_count >= 1 and workflow.trace_id in [t.id for t in listed.data]

        # Rill's own fields on the completion's span: tags, the completion id, timings
        raw = httpx.get(f"{root}/v1/spans/{r.id}", timeout=CLIENT_TIMEOUT_S).json()
        assert raw["id"] == chat_span.id and raw["tags"] == {"team": "e2e", "attempt": 1}
        assert raw["timings"]["ttft_ms"] > 0 and raw["usage"]["total_tokens"] == r.usage.total_tokens

        sdk.spans.delete(span_id=workflow.id)
        with pytest.raises(opper_errors.OpperError) as e:
            sdk.spans.get(span_id=workflow.id)
        assert e.value.status_code == 404


def test_opper_unknown_parent_span_is_a_400(opper: Opper) -> None:
    """The body is OpenAI's error shape, which the SDK's BadRequestError model (it wants
    `detail`) does not parse, so it surfaces as another OpperError."""
    with pytest.raises(opper_errors.OpperError) as e:
        opper.openai.create_chat_completion(
            request={"messages": QUESTION, "model": MODEL, "max_tokens": 4, "parent_span_id": "no-such-span"})
    assert e.value.status_code == 400
    err = json.loads(e.value.body)["error"]
    assert err["param"] == "parent_span_id" and err["type"] == "invalid_request_error"
