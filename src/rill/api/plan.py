"""Validated request -> a plan the engine can run, or a 400 before the first byte.

Every field either shapes the plan or is refused here by name: nothing is silently ignored.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rill.api.schemas import AssistantMessage, ChatCompletionRequest, ContentPart, FunctionMessage
from rill.engine.types import Request, SamplingParams
from rill.errors import ContextLengthExceeded, InvalidRequest, UnsupportedParameter
from rill.router import LocalModel
from rill.sampling.grammar import GrammarError
from rill.sampling.template import TemplateError

log = logging.getLogger("rill.api")


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    created: int
    model: LocalModel
    request: Request
    stream: bool
    include_usage: bool
    include_obfuscation: bool
    service_tier: str


# `service_tier` -> admission priority (lower first); the chunks echo the tier used.
TIER_PRIORITY = {"priority": 0, "scale": 0, "default": 1, "flex": 2}


@functools.lru_cache(maxsize=256)
def _note_unknown_field(name: str) -> None:
    log.debug("ignoring unknown request field %r (logged once)", name)


def _not_yet(param: str, what: str, issue: str) -> UnsupportedParameter:
    return UnsupportedParameter(f"`{param}`: {what} is not supported yet ({issue}).", param=param)


def refuse_unbuilt(body: ChatCompletionRequest, *, model_reasons: bool) -> None:
    """Fields that validate but whose behaviour is not built yet: 400 naming the field. Values that
    mean "the default" (penalty 0, n 1, text format, ...) are honoured exactly, so they pass."""
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("`top_logprobs` requires `logprobs: true`.", param="top_logprobs")
    if body.tools:
        raise _not_yet("tools", "tool calling", "constrained decoding")
    if body.tool_choice not in (None, "none", "auto"):
        raise InvalidRequest("`tool_choice` names or requires a tool, but no `tools` were given.",
                             param="tool_choice")
    if body.functions:
        raise _not_yet("functions", "function calling", "constrained decoding")
    if body.function_call not in (None, "none", "auto"):
        raise InvalidRequest("`function_call` names a function, but no `functions` were given.",
                             param="function_call")
    if body.prediction is not None:
        raise _not_yet("prediction", "predicted outputs", "speculative decoding")
    if body.reasoning_effort is not None and model_reasons:
        # For a model without a thinking section the contract's behaviour is "accepted, no
        # effect" (and /v1/models says it does not reason); budgets for one that has it are not built.
        raise _not_yet("reasoning_effort", "reasoning effort for a model that thinks", "reasoning models")
    if body.verbosity not in (None, "medium"):
        raise _not_yet("verbosity", f"verbosity `{body.verbosity}`", "reasoning models")
    if body.modalities and "audio" in body.modalities:
        raise _not_yet("modalities", "audio output", "text-to-speech")
    if body.audio is not None:
        raise _not_yet("audio", "audio output", "text-to-speech")
    if body.web_search_options is not None:
        raise _not_yet("web_search_options", "web search", "search providers")
    if body.store:
        raise _not_yet("store", "stored completions", "the completion store")
    if body.metadata:
        raise _not_yet("metadata", "metadata on stored completions", "the completion store")
    if body.tags:
        raise _not_yet("tags", "span tags", "tracing")
    if body.parent_span_id is not None:
        raise _not_yet("parent_span_id", "parent spans", "tracing")
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest("`stream_options` is only allowed with `stream: true`.", param="stream_options")


def _text(content: str | list[ContentPart] | None, param: str) -> str:
    """A message's content as one string; non-text parts are refused by type."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for i, part in enumerate(content):
        if part.type != "text":
            raise InvalidRequest(
                f"`{param}[{i}]`: content parts of type `{part.type}` are not supported by this "
                "model (it reads text only).", param=f"{param}[{i}].type")
        if part.text is None:
            raise InvalidRequest(f"`{param}[{i}].text` is required for a text part.", param=f"{param}[{i}].text")
        texts.append(part.text)
    return "".join(texts)


def render_messages(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    """Wire messages -> the plain dicts chat templates expect ({role, content: str, name?})."""
    out = []
    for i, msg in enumerate(body.messages):
        param = f"messages[{i}]"
        if isinstance(msg, AssistantMessage):
            if msg.tool_calls or msg.function_call:
                what = "tool_calls" if msg.tool_calls else "function_call"
                raise _not_yet(f"{param}.{what}", "replaying tool calls", "tool calls")
            if msg.audio is not None:
                raise _not_yet(f"{param}.audio", "assistant audio", "text-to-speech")
            text = _text(msg.content, f"{param}.content") or (msg.refusal or "")
        elif isinstance(msg, FunctionMessage):
            text = msg.content or ""
        else:
            text = _text(msg.content, f"{param}.content")
        entry: dict[str, Any] = {"role": msg.role, "content": text}
        name = getattr(msg, "name", None)
        if name is not None:
            entry["name"] = name
        if msg.role == "tool":
            entry["tool_call_id"] = msg.tool_call_id  # type: ignore[union-attr]
        out.append(entry)
    return out


def completion_cap(body: ChatCompletionRequest, num_prompt: int, n_ctx: int) -> int:
    """The most tokens to generate: the smaller of the two max fields, else what the context allows."""
    caps = [c for c in (body.max_tokens, body.max_completion_tokens) if c is not None]
    room = n_ctx - num_prompt
    if room < 1:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {n_ctx} tokens. However, your messages resulted "
            f"in {num_prompt} tokens, leaving no room for a completion. Please shorten the messages.",
            param="messages")
    if caps and num_prompt + min(caps) > n_ctx:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{num_prompt + min(caps)} tokens ({num_prompt} in the messages, {min(caps)} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="max_tokens" if body.max_tokens == min(caps) else "max_completion_tokens")
    return min(caps) if caps else room


def output_grammar(body: ChatCompletionRequest, model: LocalModel) -> str | None:
    """`response_format` -> the grammar the output must follow (compiled before the first byte;
    a schema that cannot be compiled is a 400 saying why)."""
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        schema: dict[str, Any] = {"type": "object"}
        param = "response_format"
    else:
        schema = fmt.json_schema.schema_ if fmt.json_schema.schema_ is not None else {}
        param = "response_format.json_schema.schema"
    try:
        return model.engine.grammars.json_schema(schema)
    except GrammarError as exc:
        raise InvalidRequest(f"This JSON schema cannot be used for structured output: {exc}",
                             param=param) from None


MAX_LOGIT_BIAS = 1024  # entries; OpenAI documents no limit, and each costs a little per token


def logit_bias(bias: dict[str, float] | None, n_vocab: int) -> tuple[tuple[int, float], ...]:
    """`logit_bias`'s keys are token ids as JSON strings; each must name a token of this model."""
    if not bias:
        return ()
    if len(bias) > MAX_LOGIT_BIAS:
        raise InvalidRequest(f"`logit_bias` may hold at most {MAX_LOGIT_BIAS} tokens, got {len(bias)}.",
                             param="logit_bias")
    out = []
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            token = -1
        if not (0 <= token < n_vocab and key == str(token)):
            raise InvalidRequest(f"`logit_bias` key {key!r} is not a token id of this model "
                                 f"(0..{n_vocab - 1}; POST /tokenize finds ids).", param=f"logit_bias.{key}")
        out.append((token, float(value)))
    return tuple(out)


def plan_chat(body: ChatCompletionRequest, model: LocalModel, *, max_n: int) -> Plan:
    for name in body.model_extra or {}:
        _note_unknown_field(name)
    refuse_unbuilt(body, model_reasons=model.template.has_thinking)
    # n choices are decoded together, so they must also fit in the engine's slots (--parallel)
    n_limit = min(max_n, model.engine.max_sequences)
    if body.n is not None and body.n > n_limit:
        raise InvalidRequest(f"`n` must be at most {n_limit} on this server (the configured maximum is "
                             f"{max_n}; --parallel is {model.engine.max_sequences}).", param="n")
    try:
        parts = model.template.render_parts(render_messages(body))
    except TemplateError as exc:
        raise InvalidRequest(str(exc), param="messages") from exc
    tokens = model.tokenize_prompt(parts)
    max_tokens = completion_cap(body, len(tokens), model.info.n_ctx)
    request_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    sampling = SamplingParams(
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        frequency_penalty=body.frequency_penalty or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        logit_bias=logit_bias(body.logit_bias, model.info.n_vocab),
    )
    options = body.stream_options
    tier = body.service_tier if body.service_tier not in (None, "auto") else "default"
    return Plan(
        id=request_id,
        created=int(time.time()),
        model=model,
        request=Request(request_id, tuple(tokens), max_tokens, sampling, stop, TIER_PRIORITY[tier],
                        n=body.n or 1, top_logprobs=(body.top_logprobs or 0) if body.logprobs else None,
                        grammar=output_grammar(body, model)),
        stream=bool(body.stream),
        include_usage=bool(options and options.include_usage),
        include_obfuscation=not (options and options.include_obfuscation is False),
        service_tier=tier,
    )
