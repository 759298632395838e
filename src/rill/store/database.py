"""Opening the store's database: a URL -> an async SQLAlchemy engine, migrated.

SQLite (the default: a file in Rill's data directory) runs in WAL mode, so readers never wait
for the writer and a killed process leaves a readable database; Postgres is used through
asyncpg. JSON columns are written and read by json_codec (orjson, the standard library for what
it refuses).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

from sqlalchemy import Select, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from rill.errors import ConfigError
from rill.store import json_codec
from rill.store.migrations import migrate

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}


def default_data_dir() -> Path:
    """$RILL_DATA_DIR, else $XDG_DATA_HOME/rill, else ~/.local/share/rill."""
    if os.environ.get("RILL_DATA_DIR"):
        return Path(os.environ["RILL_DATA_DIR"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "rill"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def default_database_url() -> str:
    """The database of `rill serve` and `rill keys` when given no URL: rill.db in the data directory."""
    return sqlite_url(default_data_dir() / "rill.db")


def database_url(url: str) -> URL:
    """`sqlite:///path`, `postgresql://...` (or `postgres://`), with or without the async driver
    named, as the URL of the async driver; anything else is a ConfigError."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"not a database URL: {url!r} (use sqlite:///PATH or postgresql://...)") from None
    backend = parsed.get_backend_name()
    if backend not in _DRIVERS or parsed.drivername not in (backend, _DRIVERS[backend]):
        raise ConfigError(f"unsupported database {parsed.drivername!r}: use sqlite:///PATH or postgresql://...")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError("the SQLite database must be a file (sqlite:///PATH): an in-memory one loses everything")
    return parsed.set(drivername=_DRIVERS[backend])


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # busy_timeout first: switching a fresh file to WAL needs a lock another server may hold
    for pragma in ("busy_timeout=5000", "journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


async def open_database(url: str, *, schema: str | None = None) -> AsyncEngine:
    """The engine for url, its schema migrated to the latest version. `schema` (Postgres only)
    is the schema to work in, for running several stores in one database."""
    target = database_url(url)
    options: dict[str, Any] = {"json_serializer": json_codec.dumps, "json_deserializer": json_codec.loads}
    if target.get_backend_name() == "sqlite":
        Path(target.database).parent.mkdir(parents=True, exist_ok=True)
    elif schema:
        options["connect_args"] = {"server_settings": {"search_path": schema}}
    engine = create_async_engine(target, **options)
    if target.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate)
    except (OSError, SQLAlchemyError) as exc:
        await engine.dispose()
        raise ConfigError(f"cannot open the database {target.render_as_string(hide_password=True)}: "
                          f"{exc}") from exc
    except BaseException:
        await engine.dispose()
        raise
    return engine


@contextlib.asynccontextmanager
async def advisory_lock(engine: AsyncEngine, lock_id: int) -> AsyncIterator[bool]:
    """Try to take lock_id without waiting; whether this process got it (then no other process
    sharing the database holds it until the block ends). On Postgres, a transaction-level advisory
    lock on a connection of its own: the transaction's end releases it, and so does Postgres when
    the process dies, so a crash cannot leave it held. SQLite is one machine's file: always True."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    async with engine.begin() as conn:
        yield bool(await conn.scalar(text("SELECT pg_try_advisory_xact_lock(:id)"), {"id": lock_id}))


async def delete_in_batches(engine: AsyncEngine, pick: Select[Any], remove: Callable[[AsyncConnection, Sequence[Any]],
                            Awaitable[None]], *, batch: int = 500) -> int:
    """Retention's deletes: `pick` selects keys, `remove` deletes what they name; a batch per
    transaction, so that writers never wait long. How many keys were removed."""
    removed = 0
    while True:
        async with engine.begin() as conn:
            keys = list((await conn.scalars(pick.limit(batch))).all())
            if not keys:
                return removed
            await remove(conn, keys)
        removed += len(keys)
