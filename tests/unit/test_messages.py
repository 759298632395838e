"""rill.api.protocols.chat.messages and the tools part of planning: a template that knows the Hermes tool format
gets the tools, calls and results as its variables; any other gets the fallback format."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rill.api.core import tools as core_tools
from rill.api.core.messages import render
from rill.api.protocols.chat.messages import core_messages
from rill.api.protocols.chat.plan import plan_chat, to_core
from rill.api.protocols.chat.schemas import ChatCompletionRequest
from rill.backends.fake import FakeBackend
from rill.engine.engine import Engine
from rill.router import LocalModel
from rill.sampling.template import CHATML, ChatTemplate


def render_messages(body: ChatCompletionRequest, tools=()) -> list[dict[str, Any]]:
    """The chat adapter's messages through the core's renderer."""
    return render(core_messages(body), tools)


def plan_tools(body: ChatCompletionRequest) -> core_tools.ToolPlan | None:
    return core_tools.plan_tools(to_core(body))

# A small template in the Hermes style (as Qwen's and Hermes' templates render tools).
HERMES = (
    "{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools><|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n{{ m.content }}"
    "{% for c in m.tool_calls %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", \"arguments\": "
    "{{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>{{ m.name }}:{{ m.content }}</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}<|im_start|>assistant\n"
)
TOOL = {"type": "function", "function": {"name": "lookup", "description": "Look it up",
                                          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
HISTORY = [{"role": "user", "content": "find x"},
           {"role": "assistant", "content": "", "tool_calls": [
               {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]},
           {"role": "tool", "tool_call_id": "call_9", "content": "x is 4"}]


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": HISTORY, **fields})


def prompt_of(template: str, **fields: Any) -> str:
    model = LocalModel(id="fake", engine=Engine(FakeBackend()), template=ChatTemplate(template))
    tokens = plan_chat(request(**fields), model, max_n=1).request.prompt_tokens
    return "".join(FakeBackend().token_bytes(t).decode() if t < 256 else {256: "<|im_start|>", 257: "<|im_end|>"}[t]
                   for t in tokens)


def test_which_templates_know_the_tool_format():
    assert ChatTemplate(HERMES).knows_tools and not ChatTemplate(CHATML).knows_tools


def test_a_hermes_template_renders_tools_calls_and_results_itself():
    prompt = prompt_of(HERMES, tools=[TOOL])
    assert prompt.startswith("<|im_start|>system\n<tools>" + json.dumps(TOOL) + "</tools><|im_end|>\n")
    # arguments reach the template as JSON (it writes them with tojson), results with the call's name
    assert '<tool_call>\n{"name": "lookup", "arguments": {"q": "x"}}\n</tool_call>' in prompt
    assert "<tool_response>lookup:x is 4</tool_response>" in prompt
    assert "# Tools" not in prompt  # the fallback system prompt is not added


def test_other_templates_get_the_fallback_format():
    prompt = prompt_of(CHATML, tools=[TOOL])
    assert prompt.startswith("<|im_start|>system\n# Tools\n")
    assert '<|im_start|>assistant\n<tool_call>\n{"name":"lookup","arguments":{"q":"x"}}\n</tool_call><|im_end|>' in prompt
    assert "<|im_start|>user\n<tool_response>\nx is 4\n</tool_response><|im_end|>" in prompt


def test_the_tools_go_at_the_end_of_an_existing_system_prompt():
    body = ChatCompletionRequest.model_validate({"messages": [{"role": "developer", "content": "Be brief."}, *HISTORY],
                                                 "tools": [TOOL]})
    messages = render_messages(body, plan_tools(body).offered)
    assert messages[0]["role"] == "developer" and messages[0]["content"].startswith("Be brief.\n\n# Tools\n")
    assert sum(m["role"] in ("system", "developer") for m in messages) == 1


def test_arguments_that_are_not_json_are_replayed_as_written():
    body = ChatCompletionRequest.model_validate({"messages": [
        {"role": "assistant", "function_call": {"name": "lookup", "arguments": "not json"}},
        {"role": "function", "name": "lookup", "content": "ok"}]})
    messages = render_messages(body)
    assert messages[0]["content"] == '<tool_call>\n{"name":"lookup","arguments":"not json"}\n</tool_call>'
    assert messages[1] == {"role": "user", "content": "<tool_response>\nok\n</tool_response>"}


@pytest.mark.parametrize("fields, mode, callable_, parallel, legacy", [
    ({"tools": [TOOL]}, "auto", ["lookup"], True, False),
    ({"tools": [TOOL], "tool_choice": "none"}, "none", ["lookup"], True, False),
    ({"tools": [TOOL], "parallel_tool_calls": False}, "auto", ["lookup"], False, False),
    ({"tools": [TOOL, {**TOOL, "function": {"name": "other"}}], "tool_choice": {"type": "function",
      "function": {"name": "other"}}}, "required", ["other"], False, False),
    ({"functions": [TOOL["function"]]}, "auto", ["lookup"], False, True),
    ({"functions": [TOOL["function"]], "function_call": {"name": "lookup"}}, "required", ["lookup"], False, True),
])
def test_tool_choice_becomes_a_mode(fields, mode, callable_, parallel, legacy):
    plan = plan_tools(request(**fields))
    assert (plan.mode, [t.name for t in plan.callable], plan.parallel, plan.legacy) == (mode, callable_, parallel, legacy)


def test_no_tools_no_plan():
    assert plan_tools(request(tool_choice="none", function_call="auto")) is None
