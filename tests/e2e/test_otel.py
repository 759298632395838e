"""OpenTelemetry end to end: real `rill serve` processes export over OTLP/HTTP to a loopback
receiver that decodes the protobuf as a collector would. A streamed request sent with the
caller's traceparent arrives as spans of the caller's trace; through a Rill gateway in front of
another Rill, both processes' spans join that one trace, the upstream's under the gateway's
CLIENT span; through a gateway that exports nothing, the upstream's spans are the caller's
children."""

from __future__ import annotations

from typing import Iterator

import openai
import pytest

from tests.e2e.support import CLIENT_TIMEOUT_S, MODEL, RillFactory
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.e2e

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
SERVER, CLIENT, INTERNAL = 2, 3, 1  # opentelemetry.proto's SpanKind numbers


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


def stream_once(url: str, model: str) -> str:
    with openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=CLIENT_TIMEOUT_S) as client:
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=6, temperature=0,
            stream=True, stream_options={"include_usage": True}, extra_headers={"traceparent": TRACEPARENT})
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def of_trace(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == TRACE_ID]


def test_a_streamed_completion_arrives_in_the_callers_trace(rill_factory: RillFactory, receiver: OtlpReceiver,
                                                           monkeypatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "rill-e2e")
    server = rill_factory("--otlp-endpoint", receiver.endpoint, "--otlp-capture-content", cached=False)
    text = stream_once(server.url, MODEL)
    spans = of_trace(receiver.wait_for(lambda got: len(of_trace(got)) >= 2))
    [http] = [s for s in spans if s.kind == SERVER]
    [genai] = [s for s in spans if s.kind == INTERNAL]
    assert http.parent_span_id == CALLER_SPAN and genai.parent_span_id == http.span_id
    assert http.name == "POST /v1/chat/completions" and http.attributes["http.response.status_code"] == 200
    assert genai.name == f"chat {MODEL}"
    assert genai.resource["service.name"] == "rill-e2e"
    a = genai.attributes
    assert a["gen_ai.provider.name"] == "rill" and a["gen_ai.request.stream"] is True
    assert a["gen_ai.usage.output_tokens"] == 6 and a["gen_ai.usage.input_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] == ["length"]
    assert a["gen_ai.response.time_to_first_chunk"] > 0
    assert text and text in a["gen_ai.output.messages"]  # captured: the flag is on
    assert receiver.content_types == {"application/x-protobuf"}
    server.stop()


def test_a_gateway_and_its_upstream_join_one_trace(rill_factory: RillFactory, receiver: OtlpReceiver,
                                                   tmp_path) -> None:
    upstream = rill_factory("--otlp-endpoint", receiver.endpoint, cached=False)
    config = tmp_path / "rill.toml"
    config.write_text(f"""
[[models]]
name = "remote"
base_url = "{upstream.url}/v1"
model = "{MODEL}"
""")
    gateway = rill_factory("--config", str(config), "--otlp-endpoint", receiver.endpoint, cached=False)
    before = {s.span_id for s in receiver.spans}
    assert stream_once(gateway.url, "remote")
    spans = [s for s in of_trace(receiver.wait_for(
        lambda got: len([s for s in of_trace(got) if s.span_id not in before]) >= 4)) if s.span_id not in before]
    by_kind = {kind: [s for s in spans if s.kind == kind] for kind in (SERVER, CLIENT, INTERNAL)}
    gateway_http, upstream_http = sorted(by_kind[SERVER], key=lambda s: s.parent_span_id != CALLER_SPAN)
    [forward] = by_kind[CLIENT]
    [generation] = by_kind[INTERNAL]
    # caller -> gateway SERVER -> CLIENT (the forward) -> upstream SERVER -> INTERNAL (the model)
    assert gateway_http.parent_span_id == CALLER_SPAN
    assert forward.parent_span_id == gateway_http.span_id
    assert upstream_http.parent_span_id == forward.span_id
    assert generation.parent_span_id == upstream_http.span_id
    assert forward.name == f"chat {MODEL}" and forward.attributes["gen_ai.provider.name"] == "openai"
    assert forward.attributes["server.address"] == "127.0.0.1"
    assert forward.attributes["server.port"] == int(upstream.url.rsplit(":", 1)[1])
    assert forward.attributes["gen_ai.usage.output_tokens"] == generation.attributes["gen_ai.usage.output_tokens"] == 6
    assert "gen_ai.input.messages" not in forward.attributes  # content stays off unless opted in
    gateway.stop()

    # a gateway that exports nothing passes the caller's trace context on as it came
    quiet = rill_factory("--config", str(config), cached=False)
    before = {s.span_id for s in receiver.spans}
    assert stream_once(quiet.url, "remote")
    spans = [s for s in of_trace(receiver.wait_for(
        lambda got: len([s for s in of_trace(got) if s.span_id not in before]) >= 2)) if s.span_id not in before]
    [upstream_http] = [s for s in spans if s.kind == SERVER]
    assert upstream_http.parent_span_id == CALLER_SPAN  # the upstream's span is the caller's child
    quiet.stop()
    upstream.stop()
