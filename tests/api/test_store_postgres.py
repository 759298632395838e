"""The API on Postgres, where what SQLite takes in its stride fails in the driver: NUL characters
(Postgres's text cannot hold one), integers past 64 bits and thousands of filters were 503
store_unavailable, or a 500 and a lost span with `store: true`. Each app gets a database of its
own on the machine's Postgres (127.0.0.1:5432), dropped afterwards."""

from __future__ import annotations

import json
import uuid
from typing import AsyncIterator

import asyncpg
import pytest

from rill.config import ServerConfig
from tests.api.conftest import CHAT_URL, assert_error, chat
from tests.store.conftest import POSTGRES_URL

SPANS, TRACES = "/v1/spans", "/v1/traces"


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    name = f"rill_api_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def config(postgres_url) -> ServerConfig:
    return ServerConfig(max_body_bytes=64 * 1024, database_url=postgres_url)


def nested(levels: int) -> object:
    value: object = "leaf"
    for _ in range(levels):
        value = {"x": value}
    return value


async def test_values_postgres_cannot_take_are_400s(client):
    for url, param in ((f"{TRACES}?offset={2**63}", "offset"), (f"{TRACES}?model=a%00", "model"),
                       (f"{TRACES}?after=t%00", "after"), (f"{TRACES}?tag=k:v%00", "tag"),
                       ("&".join([f"{TRACES}?tag=k:v"] + [f"tag=k{i}:v" for i in range(1000)]), "tag"),
                       (f"{SPANS}/s%00", "span_id"), (f"{CHAT_URL}?metadata[k]=%00", "metadata"),
                       ("&".join([f"{CHAT_URL}?metadata[a]=v"] + [f"metadata[k{i}]=v" for i in range(1000)]),
                        "metadata")):
        assert_error(await client.get(url), 400, param=param)
    assert_error(await client.post(SPANS, json={"name": "a\0b"}), 400, param="name")
    assert (await client.get(TRACES, params={"offset": 2**63 - 1})).json()["data"] == []


async def test_odd_values_neither_fail_a_stored_completion_nor_lose_its_span(client, app):
    r = await client.post(CHAT_URL, json=chat("hi", temperature=0, store=True, user="ana\0",
                                              metadata={"team": "a\0b", "env": "prod"}, tags={"k": "v\0"}))
    assert r.status_code == 200, r.text
    completion_id = r.json()["id"]
    assert (await client.get(f"{CHAT_URL}/{completion_id}")).json()["metadata"] == {"team": "a\0b", "env": "prod"}
    assert [c["id"] for c in (await client.get(CHAT_URL, params={"metadata[env]": "prod"})).json()["data"]] == [
        completion_id]
    await app.state.span_writer.flush()
    span = (await client.get(f"{SPANS}/{completion_id}")).json()
    assert span["tags"] == {"k": "v\0"} and span["user"] == "ana\ufffd"  # mended: Postgres's text holds no NUL
    assert app.state.span_writer.num_dropped == 0 and app.state.span_writer.num_degraded == 1


@pytest.mark.parametrize("store", [False, True])
async def test_a_deeply_nested_extra_field_is_kept_or_refused_never_a_500(client, app, store):
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi", "extra": nested(50)}]}]
    r = await client.post(CHAT_URL, json={**chat("hi", temperature=0, store=store), "messages": messages})
    assert r.status_code == 200, r.text
    await app.state.span_writer.flush()
    assert (await client.get(f"{SPANS}/{r.headers['x-rill-span-id']}")).json()["input"] == messages
    trace = (await client.get(f"{TRACES}/{r.headers['x-rill-trace-id']}")).json()
    assert trace["spans"][0]["input"] == messages
    if store:
        kept = (await client.get(f"{CHAT_URL}/{r.json()['id']}/messages")).json()["data"]
        assert kept[0]["content"] == messages[0]["content"]
    deeper = {**chat("hi", store=store), "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi", "extra": "EXTRA"}]}]}
    text = json.dumps(deeper).replace('"EXTRA"', '{"x": ' * 1000 + "1" + "}" * 1000)  # too deep for json.dumps
    r = await client.post(CHAT_URL, content=text, headers={"content-type": "application/json"})
    assert_error(r, 400, type="invalid_request_error")  # the request's depth limit (chat.py)
