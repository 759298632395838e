"""Validated request -> a plan the engine can run, or a 400 before the first byte.

Every field either shapes the plan or is refused here by name: nothing is silently ignored.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rill.api.protocols.chat.audio import AudioPlan, plan_audio
from rill.api.core.messages import render_messages, template_tools, with_system_text
from rill.api.protocols.chat.prediction import check_prediction, prediction_tokens
from rill.api.protocols.chat.schemas import ChatCompletionRequest
from rill.api.core.tools import ToolPlan, plan_tools, tool_grammar
from rill.api.core.web_search import not_configured
from rill.engine.reasoning import CLOSE, OPEN, ThinkingMarks
from rill.engine.types import Request, SamplingParams
from rill.errors import ContextLengthExceeded, InvalidRequest
from rill.prompt_tokens import Cancelled, TooLong
from rill.router import LocalModel
from rill.search.context import Source
from rill.sampling.grammar import Grammar, GrammarError
from rill.sampling import tool_format
from rill.sampling.tool_format import ToolSpec
from rill.sampling.template import TemplateError
from rill.speech.service import SpeechService
from rill.speech.speaker import EXTRA

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
    tools: ToolPlan | None = None  # offered tools: the output is split into content and calls
    store: bool = False  # keep the finished completion (store: true)
    audio: AudioPlan | None = None  # audio output: the answer is also spoken
    sources: tuple[Source, ...] = ()  # web search results the answer may cite (annotations)


# `service_tier` -> admission priority (lower first); the chunks echo the tier used.
TIER_PRIORITY = {"priority": 0, "scale": 0, "default": 1, "flex": 2}


@functools.lru_cache(maxsize=256)
def _note_unknown_field(name: str) -> None:
    log.debug("ignoring unknown request field %r (logged once)", name)


def check_request(body: ChatCompletionRequest) -> None:
    """Fields that contradict each other, whichever model serves the request."""
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("`top_logprobs` requires `logprobs: true`.", param="top_logprobs")
    if body.metadata and not body.store:
        raise InvalidRequest("`metadata` is kept with a stored completion: send it with `store: true`.",
                             param="metadata")
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest("`stream_options` is only allowed with `stream: true`.", param="stream_options")


def check_local(body: ChatCompletionRequest) -> None:
    """What a local model refuses that an upstream one gets as sent: web_search_options that no
    search has handled (there is no [search] provider: with_search runs before planning)."""
    check_request(body)
    if body.web_search_options is not None:
        raise not_configured()


def prompt_parts(body: ChatCompletionRequest, model: LocalModel, tools: Sequence[ToolSpec] = (), *,
                 add_generation_prompt: bool = True, enable_thinking: bool | None = None) -> list[tuple[str, bool]]:
    """The messages (and offered tools) through the model's chat template, as render_parts;
    `reasoning_effort` none/minimal turns thinking off where the template has the switch (or
    `enable_thinking` says, for /tokenize)."""
    native = model.template.knows_tools
    messages = render_messages(body, tools, native_tools=native)
    if enable_thinking is None and REASONING_BUDGETS.get(body.reasoning_effort or "") == 0:
        enable_thinking = False
    switch = enable_thinking if model.template.has_thinking and model.template.switches_thinking else None
    try:
        return model.template.render_parts(messages, tools=template_tools(tools) if native and tools else None,
                                           add_generation_prompt=add_generation_prompt, enable_thinking=switch)
    except TemplateError as exc:
        raise InvalidRequest(str(exc), param="messages") from exc


def limited_tokens(model: LocalModel, parts: list[tuple[str, bool]], cancelled: Callable[[], bool]) -> list[int]:
    """The prompt's tokens, or a 400 as soon as it is certain they leave no room for a completion
    (a prompt far over the context is refused from its length alone, untokenized)."""
    n_ctx = model.info.n_ctx
    try:
        return model.tokenize_prompt(parts, limit=n_ctx - 1, cancelled=cancelled)
    except TooLong as exc:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {n_ctx} tokens. However, your messages resulted "
            f"in at least {exc.at_least} tokens, leaving no room for a completion. Please shorten the "
            "messages.", param="messages") from None


# `reasoning_effort` -> reasoning tokens before Rill closes the thinking section itself
# (docs/features.md); none and minimal turn thinking off.
REASONING_BUDGETS = {"none": 0, "minimal": 0, "low": 512, "medium": 2048, "high": 8192}


def thinking_marks(body: ChatCompletionRequest, model: LocalModel,
                   parts: list[tuple[str, bool]]) -> ThinkingMarks | None:
    """For a model whose template has a thinking section: its markers, whether the generation
    prompt (the template text after the last message) already opened it, and the budget the
    request's `reasoning_effort` sets (none without one: the model thinks as long as it likes)."""
    if not model.template.has_thinking:
        return None
    tail = parts[-1][0] if parts and not parts[-1][1] else ""
    return ThinkingMarks(starts_inside=tail.rfind(OPEN) > tail.rfind(CLOSE),
                         budget=REASONING_BUDGETS.get(body.reasoning_effort or ""))


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


def answer_schema(body: ChatCompletionRequest, model: LocalModel) -> dict[str, Any] | None:
    """`response_format` -> the JSON schema the answer must follow, checked to compile (a schema
    that cannot be used is a 400 saying why)."""
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
        model.engine.grammars.json_schema(schema)
    except GrammarError as exc:
        raise InvalidRequest(f"This JSON schema cannot be used for structured output: {exc}",
                             param=param) from None
    return schema


def output_grammar(body: ChatCompletionRequest, model: LocalModel, tools: ToolPlan | None) -> Grammar | None:
    """The grammar of the model's turn, compiled before the first byte: tool calls (whose answer
    alternative follows response_format), else response_format's schema, else none."""
    answer = answer_schema(body, model)
    if tools is not None:
        return tool_grammar(tools, model.engine.grammars, answer)
    return None if answer is None else model.engine.grammars.json_schema(answer)


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


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


# `verbosity` low and high: an instruction in the system prompt (medium, the default, adds none)
VERBOSITY = {"low": "Be concise: answer in as few sentences as the question allows.",
             "high": "Be thorough: answer in detail, with explanations and examples."}

# Why a server without speech cannot speak (a request for audio gets it in its 400).
NO_SPEECH = f"text-to-speech is not installed: {EXTRA}"


def plan_chat(body: ChatCompletionRequest, model: LocalModel, *, max_n: int,
              speech: SpeechService | None = None, no_speech: str = NO_SPEECH,
              sources: tuple[Source, ...] = (), cancelled: Callable[[], bool] = lambda: False) -> Plan:
    """`speech`: the server's text-to-speech, for audio output (`no_speech` says why there is
    none); `sources`: the web search results in the prompt (web_search.with_search put them there);
    `cancelled` says the client has gone: the work stops at the next step (Cancelled)."""
    for name in body.model_extra or {}:
        _note_unknown_field(name)
    check_local(body)
    audio = plan_audio(body, speech, no_speech)
    if body.verbosity in VERBOSITY:
        body = with_system_text(body, VERBOSITY[body.verbosity])
    check_prediction(body)
    # n choices are decoded together, so they must also fit in the engine's slots (--parallel)
    n_limit = min(max_n, model.engine.max_sequences)
    if body.n is not None and body.n > n_limit:
        raise InvalidRequest(f"`n` must be at most {n_limit} on this server (the configured maximum is "
                             f"{max_n}; --parallel is {model.engine.max_sequences}).", param="n")
    tools = plan_tools(body)
    parts = prompt_parts(body, model, tools.offered if tools else ())
    tokens = limited_tokens(model, parts, cancelled)
    max_tokens = completion_cap(body, len(tokens), model.info.n_ctx)
    if cancelled():  # before compiling a grammar, which may take a second
        raise Cancelled
    request_id = new_completion_id()
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
                        grammar=output_grammar(body, model, tools),
                        stops_until=tool_format.OPEN if tools else None,
                        prediction=prediction_tokens(body, model),
                        thinking=thinking_marks(body, model, parts)),
        stream=bool(body.stream),
        include_usage=bool(options and options.include_usage),
        include_obfuscation=not (options and options.include_obfuscation is False),
        service_tier=tier,
        tools=tools,
        store=bool(body.store),
        audio=audio,
        sources=sources,
    )
