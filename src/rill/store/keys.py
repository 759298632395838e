"""API keys: created, listed and revoked by `rill keys ...`, looked up by the server on requests.

Only the secret's SHA-256 is stored. SHA-256 is the right hash here, not a slow password hash
(bcrypt, argon2): the secrets are 256 random bits, so there is nothing to brute-force and no
dictionary to salt against, and the server hashes on every uncached request. Lookups go through
the unique index on `hash`, so no secret is ever compared in Python.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from rill.store.schema import api_keys

T = api_keys
SECRET_PREFIX = "rill-sk-"
PREFIX_CHARS = 12  # shown by `rill keys list`: "rill-sk-" and four random characters


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str  # what spans and stored completions made with this key are owned by
    name: str
    prefix: str  # the secret's first characters, to recognise it; never the secret
    admin: bool  # sees every key's objects
    created: float
    revoked: float | None  # None while the key works

    @property
    def is_active(self) -> bool:
        return self.revoked is None


def secret_hash(secret: str) -> str:
    """The hex SHA-256 of a secret: what the table keeps instead of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    async def create(self, name: str, *, admin: bool = False) -> tuple[KeyRecord, str]:
        """A new key and its secret. The secret is returned this once and never stored."""
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(id="key_" + secrets.token_hex(6), name=name, prefix=secret[:PREFIX_CHARS],
                           admin=admin, created=time.time(), revoked=None)
        async with self._engine.begin() as conn:
            await conn.execute(insert(T), {"id": record.id, "name": name, "hash": secret_hash(secret),
                                           "prefix": record.prefix, "admin": admin, "created": record.created,
                                           "revoked": None})
        return record, secret

    async def list(self) -> list[KeyRecord]:
        """Every key, revoked ones included, oldest first."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(*_COLUMNS).order_by(T.c.created, T.c.id))).all()
        return [_record(row) for row in rows]

    async def revoke(self, key_id: str) -> bool:
        """Refuse the key from now on; False when no active key has this id."""
        async with self._engine.begin() as conn:
            result = await conn.execute(update(T).where(T.c.id == key_id, T.c.revoked.is_(None))
                                        .values(revoked=time.time()))
        return result.rowcount > 0

    async def lookup(self, secret: str) -> KeyRecord | None:
        """The active key with this secret, or None (unknown or revoked)."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(T.c.hash == secret_hash(secret),
                                                              T.c.revoked.is_(None)))).one_or_none()
        return None if row is None else _record(row)

    async def has_keys(self) -> bool:
        """Whether any key was ever created: without one the server is open. Revoked keys count,
        so that revoking every key locks the server rather than opening it to anyone."""
        async with self._engine.connect() as conn:
            found = (await conn.execute(select(T.c.id).limit(1))).first()
        return found is not None


_COLUMNS = (T.c.id, T.c.name, T.c.prefix, T.c.admin, T.c.created, T.c.revoked)


def _record(row: Any) -> KeyRecord:
    return KeyRecord(id=row.id, name=row.name, prefix=row.prefix, admin=bool(row.admin), created=row.created,
                     revoked=row.revoked)
