"""Every chat completion is a span: ChatSpan times the request as its events pass (first token,
inter-token gaps, queue wait from the engine) and, when the response ends however it ends,
hands the span to the background writer and the numbers to the request metrics. Where spans are
exported to OpenTelemetry, it also drives the completion's GenAI spans (rill.telemetry): one per
try on a model, ended with the answer."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from fastapi import Request

from rill.api.http.auth import owner_of, scope_of
from rill.api.core.output import ChoiceOutput, chat_finish_reason, chat_message
from rill.engine.types import Finished, TextDelta
from rill.errors import InvalidRequest
from rill.store.spans import SpanPlace, SpanRecord, SpanStore
from rill.store.writer import SpanWriter
from rill.telemetry.genai import rill_attributes
from rill.telemetry.propagation import begin_request

if TYPE_CHECKING:
    from rill.telemetry.tracer import Telemetry

SPAN_TYPE = "chat.completion"
CLIENT_LEFT = "cancelled: the client disconnected"  # a span's error when the answer was cut short


class TokenMetrics(Protocol):
    def observe_first_token(self, model: str, seconds: float) -> None: ...
    def observe_inter_token(self, model: str, seconds: float, count: int = 1) -> None: ...
    def observe_tokens(self, model: str, prompt: int, completion: int) -> None: ...
    def observe_request_duration(self, model: str, seconds: float) -> None: ...


def new_span_id() -> str:
    return str(uuid.uuid4())


async def find_parent(request: Request, parent_id: str, param: str) -> SpanPlace:
    """Where the span to nest under is: one of this key's spans (an admin's: any key's, its own
    first where keys share the id), written or still queued; otherwise a 400 naming `param`."""
    scope = scope_of(request)
    writer: SpanWriter = request.app.state.span_writer
    queued = writer.pending(parent_id)
    if queued is not None and (scope is None or queued.owner == scope):
        return SpanPlace(queued.id, queued.trace_id, queued.trace_of())
    spans: SpanStore = request.app.state.spans
    found = await spans.locate(scope, parent_id, own=owner_of(request))
    if found is None:
        raise InvalidRequest(f"`{param}`: no span '{parent_id}' found for this API key.", param=param)
    return found


async def nest(request: Request, record: SpanRecord, parent_id: str, param: str) -> None:
    """Put `record` under the span `parent_id` names: in its trace, which may be another key's
    when an admin key nests it."""
    parent = await find_parent(request, parent_id, param)
    record.parent_id, record.trace_id, record.trace_owner = parent.span_id, parent.trace_id, parent.trace_owner


class ChatSpan:
    def __init__(self, writer: SpanWriter, metrics: TokenMetrics | None, record: SpanRecord, *,
                 started: float | None = None, telemetry: Telemetry | None = None):
        """`started`: when the request arrived (time.monotonic()); record.start_time is the
        same moment in wall-clock time. `telemetry`: the OpenTelemetry export, if configured."""
        self.record = record
        params = (record.meta or {}).get("params") or {}
        self.otel = telemetry.completion(record.type, params, record.input) if telemetry is not None else None
        self._writer = writer
        self._metrics = metrics
        self._started = time.monotonic() if started is None else started
        self._first_token: float | None = None
        self._last_token = 0.0
        self._ended = False

    @classmethod
    def for_request(cls, request: Request, record: SpanRecord, *, started: float | None = None) -> ChatSpan:
        """The span of the generation `request` asks for, wired to the app's writer, metrics and
        OpenTelemetry export; the trace context its upstream calls will carry is set here too."""
        state = request.app.state
        telemetry = getattr(state, "telemetry", None)
        begin_request(request.headers, exporting=telemetry is not None)
        return cls(state.span_writer, getattr(state, "metrics", None), record, started=started, telemetry=telemetry)

    @property
    def headers(self) -> dict[str, str]:
        return {"x-rill-span-id": self.record.id, "x-rill-trace-id": self.record.trace_id}

    def attempt(self, model_id: str, remote_model: str | None = None, *, join: bool = False) -> None:
        """A try on model `model_id` begins: a local model, or an upstream that calls it
        `remote_model` (whose call then carries this try's traceparent). `join`: unless one is
        under way already (chat's local path begins it before run.start)."""
        self.record.model = model_id
        if self.otel is not None and not (join and self.otel.trying):
            self.otel.attempt(model_id, upstream=remote_model)

    def attempt_failed(self, model_id: str, status: int, message: str) -> None:
        """The current try, on `model_id`, failed before its first byte; another may follow. The
        span keeps each failed try in meta["attempts"]."""
        meta = self.record.meta if self.record.meta is not None else {}
        meta.setdefault("attempts", []).append({"model": model_id, "status": status, "error": message})
        self.record.meta = meta
        if self.otel is not None:
            self.otel.failed(str(status), message)

    def text(self, event: TextDelta) -> None:
        """Called for each delta as it is sent (see tokens())."""
        self.tokens(event.num_tokens)

    def tokens(self, count: int) -> None:
        """`count` tokens were just sent: the first call is the time to first token, later ones
        spread their gap over the tokens they carry."""
        now = time.monotonic()
        model = self.record.model or ""
        if self._first_token is None:
            self._first_token = now
            if self.otel is not None:
                self.otel.first_chunk()
            if self._metrics is not None:
                self._metrics.observe_first_token(model, now - self._started)
        elif self._metrics is not None and count > 0:
            self._metrics.observe_inter_token(model, (now - self._last_token) / count, count)
        self._last_token = now

    def end(self, outputs: Sequence[ChoiceOutput], finished: list[Finished], error: str | None = None,
            audio: Sequence[dict[str, Any] | None] | None = None, *, legacy: bool = False) -> None:
        """Record a local answer's span: what was generated as Chat Completions messages (with
        audio output, the audio's id and transcript; `legacy`: a call as `function_call`), usage,
        timings, the error if any."""
        done = {event.index for event in finished}
        messages = [{"role": "assistant", **chat_message(output, legacy), **({"audio": audio[i]} if audio and audio[i] else {})}
                    for i, output in enumerate(outputs) if i in done]
        usage = reasons = None
        if finished:
            prompt = finished[0].num_prompt_tokens
            completion = sum(event.num_completion_tokens for event in finished)
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                     "cached_tokens": finished[0].num_cached_prompt_tokens}
            reasons = [chat_finish_reason(outputs[e.index].finish_reason(e), legacy) for e in sorted(finished, key=lambda e: e.index)]
        details = {"reasoning_tokens": sum(e.num_reasoning_tokens for e in finished),
                   "accepted_prediction_tokens": sum(e.num_accepted_prediction_tokens for e in finished),
                   "rejected_prediction_tokens": sum(e.num_rejected_prediction_tokens for e in finished)}
        self.record_outcome(messages, usage, reasons, error=error, n=len(outputs),
                            queue_seconds=max((e.queue_seconds for e in finished), default=None), details=details)

    def record_outcome(self, messages: list[dict[str, Any]], usage: dict[str, int] | None,
                       finish_reasons: list[str] | None, *, error: str | None, n: int = 1,
                       queue_seconds: float | None = None, details: dict[str, int] | None = None) -> None:
        """Record the span (once): the output messages (one per choice that finished), usage
        ({prompt_tokens, completion_tokens, total_tokens, cached_tokens}), finish reasons.
        `details` (reasoning_tokens, accepted_ and rejected_prediction_tokens) go to the
        OpenTelemetry span only."""
        if self._ended:
            return
        self._ended = True
        now = time.monotonic()
        record = self.record
        record.end_time = record.start_time + (now - self._started)
        record.error = error
        record.output = messages[0] if n == 1 and messages else messages or None
        completion = 0
        if usage is not None:
            record.usage = usage
            record.total_tokens = usage["total_tokens"]
            completion = usage["completion_tokens"]
            if self._metrics is not None:
                self._metrics.observe_tokens(record.model or "", usage["prompt_tokens"], completion)
        if finish_reasons:
            record.finish_reason = finish_reasons[0] if len(set(finish_reasons)) == 1 else ",".join(finish_reasons)
        record.timings = self._timings(now, completion, len(finish_reasons or ()), queue_seconds)
        if self._metrics is not None:
            self._metrics.observe_request_duration(record.model or "", now - self._started)
        if self.otel is not None:
            self._export(finish_reasons or [], error, details or {})
        self._writer.submit(record)

    def _export(self, finish_reasons: list[str], error: str | None, details: dict[str, int]) -> None:
        record = self.record
        assert self.otel is not None
        usage = {**(record.usage or {}), "reasoning_tokens": details.get("reasoning_tokens", 0)}
        timings = record.timings or {}
        extra = {"rill.parent_span_id": record.parent_id, "rill.user": record.user,
                 "rill.queue_ms": timings.get("queue_ms"), "rill.ttft_ms": timings.get("ttft_ms"),
                 "rill.usage.cached_tokens": (record.usage or {}).get("cached_tokens"),
                 "rill.prediction.accepted_tokens": details.get("accepted_prediction_tokens"),
                 "rill.prediction.rejected_tokens": details.get("rejected_prediction_tokens")}
        self.otel.end(model=record.model, response_id=record.completion_id, usage=usage,
                      finish_reasons=finish_reasons, output=record.output, error=error,
                      error_type="cancelled" if error == CLIENT_LEFT else None,
                      rill=rill_attributes(record.id, record.trace_id, record.type, record.tags, extra))

    def _timings(self, now: float, completion: int, choices: int, queue_seconds: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {"total_ms": round((now - self._started) * 1000, 3)}
        if queue_seconds is not None:
            out["queue_ms"] = round(queue_seconds * 1000, 3)
        if self._first_token is not None:
            out["ttft_ms"] = round((self._first_token - self._started) * 1000, 3)
            decoding = now - self._first_token
            after_first = completion - choices  # each choice's first token came before
            if decoding > 0 and after_first > 0:
                out["tokens_per_second"] = round(after_first / decoding, 2)
        return out

