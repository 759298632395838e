"""A GenerationRequest -> a Plan the engine can run, or a 400 before the first byte: the prompt
rendered with the model's template (or taken raw) and tokenized within the context, the turn's
grammar compiled, the sampling and limits set."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rill.api.core.messages import render, template_tools, with_system_text
from rill.api.core.request import GenerationRequest
from rill.api.core.tools import ToolPlan, plan_tools, tool_grammar
from rill.engine.reasoning import CLOSE, OPEN, ThinkingMarks
from rill.engine.types import Request, SamplingParams
from rill.errors import ContextLengthExceeded, InvalidRequest
from rill.prompt_tokens import Cancelled, TooLong
from rill.router import LocalModel
from rill.sampling import tool_format
from rill.sampling.grammar import Grammar, GrammarError
from rill.sampling.template import TemplateError
from rill.sampling.tool_format import ToolSpec

Parts = list[tuple[str, bool]]  # (text, is_message_text): the prompt as the template wrote it


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    created: int
    model: LocalModel
    request: Request
    stream: bool
    include_usage: bool = False
    include_obfuscation: bool = False
    service_tier: str = "default"
    tools: ToolPlan | None = None  # offered tools: the output is split into text and calls
    store: bool = False  # keep the finished answer
    audio: Any = None  # Chat Completions' audio output (protocols/chat/audio.py's AudioPlan)
    sources: tuple[Any, ...] = ()  # web search results the answer may cite (search/context.py's Source)

    @property
    def legacy_functions(self) -> bool:
        """Chat Completions' deprecated `functions`: one call, streamed as delta.function_call."""
        return self.tools is not None and self.tools.legacy


# the service tier -> admission priority (lower first)
TIER_PRIORITY = {"priority": 0, "scale": 0, "default": 1, "flex": 2}

# `verbosity` low and high: an instruction in the system prompt (medium, the default, adds none)
VERBOSITY = {"low": "Be concise: answer in as few sentences as the question allows.",
             "high": "Be thorough: answer in detail, with explanations and examples."}


def new_request_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def prompt_parts(gen: GenerationRequest, model: LocalModel, tools: Sequence[ToolSpec] = (), *,
                 add_generation_prompt: bool = True, enable_thinking: bool | None = None) -> Parts:
    """The messages (and offered tools) through the model's chat template, as render_parts; a
    reasoning budget of 0 turns thinking off where the template has the switch (or
    `enable_thinking` says, for /tokenize). A raw prompt's text is the prompt (its control-token
    text parsed, as llama-server and vLLM read a completion prompt)."""
    if gen.prompt_text is not None:
        return [(gen.prompt_text, False)]
    native = model.template.knows_tools
    messages = gen.messages
    if gen.verbosity in VERBOSITY:
        messages = with_system_text(messages, VERBOSITY[gen.verbosity])
    rendered = render(messages, tools, native_tools=native)
    if enable_thinking is None and gen.reasoning_budget == 0:
        enable_thinking = False
    switch = enable_thinking if model.template.has_thinking and model.template.switches_thinking else None
    try:
        return model.template.render_parts(rendered, tools=template_tools(tools) if native and tools else None,
                                           add_generation_prompt=add_generation_prompt, enable_thinking=switch)
    except TemplateError as exc:
        raise InvalidRequest(str(exc), param=gen.messages_where) from exc


def too_long(n_ctx: int, tokens: str, where: str) -> ContextLengthExceeded:
    return ContextLengthExceeded(
        f"This model's maximum context length is {n_ctx} tokens. However, your messages resulted in "
        f"{tokens} tokens, leaving no room for a completion. Please shorten the messages.", param=where)


def prompt_tokens(gen: GenerationRequest, model: LocalModel, tools: Sequence[ToolSpec] = (),
                  cancelled: Callable[[], bool] = lambda: False) -> tuple[list[int], Parts]:
    """The prompt's tokens (and parts), or a 400 as soon as it is certain they leave no room for
    an answer (a prompt far over the context is refused from its length alone, untokenized)."""
    n_ctx = model.info.n_ctx
    if gen.prompt_tokens is not None:
        if len(gen.prompt_tokens) >= n_ctx:
            raise too_long(n_ctx, str(len(gen.prompt_tokens)), gen.messages_where)
        return list(gen.prompt_tokens), []
    parts = prompt_parts(gen, model, tools)
    try:
        return model.tokenize_prompt(parts, limit=n_ctx - 1, cancelled=cancelled), parts
    except TooLong as exc:
        raise too_long(n_ctx, f"at least {exc.at_least}", gen.messages_where) from None


def count_tokens(gen: GenerationRequest, model: LocalModel, cancelled: Callable[[], bool] = lambda: False) -> int:
    """The exact number of prompt tokens the request sends the model, template and tools included
    (however many: the context is not checked)."""
    tools = plan_tools(gen)
    if gen.prompt_tokens is not None:
        return len(gen.prompt_tokens)
    return len(model.tokenize_prompt(prompt_parts(gen, model, tools.offered if tools else ()), cancelled=cancelled))


def thinking_marks(gen: GenerationRequest, model: LocalModel, parts: Parts) -> ThinkingMarks | None:
    """For a model whose template has a thinking section: its markers, whether the generation
    prompt (the template text after the last message) already opened it, and the budget (none:
    the model thinks as long as it likes)."""
    if not model.template.has_thinking or gen.prompt_text is not None or gen.prompt_tokens is not None:
        return None
    tail = parts[-1][0] if parts and not parts[-1][1] else ""
    return ThinkingMarks(starts_inside=tail.rfind(OPEN) > tail.rfind(CLOSE), budget=gen.reasoning_budget)


def completion_cap(gen: GenerationRequest, num_prompt: int, n_ctx: int, default: int | None = None) -> int:
    """The most tokens to generate: the request's cap, else the model's `default` within the room
    left, else the room; a cap beyond the room left is a 400, or lowered to the room
    (`clamp_max_tokens`)."""
    room = n_ctx - num_prompt
    if room < 1:
        raise too_long(n_ctx, str(num_prompt), gen.messages_where)
    cap = gen.max_tokens
    if cap is None:
        return room if default is None else min(default, room)
    if num_prompt + cap > n_ctx:
        if gen.clamp_max_tokens:
            return room
        raise ContextLengthExceeded(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{num_prompt + cap} tokens ({num_prompt} in the messages, {cap} in the "
            "completion). Please reduce the length of the messages or completion.", param=gen.max_tokens_where)
    return cap


def answer_schema(gen: GenerationRequest, model: LocalModel) -> dict[str, Any] | None:
    """The JSON schema the answer must follow, checked to compile (a schema that cannot be used is
    a 400 saying why)."""
    if gen.answer_schema is None:
        return None
    try:
        model.engine.grammars.json_schema(gen.answer_schema)
    except GrammarError as exc:
        raise InvalidRequest(f"This JSON schema cannot be used for structured output: {exc}",
                             param=gen.answer_schema_where) from None
    return gen.answer_schema


def output_grammar(gen: GenerationRequest, model: LocalModel, tools: ToolPlan | None) -> Grammar | None:
    """The grammar of the model's turn, compiled before the first byte: tool calls (whose answer
    alternative follows the answer schema), else the answer schema, else none."""
    answer = answer_schema(gen, model)
    if tools is not None:
        return tool_grammar(tools, model.engine.grammars, answer)
    return None if answer is None else model.engine.grammars.json_schema(answer)


def temperature_of(gen: GenerationRequest, model: LocalModel) -> float:
    if gen.temperature is not None:
        return gen.temperature
    return 1.0 if model.default_temperature is None else model.default_temperature


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


def plan_generation(gen: GenerationRequest, model: LocalModel, *, request_id: str | None = None,
                    cancelled: Callable[[], bool] = lambda: False, **extra: Any) -> Plan:
    """`cancelled` says the client has gone: the work stops at the next step (Cancelled); `extra`:
    the protocol's own Plan fields (stream options, audio, sources)."""
    tools = plan_tools(gen)
    tokens, parts = prompt_tokens(gen, model, tools.offered if tools else (), cancelled)
    max_tokens = completion_cap(gen, len(tokens), model.info.n_ctx, model.default_max_tokens)
    if cancelled():  # before compiling a grammar, which may take a second
        raise Cancelled
    request_id = request_id or new_request_id()
    sampling = SamplingParams(
        temperature=temperature_of(gen, model), top_p=gen.top_p, top_k=gen.top_k, seed=gen.seed,
        frequency_penalty=gen.frequency_penalty, presence_penalty=gen.presence_penalty,
        logit_bias=logit_bias(gen.logit_bias, model.info.n_vocab))
    prediction = tuple(model.tokenize_text(gen.prediction)) if gen.prediction else ()
    return Plan(
        id=request_id,
        created=int(time.time()),
        model=model,
        request=Request(request_id, tuple(tokens), max_tokens, sampling, gen.stop,
                        TIER_PRIORITY.get(gen.priority_tier, 1), n=gen.n, top_logprobs=gen.top_logprobs,
                        prompt_logprobs=gen.prompt_logprobs,
                        grammar=output_grammar(gen, model, tools),
                        stops_until=tool_format.OPEN if tools else None,
                        prediction=prediction,
                        thinking=thinking_marks(gen, model, parts)),
        stream=gen.stream,
        service_tier=gen.priority_tier,
        tools=tools,
        **extra,
    )
