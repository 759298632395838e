"""Running a GenerationRequest on a local model, for any protocol: plan it off the event loop,
submit it, and yield the core's events (core/events.py) while timing its span. Every error that
can be known before the first byte is raised by start(); later ones are a Failure event."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator

from starlette.requests import Request

from rill.api.core import plan as planning
from rill.api.core.events import Failure, Finish, OutEvent, PromptOut, Usage
from rill.api.core.output import ChoiceOutput, ToolCallOutput
from rill.api.core.plan import Plan, plan_generation
from rill.api.core.request import GenerationRequest
from rill.api.core.tracing import CLIENT_LEFT, ChatSpan, new_span_id
from rill.api.http.auth import owner_of
from rill.api.http.offload import off_loop
from rill.api.http.response import KEEPALIVE_SECONDS
from rill.engine.engine import RequestStream
from rill.engine.types import Failed, Finished, PromptLogprobs, TextDelta
from rill.errors import EngineError, EngineUnavailable, RillError, ShuttingDown
from rill.router import LocalModel
from rill.store.span_record import SpanRecord

__all__ = ["CLIENT_LEFT"]  # defined with the spans it marks (tracing.py); protocols import it from here

Event = OutEvent | Finish | Failure | None  # None: KEEPALIVE_SECONDS passed without an event


def failure(event: Failed) -> RillError:
    if event.unavailable:  # the engine stalled or died: 503, as a new request would get
        return EngineUnavailable(event.message)
    return ShuttingDown(event.message) if event.shutting_down else EngineError(event.message)


async def next_event(stream: RequestStream) -> Any:
    """The engine's next event, or None after KEEPALIVE_SECONDS without one."""
    try:
        async with asyncio.timeout(KEEPALIVE_SECONDS):
            return await anext(stream)
    except TimeoutError:
        return None


def outputs_for(plan: Plan) -> list[ChoiceOutput]:
    """One output per choice: plain text, or, with tools offered, text and calls."""
    kind = ChoiceOutput if plan.tools is None else ToolCallOutput
    return [kind(i) for i in range(plan.request.n)]


def usage_of(event: Finished) -> Usage:
    return Usage(event.num_prompt_tokens, event.num_completion_tokens, event.num_cached_prompt_tokens,
                 event.num_reasoning_tokens, event.num_accepted_prediction_tokens,
                 event.num_rejected_prediction_tokens)


class Generation:
    """A submitted request: its plan and, once, its events."""

    def __init__(self, plan: Plan, stream: RequestStream, span: ChatSpan):
        self.plan, self._stream, self._span = plan, stream, span
        self.outputs = outputs_for(plan)
        self._started = False

    def close(self) -> None:
        """Abort a request whose events were never read (the client left first) and record its
        span; once events() has started, its own `finally` does both. Idempotent."""
        if not self._started:
            self._started = True
            self._stream.close()
            self._span.end(self.outputs, [], CLIENT_LEFT)

    @property
    def id(self) -> str:
        return self.plan.id

    @property
    def model(self) -> LocalModel:
        return self.plan.model

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.plan.request.prompt_tokens)

    async def events(self) -> AsyncIterator[Event]:
        """Per-choice events in order, ending after the last choice's Finish (or one Failure).
        Closing the iterator early aborts the engine request; either way the span is recorded."""
        if self._started:
            raise RuntimeError("a generation's events are read once")
        self._started = True
        finished: list[Finished] = []
        error: str | None = CLIENT_LEFT
        try:
            while True:
                event = await next_event(self._stream)
                if event is None:
                    yield None
                elif isinstance(event, TextDelta):
                    self._span.text(event)
                    output = self.outputs[event.index]
                    if event.reasoning:
                        for out in output.reason(event.reasoning):
                            yield out
                    if event.text:
                        for out in output.feed(event.text, event.logprobs):
                            yield out
                elif isinstance(event, PromptLogprobs):
                    yield PromptOut(event.entries)
                elif isinstance(event, Finished):
                    output = self.outputs[event.index]
                    for out in output.finish():
                        yield out
                    finished.append(event)
                    if len(finished) == len(self.outputs):
                        error = None
                    yield Finish(event.index, output.finish_reason(event), usage_of(event), event.stop_sequence,
                                 event.queue_seconds)
                    if error is None:
                        return
                else:
                    assert isinstance(event, Failed)
                    error = event.message
                    yield Failure(failure(event))
                    return
        finally:
            self._stream.close()
            self._span.end(self.outputs, finished, error)


async def start(request: Request, gen: GenerationRequest, model: LocalModel, span: ChatSpan) -> Generation:
    """Plan (rendering, tokenizing and compiling a grammar take milliseconds to a second: off the
    event loop, stopped if the client leaves meanwhile) and submit; every error before the first
    byte is raised here."""
    span.attempt(model.id, join=True)
    plan = await off_loop(request, lambda cancelled: plan_generation(gen, model, cancelled=cancelled))
    stream = model.engine.submit(plan.request)
    span.record.model, span.record.completion_id = model.id, plan.id
    return Generation(plan, stream, span)


async def count_tokens(request: Request, gen: GenerationRequest, model: LocalModel) -> int:
    """The exact prompt tokens the request would send the model, template and tools included."""
    return await off_loop(request, lambda cancelled: planning.count_tokens(gen, model, cancelled))


def open_span(request: Request, *, protocol: str, model_id: str, input: Any, params: dict[str, Any],
              user: str | None = None, tags: dict[str, Any] | None = None) -> ChatSpan:
    """The span that records one request, whichever protocol: its type is the protocol, `input`
    what the client sent as the conversation, `params` its other fields."""
    return ChatSpan.for_request(request, SpanRecord(
        id=new_span_id(), trace_id=new_span_id(), owner=owner_of(request), name=protocol, type=protocol,
        start_time=time.time(), model=model_id, user=user, input=input, tags=tags or {},
        meta={"protocol": protocol, "params": params}))
