"""The request's tools and tool choice -> a ToolPlan: which tools the model is offered, whether
and how it may call them, and the grammar that makes every call parse and validate. Everything
wrong is a 400 here, before the first byte, naming the client's field (each tool's `where`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rill.api.core.request import CustomTool, GenerationRequest, Tool
from rill.errors import InvalidRequest
from rill.sampling import tool_format
from rill.sampling.grammar import Grammar, GrammarError, Grammars
from rill.sampling.tool_format import Mode, ToolSpec


@dataclass(frozen=True, slots=True)
class ToolPlan:
    offered: tuple[ToolSpec, ...]  # what the prompt describes
    callable: tuple[ToolSpec, ...]  # what the grammar lets the model call (a named choice: one)
    mode: Mode
    parallel: bool  # more than one call in the turn
    legacy: bool  # Chat Completions' `functions`: streamed as delta.function_call
    where: tuple[str, ...] = ()  # each offered tool's field, for 400s


def _spec(tool: Tool) -> ToolSpec:
    if isinstance(tool, CustomTool):
        return ToolSpec(tool.name, tool.description, {}, custom=True, syntax=tool.syntax, definition=tool.definition)
    return ToolSpec(tool.name, tool.description, tool.parameters)


def plan_tools(gen: GenerationRequest) -> ToolPlan | None:
    """None when the request offers no tools, or forbids calls to them while offering none."""
    if not gen.tools:
        return None
    field = "functions" if gen.legacy_functions else "tools"
    specs: list[ToolSpec] = []
    for tool in gen.tools:
        if any(s.name == tool.name for s in specs):
            raise InvalidRequest(f"Two {field} are named `{tool.name}`; names must be unique.",
                                 param=f"{tool.where}.name")
        specs.append(_spec(tool))
    where = tuple(t.where for t in gen.tools)
    choice = gen.tool_choice
    if choice.allowed is None:
        return ToolPlan(tuple(specs), tuple(specs), choice.mode, gen.parallel_tool_calls, gen.legacy_functions, where)
    by_name = {s.name: s for s in specs}
    for name in choice.allowed:
        if name not in by_name:
            choice_field = choice.where.split(".")[0]
            raise InvalidRequest(f"`{choice_field}` names `{name}`, which is not among the {field} "
                                 f"({', '.join(s.name for s in specs)}).", param=choice.where)
    callable_ = tuple(by_name[n] for n in dict.fromkeys(choice.allowed))
    # one named tool: exactly one call to it, as OpenAI's named choice means
    parallel = gen.parallel_tool_calls and not (len(callable_) == 1 and choice.mode == "required")
    return ToolPlan(tuple(specs), callable_, choice.mode, parallel, gen.legacy_functions, where)


def tool_grammar(plan: ToolPlan, grammars: Grammars, answer: dict[str, Any] | None) -> Grammar:
    """The compiled grammar for the turn; a tool's parameters that cannot be used as a schema are
    a 400 naming that tool."""
    field = "functions" if plan.legacy else "tools"
    for spec, where in zip(plan.offered, plan.where):
        if spec in plan.callable and not spec.custom:
            try:
                grammars.json_schema(spec.parameters)
            except GrammarError as exc:
                raise InvalidRequest(f"The parameters of `{spec.name}` cannot be used as a JSON schema "
                                     f"for tool calls: {exc}", param=f"{where}.parameters") from None
    source = tool_format.grammar(list(plan.callable), plan.mode, parallel=plan.parallel, answer=answer)
    try:
        return grammars.lark(source, call_marks=(tool_format.OPEN, tool_format.CLOSE) if plan.parallel else None)
    except GrammarError as exc:
        raise InvalidRequest(f"These {field} cannot be turned into a grammar for calls: {exc}", param=field) from None
