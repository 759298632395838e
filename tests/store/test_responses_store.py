"""rill.store.responses on SQLite and Postgres: save and retrieve per owner, input items paged in
either order, delete, conversations walked back along previous_response_id (missing links,
cycles and the bound), retention, JSON values the codec handles, and migration 5 on a version-4
database."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import Connection, event, inspect, select, text

from rill.store import schema
from rill.store.completions import CompletionStore
from rill.store.json_codec import UnstorableValue
from rill.store.migrations import MIGRATIONS, migrate
from rill.store.responses import ChainTooLong, ResponseStore, UnknownCursor
from rill.store.retention import DAY_S, Retention, prune
from rill.store.spans import SpanStore

T0 = 1_800_000_000


def response(n: int, *, instructions: str | None = None, previous: str | None = None, created: float = T0,
             **extra) -> dict:
    return {"id": f"resp_{n:03d}", "object": "response", "created_at": created, "status": "completed",
            "model": "m", "instructions": instructions, "previous_response_id": previous,
            "output": [{"id": f"msg_out{n}", "type": "message", "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": f"answer {n} é", "annotations": []}]}],
            "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}, "metadata": {"k": "v"}, **extra}


def user(item_id: str, text: str) -> dict:
    return {"id": item_id, "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def deep(levels: int) -> object:
    value: object = "leaf"
    for i in range(levels):
        value = {"x": value} if i % 2 else [value]
    return value


@pytest.fixture
async def store(engine) -> ResponseStore:
    return ResponseStore(engine)


def ids(page) -> list[str]:
    return [item["id"] for item in page[0]]


async def test_a_saved_response_comes_back_as_it_went_in(store):
    await store.save("key_a", response(1), [user("msg_in1", "hi 😀")], previous_response_id=None)
    assert await store.get("key_a", "resp_001") == response(1)
    assert await store.input_items("key_a", "resp_001") == ([user("msg_in1", "hi 😀")], False)
    assert await store.get("key_a", "resp_404") is None
    assert await store.input_items("key_a", "resp_404") is None


async def test_one_owner_never_sees_anothers_responses(store):
    await store.save("key_a", response(1), [user("a", "x")], previous_response_id=None)
    await store.save("key_b", response(2, previous="resp_001"), [user("b", "y")], previous_response_id="resp_001")
    assert await store.get("key_b", "resp_001") is None
    assert await store.input_items("key_b", "resp_001") is None
    assert await store.conversation("key_b", "resp_001") is None
    assert await store.delete("key_b", "resp_001") is False
    assert await store.get("key_a", "resp_001") is not None
    # a chain does not lead into another key's responses, not even through include_previous
    assert await store.conversation("key_b", "resp_002") is None
    assert ids(await store.input_items("key_b", "resp_002", include_previous=True)) == ["b"]
    # an admin (owner None) sees all, across owners
    assert await store.get(None, "resp_001") == response(1)
    assert await store.conversation(None, "resp_002") == [user("a", "x"), *response(1)["output"],
                                                          user("b", "y"), *response(2)["output"]]


async def test_input_items_page_by_item_id_in_either_order(store):
    items = [user(f"item_{i}", f"text {i}") for i in range(5)]
    await store.save("key_a", response(1), items, previous_response_id=None)
    page = await store.input_items("key_a", "resp_001", limit=2)  # OpenAI's default order: desc
    assert ids(page) == ["item_4", "item_3"] and page[1]
    page = await store.input_items("key_a", "resp_001", after="item_3", limit=2)
    assert ids(page) == ["item_2", "item_1"] and page[1]
    page = await store.input_items("key_a", "resp_001", after="item_1", limit=2)
    assert ids(page) == ["item_0"] and not page[1]
    page = await store.input_items("key_a", "resp_001", order="asc", limit=3)
    assert ids(page) == ["item_0", "item_1", "item_2"] and page[1]
    page = await store.input_items("key_a", "resp_001", order="asc", after="item_2", limit=2)
    assert ids(page) == ["item_3", "item_4"] and not page[1]
    assert await store.input_items("key_a", "resp_001", after="item_0", limit=2) == ([], False)
    assert await store.input_items("key_a", "resp_001", order="asc", after="item_4") == ([], False)
    assert (await store.input_items("key_a", "resp_001", limit=100))[0] == items[::-1]
    with pytest.raises(UnknownCursor):
        await store.input_items("key_a", "resp_001", after="item_9")


async def test_a_repeated_item_id_is_a_cursor_at_its_first_place_in_the_order(store):
    items = [user("a", "1"), user("dup", "2"), user("b", "3"), user("dup", "4"), user("c", "5")]
    await store.save("key_a", response(1), items, previous_response_id=None)
    assert [i["content"][0]["text"] for i in (await store.input_items("key_a", "resp_001", order="asc",
                                                                      after="dup"))[0]] == ["3", "4", "5"]
    assert [i["content"][0]["text"] for i in (await store.input_items("key_a", "resp_001",
                                                                      after="dup"))[0]] == ["3", "2", "1"]


async def test_a_response_without_input_items_lists_none(store):
    await store.save("key_a", response(1), [], previous_response_id=None)
    assert await store.input_items("key_a", "resp_001") == ([], False)
    assert await store.conversation("key_a", "resp_001") == response(1)["output"]


async def test_items_without_an_id_are_refused_before_anything_is_written(store):
    with pytest.raises(ValueError, match="input item 1 has no id"):
        await store.save("key_a", response(1), [user("a", "x"), {"type": "message"}], previous_response_id=None)
    assert await store.get("key_a", "resp_001") is None


async def test_deleting_removes_the_response_and_its_items(store, engine):
    await store.save("key_a", response(1), [user("a", "x"), user("b", "y")], previous_response_id=None)
    assert await store.delete("key_a", "resp_001") is True
    assert await store.get("key_a", "resp_001") is None
    assert await store.input_items("key_a", "resp_001") is None
    assert await store.delete("key_a", "resp_001") is False
    async with engine.connect() as conn:
        assert (await conn.execute(select(schema.response_input_items))).all() == []


async def save_chain(store, owner: str = "key_a", *, instructions: bool = False) -> None:
    """resp_001 <- resp_002 <- resp_003, each with two input items (the middle one with none)."""
    inputs = {1: [user("in1a", "first"), user("in1b", "first, again")], 2: [],
              3: [user("in3", "third")]}
    previous = None
    for n in (1, 2, 3):
        await store.save(owner, response(n, previous=previous, instructions=f"be brief {n}" if instructions else None),
                         inputs[n], previous_response_id=previous)
        previous = f"resp_{n:03d}"


def chain_history(upto: int) -> list[dict]:
    inputs = {1: [user("in1a", "first"), user("in1b", "first, again")], 2: [], 3: [user("in3", "third")]}
    history: list[dict] = []
    for n in range(1, upto + 1):
        history += inputs[n] + response(n)["output"]
    return history


@pytest.mark.parametrize("instructions", [False, True])
async def test_a_conversation_is_the_chain_oldest_first_without_instructions(store, instructions):
    await save_chain(store, instructions=instructions)
    history = await store.conversation("key_a", "resp_003")
    assert history == chain_history(3)
    assert not any("be brief" in str(item) for item in history)  # instructions are not carried over
    assert await store.conversation("key_a", "resp_001") == chain_history(1)
    if instructions:  # the response itself keeps its own
        assert (await store.get("key_a", "resp_002"))["instructions"] == "be brief 2"


async def test_input_items_with_the_previous_conversation(store):
    await save_chain(store)
    own = await store.input_items("key_a", "resp_003", order="asc")
    assert ids(own) == ["in3"]
    whole = await store.input_items("key_a", "resp_003", order="asc", include_previous=True)
    assert ids(whole) == ["in1a", "in1b", "msg_out1", "msg_out2", "in3"] and not whole[1]
    page = await store.input_items("key_a", "resp_003", include_previous=True, limit=2)
    assert ids(page) == ["in3", "msg_out2"] and page[1]
    page = await store.input_items("key_a", "resp_003", include_previous=True, after="msg_out2", limit=2)
    assert ids(page) == ["msg_out1", "in1b"] and page[1]
    with pytest.raises(UnknownCursor):
        await store.input_items("key_a", "resp_003", include_previous=True, after="nope")


async def test_a_deleted_link_breaks_every_conversation_through_it(store):
    await save_chain(store)
    assert await store.delete("key_a", "resp_002") is True
    assert await store.conversation("key_a", "resp_003") is None
    assert await store.conversation("key_a", "resp_002") is None
    assert await store.conversation("key_a", "resp_001") == chain_history(1)  # before the hole: whole
    # the response itself stays readable, and lists what is left of its history
    assert (await store.get("key_a", "resp_003"))["id"] == "resp_003"
    assert ids(await store.input_items("key_a", "resp_003", include_previous=True, order="asc")) == ["in3"]
    await store.delete("key_a", "resp_001")
    assert await store.conversation("key_a", "resp_003") is None


async def test_a_previous_response_never_saved_is_a_missing_link(store):
    await store.save("key_a", response(5, previous="resp_gone"), [user("x", "y")], previous_response_id="resp_gone")
    assert await store.conversation("key_a", "resp_005") is None
    assert await store.get("key_a", "resp_005") is not None


async def test_a_cycle_or_an_overlong_chain_ends_at_the_bound(engine):
    store = ResponseStore(engine, max_chain=5)
    # a cycle can only come from rows that name responses saved after them
    await store.save("key_a", response(1), [user("a", "x")], previous_response_id="resp_002")
    await store.save("key_a", response(2), [user("b", "y")], previous_response_id="resp_001")
    with pytest.raises(ChainTooLong, match="more than 5"):
        await store.conversation("key_a", "resp_002")
    with pytest.raises(ChainTooLong):
        await store.input_items("key_a", "resp_002", include_previous=True)
    assert ids(await store.input_items("key_a", "resp_002")) == ["b"]  # its own items need no walk

    previous = None
    for n in range(10, 16):  # six responses
        await store.save("key_a", response(n), [user(f"in{n}", "z")], previous_response_id=previous)
        previous = f"resp_{n:03d}"
    assert len(await store.conversation("key_a", "resp_014")) == 10  # five responses: at the bound
    with pytest.raises(ChainTooLong):
        await store.conversation("key_a", "resp_015")


async def test_a_long_chain_is_walked_in_one_query(engine):
    store = ResponseStore(engine)
    previous = None
    for n in range(300):
        await store.save("key_a", {**response(n), "id": f"resp_{n}"}, [user(f"in{n}", str(n))],
                         previous_response_id=previous)
        previous = f"resp_{n}"
    statements: list[str] = []
    count = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        history = await store.conversation("key_a", "resp_299")
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert [item["id"] for item in history[:4]] == ["in0", "msg_out0", "in1", "msg_out1"] and len(history) == 600
    assert len(statements) == 2 and "RECURSIVE" in statements[0]  # the walk, then the items


async def test_retention_prunes_old_responses_with_their_items(engine):
    responses, completions, spans = ResponseStore(engine), CompletionStore(engine), SpanStore(engine)
    now = float(T0)
    for n, age_days in enumerate([10, 8, 6, 1]):
        await responses.save("", response(n, created=now - age_days * DAY_S), [user(f"in{n}", "x")],
                             previous_response_id=f"resp_{n - 1:03d}" if n else None)
    assert await prune(completions, spans, 7, responses=responses, now=lambda: now) == (0, 0, 2)
    assert await responses.get(None, "resp_001") is None and await responses.get(None, "resp_002") is not None
    assert await responses.conversation(None, "resp_003") is None  # its history began with a pruned one
    assert await prune(completions, spans, 7, responses=responses, now=lambda: now) == (0, 0, 0)
    async with engine.connect() as conn:
        rows = (await conn.execute(select(schema.response_input_items.c.item_id))).scalars().all()
    assert sorted(rows) == ["in2", "in3"]
    assert await prune(completions, spans, 7, now=lambda: now) == (0, 0, 0)  # without a response store


async def test_the_hourly_task_prunes_responses_too(engine):
    responses = ResponseStore(engine)
    await responses.save("", response(1, created=time.time() - 10 * DAY_S), [user("a", "x")], previous_response_id=None)
    await responses.save("", response(2, created=time.time()), [], previous_response_id=None)
    retention = Retention(CompletionStore(engine), SpanStore(engine), 7, responses=responses)
    retention.start()
    try:
        for _ in range(200):
            if await responses.get(None, "resp_001") is None:
                break
            await asyncio.sleep(0.02)
    finally:
        await retention.close()
    assert await responses.get(None, "resp_001") is None and await responses.get(None, "resp_002") is not None


async def test_odd_json_values_are_kept(store, database):
    odd = {"deep": deep(300), "big": 2**70, "nul": "a\0b", "text": "é😀\u2028", "float": 1.5e-300, "empty": {},
           "none": None}
    items = [{**user("deep", "x"), "extra": deep(300)}, {**user("nul\0id", "y"), "odd": odd}]
    await store.save("key_a", response(1, metadata={"k": "v\0"}, extra=odd), items, previous_response_id=None)
    got = await store.get("key_a", "resp_001")
    assert got["extra"] == odd and got["metadata"] == {"k": "v\0"}
    assert (await store.input_items("key_a", "resp_001", order="asc"))[0] == items
    # an item id with NUL is still a cursor; a response id with one names nothing (Postgres cannot hold it)
    assert ids(await store.input_items("key_a", "resp_001", after="nul\0id")) == ["deep"]
    assert await store.get("key_a", "resp_\0") is None and await store.delete("key_a", "resp_\0") is False
    assert await store.input_items("key_a", "resp_\0") is None and await store.conversation("key_a", "resp_\0") is None


async def test_a_value_json_cannot_hold_saves_nothing(store):
    with pytest.raises(UnstorableValue, match="nested too deeply"):
        await store.save("key_a", response(1), [{**user("a", "x"), "extra": deep(5000)}], previous_response_id=None)
    with pytest.raises(UnstorableValue):
        await store.save("key_a", response(1, extra="\ud800"), [], previous_response_id=None)
    assert await store.get("key_a", "resp_001") is None
    await store.save("key_a", response(1), [user("a", "x")], previous_response_id=None)  # the id is free still
    assert ids(await store.input_items("key_a", "resp_001")) == ["a"]


async def test_responses_survive_reopening_the_database(database, store):
    await save_chain(store)
    reopened = await database.open()
    try:
        assert await ResponseStore(reopened).conversation("key_a", "resp_003") == chain_history(3)
    finally:
        await reopened.dispose()


async def test_migration_5_brings_a_version_4_database_to_stored_responses(database):
    """A version-4 database holding a stored completion: migration 5 adds the tables, keeps the rest."""
    engine = await database.open()
    try:
        def version_4(conn: Connection) -> None:
            for table in (schema.response_input_items, schema.stored_responses):
                table.drop(conn)
            conn.execute(schema.migrations.delete().where(schema.migrations.c.version == 5))

        await CompletionStore(engine).save("key_a", {"id": "chatcmpl-1", "created": T0, "model": "m"}, [], {})
        async with engine.begin() as conn:
            await conn.run_sync(version_4)
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert "stored_responses" not in tables
            assert await conn.run_sync(migrate) == [5]
            assert await conn.run_sync(migrate) == []
            versions = list(await conn.scalars(select(schema.migrations.c.version).order_by(schema.migrations.c.version)))
            assert versions == [m.version for m in MIGRATIONS]
            if conn.dialect.name == "sqlite":  # the cascade that backs the store's own deletes
                assert (await conn.execute(text("PRAGMA foreign_key_list(response_input_items)"))).all()
        store = ResponseStore(engine)
        await save_chain(store)
        assert await store.conversation("key_a", "resp_003") == chain_history(3)
        assert (await CompletionStore(engine).get("key_a", "chatcmpl-1"))["id"] == "chatcmpl-1"
    finally:
        await engine.dispose()
