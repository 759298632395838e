"""Messages API requests -> the core's GenerationRequest (protocols/messages/mapping.py), and the
refusals: each a 400 naming the field as the client wrote it."""

from __future__ import annotations

from typing import Any

import pytest

from rill.api.core.request import FunctionTool, Message, ToolCall, ToolChoice
from rill.api.http.body import validated
from rill.api.protocols.messages.mapping import map_request
from rill.api.protocols.messages.schemas import CountMessageTokensRequest, MessagesRequest
from rill.errors import InvalidRequest, UnsupportedParameter

BASH_SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
               "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}},
               "required": ["command"], "additionalProperties": False}


def body(**fields: Any) -> MessagesRequest:
    return validated({"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], **fields},
                     MessagesRequest)


def refused(**fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        map_request(body(**fields))
    return caught.value


def test_plain_request_maps_sampling_and_limits() -> None:
    gen = map_request(body(temperature=0.2, top_p=0.9, top_k=40, stop_sequences=["\n\nHuman:", "END"],
                           stream=True, metadata={"user_id": "u-1"})).request
    assert gen.model == "m"
    assert gen.messages == (Message("user", "hi"),)
    assert (gen.temperature, gen.top_p, gen.top_k) == (0.2, 0.9, 40)
    assert gen.stop == ("\n\nHuman:", "END")
    assert gen.stream is True
    # max_tokens beyond the room left is lowered to it (Claude Code sends 32,000 to an 8k model)
    assert (gen.max_tokens, gen.clamp_max_tokens, gen.max_tokens_where) == (64, True, "max_tokens")
    assert gen.reasoning_budget == 0  # no `thinking`: no thinking, as on Anthropic
    assert map_request(body(metadata={"user_id": "u-1"})).user == "u-1"


def test_defaults_are_anthropics() -> None:
    gen = map_request(body()).request
    assert (gen.temperature, gen.top_p, gen.top_k, gen.stop, gen.stream) == (None, 1.0, 0, (), False)  # None: the model's default
    assert gen.tools == () and gen.tool_choice == ToolChoice("auto")


def test_system_string_and_blocks_and_the_billing_block() -> None:
    gen = map_request(body(system="Be brief.")).request
    assert gen.messages[0] == Message("system", "Be brief.")
    blocks = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.328.593; cc_entrypoint=sdk-cli;"},
              {"type": "text", "text": "You are an agent.", "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "Use tools.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    gen = map_request(body(system=blocks)).request
    assert gen.messages[0] == Message("system", "You are an agent.\n\nUse tools.")
    assert gen.messages[1] == Message("user", "hi")


def test_role_system_message_is_a_system_turn_where_it_stands() -> None:
    """Claude Code's stock request: a system message after the user's prompt."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>\n"},
                                             {"type": "text", "text": "say hi"}]},
                {"role": "system", "content": [{"type": "text", "text": "# Environment\ncwd: /tmp"}]}]
    gen = map_request(body(system="S", messages=messages[:1] + messages[1:] + [
        {"role": "user", "content": "go on"}])).request
    assert [m.role for m in gen.messages] == ["system", "user", "system", "user"]
    assert gen.messages[1].text == "<system-reminder>x</system-reminder>\n\nsay hi"
    assert gen.messages[2] == Message("system", "# Environment\ncwd: /tmp")
    # before any turn it joins the system prompt (templates take one system message first)
    gen = map_request(body(system="S", messages=[{"role": "system", "content": "more"},
                                                 {"role": "user", "content": "hi"}])).request
    assert gen.messages == (Message("system", "S\n\nmore"), Message("user", "hi"))


def test_tool_use_and_tool_result_round_trip() -> None:
    messages = [
        {"role": "user", "content": "list files"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should run ls", "signature": "sig"},
            {"type": "text", "text": "Running it."},
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "toolu_2", "name": "Bash", "input": {"command": "pwd"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt\nb.txt", "is_error": False,
             "cache_control": {"type": "ephemeral"}},
            {"type": "tool_result", "tool_use_id": "toolu_2",
             "content": [{"type": "text", "text": "/tmp"}, {"type": "text", "text": "(done)"}]},
            {"type": "text", "text": "now summarise"}]},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "xx"},
                                          {"type": "tool_use", "id": "toolu_3", "name": "Bash",
                                           "input": {"command": "rm x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3",
                                      "content": "This command requires approval", "is_error": True}]},
    ]
    gen = map_request(body(messages=messages, tools=[{"name": "Bash", "input_schema": BASH_SCHEMA}])).request
    assert gen.messages == (
        Message("user", "list files"),
        Message("assistant", "Running it.", calls=(ToolCall("toolu_1", "Bash", '{"command": "ls"}'),
                                                   ToolCall("toolu_2", "Bash", '{"command": "pwd"}'))),
        Message("tool", "a.txt\nb.txt", name="Bash", call_id="toolu_1"),
        Message("tool", "/tmp\n(done)", name="Bash", call_id="toolu_2"),
        Message("user", "now summarise"),
        Message("assistant", "", calls=(ToolCall("toolu_3", "Bash", '{"command": "rm x"}'),)),
        Message("tool", "This command requires approval", name="Bash", call_id="toolu_3", is_error=True),
    )


def test_tool_result_without_content_and_consecutive_turns_joined() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]}]
    gen = map_request(body(messages=messages, tools=[{"name": "f", "input_schema": {"type": "object"}}])).request
    assert gen.messages == (Message("user", "a\n\nb"),
                            Message("assistant", "", calls=(ToolCall("t1", "f", "{}"),)),
                            Message("tool", "", name="f", call_id="t1"))


def test_tools_with_and_without_type_and_their_extras() -> None:
    tools = [{"name": "Bash", "description": "Run a command", "input_schema": BASH_SCHEMA,
              "cache_control": {"type": "ephemeral"}},
             {"type": "custom", "name": "Read", "input_schema": {"type": "object"}, "strict": True},
             {"name": "DeferredToolPlaceholder", "description": "d", "defer_loading": True,
              "input_schema": {"type": "object"}}]
    gen = map_request(body(tools=tools)).request
    schema = {k: v for k, v in BASH_SCHEMA.items() if k != "$schema"}
    # a deferred tool is loaded by a tool search Rill does not run: never shown
    assert gen.tools == (FunctionTool("Bash", "Run a command", schema, where="tools[0]"),
                         FunctionTool("Read", None, {"type": "object"}, where="tools[1]"))
    assert gen.tool_choice == ToolChoice("auto") and gen.parallel_tool_calls
    # unless tool_choice names it
    gen = map_request(body(tools=tools, tool_choice={"type": "tool", "name": "DeferredToolPlaceholder"})).request
    assert [t.name for t in gen.tools] == ["Bash", "Read", "DeferredToolPlaceholder"]
    assert map_request(body(tools=[])).request.tools == ()


@pytest.mark.parametrize(("choice", "mode", "allowed", "parallel"), [
    ({"type": "auto"}, "auto", None, True),
    ({"type": "auto", "disable_parallel_tool_use": True}, "auto", None, False),
    ({"type": "any"}, "required", None, True),
    ({"type": "any", "disable_parallel_tool_use": True}, "required", None, False),
    ({"type": "tool", "name": "Bash"}, "required", ("Bash",), False),
    ({"type": "none"}, "none", None, True),
])
def test_tool_choice(choice: dict, mode: str, allowed: tuple | None, parallel: bool) -> None:
    gen = map_request(body(tools=[{"name": "Bash", "input_schema": BASH_SCHEMA}], tool_choice=choice)).request
    assert gen.tool_choice == ToolChoice(mode, allowed)  # type: ignore[arg-type]
    assert gen.parallel_tool_calls is parallel


@pytest.mark.parametrize(("thinking", "effort", "budget"), [
    (None, None, 0), ({"type": "disabled"}, None, 0), ({"type": "enabled", "budget_tokens": 1500}, "low", 1500),
    ({"type": "adaptive", "display": "omitted"}, None, None), ({"type": "adaptive"}, "medium", 2048),
    ({"type": "adaptive"}, "high", 8192), ({"type": "adaptive"}, "max", None), (None, "low", 512),
])
def test_thinking_and_effort_set_the_thinking_budget(thinking: dict | None, effort: str | None,
                                                    budget: int | None) -> None:
    fields: dict[str, Any] = {}
    if thinking is not None:
        fields["thinking"] = thinking
    if effort is not None:
        fields["output_config"] = {"effort": effort}
    assert map_request(body(**fields)).request.reasoning_budget == budget


def test_thinking_display_omitted_hides_thinking() -> None:
    assert map_request(body(thinking={"type": "adaptive", "display": "omitted"})).show_thinking is False
    assert map_request(body(thinking={"type": "adaptive"})).show_thinking is True


def test_claude_code_fields_are_accepted() -> None:
    mapped = map_request(body(
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        output_config={"effort": "high"}, service_tier="auto", container=None, some_future_beta_field={"x": 1},
        metadata={"user_id": '{"device_id":"ab","account_uuid":"","session_id":"s"}'}))
    assert mapped.request.messages == (Message("user", "hi"),)


def test_output_format_is_the_answer_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    gen = map_request(body(output_config={"format": {"type": "json_schema", "schema": schema}})).request
    assert gen.answer_schema == schema and gen.answer_schema_where == "output_config.format.schema"


def test_count_tokens_request_maps_the_prompt_alone() -> None:
    req = validated({"model": "m", "system": "S", "messages": [{"role": "user", "content": "hi"}],
                     "tools": [{"name": "Bash", "input_schema": BASH_SCHEMA}]}, CountMessageTokensRequest)
    gen = map_request(req).request
    assert gen.messages == (Message("system", "S"), Message("user", "hi"))
    assert [t.name for t in gen.tools] == ["Bash"] and gen.max_tokens is None


@pytest.mark.parametrize(("fields", "param", "words"), [
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]},
     "messages[0].content[0].type", "`image`"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
     "messages[0].content[0].type", "`document`"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                 "content": [{"type": "image", "source": {}}]}]}]},
     "messages[0].content[0].content[0].type", "`image`"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "The answer is"}]},
     "messages[1]", "prefill"),
    ({"messages": []}, "messages", "at least one"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]},
     "messages[0].content[0].type", "assistant message"),
    ({"tools": [{"name": "f"}]}, "tools[0].input_schema", "required"),
    ({"tools": [{"name": "f", "input_schema": {}}, {"name": "f", "input_schema": {}}]}, "tools[1].name", "unique"),
    ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0].type", "bash_20250124"),
    ({"tools": [{"type": "code_execution_20250825", "name": "code_execution"}]}, "tools[0].type",
     "code_execution_20250825"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type", "[search]"),
    ({"tool_choice": {"type": "any"}}, "tool_choice.type", "needs `tools`"),
    ({"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "tool", "name": "g"}},
     "tool_choice.name", "`g`"),
    ({"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "tool"}}, "tool_choice.name", "required"),
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens", "required"),
    ({"stop_sequences": ["ok", ""]}, "stop_sequences[1]", "empty"),
    ({"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}, "mcp_servers", "MCP"),
])
def test_refusals_name_the_field(fields: dict, param: str, words: str) -> None:
    err = refused(**fields)
    assert err.status == 400 and err.param == param
    assert words in err.message


def test_server_tools_are_unsupported_parameters() -> None:
    assert isinstance(refused(tools=[{"type": "web_fetch_20250910", "name": "web_fetch"}]), UnsupportedParameter)


def test_web_search_with_a_provider_is_run_by_rill() -> None:
    tool = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3,
            "allowed_domains": ["Example.com"], "user_location": {"type": "approximate", "city": "Oslo"}}
    mapped = map_request(body(tools=[tool, {"name": "f", "input_schema": {"type": "object"}}]), search_configured=True)
    assert mapped.web_search is not None
    assert (mapped.web_search.max_uses, mapped.web_search.allowed_domains) == (3, ("example.com",))
    assert mapped.web_search.user_location == {"type": "approximate", "city": "Oslo"}
    assert [t.name for t in mapped.request.tools] == ["f"]  # the search tool is Rill's, not the model's


@pytest.mark.parametrize(("fields", "param"), [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"temperature": 1.5}, "temperature"),
    ({"top_k": -1}, "top_k"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0]"),
    ({"tools": [{"name": "bad name", "input_schema": {}}]}, "tools[0].name"),
    # found by schemathesis: a tool_result's block without a type was a 500
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                 "content": [{"text": "x"}]}]}]}, "messages[0].content[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                 "content": [{"type": "tool_use"}]}]}]},
     "messages[0].content[0].content[0]"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
])
def test_invalid_wire_values_are_400s(fields: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        body(**fields)
    assert caught.value.param == param, caught.value.message


def test_max_tokens_is_required() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validated({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, MessagesRequest)
    assert caught.value.param == "max_tokens"
