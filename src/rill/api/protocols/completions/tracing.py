"""One span per legacy completions request, however many prompts it runs as. Each prompt's
generation reports its tokens' timing to the request's span through a PromptSpan (the first
token of any prompt is the request's time to first token); the outcome is recorded once, when
the answer ends however it ends, with the choices the client got (best_of's chosen ones), the
usage of every prompt and the error if any."""

from __future__ import annotations

from types import SimpleNamespace

from rill.api.core.tracing import ChatSpan
from rill.api.protocols.completions.objects import TextCompletion
from rill.engine.types import TextDelta


class PromptSpan:
    """What core/run.py's Generation times and ends, for one prompt of the request: timing goes
    to the request's span, the end is the request's to record (record())."""

    def __init__(self, span: ChatSpan):
        self._span = span
        # run.start names the model and its generation here; the request's span keeps the
        # request's own completion id, whichever prompt started last
        self.record = SimpleNamespace(model=None, completion_id=None)

    def attempt(self, model_id: str, remote_model: str | None = None, *, join: bool = False) -> None:
        self._span.attempt(model_id, remote_model, join=True)  # the prompts share one try

    def text(self, event: TextDelta) -> None:
        self._span.text(event)

    def end(self, *args: object, **kwargs: object) -> None:
        pass


def record(span: ChatSpan, completion: TextCompletion, error: str | None) -> None:
    messages, usage, reasons = completion.outcome()
    span.record_outcome(messages, usage, reasons, error=error, n=completion.num_choices,
                        queue_seconds=completion.queue_seconds)
