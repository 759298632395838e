"""Spans and traces belong to the key that made them: another key cannot read, list, update,
delete or nest under them (404s, 400 for a parent, absent from lists); an admin sees all."""

from __future__ import annotations

import pytest

from tests.api.conftest import CHAT_URL, assert_error, chat
from tests.api.test_key_isolation import OPERATOR_KEY, bearer

pytestmark = pytest.mark.parametrize("config", [{"api_keys": (OPERATOR_KEY,)}], indirect=True)
SPANS, TRACES = "/v1/spans", "/v1/traces"


@pytest.fixture
async def keys(app) -> dict[str, dict[str, str]]:
    made = {}
    for name, admin in (("alice", False), ("bob", False), ("root", True)):
        _, secret = await app.state.keys.create(name, admin=admin)
        made[name] = bearer(secret)
    return made


async def test_another_key_cannot_touch_a_keys_spans(client, app, keys):
    alice, bob, root = keys["alice"], keys["bob"], keys["root"]
    workflow = (await client.post(SPANS, json={"name": "alice-flow"}, headers=alice)).json()
    r = await client.post(CHAT_URL, json=chat("hi", temperature=0, parent_span_id=workflow["id"]), headers=alice)
    assert r.status_code == 200
    completion_span, completion_id = r.headers["x-rill-span-id"], r.json()["id"]
    await app.state.span_writer.flush()
    bob_flow = (await client.post(SPANS, json={"name": "bob-flow"}, headers=bob)).json()

    for span_id in (workflow["id"], completion_span, completion_id):
        assert_error(await client.get(f"{SPANS}/{span_id}", headers=bob), 404, param="span_id")
        assert_error(await client.patch(f"{SPANS}/{span_id}", json={"name": "mine"}, headers=bob), 404)
        assert_error(await client.delete(f"{SPANS}/{span_id}", headers=bob), 404)
    assert_error(await client.get(f"{TRACES}/{workflow['trace_id']}", headers=bob), 404)
    assert_error(await client.get(TRACES, params={"after": workflow["trace_id"]}, headers=bob), 404)
    # nesting under another key's span is refused as if it did not exist
    assert_error(await client.post(CHAT_URL, json=chat("x", parent_span_id=workflow["id"]), headers=bob),
                 400, param="parent_span_id")
    assert_error(await client.post(SPANS, json={"name": "x", "parent_id": workflow["id"]}, headers=bob),
                 400, param="parent_id")
    assert_error(await client.post(SPANS, json={"name": "x", "trace_id": workflow["trace_id"]}, headers=bob),
                 400, param="trace_id")

    async def trace_ids(headers) -> list[str]:
        return [t["id"] for t in (await client.get(TRACES, headers=headers)).json()["data"]]

    assert await trace_ids(alice) == [workflow["trace_id"]]
    assert await trace_ids(bob) == [bob_flow["trace_id"]]
    assert set(await trace_ids(root)) == {workflow["trace_id"], bob_flow["trace_id"]}
    assert set(await trace_ids(bearer(OPERATOR_KEY))) == {workflow["trace_id"], bob_flow["trace_id"]}

    # alice's spans are untouched, and an admin reads them
    tree = (await client.get(f"{TRACES}/{workflow['trace_id']}", headers=root)).json()
    assert [s["id"] for s in tree["spans"]] == [workflow["id"], completion_span]
    assert (await client.get(f"{SPANS}/{completion_id}", headers=alice)).json()["name"] == "chat.completion"
    assert (await client.delete(f"{SPANS}/{bob_flow['id']}", headers=root)).status_code == 204
