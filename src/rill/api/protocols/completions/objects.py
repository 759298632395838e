"""Core events -> `text_completion` objects: chunks of a stream, or the whole completion.

A request's prompts run as separate generations; the events of prompt p's choice i arrive as
(p, event). Choices are numbered prompt-major, as OpenAI does: prompt p's choices are
p*n .. p*n+n-1. With `best_of` > n each prompt generates best_of choices and the n with the
highest mean token logprob are returned, best first (never streamed: mapping.py refuses it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rill.api.core.events import Finish, OutEvent, PromptOut, ReasoningOut, TextOut, Usage
from rill.api.protocols.completions.logprobs import LegacyLogprobs, mean_logprob
from rill.api.protocols.completions.mapping import Options
from rill.engine.types import TokenLogprob

OBJECT = "text_completion"


def finish_reason(finish: Finish) -> str:
    """The legacy API knows `stop` (the model ended, or a stop string did) and `length`."""
    return "length" if finish.reason == "length" else "stop"


def usage_object(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


@dataclass(slots=True)
class _Choice:
    logprobs: LegacyLogprobs | None
    pieces: list[str] = field(default_factory=list)
    entries: list[TokenLogprob] = field(default_factory=list)  # for ranking (best_of)
    finish: Finish | None = None
    started: bool = False  # a stream sent its echo already

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class TextCompletion:
    """Builds one request's `text_completion` chunks and object. `echoes[p]`: prompt p's text as
    `echo` prepends it; `key`: a token id's text (top_logprobs' keys)."""

    def __init__(self, *, id: str, created: int, model: str, fingerprint: str, opts: Options,
                 echoes: Sequence[str], key: Callable[[int], str]):
        self.opts = opts
        self._base = {"id": id, "object": OBJECT, "created": created, "model": model,
                      "system_fingerprint": fingerprint}
        self._echoes = [text if opts.echo else "" for text in echoes]
        self._choices = [[self._new_choice(echo, key) for _ in range(opts.best_of)] for echo in self._echoes]
        self._usage: dict[int, Usage] = {}  # per prompt: its prompt tokens, completion tokens so far
        self.queue_seconds: float | None = None  # the longest wait of a prompt for the engine

    def _new_choice(self, echo: str, key: Callable[[int], str]) -> _Choice:
        lp = LegacyLogprobs(self.opts.logprobs, key) if self.opts.logprobs is not None else None
        if lp is not None and not self.opts.scores_prompt:  # else the prompt's tokens come with theirs
            lp.skip(echo)
        return _Choice(lp)

    # ---- streaming ------------------------------------------------------------------------

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        out = {**self._base, "choices": choices, **extra}
        if self.opts.include_usage and "usage" not in out:
            out["usage"] = None
        return out

    def _wire(self, prompt: int, index: int) -> int:
        return prompt * self.opts.n + index

    def event(self, prompt: int, event: OutEvent | Finish) -> list[dict[str, Any]]:
        """Record prompt p's event; the chunks a stream sends for it (none for events the legacy
        API has no place for: tool calls never happen without tools)."""
        if isinstance(event, PromptOut):  # before anything else: every choice's echo, with its logprobs
            return self._echo_scored(prompt, event)
        index = event.index
        choice = self._choices[prompt][index]
        out = []
        if not choice.started:
            choice.started = True
            if self._echoes[prompt]:
                out.append(self.chunk([self._choice_chunk(prompt, index, self._echoes[prompt], None)]))
        if isinstance(event, (TextOut, ReasoningOut)):
            # a raw prompt has no reasoning section: a thinking model's reasoning is text like any other
            logprobs = event.logprobs if isinstance(event, TextOut) else ()
            choice.pieces.append(event.text)
            choice.entries.extend(logprobs)
            lp = choice.logprobs.add(logprobs) if choice.logprobs is not None else None
            if event.text or logprobs:
                out.append(self.chunk([self._choice_chunk(prompt, index, event.text, lp)]))
        elif isinstance(event, Finish):
            choice.finish = event
            self._count(prompt, event.usage, event.queue_seconds)
            out.append(self.chunk([{"text": "", "index": self._wire(prompt, index), "logprobs": None,
                                    "finish_reason": finish_reason(event)}]))
        return out

    def _echo_scored(self, prompt: int, event: PromptOut) -> list[dict[str, Any]]:
        out = []
        for index, choice in enumerate(self._choices[prompt]):
            lp = choice.logprobs.add_prompt(event.entries) if choice.logprobs is not None else None
            if not choice.started:
                choice.started = True
                if self._echoes[prompt]:
                    out.append(self.chunk([self._choice_chunk(prompt, index, self._echoes[prompt], lp)]))
        return out

    def _choice_chunk(self, prompt: int, index: int, text: str, logprobs: dict[str, Any] | None) -> dict[str, Any]:
        return {"text": text, "index": self._wire(prompt, index), "logprobs": logprobs, "finish_reason": None}

    def _count(self, prompt: int, usage: Usage, queue_seconds: float = 0.0) -> None:
        self.queue_seconds = max(self.queue_seconds or 0.0, queue_seconds)
        seen = self._usage.get(prompt)
        self._usage[prompt] = Usage(usage.prompt_tokens, usage.completion_tokens + (seen.completion_tokens if seen else 0),
                                    usage.cached_tokens)

    def usage(self) -> dict[str, Any]:
        """Every prompt's tokens once, every generated choice's completion tokens (best_of's
        unreturned choices too: they were computed)."""
        counted = self._usage.values()
        return usage_object(sum(u.prompt_tokens for u in counted), sum(u.completion_tokens for u in counted),
                            sum(u.cached_tokens for u in counted))

    def usage_chunk(self) -> dict[str, Any]:
        return self.chunk([], usage=self.usage())

    # ---- the whole completion ---------------------------------------------------------------

    @property
    def num_choices(self) -> int:
        """The choices the answer returns: n per prompt."""
        return len(self._choices) * self.opts.n

    def returned(self, prompt: int) -> list[int]:
        """Prompt p's choices in the order they are returned: all of them, or with best_of > n
        the best n by mean token logprob (ties: the earlier choice)."""
        indexes = list(range(self.opts.best_of))
        if not self.opts.ranks:
            return indexes
        choices = self._choices[prompt]
        return sorted(indexes, key=lambda i: -mean_logprob(choices[i].entries))[: self.opts.n]

    def choice_objects(self) -> list[dict[str, Any]]:
        out = []
        for prompt, choices in enumerate(self._choices):
            for rank, index in enumerate(self.returned(prompt)):
                choice = choices[index]
                assert choice.finish is not None, "a completion is built once every choice has finished"
                out.append({"text": self._echoes[prompt] + choice.text, "index": self._wire(prompt, rank),
                            "logprobs": choice.logprobs.whole() if choice.logprobs is not None else None,
                            "finish_reason": finish_reason(choice.finish)})
        return out

    def completion(self) -> dict[str, Any]:
        return {**self._base, "choices": self.choice_objects(), "usage": self.usage()}

    def outcome(self) -> tuple[list[dict[str, Any]], dict[str, int] | None, list[str]]:
        """What the request's span records: the returned choices that finished, as assistant
        messages (what spans record whichever protocol served them), their finish reasons, and
        usage (None when no choice finished)."""
        messages, reasons = [], []
        for prompt, choices in enumerate(self._choices):
            if all(choice.finish is not None for choice in choices):
                order = self.returned(prompt)
            else:  # cut short: best_of's ranking is unknown
                order = [i for i, choice in enumerate(choices) if choice.finish is not None][: self.opts.n]
            for index in order:
                choice = choices[index]
                assert choice.finish is not None
                messages.append({"role": "assistant", "content": self._echoes[prompt] + choice.text})
                reasons.append(finish_reason(choice.finish))
        if not self._usage:
            return messages, None, reasons
        usage = self.usage()
        return messages, {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
                          "total_tokens": usage["total_tokens"],
                          "cached_tokens": usage["prompt_tokens_details"]["cached_tokens"]}, reasons
