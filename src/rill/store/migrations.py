"""Schema versions, applied at start-up and recorded in `rill_migrations`.

A fresh database is created from schema.py (the latest shape) and stamped with every version.
An existing one gets the versions it lacks, in order, each a function of a connection inside the
same transaction. So a change to schema.py comes with a migration that brings an older database
to the same shape (an ALTER, a new table), appended here with the next number; numbers are never
reused. (Alembic would do the same with more machinery; these are a handful of steps.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import Connection, inspect, insert, select, text

from rill.errors import ConfigError
from rill.store import schema


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None] | None  # None: no database predates it


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "stored completions and their metadata", None),
    Migration(2, "spans, traces, API keys; stored completions indexed by time", lambda conn: _add_tracing(conn)),
    Migration(3, "transcripts of spoken answers", lambda conn: schema.metadata.create_all(
        conn, tables=[schema.audio_transcripts])),
)


def _add_tracing(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.traces, schema.spans, schema.span_tags, schema.api_keys])
    next(i for i in schema.stored_completions.indexes if i.name == "ix_stored_completions_created").create(conn)

_LOCK_ID = 0x5249_4C4C  # "RILL": two servers starting on one Postgres migrate one at a time


def migrate(conn: Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Bring the database to the latest version; the versions applied (all of them when fresh)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    elif conn.dialect.name == "sqlite":
        # Python's sqlite3 runs DDL outside any transaction unless one is open: without this,
        # two servers starting on a fresh file both create tables, and a crash midway leaves
        # half a schema. IMMEDIATE takes the write lock now (busy_timeout waits for it).
        if not getattr(conn.connection.driver_connection, "in_transaction", True):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    if not inspect(conn).has_table(schema.migrations.name):
        schema.metadata.create_all(conn)
        _record(conn, migrations)
        return [m.version for m in migrations]
    applied = set(conn.scalars(select(schema.migrations.c.version)))
    newer = applied - {m.version for m in migrations}
    if newer:
        raise ConfigError(f"the database is at schema version {max(newer)}, newer than this Rill "
                          f"knows ({migrations[-1].version}); upgrade Rill or use another database")
    pending = [m for m in migrations if m.version not in applied]
    for m in pending:
        if m.apply is None:
            raise ConfigError(f"the database lacks schema version {m.version} ({m.name}), which "
                              "cannot be applied to an existing database")
        m.apply(conn)
    _record(conn, pending)
    return [m.version for m in pending]


def _record(conn: Connection, migrations: list[Migration] | tuple[Migration, ...]) -> None:
    if migrations:
        now = time.time()
        conn.execute(insert(schema.migrations),
                     [{"version": m.version, "name": m.name, "applied_at": now} for m in migrations])
