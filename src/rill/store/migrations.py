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

from sqlalchemy import Connection, UniqueConstraint, inspect, insert, select, text

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
    Migration(4, "span and trace ids unique per owner; spans know their trace's owner; longer finish reasons",
              lambda conn: _ids_per_owner(conn)),
    Migration(5, "stored responses (the Responses API) and their input items", lambda conn: schema.metadata.create_all(
        conn, tables=[schema.stored_responses, schema.response_input_items])),
)


def _add_tracing(conn: Connection) -> None:
    schema.metadata.create_all(conn, tables=[schema.traces, schema.spans, schema.span_tags, schema.api_keys])
    next(i for i in schema.stored_completions.indexes if i.name == "ix_stored_completions_created").create(conn)

def _ids_per_owner(conn: Connection) -> None:
    """Span and trace ids become unique per owner (they were global: one key's `nightly-42`
    refused, and so revealed, another's); each span gets its trace's owner, which is the trace's
    row's (an admin's span may sit in another key's trace). A span's finish_reason becomes text:
    with n choices it joins their reasons, more than 32 characters (Postgres refused the span)."""
    if "trace_owner" in {c["name"] for c in inspect(conn).get_columns("spans")}:
        return  # created by migration 2 from today's schema
    if conn.dialect.name == "sqlite":
        _rebuild_sqlite_span_tables(conn)
        return
    run = conn.exec_driver_sql
    run("ALTER TABLE spans ADD COLUMN trace_owner VARCHAR(64)")
    run(f"UPDATE spans SET trace_owner = {_TRACE_OWNER.format(span='spans')}")
    run("ALTER TABLE spans ALTER COLUMN trace_owner SET NOT NULL")
    for table in ("spans", "traces"):
        for unique in inspect(conn).get_unique_constraints(table):
            if unique["column_names"] == ["id"]:
                run(f'ALTER TABLE {table} DROP CONSTRAINT "{unique["name"]}"')
    run("DROP INDEX ix_spans_trace_start")
    run("ALTER TABLE spans ALTER COLUMN finish_reason TYPE TEXT")  # n choices' reasons outgrew 32 characters
    for table in (schema.traces, schema.spans):  # (not AddConstraint: it keeps CREATE TABLE from adding them)
        for unique in sorted((c for c in table.constraints if isinstance(c, UniqueConstraint)), key=lambda c: str(c.name)):
            run(f"ALTER TABLE {table.name} ADD CONSTRAINT {unique.name} UNIQUE ({', '.join(unique.columns.keys())})")


# a span's trace owner, from the traces of a version-3 database (trace ids were global then)
_TRACE_OWNER = "COALESCE((SELECT t.owner FROM traces t WHERE t.id = {span}.trace_id), {span}.owner)"


def _rebuild_sqlite_span_tables(conn: Connection) -> None:
    """SQLite cannot drop a UNIQUE constraint, so traces and spans are created anew and copied.
    span_tags is set aside first: dropping the old spans table with foreign keys on (they cannot
    be turned off inside the migration's transaction) would delete its rows by ON DELETE CASCADE."""
    run = conn.exec_driver_sql
    quote = conn.dialect.identifier_preparer.quote
    run("CREATE TABLE span_tags_v3 AS SELECT span_seq, key, value FROM span_tags")
    run("DROP TABLE span_tags")
    for table in ("spans", "traces"):
        for index in inspect(conn).get_indexes(table):  # their names are taken by the new tables'
            run(f"DROP INDEX {quote(index['name'])}")
        run(f"ALTER TABLE {table} RENAME TO {table}_v3")
    schema.metadata.create_all(conn, tables=[schema.traces, schema.spans, schema.span_tags])
    columns = ", ".join(quote(c.name) for c in schema.traces.columns)
    run(f"INSERT INTO traces ({columns}) SELECT {columns} FROM traces_v3")
    kept = [quote(c.name) for c in schema.spans.columns if c.name != "trace_owner"]
    run(f"INSERT INTO spans ({', '.join(kept)}, trace_owner) SELECT {', '.join('s.' + c for c in kept)}, "
        f"{_TRACE_OWNER.format(span='s').replace('FROM traces t', 'FROM traces_v3 t')} FROM spans_v3 s")
    run("INSERT INTO span_tags (span_seq, key, value) SELECT span_seq, key, value FROM span_tags_v3")
    for table in ("span_tags_v3", "spans_v3", "traces_v3"):
        run(f"DROP TABLE {table}")


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
