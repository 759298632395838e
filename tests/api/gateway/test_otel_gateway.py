"""OpenTelemetry across the gateway: each call to an upstream is a CLIENT span under the request's
SERVER span, and the call carries that span's traceparent; failed tries are failed spans; a
fallback to the local model is an INTERNAL span beside them."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from rill.api.app import create_app
from rill.backends.fake import FakeBackend
from rill.config import ModelConfig, ServerConfig
from rill.telemetry.settings import OtelConfig
from tests.api.conftest import MODEL, fake_loader, parse_sse
from tests.api.gateway.fake_upstream import USAGE, FakeUpstream, chunk, status, streamed, upstream
from tests.api.mock_pool import MockPool

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(tmp_path, fake: FakeUpstream, exporter, request):
    models = getattr(request, "param", None) or (upstream("up", retries=1, fallbacks=(MODEL,)), ModelConfig(name=MODEL))
    config = ServerConfig(models=models, database_url=f"sqlite:///{tmp_path / 'rill.db'}",
                          otel=OtelConfig(endpoint="http://127.0.0.1:9/v1/traces"))
    app = create_app(config, fake_loader(FakeBackend()), expected_models=(MODEL,), exit_on_load_failure=False,
                     upstream_pool=MockPool(fake.handle), span_exporter=exporter)
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rill.test") as client:
            yield app, client


def spans_of(app, exporter) -> list:
    assert app.state.telemetry.processor.force_flush(5_000)
    return sorted(exporter.get_finished_spans(), key=lambda s: s.start_time)


def traceparent_sent(fake: FakeUpstream, i: int) -> str:
    return fake.requests[i].headers["traceparent"]


BODY = {"model": "up", "stream": True, "max_tokens": 9, "temperature": 0.2,
        "messages": [{"role": "user", "content": "hi"}]}


async def test_the_forward_is_a_client_span_whose_traceparent_the_upstream_gets(traced, fake, exporter):
    app, client = traced
    fake.script("up.test", streamed(chunk("Hel"), chunk("lo", finish="stop"), chunk(choices=False, usage=USAGE)))
    response = await client.post("/v1/chat/completions", json=BODY,
                                 headers={"traceparent": TRACEPARENT, "tracestate": "vendor=opaque"})
    assert response.status_code == 200
    assert parse_sse(response.text)[-1] == "[DONE]"
    assert fake.requests[0].headers["tracestate"] == "vendor=opaque"  # the caller's vendor state goes on too
    spans = spans_of(app, exporter)
    [server] = [s for s in spans if s.kind == SpanKind.SERVER]
    [forward] = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert not [s for s in spans if s.kind == SpanKind.INTERNAL]
    assert forward.parent.span_id == server.context.span_id
    assert format(forward.context.trace_id, "032x") == TRACE_ID
    # the upstream continues the trace under the CLIENT span
    assert traceparent_sent(fake, 0) == f"00-{TRACE_ID}-{forward.context.span_id:016x}-01"
    a = forward.attributes
    assert forward.name == "chat remote-name"
    assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.request.model"] == "remote-name"
    assert a["gen_ai.response.model"] == "remote-name"  # the upstream's name for it, not Rill's id ("up")
    assert a["server.address"] == "up.test" and a["server.port"] == 80
    assert a["gen_ai.request.max_tokens"] == 9 and a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.usage.input_tokens"] == USAGE["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == USAGE["completion_tokens"]
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.response.time_to_first_chunk"] >= 0


async def test_a_retried_upstream_is_a_failed_span_then_a_good_one(traced, fake, exporter):
    app, client = traced
    fake.script("up.test", status(503), streamed(chunk("ok", finish="stop"), chunk(choices=False, usage=USAGE)))
    response = await client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 200
    forwards = [s for s in spans_of(app, exporter) if s.kind == SpanKind.CLIENT]
    assert len(forwards) == 2
    failed, good = forwards
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "503"
    assert good.status.status_code != StatusCode.ERROR and "error.type" not in good.attributes
    # each try sent its own span as the parent
    assert traceparent_sent(fake, 0).split("-")[2] == f"{failed.context.span_id:016x}"
    assert traceparent_sent(fake, 1).split("-")[2] == f"{good.context.span_id:016x}"


async def test_a_fallback_to_the_local_model_is_an_internal_span(traced, fake, exporter):
    app, client = traced
    fake.script("up.test", status(503))
    response = await client.post("/v1/chat/completions", json={**BODY, "stream": False, "max_tokens": 3})
    assert response.status_code == 200
    spans = spans_of(app, exporter)
    assert [s.attributes["error.type"] for s in spans if s.kind == SpanKind.CLIENT] == ["503", "503"]
    [local] = [s for s in spans if s.kind == SpanKind.INTERNAL]
    assert local.name == f"chat {MODEL}" and local.attributes["gen_ai.provider.name"] == "rill"
    assert local.attributes["gen_ai.usage.output_tokens"] == response.json()["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("traced", [(upstream("up"),)], indirect=True)
async def test_the_responses_api_bridged_to_an_upstream_is_traced_the_same(traced, fake, exporter):
    app, client = traced
    fake.script("up.test", streamed(chunk("Hi", finish="stop"), chunk(choices=False, usage=USAGE)))
    response = await client.post("/v1/responses", json={"model": "up", "input": "hi"},
                                 headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200, response.text
    [forward] = [s for s in spans_of(app, exporter) if s.kind == SpanKind.CLIENT]
    assert traceparent_sent(fake, 0) == f"00-{TRACE_ID}-{forward.context.span_id:016x}-01"
    assert forward.attributes["gen_ai.usage.output_tokens"] == USAGE["completion_tokens"]


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", BODY),
    ("/v1/responses", {"model": "up", "input": "hi", "stream": True}),
])
async def test_without_export_the_callers_trace_headers_go_on_as_they_came(client, fake, path, body):
    """(The gateway conftest's app exports nothing.) A proxy that does not trace passes the
    caller's trace context on, so a traced upstream still joins the caller's trace; a malformed
    one, or none, sends nothing."""
    fake.script("up.test", streamed(chunk("Hi", finish="stop"), chunk(choices=False, usage=USAGE)))
    sent = {"traceparent": TRACEPARENT.upper(), "tracestate": "vendor=opaque"}
    assert (await client.post(path, json=body, headers=sent)).status_code == 200
    assert (await client.post(path, json=body, headers={"traceparent": "00-zz-1-01"})).status_code == 200
    assert (await client.post(path, json=body)).status_code == 200
    first, malformed, none = fake.requests
    assert first.headers["traceparent"] == TRACEPARENT and first.headers["tracestate"] == "vendor=opaque"
    assert "traceparent" not in malformed.headers and "traceparent" not in none.headers
    assert "tracestate" not in none.headers


@pytest.mark.parametrize("traced", [(upstream("up", retries=1),)], indirect=True)
async def test_when_every_try_fails_the_tries_are_the_failed_spans(traced, fake, exporter):
    app, client = traced
    fake.script("up.test", status(503))
    response = await client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 503
    spans = spans_of(app, exporter)
    assert [(s.kind, s.attributes["error.type"]) for s in spans if s.kind != SpanKind.SERVER] == [
        (SpanKind.CLIENT, "503"), (SpanKind.CLIENT, "503")]  # no third span stands for the request's end
    [server] = [s for s in spans if s.kind == SpanKind.SERVER]
    assert server.attributes["http.response.status_code"] == 503 and server.status.status_code == StatusCode.ERROR
