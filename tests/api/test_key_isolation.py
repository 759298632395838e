"""Stored completions belong to the key that made them: another key gets 404s (retrieve, messages,
update, delete, a list cursor) and never sees them in lists; an admin key sees everyone's.

The first tests put completions in the store directly, as each owner; the last ones make them
with `store: true` through the API, which needs chat.py to save with owner_of(request)."""

from __future__ import annotations

import pytest

from rill.api.http.auth import operator_key_id
from rill.store.completions import OPEN_OWNER
from tests.api.conftest import CHAT_URL, MODEL, assert_error, chat

OPERATOR_KEY = "operator-secret-0123456789"
pytestmark = pytest.mark.parametrize("config", [{"api_keys": (OPERATOR_KEY,)}], indirect=True)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def keys(app) -> dict[str, tuple[str, dict[str, str]]]:
    """name -> (key id, headers) for two plain keys and a database admin key."""
    made = {}
    for name, admin in (("alice", False), ("bob", False), ("root", True)):
        record, secret = await app.state.keys.create(name, admin=admin)
        made[name] = (record.id, bearer(secret))
    return made


async def save(app, owner: str, completion_id: str, **metadata: str) -> None:
    completion = {"id": completion_id, "object": "chat.completion", "created": 1, "model": MODEL,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": completion_id},
                               "finish_reason": "stop"}]}
    await app.state.completions.save(owner, completion, [{"role": "user", "content": "hi"}], metadata)


async def listed(client, headers, **params) -> list[str]:
    r = await client.get(CHAT_URL, headers=headers, params=params)
    assert r.status_code == 200, r.text
    return [c["id"] for c in r.json()["data"]]


async def test_a_key_sees_only_its_own_completions(client, app, keys):
    alice, alice_headers = keys["alice"]
    bob, bob_headers = keys["bob"]
    await save(app, alice, "chatcmpl-alice", team="x")
    await save(app, bob, "chatcmpl-bob", team="x")
    await save(app, OPEN_OWNER, "chatcmpl-open", team="x")  # made before the server had keys
    assert await listed(client, alice_headers) == ["chatcmpl-alice"]
    assert await listed(client, alice_headers, **{"metadata[team]": "x"}) == ["chatcmpl-alice"]
    assert await listed(client, bob_headers, model=MODEL) == ["chatcmpl-bob"]
    assert (await client.get(f"{CHAT_URL}/chatcmpl-alice", headers=alice_headers)).json()["id"] == "chatcmpl-alice"

    foreign = f"{CHAT_URL}/chatcmpl-bob"
    assert_error(await client.get(foreign, headers=alice_headers), 404, param="completion_id")
    assert_error(await client.get(f"{foreign}/messages", headers=alice_headers), 404)
    assert_error(await client.post(foreign, json={"metadata": {"k": "v"}}, headers=alice_headers), 404)
    assert_error(await client.delete(foreign, headers=alice_headers), 404)
    assert_error(await client.get(CHAT_URL, params={"after": "chatcmpl-bob"}, headers=alice_headers), 404)
    assert_error(await client.get(f"{CHAT_URL}/chatcmpl-open", headers=alice_headers), 404)

    kept = (await client.get(foreign, headers=bob_headers)).json()
    assert kept["metadata"] == {"team": "x"}, "alice's update did not touch bob's completion"
    assert (await client.get(f"{foreign}/messages", headers=bob_headers)).status_code == 200


@pytest.mark.parametrize("admin", ["root", "operator"])
async def test_an_admin_key_sees_and_manages_everyones(client, app, keys, admin):
    headers = keys["root"][1] if admin == "root" else bearer(OPERATOR_KEY)
    await save(app, keys["alice"][0], "chatcmpl-alice")
    await save(app, keys["bob"][0], "chatcmpl-bob")
    await save(app, OPEN_OWNER, "chatcmpl-open")
    assert await listed(client, headers) == ["chatcmpl-alice", "chatcmpl-bob", "chatcmpl-open"]
    assert await listed(client, headers, after="chatcmpl-alice") == ["chatcmpl-bob", "chatcmpl-open"]
    assert (await client.get(f"{CHAT_URL}/chatcmpl-bob/messages", headers=headers)).status_code == 200
    updated = await client.post(f"{CHAT_URL}/chatcmpl-bob", json={"metadata": {"by": admin}}, headers=headers)
    assert updated.json()["metadata"] == {"by": admin}
    assert (await client.delete(f"{CHAT_URL}/chatcmpl-alice", headers=headers)).json()["deleted"]
    assert await listed(client, keys["alice"][1]) == []


# ---- made through the API: these need chat.py to save `store: true` with owner_of(request) ----


async def store_as(client, headers, content: str) -> str:
    r = await client.post(CHAT_URL, json=chat(content, store=True, temperature=0), headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["id"]


async def test_a_stored_completion_belongs_to_the_key_that_made_it(client, app, keys):
    alice, alice_headers = keys["alice"]
    bob_headers = keys["bob"][1]
    made = await store_as(client, alice_headers, "mine")
    assert await listed(client, alice_headers) == [made]
    assert (await client.get(f"{CHAT_URL}/{made}", headers=alice_headers)).json()["id"] == made
    assert await listed(client, bob_headers) == []
    assert_error(await client.get(f"{CHAT_URL}/{made}", headers=bob_headers), 404)
    assert_error(await client.delete(f"{CHAT_URL}/{made}", headers=bob_headers), 404)
    assert (await app.state.completions.get(alice, made))["id"] == made, "owned by alice's key id"
    assert await listed(client, keys["root"][1]) == [made]


async def test_the_operator_keys_completions_are_owned_by_its_stable_id(client, app, keys):
    made = await store_as(client, bearer(OPERATOR_KEY), "ops")
    assert (await app.state.completions.get(operator_key_id(OPERATOR_KEY), made))["id"] == made
    assert await listed(client, keys["alice"][1]) == []
