"""Engine events -> OpenAI objects: `chat.completion.chunk`s for a stream, one `chat.completion`
otherwise. Plain dicts serialised with orjson; no per-chunk pydantic work on the way out."""

from __future__ import annotations

import random
import string
from typing import Any, Sequence

from rill.api.core.output import ChoiceOutput, chat_message
from rill.api.protocols.chat import deltas
from rill.api.core.plan import Plan
from rill.engine.types import Finished, TokenLogprob
from rill.search.context import citations

_OBFUSCATION_ALPHABET = string.ascii_letters + string.digits


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, *,
          accepted_prediction_tokens: int = 0, rejected_prediction_tokens: int = 0,
          reasoning_tokens: int = 0, audio_tokens: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens, "audio_tokens": audio_tokens,
            "accepted_prediction_tokens": accepted_prediction_tokens,
            "rejected_prediction_tokens": rejected_prediction_tokens,
        },
    }


class ChunkBuilder:
    """Builds the chunks of one streamed completion; every chunk shares id, created and model."""

    def __init__(self, plan: Plan):
        self._plan = plan
        self._rand = random.Random()
        self._base = {
            "id": plan.id,
            "object": "chat.completion.chunk",
            "created": plan.created,
            "model": plan.model.id,
            "system_fingerprint": plan.model.info.fingerprint,
            "service_tier": plan.service_tier,
        }

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk = {**self._base, "choices": choices, **extra}
        if self._plan.include_usage and "usage" not in chunk:
            chunk["usage"] = None
        return chunk

    def role(self, index: int = 0) -> dict[str, Any]:
        return self._chunk([{"index": index, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])

    def content(self, text: str, index: int = 0, logprobs: tuple[TokenLogprob, ...] = ()) -> dict[str, Any]:
        return self.delta({"content": text}, index, logprobs)

    def delta(self, delta: dict[str, Any], index: int = 0, logprobs: tuple[TokenLogprob, ...] = ()) -> dict[str, Any]:
        """A chunk of content or of tool-call fragments; logprobs only ever come with content."""
        chunk = self._chunk([{"index": index, "delta": delta,
                              "logprobs": logprobs_object(self._plan, logprobs) if "content" in delta else None,
                              "finish_reason": None}])
        if self._plan.include_obfuscation:
            # random-length padding so chunk sizes do not reveal token lengths (OpenAI's field)
            chunk["obfuscation"] = "".join(self._rand.choices(_OBFUSCATION_ALPHABET, k=self._rand.randint(1, 24)))
        return chunk

    def finish(self, event: Finished, reason: str | None = None) -> dict[str, Any]:
        """The choice's last chunk; `reason` overrides the engine's (`tool_calls`, ...)."""
        return self._chunk([{"index": event.index, "delta": {}, "logprobs": None,
                             "finish_reason": reason or event.reason.value}])

    def usage(self, finished: list[Finished], audio_tokens: int = 0) -> dict[str, Any]:
        return self._chunk([], usage=total_usage(finished, audio_tokens))


def logprobs_object(plan: Plan, entries: Sequence[TokenLogprob]) -> dict[str, Any] | None:
    """`choices[].logprobs` for these tokens; None when the request did not ask for logprobs."""
    if plan.request.top_logprobs is None:
        return None
    token_bytes = plan.model.token_bytes

    def alternative(token: int, logprob: float) -> dict[str, Any]:
        piece = token_bytes(token)
        return {"token": piece.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(piece)}

    return {"content": [{"token": e.text, "logprob": e.logprob, "bytes": list(token_bytes(e.token)),
                         "top_logprobs": [alternative(t, lp) for t, lp in e.top]} for e in entries],
            "refusal": None}


def total_usage(finished: list[Finished], audio_tokens: int = 0) -> dict[str, Any]:
    """The prompt is counted once; completion tokens are summed over the choices. Audio tokens
    (the phonemes a spoken answer's voice read) are reported beside the text's, not in
    completion_tokens: they are the speech model's, not the language model's."""
    return usage(finished[0].num_prompt_tokens, sum(e.num_completion_tokens for e in finished),
                 finished[0].num_cached_prompt_tokens,
                 accepted_prediction_tokens=sum(e.num_accepted_prediction_tokens for e in finished),
                 rejected_prediction_tokens=sum(e.num_rejected_prediction_tokens for e in finished),
                 reasoning_tokens=sum(e.num_reasoning_tokens for e in finished), audio_tokens=audio_tokens)


def completion(plan: Plan, finished: list[Finished], outputs: Sequence[ChoiceOutput],
               logprobs: list[list[TokenLogprob]] | None = None,
               audio: Sequence[dict[str, Any] | None] | None = None, audio_tokens: int = 0) -> dict[str, Any]:
    """The non-streamed `chat.completion` object; outputs[i] holds choice i's message, logprobs[i]
    the logprobs of its content's tokens, audio[i] (audio output) its `audio`."""
    return {
        "id": plan.id,
        "object": "chat.completion",
        "created": plan.created,
        "model": plan.model.id,
        "system_fingerprint": plan.model.info.fingerprint,
        "service_tier": plan.service_tier,
        "choices": [{
            "index": event.index,
            "message": message(plan, outputs[event.index], audio[event.index] if audio is not None else None),
            "logprobs": logprobs_object(plan, logprobs[event.index] if logprobs else ()),
            "finish_reason": deltas.choice_finish_reason(outputs[event.index], event, plan.legacy_functions),
        } for event in sorted(finished, key=lambda e: e.index)],
        "usage": total_usage(finished, audio_tokens),
    }


def message(plan: Plan, output: ChoiceOutput, audio: dict[str, Any] | None) -> dict[str, Any]:
    """A choice's message: its text (and calls), the sources it cites, its audio if spoken."""
    text = chat_message(output, plan.legacy_functions)
    out = {"role": "assistant", **text, "refusal": None, "annotations": annotations(plan, text.get("content"))}
    if plan.audio is not None:
        out["audio"] = audio
    return out


def annotations(plan: Plan, content: str | None) -> list[dict[str, Any]]:
    """The `url_citation`s of an answer to a web-searched request."""
    return citations(content, plan.sources) if plan.sources and content else []
