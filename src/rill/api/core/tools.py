"""`tools`/`tool_choice`/`parallel_tool_calls` and the deprecated `functions`/`function_call` ->
a ToolPlan: which tools the model is offered, whether and how it may call them, and the grammar
that makes every call parse and validate. Everything wrong is a 400 here, before the first byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rill.api.protocols.chat.schemas import ChatCompletionRequest, FunctionDefinition, NamedFunction, NamedToolChoice
from rill.errors import InvalidRequest
from rill.sampling import tool_format
from rill.sampling.grammar import Grammar, GrammarError, Grammars
from rill.sampling.tool_format import EMPTY_PARAMETERS, Mode, ToolSpec


@dataclass(frozen=True, slots=True)
class ToolPlan:
    offered: tuple[ToolSpec, ...]  # what the prompt describes
    callable: tuple[ToolSpec, ...]  # what the grammar lets the model call (a named choice: one)
    mode: Mode
    parallel: bool  # more than one call in the turn
    legacy: bool  # `functions`: streamed as delta.function_call


def plan_tools(body: ChatCompletionRequest) -> ToolPlan | None:
    """None when the request offers no tools (then the choice fields may only say so)."""
    if body.tools is not None and body.functions is not None:
        raise InvalidRequest("Send `tools` or the deprecated `functions`, not both.", param="functions")
    if body.tools is None and body.tool_choice not in (None, "none", "auto"):
        raise InvalidRequest("`tool_choice` names or requires a tool, but no `tools` were given.",
                             param="tool_choice")
    if body.functions is None and body.function_call not in (None, "none", "auto"):
        raise InvalidRequest("`function_call` names a function, but no `functions` were given.",
                             param="function_call")
    if body.tools is not None:
        return _plan([t.function for t in body.tools], body.tool_choice,
                     parallel=body.parallel_tool_calls is not False, legacy=False)
    if body.functions is not None:
        return _plan(body.functions, body.function_call, parallel=False, legacy=True)
    return None


def _where(legacy: bool, i: int, leaf: str) -> str:
    """The param path of a function definition's field: tools[i].function.x or functions[i].x."""
    return f"functions[{i}].{leaf}" if legacy else f"tools[{i}].function.{leaf}"


def _plan(functions: list[FunctionDefinition], choice: str | NamedToolChoice | NamedFunction | None,
          *, parallel: bool, legacy: bool) -> ToolPlan:
    field, choice_field = ("functions", "function_call") if legacy else ("tools", "tool_choice")
    if not functions:
        raise InvalidRequest(f"`{field}` must hold at least one function; leave it out to offer none.",
                             param=field)
    specs: list[ToolSpec] = []
    for i, f in enumerate(functions):
        if any(s.name == f.name for s in specs):
            raise InvalidRequest(f"Two {field} are named `{f.name}`; names must be unique.",
                                 param=_where(legacy, i, "name"))
        specs.append(ToolSpec(f.name, f.description, f.parameters if f.parameters is not None else EMPTY_PARAMETERS))
    if choice is None or isinstance(choice, str):
        mode: Mode = choice or "auto"  # type: ignore[assignment]
        return ToolPlan(tuple(specs), tuple(specs), mode, parallel, legacy)
    name = choice.function.name if isinstance(choice, NamedToolChoice) else choice.name
    named = [s for s in specs if s.name == name]
    if not named:
        raise InvalidRequest(f"`{choice_field}` names `{name}`, which is not among the {field} "
                             f"({', '.join(s.name for s in specs)}).",
                             param=f"{choice_field}.name" if legacy else f"{choice_field}.function.name")
    return ToolPlan(tuple(specs), tuple(named), "required", False, legacy)


def tool_grammar(plan: ToolPlan, grammars: Grammars, answer: dict[str, Any] | None) -> Grammar:
    """The compiled grammar for the turn; a tool's parameters that cannot be used as a schema are
    a 400 naming that tool."""
    field = "functions" if plan.legacy else "tools"
    for i, spec in enumerate(plan.offered):
        if spec in plan.callable:
            try:
                grammars.json_schema(spec.parameters)
            except GrammarError as exc:
                raise InvalidRequest(f"The parameters of `{spec.name}` cannot be used as a JSON schema "
                                     f"for tool calls: {exc}", param=_where(plan.legacy, i, "parameters")) from None
    source = tool_format.grammar(list(plan.callable), plan.mode, parallel=plan.parallel, answer=answer)
    try:
        return grammars.lark(source)
    except GrammarError as exc:
        raise InvalidRequest(f"These {field} cannot be turned into a grammar for calls: {exc}", param=field) from None
