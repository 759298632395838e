"""A Responses request's tools (functions, custom tools, namespaces flattened, a client's tool
search, hosted tools) and its tool choice, in the core's terms.

A namespace's tools are offered to the model as `<namespace>.<name>` (a plain name cannot contain
a dot); their calls come back out as OpenAI reports them, `name` and `namespace` apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from rill.api.core.request import CustomTool as CoreCustomTool
from rill.api.core.request import FunctionTool as CoreFunctionTool
from rill.api.core.request import Tool, ToolChoice
from rill.api.protocols.responses import schemas as w
from rill.errors import InvalidRequest, UnsupportedParameter
from rill.sampling.tool_format import EMPTY_PARAMETERS

# A client's tool search (`{"type": "tool_search", "execution": "client"}`) without parameters of its own
TOOL_SEARCH_PARAMETERS: dict[str, Any] = {
    "type": "object", "properties": {"query": {"type": "string", "description": "What tools to look for."}},
    "required": ["query"]}
TOOL_SEARCH = "tool_search"  # its name as the model calls it
WEB_SEARCH_TYPES = ("web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11")


@dataclass(frozen=True, slots=True)
class WireTool:
    """How one tool the model may call appears on the wire."""

    kind: Literal["function", "custom", "tool_search"]
    name: str
    namespace: str | None = None


@dataclass
class Names:
    """The model's tool names (namespaced ones flattened) -> the client's tools."""

    tools: dict[str, WireTool] = field(default_factory=dict)

    def wire(self, model_name: str, custom: bool) -> WireTool:
        found = self.tools.get(model_name)
        if found is not None:
            return found
        return WireTool("custom" if custom else "function", model_name)  # cannot happen under the grammar


def flat(name: str, namespace: str | None) -> str:
    return f"{namespace}.{name}" if namespace else name


@dataclass(frozen=True, slots=True)
class Search:
    """A web search to run before generating (the request offers web search, and a provider is set)."""

    size: str
    location: dict[str, Any] | None
    tool: dict[str, Any]  # the tool as the client sent it


def _usable(body: w.ResponseRequest, tool_type: str) -> bool:
    """Whether the model may use a tool of this type at all (tool_choice may rule it out)."""
    choice = body.tool_choice
    if choice == "none":
        return False
    if isinstance(choice, w.AllowedTools):
        return any(t.get("type") == tool_type or (tool_type in WEB_SEARCH_TYPES and t.get("type") in WEB_SEARCH_TYPES)
                   for t in choice.tools)
    return True


def offered_tools(body: w.ResponseRequest, searched: Sequence[tuple[w.ToolParam, str]],
                  search_configured: bool) -> tuple[list[Tool], Names, Search | None]:
    """The request's tools and those a client's tool search loaded (`searched`, with where each
    came from) in the core's terms; the model's names for them; the web search to run first."""
    names = Names()
    out: list[Tool] = []
    search: Search | None = None
    entries = [(t, f"tools[{i}]") for i, t in enumerate(body.tools or [])] + list(searched)

    def add(tool: Tool, wire: WireTool) -> None:
        out.append(tool)
        names.tools[tool.name] = wire

    for tool, where in entries:
        if isinstance(tool, w.FunctionTool):
            add(_function(tool, tool.name, where), WireTool("function", tool.name))
        elif isinstance(tool, w.CustomTool):
            add(_custom(tool, tool.name, where), WireTool("custom", tool.name))
        elif isinstance(tool, w.NamespaceTool):
            for j, inner in enumerate(tool.tools):
                name = flat(inner.name, tool.name)
                inner_where = f"{where}.tools[{j}]"
                description = " ".join(d for d in (tool.description, inner.description) if d) or None
                inner = inner.model_copy(update={"description": description})
                if isinstance(inner, w.FunctionTool):
                    add(_function(inner, name, inner_where), WireTool("function", inner.name, tool.name))
                else:
                    add(_custom(inner, name, inner_where), WireTool("custom", inner.name, tool.name))
        elif isinstance(tool, w.ToolSearchTool) and tool.execution == "client":
            add(CoreFunctionTool(TOOL_SEARCH, tool.description or "Search for more tools to use.",
                                 tool.parameters or TOOL_SEARCH_PARAMETERS, where=where),
                WireTool("tool_search", TOOL_SEARCH))
        elif isinstance(tool, w.WebSearchTool):
            if tool.external_web_access is False or body.max_tool_calls == 0 or not _usable(body, tool.type):
                continue  # no live search asked for, or none allowed: leaving it out changes nothing
            if not search_configured:
                raise UnsupportedParameter(
                    f"`{where}`: the hosted tool `{tool.type}` needs web search, which is not configured on this "
                    'server: add a [search] table to rill.toml (provider = "searxng", "brave" or "tavily"; see '
                    "docs/web-search.md), or send `external_web_access: false`.", param=f"{where}.type")
            search = Search(tool.search_context_size or "medium", tool.user_location,
                            tool.model_dump(mode="json", exclude_none=True))
        else:
            kind = tool.type if not isinstance(tool, w.ToolSearchTool) else "tool_search (execution: server)"
            if _usable(body, tool.type):
                raise UnsupportedParameter(
                    f"`{where}`: the hosted tool `{kind}` is not available on this server (it runs only "
                    "client tools: function, custom, namespace, tool_search with execution client; and "
                    "web_search with a configured [search] provider).", param=f"{where}.type")
    return out, names, search


def _function(tool: w.FunctionTool, name: str, where: str) -> CoreFunctionTool:
    parameters = tool.parameters if tool.parameters is not None else EMPTY_PARAMETERS
    return CoreFunctionTool(name, tool.description, parameters, where=where)


def _custom(tool: w.CustomTool, name: str, where: str) -> CoreCustomTool:
    fmt = tool.format
    if isinstance(fmt, w.GrammarFormat):
        return CoreCustomTool(name, tool.description, fmt.syntax, fmt.definition, where=where)
    return CoreCustomTool(name, tool.description, where=where)


def _named(names: Names, tools: Sequence[Tool], name: str, kind: str, where: str) -> str:
    """The model's name of the tool a choice names: exactly, or a namespaced tool by its own name
    where only one has it."""
    if name in names.tools and names.tools[name].kind in (kind, "tool_search"):
        return name
    matches = [model for model, wire in names.tools.items() if wire.name == name and wire.kind == kind]
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(names.tools) or "none"
    raise InvalidRequest(f"`{where}` names the {kind} tool `{name}`, which is not among the tools ({listed}).",
                         param=where)


def tool_choice(body: w.ResponseRequest, tools: Sequence[Tool], names: Names) -> ToolChoice:
    choice = body.tool_choice
    if choice is None or choice == "auto":
        return ToolChoice("auto")
    if isinstance(choice, str):
        if choice == "required" and not tools:
            raise InvalidRequest("`tool_choice` is `required`, but no tools the model can call were given.",
                                 param="tool_choice")
        return ToolChoice(choice)  # type: ignore[arg-type]
    if isinstance(choice, w.NamedTool):
        name = _named(names, tools, choice.name, choice.type, "tool_choice.name")
        return ToolChoice("required", (name,), where="tool_choice.name")
    if isinstance(choice, w.AllowedTools):
        allowed: list[str] = []
        for j, entry in enumerate(choice.tools):
            kind = entry.get("type")
            if kind in ("function", "custom") and isinstance(entry.get("name"), str):
                allowed.append(_named(names, tools, entry["name"], kind, f"tool_choice.tools[{j}].name"))
            elif kind == "tool_search" and TOOL_SEARCH in names.tools:
                allowed.append(TOOL_SEARCH)
            elif kind in WEB_SEARCH_TYPES:
                continue  # the search runs before the model writes (or was left out)
            else:
                raise InvalidRequest(f"`tool_choice.tools[{j}]` names no tool of this request.",
                                     param=f"tool_choice.tools[{j}]")
        if not allowed:
            if choice.mode == "required":
                raise InvalidRequest("`tool_choice.tools` allows no tool the model can call, but `mode` is "
                                     "`required`.", param="tool_choice.tools")
            return ToolChoice("none")
        return ToolChoice(choice.mode, tuple(allowed), where="tool_choice.tools")
    # a hosted tool forced: web search runs before the model writes; any other cannot run here
    if choice.type in WEB_SEARCH_TYPES and any(isinstance(t, w.WebSearchTool) for t in body.tools or []):
        return ToolChoice("auto")
    raise UnsupportedParameter(f"`tool_choice`: the hosted tool `{choice.type}` is not available on this server.",
                               param="tool_choice.type")
