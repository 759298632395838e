"""Rill's OpenTelemetry tracer: the provider and exporter (Telemetry), and one completion's GenAI
spans (CompletionTrace). A completion is one span per try: INTERNAL when a local model answers,
CLIENT for each call to an upstream (whose `traceparent` names that span), each a child of the
request's SERVER span (server.py). Imported only when an endpoint is configured."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from rill import __version__
from rill.telemetry import genai
from rill.telemetry.export import CountedBatchProcessor
from rill.telemetry.propagation import CURRENT_FORWARD
from rill.telemetry.settings import OtelConfig

PROVIDER_LOCAL = "rill"  # a model Rill runs itself (a custom gen_ai.provider.name, as the conventions allow)
CANCELLED = "cancelled"  # error.type of an answer the client left before it ended
PROPAGATOR = TraceContextTextMapPropagator()


class Telemetry:
    def __init__(self, config: OtelConfig, exporter: SpanExporter | None = None):
        """`exporter`: OTLP/HTTP to config.endpoint unless given (tests pass an in-memory one)."""
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=config.endpoint)  # headers: OTEL_EXPORTER_OTLP_HEADERS
        self.config = config
        self.processor = CountedBatchProcessor(exporter)
        self.provider = TracerProvider(resource=_resource())
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("rill", __version__)

    def completion(self, protocol: str | None, params: dict[str, Any], conversation: Any) -> CompletionTrace:
        """The spans of one completion, children of the current context (the SERVER span)."""
        return CompletionTrace(self, otel_context.get_current(), protocol, params, conversation)

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes the queue first


def _resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES as the SDK reads them; `rill` where neither names the service."""
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "rill"}))
    return resource


class _Forward:
    """The traceparent an upstream call sends; where it went, noted on the span."""

    def __init__(self, span: Span):
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        self.headers = [(k.encode(), v.encode()) for k, v in carrier.items()]
        self._span = span

    def sent_to(self, host: str, port: int) -> None:
        self._span.set_attribute("server.address", host)
        self._span.set_attribute("server.port", port)


class CompletionTrace:
    def __init__(self, telemetry: Telemetry, parent: otel_context.Context, protocol: str | None,
                 params: dict[str, Any], conversation: Any):
        self._telemetry, self._parent, self.protocol = telemetry, parent, protocol
        self.operation = genai.operation(protocol)
        self._request = genai.request_attributes(protocol, params)
        self._content = genai.content_attributes(protocol, conversation, params) if telemetry.config.capture_content else {}
        self._span: Span | None = None
        self._tries = 0
        self._model = ""
        self._started = 0.0
        self._first_chunk: float | None = None

    def attempt(self, model_id: str, *, upstream: str | None = None) -> None:
        """A try begins on `model_id`: a local model, or an upstream whose own name for the model
        is `upstream`; the span a failed earlier try left open ends as failed."""
        if self._span is not None:
            self.failed("_OTHER", "another try replaced it")
        requested = upstream or model_id
        attributes: dict[str, Any] = {"gen_ai.operation.name": self.operation,
                                      "gen_ai.provider.name": "openai" if upstream else PROVIDER_LOCAL,
                                      "gen_ai.request.model": requested, **self._request, **self._content}
        if upstream and self.protocol == "messages":
            attributes["gen_ai.provider.name"] = "anthropic"  # the Messages API passed through as it is
        self._span = span = self._telemetry.tracer.start_span(
            f"{self.operation} {requested}", context=self._parent,
            kind=SpanKind.CLIENT if upstream else SpanKind.INTERNAL, attributes=attributes)
        self._started, self._first_chunk = time.monotonic(), None
        self._tries += 1
        self._model = requested  # the model this try asked for, by the name its server knows it
        if upstream:
            CURRENT_FORWARD.set(_Forward(span))

    @property
    def trying(self) -> bool:
        """A try's span is open."""
        return self._span is not None

    def first_chunk(self) -> None:
        if self._first_chunk is None and self._span is not None:
            self._first_chunk = time.monotonic()

    def failed(self, error_type: str, message: str) -> None:
        """The current try failed before answering (a status code, or an error's class)."""
        span = self._span
        if span is None:
            return
        self._span = None
        CURRENT_FORWARD.set(None)
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, message))
        span.end()

    def end(self, *, model: str | None, response_id: str | None, usage: dict[str, Any] | None,
            finish_reasons: list[str], output: Any, error: str | None, error_type: str | None,
            rill: dict[str, Any]) -> None:
        """The answer ended. With no try open: after failed tries (each a failed span already)
        nothing more; with none made, a span for the request's model records why."""
        if self._span is None:
            if self._tries:
                return
            self.attempt(model or "unknown")
        span = self._span
        assert span is not None
        self._span = None
        CURRENT_FORWARD.set(None)
        attributes: dict[str, Any] = {**genai.usage_attributes(usage), **rill}
        if not self._telemetry.config.capture_content:
            attributes.pop("rill.user", None)  # an end user's id: personal data, opted in with the content
        if self._model:  # the local model's id, or the upstream's name for its model
            attributes["gen_ai.response.model"] = self._model
        if response_id:
            attributes["gen_ai.response.id"] = response_id
        if finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = finish_reasons
        if self._first_chunk is not None and self._request.get("gen_ai.request.stream"):
            attributes["gen_ai.response.time_to_first_chunk"] = round(self._first_chunk - self._started, 6)
        if self._content and output is not None:
            attributes.update(genai.output_attributes(output, finish_reasons))
        if error is not None:
            attributes["error.type"] = error_type or "_OTHER"
            span.set_status(Status(StatusCode.ERROR, error))
        span.set_attributes(attributes)
        span.end()
