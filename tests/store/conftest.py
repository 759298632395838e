"""The store's tests run twice, on SQLite (a file under tmp_path) and on the machine's Postgres
(127.0.0.1:5432, database `test`, trust auth) in a fresh schema per test, dropped afterwards.
Postgres being down is a failure, not a skip: .ci/run starts it."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from rill.store.database import open_database, sqlite_url

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


class Database:
    """Where one test's store lives: open() may be called again to reopen (restart) it."""

    def __init__(self, url: str, schema: str | None = None):
        self.url, self.schema = url, schema

    async def open(self) -> AsyncEngine:
        return await open_database(self.url, schema=self.schema)


@contextlib.asynccontextmanager
async def fresh_postgres_schema() -> AsyncIterator[Database]:
    schema = f"rill_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield Database(POSTGRES_URL, schema)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        yield Database(sqlite_url(tmp_path / "data" / "rill.db"))
        return
    async with fresh_postgres_schema() as database:
        yield database


@pytest.fixture
async def postgres() -> AsyncIterator[Database]:
    """For what only Postgres has (advisory locks): a fresh schema, not migrated yet."""
    async with fresh_postgres_schema() as database:
        yield database


@pytest.fixture
async def engine(database: Database) -> AsyncIterator[AsyncEngine]:
    engine = await database.open()
    yield engine
    await engine.dispose()
