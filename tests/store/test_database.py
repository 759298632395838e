"""rill.store.database and migrations: URLs, SQLite's WAL mode, and schema versions applied once,
in order, on SQLite and Postgres."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Connection, inspect, select, text

from rill.errors import ConfigError
from rill.store import schema
from rill.store.database import database_url, open_database, sqlite_url
from rill.store.migrations import MIGRATIONS, Migration, migrate


@pytest.mark.parametrize("url, driver", [
    ("sqlite:///tmp/x.db", "sqlite+aiosqlite"), ("sqlite+aiosqlite:///tmp/x.db", "sqlite+aiosqlite"),
    ("postgresql://u@h/db", "postgresql+asyncpg"), ("postgres://u@h/db", "postgresql+asyncpg"),
    ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg"),
])
def test_urls_name_the_async_driver(url, driver):
    assert database_url(url).drivername == driver


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url", "sqlite://", "sqlite:///:memory:",
                                 "postgresql+psycopg2://u@h/db"])
def test_other_urls_are_config_errors(url):
    with pytest.raises(ConfigError):
        database_url(url)


async def test_a_fresh_database_is_at_the_latest_version(engine):
    async with engine.connect() as conn:
        versions = list(await conn.scalars(select(schema.migrations.c.version)))
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert versions == [m.version for m in MIGRATIONS]
    assert set(schema.metadata.tables) <= tables


async def test_opening_again_applies_nothing(database, engine):
    again = await database.open()
    try:
        async with again.begin() as conn:
            assert await conn.run_sync(migrate) == []
    finally:
        await again.dispose()


async def test_pending_migrations_run_once_in_order(engine):
    def add_column(conn: Connection) -> None:
        conn.execute(text("ALTER TABLE stored_completions ADD COLUMN note TEXT"))

    later = (*MIGRATIONS, Migration(MIGRATIONS[-1].version + 1, "a note column", add_column))
    async with engine.begin() as conn:
        assert await conn.run_sync(migrate, later) == [later[-1].version]
        assert await conn.run_sync(migrate, later) == []
        columns = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("stored_completions")})
    assert "note" in columns


async def test_a_version_1_database_is_brought_to_the_latest_shape(database):
    """What issue 6's first step created: stored completions only, stamped version 1."""
    engine = await database.open()
    try:
        def version_1(conn: Connection) -> None:
            for name in list(inspect(conn).get_table_names()):
                conn.execute(text(f"DROP TABLE {name} CASCADE" if conn.dialect.name == "postgresql"
                                  else f"DROP TABLE {name}"))
            tables = [schema.stored_completions, schema.completion_metadata, schema.migrations]
            schema.metadata.create_all(conn, tables=tables)
            conn.execute(text("DROP INDEX ix_stored_completions_created"))
            conn.execute(schema.migrations.insert(), {"version": 1, "name": "v1", "applied_at": 0.0})

        async with engine.begin() as conn:
            await conn.run_sync(version_1)
            assert await conn.run_sync(migrate) == [m.version for m in MIGRATIONS[1:]]
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            indexes = await conn.run_sync(lambda c: {i["name"] for i in inspect(c).get_indexes("stored_completions")})
        assert set(schema.metadata.tables) <= tables and "ix_stored_completions_created" in indexes
    finally:
        await engine.dispose()


async def test_a_database_newer_than_the_code_is_refused(engine):
    async with engine.begin() as conn:
        await conn.execute(schema.migrations.insert(), {"version": 999, "name": "future", "applied_at": 0.0})
    async with engine.begin() as conn:
        with pytest.raises(ConfigError, match="newer"):
            await conn.run_sync(migrate)


async def test_sqlite_runs_in_wal_mode_in_a_directory_it_creates(tmp_path):
    engine = await open_database(sqlite_url(tmp_path / "new" / "dir" / "rill.db"))
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await engine.dispose()
    assert (tmp_path / "new" / "dir" / "rill.db").is_file()


async def test_an_unreachable_postgres_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot open the database"):
        await open_database("postgresql://nobody@127.0.0.1:1/none")


def _open_and_close(url: str, start) -> None:
    import asyncio

    async def go() -> None:
        await (await open_database(url)).dispose()

    start.wait(30)  # every process imported and ready: they open the file together
    asyncio.run(go())


def test_servers_starting_together_on_a_fresh_sqlite_file_migrate_it_once(tmp_path):
    # Python's sqlite3 runs DDL outside a transaction unless one is open: before BEGIN IMMEDIATE
    # most of such starts failed ("table ... already exists") or saw half a schema
    import multiprocessing
    import sqlite3

    url = sqlite_url(tmp_path / "fresh.db")
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(6)
    processes = [context.Process(target=_open_and_close, args=(url, start)) for _ in range(6)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    assert [p.exitcode for p in processes] == [0] * 6
    with sqlite3.connect(tmp_path / "fresh.db") as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM rill_migrations ORDER BY version")]
    assert versions == [m.version for m in MIGRATIONS]


async def test_servers_starting_together_on_a_fresh_postgres_migrate_it_once(postgres):
    # without the advisory lock around the migration, one of them fails creating a table (or its
    # type) that another has just created
    opened = await asyncio.gather(*(postgres.open() for _ in range(4)), return_exceptions=True)
    engines = [e for e in opened if not isinstance(e, BaseException)]
    try:
        assert len(engines) == 4, [e for e in opened if isinstance(e, BaseException)]
        async with engines[0].connect() as conn:
            versions = list(await conn.scalars(select(schema.migrations.c.version)
                                               .order_by(schema.migrations.c.version)))
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    finally:
        await asyncio.gather(*(engine.dispose() for engine in engines))
    assert versions == [m.version for m in MIGRATIONS]
    assert set(schema.metadata.tables) <= tables
