"""API keys in the store (SQLite and Postgres): create, look up by secret, list, revoke; only the
secret's SHA-256 is kept."""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import select

from rill.store.keys import KeyStore
from rill.store.schema import api_keys


async def test_a_created_key_is_found_by_its_secret(engine):
    keys = KeyStore(engine)
    record, secret = await keys.create("ci")
    assert re.fullmatch(r"key_[0-9a-f]{12}", record.id) and record.name == "ci" and not record.admin
    assert re.fullmatch(r"rill-sk-[A-Za-z0-9_-]{43}", secret) and record.prefix == secret[:12]
    assert record.revoked is None and record.is_active
    assert await keys.lookup(secret) == record
    assert await keys.lookup(secret + "x") is None and await keys.lookup("") is None


async def test_only_the_hash_is_stored(engine):
    record, secret = await KeyStore(engine).create("ci", admin=True)
    async with engine.connect() as conn:
        rows = [dict(r._mapping) for r in (await conn.execute(select(api_keys))).all()]
    assert len(rows) == 1 and rows[0]["hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert rows[0]["admin"] is True and rows[0]["prefix"] == record.prefix
    assert not any(secret in str(value) for value in rows[0].values())


async def test_keys_are_distinct_and_listed_oldest_first(engine):
    keys = KeyStore(engine)
    (a, secret_a), (b, secret_b) = await keys.create("alice"), await keys.create("bob", admin=True)
    assert a.id != b.id and secret_a != secret_b
    assert await keys.list() == [a, b]
    assert (await keys.lookup(secret_b)).admin


async def test_a_revoked_key_is_refused_but_still_listed(engine):
    keys = KeyStore(engine)
    (a, secret_a), (b, secret_b) = await keys.create("alice"), await keys.create("bob")
    assert await keys.revoke(a.id)
    assert await keys.lookup(secret_a) is None and await keys.lookup(secret_b) == b
    listed = {r.id: r for r in await keys.list()}
    assert listed[a.id].revoked is not None and listed[a.id].revoked >= a.created and not listed[a.id].is_active
    assert listed[b.id].revoked is None
    assert not await keys.revoke(a.id), "revoking twice is reported"
    assert not await keys.revoke("key_000000000000")


async def test_has_keys(engine):
    keys = KeyStore(engine)
    assert not await keys.has_keys()
    a, _ = await keys.create("alice")
    assert await keys.has_keys()
    await keys.revoke(a.id)
    assert await keys.has_keys(), "a revoked key still counts: revoking all keys locks the server"


async def test_keys_survive_a_restart(database):
    first = await database.open()
    try:
        record, secret = await KeyStore(first).create("ci")
    finally:
        await first.dispose()
    again = await database.open()
    try:
        assert await KeyStore(again).lookup(secret) == record
    finally:
        await again.dispose()
