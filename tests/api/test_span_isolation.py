"""Spans and traces belong to the key that made them: another key cannot read, list, update,
delete or nest under them (404s, 400 for a parent, absent from lists); an admin sees all.

Ids are per key: two keys may both choose `nightly-42` for a span and a trace, each gets its own,
and neither learns of the other's. An admin key names its own object of an id first, else the
first one written, and may nest its spans in another key's trace."""

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
    # the same trace id is bob's own trace, apart from alice's
    own = (await client.post(SPANS, json={"name": "x", "trace_id": workflow["trace_id"]}, headers=bob)).json()
    assert own["trace_id"] == workflow["trace_id"]
    assert [s["id"] for s in (await client.get(f"{TRACES}/{own['trace_id']}", headers=bob)).json()["spans"]] == [
        own["id"]]
    assert (await client.delete(f"{SPANS}/{own['id']}", headers=bob)).status_code == 204

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


async def test_two_keys_choose_the_same_ids_and_neither_learns_of_the_other(client, app, keys):
    alice, bob = keys["alice"], keys["bob"]
    made = {}
    for name, headers in (("alice", alice), ("bob", bob)):
        root = await client.post(SPANS, json={"name": f"{name}-nightly", "id": "nightly-42", "trace_id": "nightly-42",
                                              "tags": {"run": "nightly"}}, headers=headers)
        assert root.status_code == 200, root.text
        step = await client.post(SPANS, json={"name": f"{name}-step", "id": "step-1", "parent_id": "nightly-42"},
                                 headers=headers)
        assert step.status_code == 200, step.text
        assert step.json()["trace_id"] == "nightly-42"
        r = await client.post(CHAT_URL, json=chat(name, temperature=0, parent_span_id="step-1"), headers=headers)
        assert r.status_code == 200 and r.headers["x-rill-trace-id"] == "nightly-42"
        made[name] = r.headers["x-rill-span-id"]
    await app.state.span_writer.flush()

    for name, headers in (("alice", alice), ("bob", bob)):
        assert (await client.get(f"{SPANS}/nightly-42", headers=headers)).json()["name"] == f"{name}-nightly"
        tree = (await client.get(f"{TRACES}/nightly-42", headers=headers)).json()
        assert [(s["id"], s["depth"]) for s in tree["spans"]] == [("nightly-42", 0), ("step-1", 1), (made[name], 2)]
        assert tree["name"] == f"{name}-nightly" and tree["num_spans"] == 3
        listed = (await client.get(TRACES, params={"tag": "run:nightly"}, headers=headers)).json()
        assert [t["id"] for t in listed["data"]] == ["nightly-42"] and listed["meta"]["total_count"] == 1
        assert listed["data"][0]["name"] == f"{name}-nightly"
        # a second use of the id by the same key is refused, naming only the key's own span
        again = assert_error(await client.post(SPANS, json={"name": "x", "id": "nightly-42"}, headers=headers),
                             400, param="id")
        assert "another" not in again["message"]

    # bob's changes and deletes reach his spans only
    patched = await client.patch(f"{SPANS}/step-1", json={"error": "bob failed"}, headers=bob)
    assert patched.json()["name"] == "bob-step"
    assert (await client.get(f"{TRACES}/nightly-42", headers=alice)).json()["status"] == "running"
    assert (await client.delete(f"{SPANS}/nightly-42", headers=bob)).status_code == 204
    assert_error(await client.get(f"{TRACES}/nightly-42", headers=bob), 404)
    assert (await client.get(f"{TRACES}/nightly-42", headers=alice)).json()["num_spans"] == 3
    assert_error(await client.get(f"{SPANS}/{made['alice']}", headers=bob), 404)


async def test_an_admin_names_its_own_id_first_then_the_first_written(client, app, keys):
    alice, bob, root = keys["alice"], keys["bob"], keys["root"]
    for name, headers in (("alice", alice), ("bob", bob)):  # alice's is written first
        await client.post(SPANS, json={"name": name, "id": "nightly-42", "trace_id": "nightly-42"}, headers=headers)
    assert (await client.get(f"{SPANS}/nightly-42", headers=root)).json()["name"] == "alice"
    assert (await client.get(f"{TRACES}/nightly-42", headers=root)).json()["name"] == "alice"

    # what an admin creates is its own, as for any key
    mine = (await client.post(SPANS, json={"name": "root", "id": "nightly-42"}, headers=root)).json()
    assert mine["trace_id"] != "nightly-42"  # its own span of that id, in a new trace
    assert (await client.get(f"{SPANS}/nightly-42", headers=root)).json()["name"] == "root"
    patched = await client.patch(f"{SPANS}/nightly-42", json={"meta": {"by": "root"}}, headers=root)
    assert patched.json()["name"] == "root"
    assert (await client.get(f"{SPANS}/nightly-42", headers=alice)).json()["meta"] is None
    await client.post(SPANS, json={"name": "root-trace", "trace_id": "nightly-42"}, headers=root)
    assert (await client.get(f"{TRACES}/nightly-42", headers=root)).json()["name"] == "root-trace"
    assert (await client.get(f"{TRACES}/nightly-42", headers=alice)).json()["num_spans"] == 1
    everyone = (await client.get(TRACES, headers=root)).json()["data"]
    assert [t["name"] for t in everyone if t["id"] == "nightly-42"] == ["root-trace", "bob", "alice"]
    # a cursor an admin names is its own trace too: what follows it is older
    after = (await client.get(TRACES, params={"after": "nightly-42"}, headers=root)).json()["data"]
    assert [t["name"] for t in after] == [t["name"] for t in everyone][everyone.index(
        next(t for t in everyone if t["name"] == "root-trace")) + 1:]
    assert (await client.delete(f"{SPANS}/nightly-42", headers=root)).status_code == 204
    assert (await client.get(f"{SPANS}/nightly-42", headers=alice)).json()["name"] == "alice"


async def test_an_admin_nests_its_span_in_another_keys_trace(client, app, keys):
    alice, root = keys["alice"], keys["root"]
    await client.post(SPANS, json={"name": "alice-flow", "id": "flow", "trace_id": "nightly-42"}, headers=alice)
    await client.post(SPANS, json={"name": "root-own", "id": "flow"}, headers=root)  # the admin's own "flow"
    # parent_id names the admin's own "flow" first
    under_own = (await client.post(SPANS, json={"name": "x", "parent_id": "flow"}, headers=root)).json()
    assert under_own["trace_id"] != "nightly-42"
    alices = (await client.get(f"{TRACES}/nightly-42", headers=alice)).json()["spans"][0]
    assert alices["id"] == "flow"
    # nesting under alice's span goes by her span's trace: the admin's span joins alice's trace
    await client.delete(f"{SPANS}/flow", headers=root)
    check = (await client.post(SPANS, json={"name": "admin-check", "id": "check", "parent_id": "flow"},
                               headers=root)).json()
    assert check["trace_id"] == "nightly-42" and check["parent_id"] == "flow"
    tree = (await client.get(f"{TRACES}/nightly-42", headers=alice)).json()
    assert [(s["id"], s["depth"]) for s in tree["spans"]] == [("flow", 0), ("check", 1)]
    assert_error(await client.get(f"{SPANS}/check", headers=alice), 404)  # the admin's, seen in her trace
    # ids are unique within a trace: alice's own "check" there would be ambiguous as a parent
    err = assert_error(await client.post(SPANS, json={"name": "c", "id": "check", "parent_id": "flow"},
                                         headers=alice), 400, param="id")
    assert "in trace 'nightly-42'" in err["message"]
    done = await client.patch(f"{SPANS}/check", json={"end_time": 1_900_000_000, "error": "late"}, headers=root)
    assert done.status_code == 200
    assert (await client.get(f"{TRACES}/nightly-42", headers=alice)).json()["status"] == "error"
    assert (await client.delete(f"{SPANS}/flow", headers=alice)).status_code == 204  # the subtree goes with it
    assert_error(await client.get(f"{SPANS}/check", headers=root), 404)


async def test_an_admin_nests_a_completion_in_another_keys_trace(client, app, keys):
    alice, root = keys["alice"], keys["root"]
    await client.post(SPANS, json={"name": "alice-flow", "id": "flow", "trace_id": "nightly-42"}, headers=alice)
    r = await client.post(CHAT_URL, json=chat("x", temperature=0, parent_span_id="flow"), headers=root)
    assert r.status_code == 200 and r.headers["x-rill-trace-id"] == "nightly-42"
    await app.state.span_writer.flush()
    tree = (await client.get(f"{TRACES}/nightly-42", headers=alice)).json()
    assert [s["id"] for s in tree["spans"]] == ["flow", r.headers["x-rill-span-id"]]
