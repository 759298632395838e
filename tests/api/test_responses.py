"""POST /v1/responses in-process on the fake model (which echoes the last user message, so a
message that is a call's markup comes back as that call): the response object and the full
event stream, function, namespaced and custom (Lark) calls, a tool round trip, store and
previous_response_id chains, store: false, truncation, the token cap, logprobs, structured
output, errors before and after the first byte, keys, spans and metrics."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from rill.backends.fake import FakeBackend
from rill.sampling.grammar import Grammars
from rill.sampling.tool_format import call_text
from tests.api.conftest import MODEL, assert_error, chatml_prompt_tokens, engine_idle, wait_until
from tests.unit.test_responses_custom_tools import APPLY_PATCH, PATCH

URL = "/v1/responses"
EXEC = {"type": "function", "name": "exec_command", "strict": False, "description": "Runs a command.",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"],
                       "additionalProperties": False}}
PATCHER = {"type": "custom", "name": "apply_patch", "description": "Edit files.",
           "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH}}


def req(input: Any = "Hello there", **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": input, "temperature": 0, **fields}


def parse_events(text: str) -> list[dict[str, Any]]:
    """A Responses stream: `event: <type>` then `data: <json>` per event; the type is the data's."""
    assert text.endswith("\n\n"), text[-80:]
    events = []
    for raw in text[:-2].split("\n\n"):
        lines = [line for line in raw.split("\n") if not line.startswith(":")]
        if not lines:
            continue
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), raw
        event = json.loads(lines[1][len("data: "):])
        assert event["type"] == lines[0][len("event: "):]
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


async def create(client: httpx.AsyncClient, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    r = await client.post(URL, json=body, **kwargs)
    assert r.status_code == 200, r.text
    return r.json()


async def stream(client: httpx.AsyncClient, body: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    r = await client.post(URL, json={**body, "stream": True}, **kwargs)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return parse_events(r.text)


def output_text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


async def test_a_text_answer(client):
    response = await create(client, req(instructions="Be brief."))
    assert response["object"] == "response" and response["id"].startswith("resp_")
    assert response["status"] == "completed" and response["model"] == MODEL
    assert output_text(response) == "Hello there"
    assert response["instructions"] == "Be brief." and response["store"] is True
    prompt = chatml_prompt_tokens([{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "Hello there"}])
    assert response["usage"] == {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                                 "output_tokens": len("Hello there"),
                                 "output_tokens_details": {"reasoning_tokens": 0},
                                 "total_tokens": prompt + len("Hello there")}


async def test_the_stream_is_the_whole_sequence_and_ends_with_the_same_response(client):
    events = await stream(client, req())
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) > 1 and all("obfuscation" in e for e in deltas)
    assert "".join(e["delta"] for e in deltas) == events[-4]["text"] == "Hello there"
    final = events[-1]["response"]
    assert final["output"] == [events[-2]["item"]] and final["status"] == "completed"
    assert (await client.get(f"{URL}/{final['id']}")).json() == final
    plain = await stream(client, req(stream_options={"include_obfuscation": False}))
    assert not any("obfuscation" in e for e in plain)


async def test_a_forced_function_call_streams_its_arguments_in_pieces(client):
    markup = call_text("exec_command", {"cmd": "echo hi"})
    events = await stream(client, req(markup, tools=[EXEC], tool_choice={"type": "function", "name": "exec_command"}))
    pieces = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert len(pieces) > 1 and "".join(pieces) == done["arguments"] == '{"cmd":"echo hi"}'
    item = next(e for e in events if e["type"] == "response.output_item.done")["item"]
    assert item["type"] == "function_call" and item["name"] == "exec_command" and item["status"] == "completed"
    assert item["call_id"].startswith("call_") and item["id"].startswith("fc_")
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["output"] == [item]


async def test_a_tool_round_trip_as_codex_sends_it(client):
    """Codex: developer messages with client ids, store false, the call echoed back with its
    output, the whole history in every request."""
    history = [{"type": "message", "id": "msg_a", "role": "developer",
                "content": [{"type": "input_text", "text": "x"}]},
               {"type": "message", "id": "msg_b", "role": "user",
                "content": [{"type": "input_text", "text": call_text("exec_command", {"cmd": "ls"})}]}]
    first = await stream(client, {"model": MODEL, "input": history, "tools": [EXEC], "tool_choice": "auto",
                                  "store": False, "parallel_tool_calls": True, "reasoning": {"summary": "auto"},
                                  "include": ["reasoning.encrypted_content"], "prompt_cache_key": "session",
                                  "client_metadata": {"session_id": "s"}, "text": {"verbosity": "low"},
                                  "temperature": 0})
    call = next(e["item"] for e in first if e["type"] == "response.output_item.done")
    assert call["type"] == "function_call" and json.loads(call["arguments"]) == {"cmd": "ls"}
    second = await stream(client, {"model": MODEL, "store": False, "tools": [EXEC], "temperature": 0, "input": [
        *history, call, {"type": "function_call_output", "id": "fco_1", "call_id": call["call_id"], "output": "a.txt"},
        {"type": "message", "id": "msg_c", "role": "user", "content": [{"type": "input_text", "text": "Done."}]}]})
    assert second[-1]["type"] == "response.completed" and output_text(second[-1]["response"]) == "Done."
    assert_error(await client.get(f"{URL}/{first[-1]['response']['id']}"), 404)  # store: false kept nothing


async def test_a_namespaced_call_comes_back_with_its_namespace(client):
    tools = [{"type": "namespace", "name": "agents", "description": "Sub-agents.",
              "tools": [{"type": "function", "name": "spawn", "parameters": {
                  "type": "object", "properties": {"task": {"type": "string"}}, "required": ["task"]}}]}]
    markup = call_text("agents.spawn", {"task": "t"})
    response = await create(client, req(markup, tools=tools, tool_choice="required"))
    [item] = response["output"]
    assert (item["type"], item["name"], item["namespace"], item["arguments"]) == (
        "function_call", "spawn", "agents", '{"task":"t"}')
    # sent back, it is the same call
    again = await create(client, req([item, {"type": "function_call_output", "call_id": item["call_id"],
                                             "output": "ok"}, {"role": "user", "content": "fine"}], tools=tools))
    assert output_text(again) == "fine"


async def test_a_forced_custom_lark_tool_yields_input_its_grammar_accepts(client):
    markup = call_text("apply_patch", PATCH, custom=True)
    events = await stream(client, req(markup, tools=[PATCHER], tool_choice={"type": "custom", "name": "apply_patch"}))
    pieces = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    done = next(e for e in events if e["type"] == "response.custom_tool_call_input.done")
    item = next(e for e in events if e["type"] == "response.output_item.done")["item"]
    assert "".join(pieces) == done["input"] == item["input"] == PATCH
    assert item["type"] == "custom_tool_call" and item["name"] == "apply_patch"
    matcher = Grammars(FakeBackend().guidance_tokenizer(), 258).lark(APPLY_PATCH).constraint()._matcher
    assert all(matcher.consume_token(b) for b in item["input"].encode()) and matcher.is_accepting()
    # a model that writes something else is held to the grammar: the input still parses
    other = await create(client, req("no patch here", tools=[PATCHER], max_output_tokens=200,
                                     tool_choice={"type": "custom", "name": "apply_patch"}))
    assert other["output"][0]["type"] == "custom_tool_call"
    assert other["output"][0]["input"].startswith("*** Begin Patch\n")


async def test_a_custom_tool_with_a_bad_grammar_is_a_400_naming_it(client):
    bad = {"type": "custom", "name": "g", "format": {"type": "grammar", "syntax": "lark", "definition": "start: nope"}}
    assert_error(await client.post(URL, json=req(tools=[EXEC, bad])), 400, param="tools[1].format.definition")
    regex = {"type": "custom", "name": "r", "format": {"type": "grammar", "syntax": "regex", "definition": "a("}}
    assert_error(await client.post(URL, json=req(tools=[regex])), 400, param="tools[0].format.definition")


async def test_store_retrieve_input_items_and_delete(client):
    response = await create(client, req([{"role": "user", "content": "one"},
                                         {"type": "message", "id": "msg_mine", "role": "user",
                                          "content": [{"type": "input_text", "text": "two"}]}],
                                        metadata={"k": "v"}))
    rid = response["id"]
    assert response["metadata"] == {"k": "v"}
    assert (await client.get(f"{URL}/{rid}")).json() == response
    listed = (await client.get(f"{URL}/{rid}/input_items")).json()
    assert listed["object"] == "list" and not listed["has_more"]
    assert [i["content"][0]["text"] for i in listed["data"]] == ["two", "one"]  # the last first
    assert listed["data"][0]["id"] == "msg_mine" and listed["data"][1]["id"].startswith("msg_")
    page = (await client.get(f"{URL}/{rid}/input_items", params={"order": "asc", "limit": 1})).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["one"] and page["has_more"]
    deleted = await client.delete(f"{URL}/{rid}")
    assert deleted.json() == {"id": rid, "object": "response", "deleted": True}
    assert_error(await client.get(f"{URL}/{rid}"), 404, param="response_id")
    assert_error(await client.delete(f"{URL}/{rid}"), 404)


async def test_previous_response_id_chains_carry_the_conversation_but_not_the_instructions(client):
    first = await create(client, req("one", instructions="Old rules."))
    second = await create(client, req("two", previous_response_id=first["id"], instructions="New."))
    third = await create(client, req("three", previous_response_id=second["id"]))
    assert output_text(third) == "three" and third["previous_response_id"] == second["id"]
    conversation = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "one"},
                    {"role": "user", "content": "two"}, {"role": "assistant", "content": "two"},
                    {"role": "user", "content": "three"}]
    assert third["usage"]["input_tokens"] == chatml_prompt_tokens(conversation)
    assert second["usage"]["input_tokens"] == chatml_prompt_tokens(
        [{"role": "system", "content": "New."}, *conversation[:3]])
    # a deleted link, an unknown id and a response kept with store: false cannot be continued
    unkept = await create(client, req("x", store=False))
    for missing in (unkept["id"], "resp_nope"):
        assert_error(await client.post(URL, json=req("y", previous_response_id=missing)), 404,
                     param="previous_response_id")
    await client.delete(f"{URL}/{second['id']}")
    assert_error(await client.post(URL, json=req("y", previous_response_id=third["id"])), 404)


async def test_a_continued_call_takes_its_output(client):
    markup = call_text("exec_command", {"cmd": "ls"})
    first = await create(client, req(markup, tools=[EXEC], tool_choice="required"))
    call = first["output"][0]
    second = await create(client, req([{"type": "function_call_output", "call_id": call["call_id"], "output": "a"}],
                                      previous_response_id=first["id"], tools=[EXEC]))
    assert second["status"] == "completed"
    items = (await client.get(f"{URL}/{second['id']}/input_items")).json()["data"]
    assert [i["type"] for i in items] == ["function_call_output"] and items[0]["id"].startswith("fco_")


@pytest.mark.parametrize("backend", [{"n_ctx": 256}], indirect=True)
async def test_truncation(client):
    turns = []
    for n in range(12):
        turns += [{"role": "user", "content": f"question {n:02} " + "x" * 20},
                  {"role": "assistant", "content": f"answer {n:02}"}]
    long = [{"role": "developer", "content": "Rules."}, *turns, {"role": "user", "content": "last"}]
    assert_error(await client.post(URL, json=req(long)), 400, code="context_length_exceeded", param="input")
    assert_error(await client.post(URL, json=req(long, truncation="disabled")), 400, param="input")
    response = await create(client, req(long, truncation="auto"))
    assert output_text(response) == "last" and response["truncation"] == "auto"
    used = response["usage"]["input_tokens"]
    assert used <= 256 - 256 // 4  # a quarter of the context stays free for the answer
    # the oldest turns were dropped, the rules kept, and no more than needed
    rules = {"role": "system", "content": "Rules."}  # ChatML has no developer role: the template's system
    fits = max(k for k in range(0, len(turns) + 1, 2) if chatml_prompt_tokens(
        [rules, *turns[len(turns) - k:], {"role": "user", "content": "last"}]) <= 192)
    assert 0 < fits < len(turns)
    assert used == chatml_prompt_tokens([rules, *turns[len(turns) - fits:], {"role": "user", "content": "last"}])
    # what cannot fit even alone is still a 400
    assert_error(await client.post(URL, json=req("y" * 300, truncation="auto")), 400, param="input")


async def test_the_token_cap_makes_it_incomplete(client):
    events = await stream(client, req("A long enough answer", max_output_tokens=5))
    assert events[-1]["type"] == "response.incomplete"
    final = events[-1]["response"]
    assert final["incomplete_details"] == {"reason": "max_output_tokens"} and final["status"] == "incomplete"
    assert output_text(final) == "A lon" and final["output"][0]["status"] == "incomplete"
    assert final["usage"]["output_tokens"] == 5 and final["max_output_tokens"] == 5
    assert (await client.get(f"{URL}/{final['id']}")).json()["status"] == "incomplete"


async def test_logprobs_when_included(client):
    response = await create(client, req("ab", top_logprobs=2, include=["message.output_text.logprobs"]))
    [part] = response["output"][0]["content"]
    assert [e["token"] for e in part["logprobs"]] == ["a", "b"]
    assert all(len(e["top_logprobs"]) == 2 and e["bytes"] == list(e["token"].encode()) for e in part["logprobs"])
    plain = await create(client, req("ab", top_logprobs=2))
    assert plain["output"][0]["content"][0]["logprobs"] == []


async def test_structured_output(client):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    response = await create(client, req('{"n":7}', text={"format": {"type": "json_schema", "name": "num",
                                                                    "schema": schema, "strict": True}}))
    assert json.loads(output_text(response)) == {"n": 7}
    assert response["text"]["format"]["name"] == "num"
    forced = await create(client, req("not json", max_output_tokens=40, text={"format": {"type": "json_object"}}))
    assert output_text(forced).startswith("{")


async def test_errors_before_the_first_byte_are_openai_shaped(client):
    assert_error(await client.post(URL, json=req(model="nope")), 404)
    assert_error(await client.post(URL, json=req(background=True)), 400, param="background")
    assert_error(await client.post(URL, json=req(tools=[{"type": "file_search", "vector_store_ids": ["v"]}])), 400,
                 param="tools[0].type")
    no_search = assert_error(await client.post(URL, json=req(tools=[{"type": "web_search"}])), 400,
                             param="tools[0].type")
    assert "[search]" in no_search["message"]
    assert_error(await client.post(URL, json=req(input=[{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://x"}]}])), 400, param="input[0].content[0].type")
    assert_error(await client.post(URL, json=req(max_output_tokens=5000)), 400, param="max_output_tokens")
    assert_error(await client.post(URL, json=req(stream=True, text={"format": {
        "type": "json_schema", "name": "x", "schema": {"type": "nonsense"}}})), 400, param="text.format.schema")
    assert_error(await client.post(URL, content=b"{"), 400)


async def test_a_failure_after_the_first_byte_is_an_error_event_then_response_failed(client):
    events = await stream(client, req("please FAIL now"))
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["status"] == "failed" and events[-1]["response"]["error"]["message"]
    assert events[-2]["message"] == events[-1]["response"]["error"]["message"]


async def test_a_client_that_leaves_aborts_the_generation(app, live_client, backend):
    backend.step_delay = 0.01
    async with live_client.stream("POST", URL, json=req("x" * 200, stream=True)) as r:
        async for line in r.aiter_lines():
            if "output_text.delta" in line:
                break
    await wait_until(lambda: engine_idle(app, backend), what="the engine dropped the request")


async def test_every_request_is_a_span_and_counted(client):
    r = await client.post(URL, json=req(tags={"team": "a"}, user="u1"))
    span = (await client.get(f"/v1/spans/{r.headers['x-rill-span-id']}")).json()
    assert span["type"] == "responses" and span["input"] == [{"role": "user", "content": "Hello there"}]
    assert span["tags"] == {"team": "a"}
    metrics = (await client.get("/metrics")).text
    assert 'route="/v1/responses"' in metrics


async def test_a_stored_response_s_events_again(client):
    markup = call_text("exec_command", {"cmd": "ls"})
    original = await stream(client, req([{"role": "user", "content": "hi"}], instructions="x"))
    rid = original[-1]["response"]["id"]
    r = await client.get(f"{URL}/{rid}", params={"stream": "true"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    again = parse_events(r.text)
    assert again[-1] == {**original[-1], "sequence_number": again[-1]["sequence_number"]}
    assert [e["type"] for e in again] == [e["type"] for e in original if e["type"] != "response.output_text.delta"
                                          ][:4] + ["response.output_text.delta"] + [
        e["type"] for e in original if e["type"] != "response.output_text.delta"][4:]
    assert next(e for e in again if e["type"] == "response.output_text.delta")["delta"] == "hi"
    tail = parse_events_after(
        (await client.get(f"{URL}/{rid}", params={"stream": "true", "starting_after": 5})).text)
    assert [e["sequence_number"] for e in tail] == list(range(6, len(again)))
    called = await create(client, req(markup, tools=[EXEC], tool_choice="required"))
    replayed = parse_events((await client.get(f"{URL}/{called['id']}", params={"stream": "true"})).text)
    assert [e["arguments"] for e in replayed if e["type"] == "response.function_call_arguments.done"] == [
        '{"cmd":"ls"}']


def parse_events_after(text: str) -> list[dict[str, Any]]:
    """A stream resumed after a sequence number: the same framing, numbers not from 0."""
    events = []
    for raw in text[:-2].split("\n\n"):
        lines = raw.split("\n")
        events.append(json.loads(lines[1][len("data: "):]))
    return events


