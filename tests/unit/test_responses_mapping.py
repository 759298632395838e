"""Responses requests -> the core's GenerationRequest: input items to messages (Codex's and the
openai SDK's shapes, history from previous_response_id), tools (namespaces flattened, custom tools
with their grammar, a client's tool search, hosted tools accepted only where leaving them out
changes nothing), tool choice and every option, and each refusal naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from rill.api.core.request import CustomTool, FunctionTool, Message, ToolCall, ToolChoice
from rill.api.http.body import validated
from rill.api.protocols.responses import mapping
from rill.api.protocols.responses.mapping import map_request
from rill.api.protocols.responses.tools import EMPTY_PARAMETERS, TOOL_SEARCH_PARAMETERS, Search, WireTool
from rill.api.protocols.responses.schemas import ResponseRequest
from rill.errors import InvalidRequest, RillError

LARK = 'start: "a"+\n'
EXEC = {"type": "function", "name": "exec_command", "strict": False, "description": "Runs a command",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"],
                       "additionalProperties": False}}


def body(**fields: Any) -> ResponseRequest:
    return validated({"input": "hi", **fields}, ResponseRequest)


def mapped(**fields: Any) -> mapping.Mapped:
    return map_request(body(**fields))


def refused(param: str, *, search: bool = False, history=(), **fields: Any) -> RillError:
    with pytest.raises(RillError) as caught:
        map_request(validated({"input": "hi", **fields}, ResponseRequest), history, search_configured=search)
    assert caught.value.status == 400, caught.value.message
    assert caught.value.param == param, (caught.value.param, caught.value.message)
    return caught.value


def test_a_string_input_is_one_user_message_after_the_instructions():
    gen = mapped(instructions="Be brief.").gen
    assert gen.messages == (Message("system", "Be brief."), Message("user", "hi"))
    assert gen.messages_where == "input" and gen.max_tokens_where == "max_output_tokens"


def test_codex_s_input_developer_messages_with_client_ids_and_a_tool_round_trip():
    items = [
        {"type": "message", "id": "msg_1", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"type": "message", "id": "msg_2", "role": "user", "content": [{"type": "input_text", "text": "run it"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "function_call", "status": "completed", "id": "fc_1", "name": "exec_command",
         "arguments": '{"cmd": "echo hi"}', "call_id": "call_1"},
        {"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": "hi\n"},
        {"type": "message", "id": "msg_3", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "It said hi.", "annotations": [], "logprobs": []}]},
        {"type": "message", "id": "msg_4", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
    ]
    result = map_request(validated({"input": items, "tools": [EXEC], "tool_choice": "auto", "store": False,
                                    "include": ["reasoning.encrypted_content"], "prompt_cache_key": "s",
                                    "client_metadata": {"session_id": "s"}, "reasoning": {"summary": "auto"},
                                    "parallel_tool_calls": True, "text": {"verbosity": "low"}}, ResponseRequest))
    gen = result.gen
    assert gen.messages == (
        Message("developer", "rules"), Message("user", "run it"),
        Message("assistant", "", calls=(ToolCall("call_1", "exec_command", '{"cmd": "echo hi"}'),)),
        Message("tool", "hi\n", name="exec_command", call_id="call_1"),
        Message("assistant", "It said hi."), Message("user", "thanks"))
    assert gen.tools == (FunctionTool("exec_command", "Runs a command", EXEC["parameters"], where="tools[0]"),)
    assert gen.tool_choice == ToolChoice("auto") and gen.parallel_tool_calls and gen.verbosity == "low"
    assert gen.reasoning_budget is None and gen.top_logprobs is None


def test_an_assistant_turn_s_text_reasoning_and_calls_are_one_message():
    items = [{"role": "user", "content": "q"},
             {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "hm"}]},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
             {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c1"},
             {"type": "custom_tool_call", "name": "apply_patch", "input": "*** Begin Patch", "call_id": "c2"},
             {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "one"}]},
             {"type": "custom_tool_call_output", "call_id": "c2", "output": "two"}]
    gen = map_request(validated({"input": items}, ResponseRequest)).gen
    assert gen.messages[1:] == (
        Message("assistant", "Let me look.", reasoning="hm",
                calls=(ToolCall("c1", "f", "{}"), ToolCall("c2", "apply_patch", "*** Begin Patch", custom=True))),
        Message("tool", "one", name="f", call_id="c1"), Message("tool", "two", name="apply_patch", call_id="c2"))


def test_namespaces_are_flattened_and_their_calls_named_back():
    tools = [{"type": "namespace", "name": "multi_agent_v1", "description": "Agents.",
              "tools": [{"type": "function", "name": "spawn", "description": "Start one.", "parameters": None},
                        {"type": "custom", "name": "note", "format": {"type": "text"}}]},
             {"type": "function", "name": "spawn", "parameters": {"type": "object"}}]
    items = [{"role": "user", "content": "go"},
             {"type": "function_call", "name": "spawn", "namespace": "multi_agent_v1", "arguments": "{}",
              "call_id": "c1"},
             {"type": "function_call_output", "call_id": "c1", "output": "ok"}]
    result = map_request(validated({"input": items, "tools": tools,
                                    "tool_choice": {"type": "custom", "name": "note"}}, ResponseRequest))
    gen = result.gen
    assert [t.name for t in gen.tools] == ["multi_agent_v1.spawn", "multi_agent_v1.note", "spawn"]
    assert gen.tools[0] == FunctionTool("multi_agent_v1.spawn", "Agents. Start one.", EMPTY_PARAMETERS,
                                        where="tools[0].tools[0]")
    assert isinstance(gen.tools[1], CustomTool) and gen.tools[1].syntax is None
    assert result.names.wire("multi_agent_v1.spawn", False) == WireTool("function", "spawn", "multi_agent_v1")
    assert result.names.wire("spawn", False) == WireTool("function", "spawn")
    assert gen.messages[1].calls == (ToolCall("c1", "multi_agent_v1.spawn", "{}"),)
    assert gen.messages[2].name == "multi_agent_v1.spawn"
    # a namespaced tool named by its own name, where that is unambiguous
    assert gen.tool_choice == ToolChoice("required", ("multi_agent_v1.note",), where="tool_choice.name")
    ambiguous = refused("tool_choice.name", tools=tools, tool_choice={"type": "function", "name": "nope"})
    assert "multi_agent_v1.spawn" in ambiguous.message


def test_custom_tools_keep_their_grammar():
    gen = mapped(tools=[{"type": "custom", "name": "apply_patch", "description": "patch",
                         "format": {"type": "grammar", "syntax": "lark", "definition": LARK}},
                        {"type": "custom", "name": "digits", "format": {"type": "grammar", "syntax": "regex",
                                                                        "definition": "[0-9]+"}},
                        {"type": "custom", "name": "free"}],
                 tool_choice={"type": "custom", "name": "apply_patch"}).gen
    assert gen.tools == (CustomTool("apply_patch", "patch", "lark", LARK, where="tools[0]"),
                         CustomTool("digits", None, "regex", "[0-9]+", where="tools[1]"),
                         CustomTool("free", None, where="tools[2]"))
    assert gen.tool_choice == ToolChoice("required", ("apply_patch",), where="tool_choice.name")


@pytest.mark.parametrize("choice, expected", [
    ("none", ToolChoice("none")),
    ("required", ToolChoice("required")),
    ({"type": "function", "name": "exec_command"}, ToolChoice("required", ("exec_command",), where="tool_choice.name")),
    ({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "exec_command"}]},
     ToolChoice("auto", ("exec_command",), where="tool_choice.tools")),
    ({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "web_search"}]}, ToolChoice("none")),
])
def test_tool_choice(choice, expected):
    assert mapped(tools=[EXEC], tool_choice=choice).gen.tool_choice == expected


def test_a_client_tool_search_is_a_tool_and_its_results_are_offered():
    items = [{"role": "user", "content": "find a tool"},
             {"type": "tool_search_call", "id": "tsc_1", "call_id": "c1", "execution": "client",
              "arguments": {"query": "weather"}, "status": "completed"},
             {"type": "tool_search_output", "id": "tso_1", "call_id": "c1", "execution": "client",
              "tools": [{"type": "function", "name": "weather", "description": "Weather.", "parameters": None}]}]
    result = map_request(validated({"input": items, "tools": [{"type": "tool_search", "execution": "client",
                                                                "description": "Find tools."}]}, ResponseRequest))
    gen = result.gen
    assert [t.name for t in gen.tools] == ["tool_search", "weather"]
    assert gen.tools[0].parameters == TOOL_SEARCH_PARAMETERS
    assert result.names.wire("tool_search", False).kind == "tool_search"
    assert gen.messages[1].calls == (ToolCall("c1", "tool_search", '{"query": "weather"}'),)
    assert gen.messages[2] == Message("tool", '[{"type": "function", "name": "weather", "description": "Weather."}]',
                                      name="tool_search", call_id="c1")


@pytest.mark.parametrize("tool, choice", [
    ({"type": "web_search", "external_web_access": False, "search_content_types": ["text", "image"]}, "auto"),
    ({"type": "file_search", "vector_store_ids": ["vs_1"]}, "none"),
    ({"type": "mcp", "server_label": "x", "server_url": "https://example.com"}, "none"),
    ({"type": "code_interpreter", "container": {"type": "auto"}},
     {"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "exec_command"}]}),
])
def test_hosted_tools_that_could_not_be_used_anyway_are_left_out(tool, choice):
    result = mapped(tools=[EXEC, tool], tool_choice=choice)
    assert [t.name for t in result.gen.tools] == ["exec_command"] and result.search is None


@pytest.mark.parametrize("tool", [
    {"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "code_interpreter", "container": "c"},
    {"type": "computer_use_preview", "display_width": 1, "display_height": 1, "environment": "linux"},
    {"type": "image_generation"}, {"type": "mcp", "server_label": "x"}, {"type": "local_shell"},
    {"type": "tool_search"}, {"type": "tool_search", "execution": "server"},
    {"type": "web_search"},  # live web search, and no [search] provider configured
])
def test_hosted_tools_rill_cannot_run_are_refused_by_name(tool):
    error = refused("tools[1].type", tools=[EXEC, tool])
    assert tool["type"] in error.message


def test_web_search_with_a_provider_searches_first():
    result = map_request(body(tools=[{"type": "web_search_preview", "search_context_size": "low"}]),
                         search_configured=True)
    assert result.search == Search("low", None, {"type": "web_search_preview", "search_context_size": "low"})
    assert result.gen.tools == ()
    none = map_request(body(tools=[{"type": "web_search"}], max_tool_calls=0), search_configured=True)
    assert none.search is None


def test_options_map_to_the_core_s_fields():
    gen = mapped(temperature=0.2, top_p=0.5, max_output_tokens=64, top_logprobs=3,
                 include=["message.output_text.logprobs", "file_search_call.results"],
                 reasoning={"effort": "low", "summary": "detailed"}, service_tier="flex", stream=True,
                 text={"format": {"type": "json_schema", "name": "a", "strict": True,
                                  "schema": {"type": "object", "properties": {"x": {"type": "integer"}}}}}).gen
    assert (gen.temperature, gen.top_p, gen.max_tokens, gen.top_logprobs) == (0.2, 0.5, 64, 3)
    assert gen.reasoning_budget == 512 and gen.priority_tier == "flex" and gen.stream
    assert gen.answer_schema == {"type": "object", "properties": {"x": {"type": "integer"}}}
    assert gen.answer_schema_where == "text.format.schema"
    assert mapped(text={"format": {"type": "json_object"}}).gen.answer_schema == {"type": "object"}
    assert mapped(top_logprobs=5).gen.top_logprobs is None  # no logprobs unless `include` asks for them
    assert mapped(include=["message.output_text.logprobs"]).logprobs
    assert mapped(reasoning={"effort": "none"}).gen.reasoning_budget == 0
    assert mapped(service_tier="auto").gen.priority_tier == "default"


@pytest.mark.parametrize("fields, param", [
    ({"background": True}, "background"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"stream_options": {"include_obfuscation": False}}, "stream_options"),
    ({"input": None}, "input"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"type": "computer_call_output", "call_id": "c", "output": {}}]}, "input[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_x"}]}, "input[0].id"),
    ({"input": [{"role": "developer", "content": "only rules"}]}, "input"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "file_search"}}, "tool_choice.type"),
    ({"tools": [EXEC], "tool_choice": {"type": "function", "name": "other"}}, "tool_choice.name"),
    ({"tools": [EXEC], "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": []}},
     "tool_choice.tools"),
])
def test_refusals_name_the_field(fields, param):
    refused(param, **fields)


@pytest.mark.parametrize("fields, param", [
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name"),
    ({"tools": [{"type": "custom", "name": "c", "format": {"type": "grammar", "syntax": "ebnf", "definition": ""}}]},
     "tools[0].format.syntax"),
    ({"include": ["something.else"]}, "include[0]"),
    ({"truncation": "sometimes"}, "truncation"),
    ({"temperature": "0.5"}, "temperature"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"metadata": {"k": "v" * 513}}, "metadata.k"),
])
def test_invalid_values_are_400s_naming_the_field(fields, param):
    with pytest.raises(InvalidRequest) as caught:
        validated({"input": "hi", **fields}, ResponseRequest)
    assert caught.value.param == param, caught.value.message


def test_previous_response_history_comes_before_the_new_input_without_its_instructions():
    history = mapping.history_items([
        {"id": "msg_a", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"}]},
        {"id": "msg_b", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "two", "annotations": []}]},
        {"id": "fc_c", "type": "function_call", "call_id": "call_c", "name": "f", "arguments": "{}",
         "status": "completed"}])
    result = map_request(body(instructions="New rules.", input=[
        {"type": "function_call_output", "call_id": "call_c", "output": "three"},
        {"type": "item_reference", "id": "msg_a"}]), history)
    assert result.gen.messages == (
        Message("system", "New rules."), Message("user", "one"),
        Message("assistant", "two", calls=(ToolCall("call_c", "f", "{}"),)),
        Message("tool", "three", name="f", call_id="call_c"), Message("user", "one"))
    # with history, an empty input continues the conversation
    assert map_request(body(input=[]), history).gen.messages[-1].role == "assistant"


def test_truncation_drops_whole_turns_and_keeps_the_instructions_and_the_last_turn():
    from rill.api.protocols.responses.route import _groups
    items = [{"role": "developer", "content": "rules"}, {"role": "user", "content": "q1"},
             {"type": "function_call", "name": "f", "arguments": "{}", "call_id": "c"},
             {"type": "function_call_output", "call_id": "c", "output": "r"},
             {"role": "assistant", "content": "a1"}, {"role": "system", "content": "more rules"},
             {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"},
             {"role": "user", "content": "q3"}]
    gen = map_request(validated({"input": items, "instructions": "top"}, ResponseRequest)).gen
    roles = [m.role for m in gen.messages]
    assert roles == ["system", "developer", "user", "assistant", "tool", "assistant", "system", "user", "assistant",
                     "user"]
    # the turn of q1 (its call, the call's result and the answer), then that of q2; never q3's
    assert _groups(gen) == [[2, 3, 4, 5], [7, 8]]


@pytest.mark.parametrize("fields, param", [
    ({"input": [{"type": [None], "role": "user", "content": "x"}]}, "input[0].type"),
    ({"input": [{"type": {}, "call_id": "c", "output": "x"}]}, "input[0].type"),
    ({"tools": [{"type": ["function"], "name": "f"}]}, "tools[0].type"),
    ({"tool_choice": {"type": {}, "name": "f"}}, "tool_choice.type"),
])
def test_a_type_that_is_not_a_string_is_a_400(fields, param):
    """(schemathesis found these as 500s: an unhashable `type` in the discriminators)"""
    with pytest.raises(InvalidRequest) as caught:
        validated({"input": "hi", **fields}, ResponseRequest)
    assert caught.value.param == param, caught.value.message


def test_input_items_are_kept_as_sent_with_ids():
    from rill.api.protocols.responses.stored import input_items
    [one] = input_items("hi", [])
    assert one["id"].startswith("msg_") and one["content"] == [{"type": "input_text", "text": "hi"}]
    body = validated({"input": [
        {"role": "user", "content": "q"}, {"type": "message", "id": "msg_mine", "role": "assistant", "content": "a",
                                           "phase": "final_answer"},
        {"type": "function_call_output", "call_id": "c", "output": "r"}]}, ResponseRequest)
    kept = input_items(None, body.input)
    assert kept[0]["content"] == [{"type": "input_text", "text": "q"}] and kept[0]["type"] == "message"
    assert kept[1] == {"id": "msg_mine", "type": "message", "role": "assistant", "phase": "final_answer",
                       "content": [{"type": "output_text", "text": "a", "annotations": []}]}
    assert kept[2]["id"].startswith("fco_") and kept[2]["output"] == "r"
    # what is kept reads back as the same conversation
    continued = body.model_copy(update={"input": None, "previous_response_id": "resp_x"})
    assert map_request(body).gen.messages == map_request(continued, mapping.history_items(kept)).gen.messages


def test_web_search_with_no_calls_allowed_is_left_out_without_a_provider():
    result = mapped(tools=[EXEC, {"type": "web_search"}], max_tool_calls=0)
    assert [t.name for t in result.gen.tools] == ["exec_command"] and result.search is None
