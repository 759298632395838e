"""Stored completions on the fake model: `store: true` keeps the completion (a streamed one as
the assembled chat.completion) and its messages, and the stored-completions API serves them."""

from __future__ import annotations

import pytest

from tests.api.conftest import CHAT_URL, assert_error, chat, parse_sse


async def store_one(client, content: str, *, stream: bool = False, **fields) -> str:
    r = await client.post(CHAT_URL, json=chat(content, store=True, temperature=0, stream=stream, **fields))
    assert r.status_code == 200, r.text
    return parse_sse(r.text)[0]["id"] if stream else r.json()["id"]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_stored_completion_is_served_back_with_its_messages(client, stream):
    completion_id = await store_one(client, "héllo", stream=stream, metadata={"team": "search"})
    got = (await client.get(f"{CHAT_URL}/{completion_id}")).json()
    assert got["id"] == completion_id and got["object"] == "chat.completion"
    assert got["choices"][0]["message"]["content"] == "héllo" and got["metadata"] == {"team": "search"}
    assert got["usage"]["completion_tokens"] > 0
    messages = (await client.get(f"{CHAT_URL}/{completion_id}/messages")).json()
    assert messages["data"] == [{"id": f"{completion_id}-0", "role": "user", "content": "héllo"}]
    assert not messages["has_more"]


async def test_list_filter_update_and_delete(client):
    a = await store_one(client, "a", metadata={"env": "prod"})
    b = await store_one(client, "b", metadata={"env": "dev"})
    await client.post(CHAT_URL, json=chat("not stored", temperature=0))
    listed = (await client.get(CHAT_URL)).json()
    assert [c["id"] for c in listed["data"]] == [a, b] and listed["first_id"] == a and listed["last_id"] == b
    assert [c["id"] for c in (await client.get(CHAT_URL, params={"metadata[env]": "prod"})).json()["data"]] == [a]
    page = (await client.get(CHAT_URL, params={"limit": 1, "order": "desc"})).json()
    assert [c["id"] for c in page["data"]] == [b] and page["has_more"]
    assert [c["id"] for c in (await client.get(CHAT_URL, params={"after": b, "order": "desc"})).json()["data"]] == [a]
    updated = (await client.post(f"{CHAT_URL}/{a}", json={"metadata": {"env": "staging"}})).json()
    assert updated["metadata"] == {"env": "staging"}
    assert (await client.get(CHAT_URL, params={"metadata[env]": "prod"})).json()["data"] == []
    deleted = (await client.delete(f"{CHAT_URL}/{a}")).json()
    assert deleted == {"object": "chat.completion.deleted", "id": a, "deleted": True}
    assert_error(await client.get(f"{CHAT_URL}/{a}"), 404, param="completion_id")
    assert_error(await client.delete(f"{CHAT_URL}/{a}"), 404)


async def test_tool_calls_are_stored_as_the_message_had_them(client):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"enum": [1, 2]}}, "required": ["x"], "additionalProperties": False}}}]
    completion_id = await store_one(client, "x", stream=True, tools=tools, tool_choice="required",
                                    parallel_tool_calls=False)
    message = (await client.get(f"{CHAT_URL}/{completion_id}")).json()["choices"][0]["message"]
    assert message["content"] is None and message["tool_calls"][0]["function"]["name"] == "f"


@pytest.mark.parametrize("request_, param", [
    ({"params": {"limit": 0}}, "limit"), ({"params": {"limit": 101}}, "limit"),
    ({"params": {"order": "sideways"}}, "order"), ({"params": {"after": "chatcmpl-none"}}, "completion_id"),
    ({"params": {"metadata": "x"}}, "metadata"),
])
async def test_bad_list_queries_are_openai_shaped_errors(client, request_, param):
    r = await client.get(CHAT_URL, **request_)
    assert r.status_code in (400, 404) and assert_error(r, r.status_code)["param"] == param


async def test_bad_updates_are_400s(client):
    completion_id = await store_one(client, "a")
    assert_error(await client.post(f"{CHAT_URL}/{completion_id}", json={"metadata": {"k": 1}}), 400, param="metadata.k")
    assert_error(await client.post(f"{CHAT_URL}/{completion_id}", json={"nonsense": 1}), 400)
    assert_error(await client.post(f"{CHAT_URL}/chatcmpl-missing", json={"metadata": {}}), 404)


async def test_metadata_without_store_is_refused(client):
    assert_error(await client.post(CHAT_URL, json=chat("a", metadata={"k": "v"})), 400, param="metadata")


async def test_a_completion_is_kept_when_the_store_is_reopened(client, app, config):
    completion_id = await store_one(client, "kept")
    from rill.store.completions import CompletionStore
    from rill.store.database import open_database
    engine = await open_database(config.database_url)
    try:
        assert (await CompletionStore(engine).get("", completion_id))["choices"][0]["message"]["content"] == "kept"
    finally:
        await engine.dispose()


async def test_a_streamed_completion_is_stored_with_its_logprobs(client):
    completion_id = await store_one(client, "abc", stream=True, logprobs=True)
    choice = (await client.get(f"{CHAT_URL}/{completion_id}")).json()["choices"][0]
    assert "".join(e["token"] for e in choice["logprobs"]["content"]) == choice["message"]["content"] == "abc"


async def test_an_update_holds_at_most_16_pairs(client):
    completion_id = await store_one(client, "a")
    r = await client.post(f"{CHAT_URL}/{completion_id}", json={"metadata": {f"k{i}": "v" for i in range(17)}})
    assert_error(r, 400, param="metadata")
