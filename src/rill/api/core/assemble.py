"""An upstream's answer, assembled: the chunks of a stream (or a whole chat.completion) -> the
chat.completion a stored completion keeps, and the messages, usage and finish reasons a span
records."""

from __future__ import annotations

from typing import Any


class ChunkAssembler:
    def __init__(self) -> None:
        self._choices: dict[int, dict[str, Any]] = {}  # index -> {message, logprobs, finish_reason}
        self.usage: dict[str, Any] | None = None
        self.system_fingerprint: str | None = None
        self.service_tier: str | None = None

    @classmethod
    def from_completion(cls, completion: dict[str, Any]) -> ChunkAssembler:
        out = cls()
        for i, choice in enumerate(completion.get("choices") or []):
            if isinstance(choice, dict):
                out._choices[choice.get("index", i)] = {
                    "message": {"role": "assistant", **(choice.get("message") or {})},
                    "logprobs": choice.get("logprobs"), "finish_reason": choice.get("finish_reason")}
        out._meta(completion)
        return out

    @property
    def num_choices(self) -> int:
        return max(1, len(self._choices))

    def add(self, chunk: dict[str, Any]) -> None:
        """One chat.completion.chunk's deltas, usage and metadata."""
        self._meta(chunk)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            state = self._choices.setdefault(choice.get("index", 0), {
                "message": {"role": "assistant", "content": None}, "logprobs": None, "finish_reason": None})
            message = state["message"]
            delta = choice.get("delta") or {}
            for key in ("content", "refusal", "reasoning_content"):
                if delta.get(key):
                    message[key] = (message.get(key) or "") + delta[key]
            for fragment in delta.get("tool_calls") or ():
                _merge_call(state.setdefault("calls", {}), fragment)
            if delta.get("function_call"):
                call = message.setdefault("function_call", {"name": "", "arguments": ""})
                call["name"] = call["name"] or delta["function_call"].get("name") or ""
                call["arguments"] += delta["function_call"].get("arguments") or ""
            if choice.get("logprobs"):
                logprobs = state["logprobs"] = state["logprobs"] or {"content": None, "refusal": None}
                for key in ("content", "refusal"):
                    if choice["logprobs"].get(key):
                        logprobs[key] = (logprobs[key] or []) + choice["logprobs"][key]
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]

    def _meta(self, obj: dict[str, Any]) -> None:
        if obj.get("usage"):
            self.usage = obj["usage"]
        self.system_fingerprint = obj.get("system_fingerprint") or self.system_fingerprint
        self.service_tier = obj.get("service_tier") or self.service_tier

    def messages(self) -> list[dict[str, Any]]:
        return [self._message(self._choices[i]) for i in sorted(self._choices)]

    @staticmethod
    def _message(state: dict[str, Any]) -> dict[str, Any]:
        calls = state.get("calls")
        if not calls:
            return state["message"]
        return {**state["message"], "tool_calls": [calls[i] for i in sorted(calls)]}

    def finish_reasons(self) -> list[str] | None:
        reasons = [self._choices[i]["finish_reason"] for i in sorted(self._choices)]
        return reasons if reasons and all(reasons) else None

    def span_usage(self) -> dict[str, int] | None:
        """The span's usage: prompt, completion, total and cached tokens, as the upstream counted."""
        if not isinstance(self.usage, dict):
            return None
        prompt, completion = _int(self.usage.get("prompt_tokens")), _int(self.usage.get("completion_tokens"))
        details = self.usage.get("prompt_tokens_details") or {}
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": _int(self.usage.get("total_tokens")) or prompt + completion,
                "cached_tokens": _int(details.get("cached_tokens")) if isinstance(details, dict) else 0}

    def completion(self, completion_id: str, created: int, model: str) -> dict[str, Any]:
        return {
            "id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": self.system_fingerprint, "service_tier": self.service_tier,
            "choices": [{"index": i, "message": self._message(state), "logprobs": state["logprobs"],
                         "finish_reason": state["finish_reason"]} for i, state in sorted(self._choices.items())],
            "usage": self.usage,
        }


def _merge_call(calls: dict[int, dict[str, Any]], fragment: dict[str, Any]) -> None:
    """A streamed tool-call fragment into the call with its index: id, type and name arrive
    once, arguments in pieces."""
    index = fragment.get("index", len(calls))
    call = calls.get(index)
    if call is None:
        call = calls[index] = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
    call["id"] = call["id"] or fragment.get("id")
    call["type"] = fragment.get("type") or call["type"]
    function = fragment.get("function") or {}
    call["function"]["name"] = call["function"]["name"] or function.get("name") or ""
    call["function"]["arguments"] += function.get("arguments") or ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
