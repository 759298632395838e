"""OpenTelemetry export in-process: the real app with spans going to an InMemorySpanExporter. Every
protocol's completion is a GenAI span (INTERNAL for the local model) under the request's SERVER
span, which continues the caller's traceparent; content only when opted in; none of it runs
without an endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncIterator

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rill.api.app import create_app
from rill.backends.fake import FakeBackend
from rill.config import ServerConfig
from rill.telemetry.settings import OtelConfig
from tests.api.conftest import MODEL, StreamingASGITransport, chat, fake_loader, parse_sse

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@contextlib.asynccontextmanager
async def run_app(tmp_path, exporter: InMemorySpanExporter, *, capture: bool = False, otel: bool = True,
                  backend: FakeBackend | None = None) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    config = ServerConfig(database_url=f"sqlite:///{tmp_path / 'rill.db'}",
                          otel=OtelConfig(endpoint="http://127.0.0.1:9/v1/traces", capture_content=capture) if otel else None)
    app = create_app(config, fake_loader(backend or FakeBackend()), expected_models=(MODEL,),
                     exit_on_load_failure=False, span_exporter=exporter)
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rill.test") as client:
            yield app, client


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def served(tmp_path, exporter):
    async with run_app(tmp_path, exporter) as pair:
        yield pair


@pytest.fixture
async def served_with_content(tmp_path, exporter):
    async with run_app(tmp_path, exporter, capture=True) as pair:
        yield pair


def finished(app, exporter: InMemorySpanExporter) -> list:
    assert app.state.telemetry.processor.force_flush(5_000)
    return list(exporter.get_finished_spans())


def by_kind(spans: list, kind: SpanKind) -> list:
    return [s for s in spans if s.kind == kind]


async def test_a_streamed_chat_completion_is_a_genai_span_under_the_callers_trace(served, exporter):
    app, client = served
    response = await client.post("/v1/chat/completions", headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1"},
                                 json=chat("hello there", stream=True, max_tokens=5, temperature=0.5, top_p=0.9, seed=7,
                                           stop=["zz"], stream_options={"include_usage": True},
                                           user="alice", tags={"team": "search"}))
    assert response.status_code == 200
    events = parse_sse(response.text)
    spans = finished(app, exporter)
    [server] = by_kind(spans, SpanKind.SERVER)
    [genai] = by_kind(spans, SpanKind.INTERNAL)
    # the caller's trace continues: the SERVER span is its child, the GenAI span the server's
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == CALLER_SPAN and server.parent.is_remote
    assert genai.parent.span_id == server.context.span_id and genai.context.trace_id == server.context.trace_id
    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.context.trace_state.get("vendor") == "1"
    a = genai.attributes
    assert genai.name == f"chat {MODEL}"
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "rill"
    assert a["gen_ai.request.model"] == MODEL and a["gen_ai.response.model"] == MODEL
    assert a["gen_ai.request.max_tokens"] == 5 and a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.request.top_p"] == 0.9 and a["gen_ai.request.seed"] == 7
    assert a["gen_ai.request.stop_sequences"] == ("zz",) and a["gen_ai.request.stream"] is True
    usage = events[-2]["usage"]
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"] == 5
    assert a["gen_ai.response.finish_reasons"] == ("length",)
    assert a["gen_ai.response.id"] == events[0]["id"]
    assert a["gen_ai.response.time_to_first_chunk"] > 0
    assert a["rill.span_id"] == response.headers["x-rill-span-id"]
    assert a["rill.trace_id"] == response.headers["x-rill-trace-id"]
    assert "rill.queue_ms" in a and a["rill.protocol"] == "chat.completion"
    assert "rill.user" not in a  # an end user's id goes out only with the content
    assert a["rill.tag.team"] == "search"
    # content is opt-in
    assert not any(k in a for k in ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.tool.definitions"))
    assert genai.status.status_code != StatusCode.ERROR


async def test_without_a_traceparent_the_server_span_starts_a_trace(served, exporter):
    app, client = served
    response = await client.post("/v1/chat/completions", json=chat("hi", max_tokens=2))
    assert response.status_code == 200
    spans = finished(app, exporter)
    [server] = by_kind(spans, SpanKind.SERVER)
    assert server.parent is None
    assert "gen_ai.request.stream" not in by_kind(spans, SpanKind.INTERNAL)[0].attributes


@pytest.mark.parametrize("path, body, operation", [
    ("/v1/responses", {"model": MODEL, "input": "hi", "max_output_tokens": 3, "instructions": "Be brief."}, "chat"),
    ("/v1/messages", {"model": MODEL, "max_tokens": 3, "system": "Be brief.",
                      "messages": [{"role": "user", "content": "hi"}]}, "chat"),
    # the end-of-turn token banned: the fake model's raw-prompt answer may otherwise end at once
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 3, "logit_bias": {"257": -100}},
     "text_completion"),
])
async def test_every_protocol_exports_its_completion(served_with_content, exporter, path, body, operation):
    app, client = served_with_content
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    spans = finished(app, exporter)
    [server] = by_kind(spans, SpanKind.SERVER)
    [genai] = by_kind(spans, SpanKind.INTERNAL)
    assert server.name == f"POST {path}"
    assert genai.name == f"{operation} {MODEL}"
    a = genai.attributes
    assert a["gen_ai.operation.name"] == operation
    usage = response.json()["usage"]
    assert a["gen_ai.request.max_tokens"] == 3
    assert a["gen_ai.usage.output_tokens"] == usage.get("output_tokens", usage.get("completion_tokens")) > 0
    assert a["gen_ai.usage.input_tokens"] == usage.get("input_tokens", usage.get("prompt_tokens")) > 0
    messages = json.loads(a["gen_ai.input.messages"])
    assert messages[-1] == {"role": "user", "parts": [{"type": "text", "content": "hi"}]}
    if path != "/v1/completions":  # Responses' instructions and Messages' system stand apart
        assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    [output] = json.loads(a["gen_ai.output.messages"])
    assert output["role"] == "assistant" and output["parts"][0]["type"] == "text" and output["finish_reason"]


async def test_content_opted_in_carries_messages_tools_and_calls(served_with_content, exporter):
    app, client = served_with_content
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "system", "content": "You help."}, {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "rainy"}]
    response = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages, "tools": tools,
                                                                "max_tokens": 4, "user": "alice"})
    assert response.status_code == 200, response.text
    [genai] = by_kind(finished(app, exporter), SpanKind.INTERNAL)
    a = genai.attributes
    assert a["rill.user"] == "alice"
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "You help."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "get_weather",
                                         "arguments": {"city": "Paris"}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy"}]}]
    assert json.loads(a["gen_ai.tool.definitions"]) == [
        {"type": "function", "name": "get_weather", "description": "Weather in a city",
         "parameters": tools[0]["function"]["parameters"]}]


async def test_rill_attributes_carry_prediction_counts_and_timings(served, exporter):
    app, client = served
    message = "The quick brown fox jumps over the lazy dog."
    response = await client.post("/v1/chat/completions", json=chat(
        message, temperature=0, prediction={"type": "content", "content": "The quick brown cat sleeps."}))
    assert response.status_code == 200, response.text
    details = response.json()["usage"]["completion_tokens_details"]
    [genai] = by_kind(finished(app, exporter), SpanKind.INTERNAL)
    a = genai.attributes
    assert a["rill.prediction.accepted_tokens"] == details["accepted_prediction_tokens"] > 0
    assert a["rill.prediction.rejected_tokens"] == details["rejected_prediction_tokens"] > 0
    assert a["rill.ttft_ms"] > 0 and a["rill.usage.cached_tokens"] == 0
    assert "gen_ai.usage.cache_read.input_tokens" not in a  # only when not 0


async def test_reasoning_tokens_are_counted_on_the_span(tmp_path, exporter):
    from tests.api.test_reasoning import ANSWER, THINKS, THOUGHT

    async with run_app(tmp_path, exporter, backend=FakeBackend(chat_template=THINKS)) as (app, client):
        response = await client.post("/v1/chat/completions", json=chat(THOUGHT + ANSWER, temperature=0))
        assert response.status_code == 200, response.text
        reasoning = response.json()["usage"]["completion_tokens_details"]["reasoning_tokens"]
        [genai] = by_kind(finished(app, exporter), SpanKind.INTERNAL)
    assert genai.attributes["gen_ai.usage.reasoning.output_tokens"] == reasoning > 0


async def test_a_refused_request_is_a_failed_server_span(served, exporter):
    app, client = served
    response = await client.post("/v1/chat/completions", json={"model": MODEL, "messages": [], "max_tokens": 2})
    assert response.status_code == 400
    [server] = by_kind(finished(app, exporter), SpanKind.SERVER)
    assert server.attributes["http.response.status_code"] == 400


async def test_a_stream_the_client_leaves_is_a_cancelled_span(tmp_path, exporter):
    async with run_app(tmp_path, exporter, backend=FakeBackend(step_delay=0.005)) as (app, _):
        await leave_a_stream(app, exporter)


async def leave_a_stream(app, exporter) -> None:
    async with httpx.AsyncClient(transport=StreamingASGITransport(app), base_url="http://rill.test") as live:
        async with live.stream("POST", "/v1/chat/completions",
                               json=chat("go on", stream=True, max_tokens=1500, logit_bias={"257": -100})) as r:
            assert r.status_code == 200
            pieces = r.aiter_raw()
            assert b"data: " in await asyncio.wait_for(anext(pieces), 10)  # the first token came, then we leave
    deadline = asyncio.get_running_loop().time() + 10
    while not any(s.kind == SpanKind.INTERNAL for s in finished(app, exporter)):
        assert asyncio.get_running_loop().time() < deadline, "the GenAI span never ended"
        await asyncio.sleep(0.02)
    spans = finished(app, exporter)
    [genai] = by_kind(spans, SpanKind.INTERNAL)
    [server] = by_kind(spans, SpanKind.SERVER)
    assert genai.attributes["error.type"] == "cancelled" and genai.status.status_code == StatusCode.ERROR
    assert "gen_ai.usage.output_tokens" not in genai.attributes  # Rill's span keeps no usage for a cut answer either
    assert server.attributes["error.type"] == "incomplete"  # the answer's last byte never went out


async def test_metrics_show_the_export(served, exporter):
    app, client = served
    assert (await client.post("/v1/chat/completions", json=chat("hi", max_tokens=2))).status_code == 200
    finished(app, exporter)
    text = (await client.get("/metrics")).text
    assert "rill_otel_spans_exported_total 2.0" in text  # the SERVER and the GenAI span
    assert 'rill_otel_spans_dropped_total{reason="queue_full"} 0.0' in text
    assert "rill_otel_queue_depth 0.0" in text


async def test_without_an_endpoint_nothing_of_opentelemetry_runs(tmp_path, exporter):
    async with run_app(tmp_path, exporter, otel=False) as (app, client):
        assert (await client.post("/v1/chat/completions", json=chat("hi", max_tokens=2))).status_code == 200
        assert app.state.telemetry is None
        assert not [m for m in app.user_middleware if m.cls.__name__ == "ServerSpans"]
        assert "rill_otel" not in (await client.get("/metrics")).text
    assert exporter.get_finished_spans() == ()
