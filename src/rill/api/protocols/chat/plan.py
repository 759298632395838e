"""A validated chat request -> the core's GenerationRequest, then a Plan (core/plan.py), or a 400
before the first byte. Every field either shapes the plan or is refused here by name: nothing is
silently ignored. The chat-only features (audio output, web search sources, stream options,
obfuscation) are the Plan's extras."""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Callable

from rill.api.core.plan import Plan, plan_generation
from rill.api.core.request import EFFORT_BUDGETS, FunctionTool, GenerationRequest, ToolChoice
from rill.api.protocols.chat.audio import plan_audio
from rill.api.protocols.chat.messages import core_messages
from rill.api.protocols.chat.prediction import check_prediction, predicted_text
from rill.api.protocols.chat.schemas import ChatCompletionRequest, NamedFunction, NamedToolChoice
from rill.api.protocols.chat.web_search import not_configured
from rill.errors import InvalidRequest
from rill.router import LocalModel
from rill.search.context import Source
from rill.sampling.tool_format import EMPTY_PARAMETERS
from rill.speech.service import SpeechService
from rill.speech.speaker import EXTRA

log = logging.getLogger("rill.api")

# Why a server without speech cannot speak (a request for audio gets it in its 400).
NO_SPEECH = f"text-to-speech is not installed: {EXTRA}"


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


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


def _tools(body: ChatCompletionRequest) -> tuple[tuple[FunctionTool, ...], ToolChoice, bool, bool]:
    """(tools, choice, parallel, legacy) from `tools`/`tool_choice` or the deprecated
    `functions`/`function_call`, with the 400s only the wire shape can have."""
    if body.tools is not None and body.functions is not None:
        raise InvalidRequest("Send `tools` or the deprecated `functions`, not both.", param="functions")
    if body.tools is None and body.tool_choice not in (None, "none", "auto"):
        raise InvalidRequest("`tool_choice` names or requires a tool, but no `tools` were given.",
                             param="tool_choice")
    if body.functions is None and body.function_call not in (None, "none", "auto"):
        raise InvalidRequest("`function_call` names a function, but no `functions` were given.",
                             param="function_call")
    legacy = body.tools is None and body.functions is not None
    if legacy:
        functions, choice, field = body.functions, body.function_call, "functions"
        where = [f"functions[{i}]" for i in range(len(functions))]
    elif body.tools is not None:
        functions, choice, field = [t.function for t in body.tools], body.tool_choice, "tools"
        where = [f"tools[{i}].function" for i in range(len(functions))]
    else:
        return (), ToolChoice(), True, False
    if not functions:
        raise InvalidRequest(f"`{field}` must hold at least one function; leave it out to offer none.", param=field)
    tools = tuple(FunctionTool(f.name, f.description, f.parameters if f.parameters is not None else EMPTY_PARAMETERS,
                               where=w) for f, w in zip(functions, where))
    if choice is None or isinstance(choice, str):
        return tools, ToolChoice(choice or "auto"), not legacy and body.parallel_tool_calls is not False, legacy
    name = choice.function.name if isinstance(choice, NamedToolChoice) else choice.name
    where_name = "function_call.name" if legacy else "tool_choice.function.name"
    assert isinstance(choice, (NamedToolChoice, NamedFunction))
    return tools, ToolChoice("required", (name,), where_name), False, legacy


def to_core(body: ChatCompletionRequest, *, verbosity: bool = True) -> GenerationRequest:
    """The request in the core's terms (planning checks the rest: tools' schemas, the context)."""
    tools, choice, parallel, legacy = _tools(body)
    fmt = body.response_format
    schema, schema_where = None, "response_format"
    if fmt is not None and fmt.type == "json_object":
        schema = {"type": "object"}
    elif fmt is not None and fmt.type == "json_schema":
        schema = fmt.json_schema.schema_ if fmt.json_schema.schema_ is not None else {}
        schema_where = "response_format.json_schema.schema"
    caps = [(c, f) for c, f in ((body.max_tokens, "max_tokens"), (body.max_completion_tokens, "max_completion_tokens"))
            if c is not None]
    cap, cap_where = min(caps, key=lambda c: c[0]) if caps else (None, "max_tokens")
    tier = body.service_tier if body.service_tier not in (None, "auto") else "default"
    return GenerationRequest(
        model=body.model, messages=core_messages(body), tools=tools, tool_choice=choice,
        parallel_tool_calls=parallel, legacy_functions=legacy,
        answer_schema=schema, answer_schema_where=schema_where,
        temperature=body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p, seed=body.seed,
        frequency_penalty=body.frequency_penalty or 0.0, presence_penalty=body.presence_penalty or 0.0,
        logit_bias=body.logit_bias,
        stop=(body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ()),
        max_tokens=cap, max_tokens_where=cap_where, n=body.n or 1,
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        reasoning_budget=EFFORT_BUDGETS.get(body.reasoning_effort or ""),
        verbosity=body.verbosity if verbosity else None,
        prediction=predicted_text(body), priority_tier=tier, stream=bool(body.stream))


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
    check_prediction(body)
    # n choices are decoded together, so they must also fit in the engine's slots (--parallel)
    n_limit = min(max_n, model.engine.max_sequences)
    if body.n is not None and body.n > n_limit:
        raise InvalidRequest(f"`n` must be at most {n_limit} on this server (the configured maximum is "
                             f"{max_n}; --parallel is {model.engine.max_sequences}).", param="n")
    gen = to_core(body)
    options = body.stream_options
    return plan_generation(
        gen, model, request_id=new_completion_id(), cancelled=cancelled,
        include_usage=bool(options and options.include_usage),
        include_obfuscation=not (options and options.include_obfuscation is False),
        store=bool(body.store), audio=audio, sources=sources)
