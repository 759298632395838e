"""OpenTelemetry settings (flags and OTEL_* variables), the counted batch processor (never blocks,
counts what it loses), and the GenAI attribute mapping."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from rill.errors import ConfigError
from rill.telemetry import genai
from rill.telemetry.export import CountedBatchProcessor
from rill.telemetry.settings import otel_config


# ---- settings --------------------------------------------------------------------------------

def test_no_endpoint_no_export():
    assert otel_config(None, False, {}) is None


@pytest.mark.parametrize("flag, env, endpoint", [
    ("http://collector:4318", {}, "http://collector:4318/v1/traces"),
    ("http://collector:4318/v1/traces", {}, "http://collector:4318/v1/traces"),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces"),
    # the signal's own variable is the full URL, taken as given
    (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c/api/public/otel/v1/traces",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:4318"}, "https://c/api/public/otel/v1/traces"),
    ("http://flag:4318", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318"}, "http://flag:4318/v1/traces"),
])
def test_the_endpoint_from_the_flag_or_the_standard_variables(flag, env, endpoint):
    config = otel_config(flag, False, env)
    assert config is not None and config.endpoint == endpoint and not config.capture_content


@pytest.mark.parametrize("env", [{"OTEL_SDK_DISABLED": "true"}, {"OTEL_TRACES_EXPORTER": "none"}])
def test_the_standard_switches_turn_export_off(env):
    assert otel_config("http://c:4318", False, env) is None


def test_content_capture_by_flag_or_the_conventions_variable():
    assert otel_config("http://c:4318", True, {}).capture_content
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    assert otel_config("http://c:4318", False, env).capture_content
    with pytest.raises(ConfigError, match="needs an endpoint"):
        otel_config(None, True, {})


@pytest.mark.parametrize("flag, env, message", [
    ("collector:4318", {}, "must be an http:// or https:// URL"),
    ("http://c:4317", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTLP/HTTP with protobuf only"),
])
def test_unusable_settings_are_refused_at_start_up(flag, env, message):
    with pytest.raises(ConfigError, match=message):
        otel_config(flag, False, env)


def test_without_the_extra_the_endpoint_is_refused_with_the_install_command(monkeypatch):
    monkeypatch.setattr("rill.telemetry.settings._importable", lambda module: False)
    with pytest.raises(ConfigError, match=r"pip install 'rill-server\[otel\]'"):
        otel_config("http://c:4318", False, {})


def test_rill_serve_loads_no_opentelemetry_sdk_without_an_endpoint():
    """(FastAPI imports OpenTelemetry's API package itself where it is installed.)"""
    code = ("import sys, rill.cli, rill.api.app, rill.api.core.tracing, rill.backends.upstream; "
            "from rill.cli import build_parser, config_from_args; "
            "config_from_args(build_parser().parse_args(['serve'])); "
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter', "
            "'rill.telemetry.tracer', 'rill.telemetry.server'))))")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---- the counted batch processor --------------------------------------------------------------

class BlockedExporter(SpanExporter):
    """Holds each export until released; fails them when told to."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS):
        self.release = threading.Event()
        self.started = threading.Event()
        self.result = result
        self.batches: list[int] = []

    def export(self, spans):
        self.started.set()
        self.release.wait(10)
        self.batches.append(len(spans))
        return self.result

    def shutdown(self):
        self.release.set()


def ended_spans(processor: CountedBatchProcessor, count: int) -> None:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for i in range(count):
        tracer.start_span(f"s{i}").end()


def test_a_stuck_collector_never_blocks_and_what_overflows_is_counted():
    exporter = BlockedExporter()
    processor = CountedBatchProcessor(exporter, max_queue=4, max_batch=2, delay_s=0.01)
    ended_spans(processor, 1)
    assert exporter.started.wait(5)  # the thread holds one span in a stuck export
    ended_spans(processor, 6)  # returns at once although the collector answers nothing
    assert processor.queued == 4 and processor.dropped_queue_full == 2
    exporter.release.set()
    assert processor.force_flush(5_000)
    assert processor.exported == 5 and processor.queued == 0
    processor.shutdown()


def test_spans_the_collector_refuses_are_counted_as_lost():
    exporter = BlockedExporter(SpanExportResult.FAILURE)
    exporter.release.set()
    processor = CountedBatchProcessor(exporter, max_batch=10, delay_s=0.01)
    ended_spans(processor, 3)
    assert processor.force_flush(5_000)
    assert processor.dropped_export_failed == 3 and processor.exported == 0
    processor.shutdown()


def test_shutdown_exports_what_is_queued():
    exporter = BlockedExporter()
    exporter.release.set()
    processor = CountedBatchProcessor(exporter, max_batch=100, delay_s=60)  # no timed export before shutdown
    ended_spans(processor, 3)
    processor.shutdown()
    assert sum(exporter.batches) == 3 and processor.exported == 3


# ---- the GenAI mapping -----------------------------------------------------------------------

def test_request_attributes_by_protocol():
    assert genai.request_attributes("chat.completion", {"max_completion_tokens": 5, "max_tokens": 9, "n": 2,
                                                        "stop": "x", "response_format": {"type": "json_object"},
                                                        "frequency_penalty": 0.5, "stream": True}) == {
        "gen_ai.request.max_tokens": 5, "gen_ai.request.choice.count": 2, "gen_ai.request.stop_sequences": ["x"],
        "gen_ai.output.type": "json", "gen_ai.request.frequency_penalty": 0.5, "gen_ai.request.stream": True}
    assert genai.request_attributes("messages", {"max_tokens": 7, "stop_sequences": ["a"], "top_k": 3}) == {
        "gen_ai.request.max_tokens": 7, "gen_ai.request.stop_sequences": ["a"], "gen_ai.request.top_k": 3.0}
    assert genai.request_attributes("responses", {"max_output_tokens": 4, "stream": False,
                                                  "text": {"format": {"type": "json_schema"}}}) == {
        "gen_ai.request.max_tokens": 4, "gen_ai.output.type": "json"}
    assert genai.request_attributes("chat.completion", {"temperature": True, "seed": "7"}) == {}  # not numbers


def test_usage_counts_cached_tokens_in_the_input_and_apart():
    assert genai.usage_attributes({"prompt_tokens": 10, "completion_tokens": 4, "cached_tokens": 6,
                                   "reasoning_tokens": 0}) == {
        "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 4, "gen_ai.usage.cache_read.input_tokens": 6}


def test_messages_api_content_in_parts():
    history = [{"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
               {"role": "user", "content": "Weather?"},
               {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm"},
                                                 {"type": "tool_use", "id": "tu_1", "name": "w", "input": {"c": "P"}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "rain"},
                                            {"type": "image", "source": {"data": "..."}}]}]
    tools = [{"name": "w", "description": "weather", "input_schema": {"type": "object"}}]
    out = genai.content_attributes("messages", history, {"tools": tools})
    assert json.loads(out["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be terse."}]
    assert json.loads(out["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather?"}]},
        {"role": "assistant", "parts": [{"type": "reasoning", "content": "hmm"},
                                        {"type": "tool_call", "id": "tu_1", "name": "w", "arguments": {"c": "P"}}]},
        {"role": "user", "parts": [{"type": "tool_call_response", "id": "tu_1", "response": "rain"},
                                   {"type": "image"}]}]
    assert json.loads(out["gen_ai.tool.definitions"]) == [
        {"type": "function", "name": "w", "description": "weather", "parameters": {"type": "object"}}]


def test_responses_items_and_a_relayed_answer_in_parts():
    history = [{"role": "system", "content": "Be terse."},
               {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
               {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\": 1}"},
               {"type": "function_call_output", "call_id": "c1", "output": "done"}]
    out = genai.content_attributes("responses", history, {})
    assert json.loads(out["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {"a": 1}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "done"}]}]
    answer = {"object": "response", "output": [{"type": "reasoning", "summary": []},
                                               {"type": "message", "role": "assistant",
                                                "content": [{"type": "output_text", "text": "Hello"}]}]}
    assert json.loads(genai.output_attributes(answer, ["stop"])["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello"}], "finish_reason": "stop"}]
