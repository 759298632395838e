"""rill.store.completions on SQLite and Postgres: save, retrieve, list with cursors and filters,
update metadata, delete, and every call scoped to the owner."""

from __future__ import annotations

import pytest

from rill.store.completions import CompletionStore


def completion(i: int, model: str = "m") -> dict:
    return {"id": f"chatcmpl-{i:03d}", "object": "chat.completion", "created": 1_700_000_000 + i, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer {i} é"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi 😀"}]


@pytest.fixture
async def store(engine) -> CompletionStore:
    return CompletionStore(engine)


async def test_a_saved_completion_comes_back_as_it_went_in(store):
    await store.save("key_a", completion(1), MESSAGES, {"team": "search"})
    assert await store.get("key_a", "chatcmpl-001") == {**completion(1), "metadata": {"team": "search"}}
    assert await store.messages("key_a", "chatcmpl-001") == [
        {"id": "chatcmpl-001-0", **MESSAGES[0]}, {"id": "chatcmpl-001-1", **MESSAGES[1]}]


async def test_lists_page_with_cursors_in_either_order(store):
    for i in range(5):
        await store.save("key_a", completion(i), MESSAGES, {})
    page, more = await store.list("key_a", limit=2)
    assert [c["id"] for c in page] == ["chatcmpl-000", "chatcmpl-001"] and more
    page, more = await store.list("key_a", after="chatcmpl-001", limit=2)
    assert [c["id"] for c in page] == ["chatcmpl-002", "chatcmpl-003"] and more
    page, more = await store.list("key_a", after="chatcmpl-003", limit=2)
    assert [c["id"] for c in page] == ["chatcmpl-004"] and not more
    page, more = await store.list("key_a", order="desc", after="chatcmpl-003", limit=10)
    assert [c["id"] for c in page] == ["chatcmpl-002", "chatcmpl-001", "chatcmpl-000"] and not more
    assert await store.list("key_a", after="chatcmpl-999") is None


async def test_lists_filter_by_model_and_every_metadata_pair(store):
    await store.save("key_a", completion(1, "small"), MESSAGES, {"team": "search", "env": "prod"})
    await store.save("key_a", completion(2, "small"), MESSAGES, {"team": "search", "env": "dev"})
    await store.save("key_a", completion(3, "large"), MESSAGES, {"team": "ads", "env": "prod"})
    ids = lambda page: [c["id"] for c in page[0]]  # noqa: E731
    assert ids(await store.list("key_a", model="small")) == ["chatcmpl-001", "chatcmpl-002"]
    assert ids(await store.list("key_a", metadata={"env": "prod"})) == ["chatcmpl-001", "chatcmpl-003"]
    assert ids(await store.list("key_a", metadata={"env": "prod", "team": "search"})) == ["chatcmpl-001"]
    assert ids(await store.list("key_a", model="large", metadata={"team": "search"})) == []


async def test_updating_metadata_replaces_it_and_its_filter(store):
    await store.save("key_a", completion(1), MESSAGES, {"team": "search", "old": "yes"})
    updated = await store.update_metadata("key_a", "chatcmpl-001", {"team": "ads"})
    assert updated["metadata"] == {"team": "ads"} and updated["choices"] == completion(1)["choices"]
    assert (await store.get("key_a", "chatcmpl-001"))["metadata"] == {"team": "ads"}
    assert (await store.list("key_a", metadata={"team": "search"}))[0] == []
    assert [c["id"] for c in (await store.list("key_a", metadata={"team": "ads"}))[0]] == ["chatcmpl-001"]
    assert await store.update_metadata("key_a", "chatcmpl-404", {}) is None


async def test_deleting_removes_the_completion_and_its_messages(store):
    await store.save("key_a", completion(1), MESSAGES, {"team": "search"})
    assert await store.delete("key_a", "chatcmpl-001") is True
    assert await store.get("key_a", "chatcmpl-001") is None
    assert await store.messages("key_a", "chatcmpl-001") is None
    assert (await store.list("key_a", metadata={"team": "search"}))[0] == []
    assert await store.delete("key_a", "chatcmpl-001") is False


async def test_one_owner_never_sees_anothers_completions(store):
    await store.save("key_a", completion(1), MESSAGES, {"team": "search"})
    await store.save("key_b", completion(2), MESSAGES, {"team": "search"})
    assert await store.get("key_b", "chatcmpl-001") is None
    assert await store.messages("key_b", "chatcmpl-001") is None
    assert [c["id"] for c in (await store.list("key_b"))[0]] == ["chatcmpl-002"]
    assert await store.list("key_b", after="chatcmpl-001") is None  # not even as a cursor
    assert await store.update_metadata("key_b", "chatcmpl-001", {"x": "y"}) is None
    assert await store.delete("key_b", "chatcmpl-001") is False
    assert (await store.get("key_a", "chatcmpl-001"))["metadata"] == {"team": "search"}
    # an admin (owner None) sees all
    assert [c["id"] for c in (await store.list(None))[0]] == ["chatcmpl-001", "chatcmpl-002"]
    assert await store.get(None, "chatcmpl-002") is not None


async def test_completions_survive_reopening_the_database(database, store):
    await store.save("key_a", completion(1), MESSAGES, {"k": "v"})
    reopened = await database.open()
    try:
        assert await CompletionStore(reopened).get("key_a", "chatcmpl-001") == {**completion(1), "metadata": {"k": "v"}}
    finally:
        await reopened.dispose()
