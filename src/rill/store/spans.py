"""Spans and traces (Opper's model): every chat completion is a span, clients open their own
(a workflow, a tool run) and nest completions under them with `parent_span_id`.

A span belongs to one trace (the tree under a root span) and to the API key that made it;
`scope` filters every read as in completions.py (None: an admin key, sees all). Each trace has
a row of aggregates (span, open-span and error counts, tokens, time range) kept up to date in
the same transaction as its spans, so listing and filtering traces never groups spans.

Ids are unique per owner: a span is (owner, id), a trace (owner, id), and a span's trace is
(trace_owner, trace_id), the trace's owner being the span's own except where an admin key nested
it under another key's span. Within a trace span ids are unique too, so `parent_id` names one
span of the trace. Where an admin (scope None) names an id that several keys use, it gets its
own object (`own`: the admin's owner id) if it has one, else the first one written (lowest seq).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Iterable, Sequence

from sqlalchemy import (ColumnElement, Select, and_, case, delete, exists, func, insert, or_, select, tuple_,
                        update)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rill.store.database import delete_in_batches
from rill.store.json_codec import unwrapped
from rill.store.schema import span_tags, spans, traces
# the store's data types, imported from here too
from rill.store.span_record import UPDATABLE, SpanExists, SpanPlace, SpanRecord, SpanTimeError, TraceFilter
from rill.store.span_shapes import span_object, trace_object

S, T, TAGS = spans, traces, span_tags
MAX_TAG_KEY, MAX_TAG_VALUE = 64, 512  # longer (or non-scalar) tags are kept but not filterable


class SpanStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    # --- writing -------------------------------------------------------------------------

    async def insert(self, record: SpanRecord) -> None:
        """One span (a client's), checked: SpanExists if its owner has a span with its id, or
        its trace has one; UnstorableValue if a field cannot be written as JSON."""
        try:
            async with self._engine.begin() as conn:
                if (await conn.execute(select(S.c.seq).where(S.c.id == record.id, S.c.owner == record.owner))
                        ).first() is not None:
                    raise SpanExists(record.id)
                if (await conn.execute(select(S.c.seq).where(*_in_trace(record.trace_of(), record.trace_id),
                                                              S.c.id == record.id))).first() is not None:
                    raise SpanExists(record.id, in_trace=True)
                await self._insert(conn, [record])
        except IntegrityError:  # the same id written by another request since the checks
            raise SpanExists(record.id) from None
        except StatementError as exc:
            raise unwrapped(exc) from None

    async def insert_many(self, records: Iterable[SpanRecord]) -> None:
        """Several spans in one transaction (the background writer's batches)."""
        async with self._engine.begin() as conn:
            await self._insert(conn, list(records))

    async def update(self, scope: str | None, span_id: str, changes: dict[str, Any], *,
                     own: str | None = None) -> dict[str, Any] | None:
        """Apply PATCH changes (keys from UPDATABLE); the updated span, or None if not visible.
        UnstorableValue if a field cannot be written as JSON."""
        assert set(changes) <= UPDATABLE, set(changes) - UPDATABLE
        try:
            return await self._update(scope, span_id, changes, own)
        except StatementError as exc:
            raise unwrapped(exc) from None

    async def _update(self, scope: str | None, span_id: str, changes: dict[str, Any],
                      own: str | None) -> dict[str, Any] | None:
        async with self._engine.begin() as conn:
            row = (await conn.execute(_one_span(select(S), scope, span_id, own))).one_or_none()
            if row is None:
                return None
            before = _record(row)
            after = dataclasses.replace(before, **changes)
            if after.end_time is not None and after.end_time < after.start_time:
                raise SpanTimeError(span_id)
            await conn.execute(update(S).where(S.c.seq == row.seq).values(**_columns(after)))
            if "tags" in changes:
                await conn.execute(delete(TAGS).where(TAGS.c.span_seq == row.seq))
                await _insert_tags(conn, row.seq, after.tags)
            trace = _the_trace(after.trace_of(), after.trace_id)
            await conn.execute(update(T).where(*trace).values(
                num_open=T.c.num_open + (int(after.end_time is None) - int(before.end_time is None)),
                num_errors=T.c.num_errors + (int(after.error is not None) - int(before.error is not None)),
                **_widened_range(after)))
            await conn.execute(update(T).where(*trace, T.c.root_span_id == after.id).values(name=after.name))
        return span_object(after)

    async def delete(self, scope: str | None, span_id: str, *, own: str | None = None) -> bool:
        """Delete the span and the spans under it; the trace keeps the rest (or goes with its last)."""
        async with self._engine.begin() as conn:
            row = (await conn.execute(_one_span(select(S.c.id, S.c.trace_id, S.c.trace_owner), scope, span_id,
                                                own))).one_or_none()
            if row is None:
                return False
            trace = _in_trace(row.trace_owner, row.trace_id)
            tree = (await conn.execute(select(S.c.id, S.c.parent_id).where(*trace))).all()
            doomed = _subtree(row.id, [(r.id, r.parent_id) for r in tree])
            await conn.execute(delete(S).where(*trace, S.c.id.in_(doomed)))  # tags go by ON DELETE CASCADE
            await self._recount(conn, row.trace_owner, row.trace_id)
        return True

    async def delete_before(self, cutoff: float, *, batch: int = 500) -> int:
        """Retention: delete the traces (with their spans) that started before cutoff; how many."""
        async def remove(conn: AsyncConnection, seqs: Sequence[int]) -> None:
            doomed = select(T.c.owner, T.c.id).where(T.c.seq.in_(seqs))
            await conn.execute(delete(S).where(tuple_(S.c.trace_owner, S.c.trace_id).in_(doomed)))  # tags: cascade
            await conn.execute(delete(T).where(T.c.seq.in_(seqs)))

        return await delete_in_batches(self._engine, select(T.c.seq).where(T.c.start_time < cutoff), remove,
                                       batch=batch)

    # --- reading -------------------------------------------------------------------------

    async def get(self, scope: str | None, span_id: str, *, own: str | None = None) -> dict[str, Any] | None:
        """A span by its id, or by the id of the chat completion it recorded."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(_one_span(select(S), scope, span_id, own))).one_or_none()
        return None if row is None else span_object(_record(row))

    async def locate(self, scope: str | None, span_id: str, *, own: str | None = None) -> SpanPlace | None:
        """Where a visible span is, for nesting a new span under it."""
        query = select(S.c.id, S.c.trace_id, S.c.trace_owner)
        async with self._engine.connect() as conn:
            row = (await conn.execute(_one_span(query, scope, span_id, own))).one_or_none()
        return None if row is None else SpanPlace(row.id, row.trace_id, row.trace_owner)

    async def trace(self, scope: str | None, trace_id: str, *, own: str | None = None) -> dict[str, Any] | None:
        """The trace with its spans in tree order (each after its parent, siblings by start)."""
        async with self._engine.connect() as conn:
            head = (await conn.execute(_one_trace(select(T), scope, trace_id, own))).one_or_none()
            if head is None:
                return None
            rows = (await conn.execute(select(S).where(*_in_trace(head.owner, head.id))
                                       .order_by(S.c.start_time, S.c.seq))).all()
        records = [_record(r) for r in rows]
        return {**trace_object(head, records), "spans": _tree_order(records)}

    async def list_traces(self, scope: str | None, where: TraceFilter = TraceFilter(), *,
                          after: str | None = None, offset: int = 0, limit: int = 20, own: str | None = None
                          ) -> tuple[list[dict[str, Any]], bool, int] | None:
        """Newest first: (page, has_more, total matching); None when `after` names no visible
        trace. `after` (a trace id) is the cursor; `offset` is there for Opper's SDK."""
        conditions = self._trace_conditions(scope, where)
        async with self._engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(T).where(*conditions))).scalar_one()
            query = select(T).where(*conditions)
            if after is not None:
                cursor = (await conn.execute(_one_trace(select(T.c.seq), scope, after, own))).scalar_one_or_none()
                if cursor is None:
                    return None
                query = query.where(T.c.seq < cursor)
            rows = (await conn.execute(query.order_by(T.c.seq.desc()).offset(offset).limit(limit + 1))).all()
            page = rows[:limit]
            roots: dict[tuple[str, str], SpanRecord] = {}
            if any(r.root_span_id for r in page):
                root_of = and_(*_in_trace(T.c.owner, T.c.id), S.c.id == T.c.root_span_id)
                found = await conn.execute(select(S).join(T, root_of).where(T.c.seq.in_([r.seq for r in page])))
                roots = {(r.trace_owner, r.trace_id): _record(r) for r in found.all()}
        return ([trace_object(r, [roots[(r.owner, r.id)]] if (r.owner, r.id) in roots else []) for r in page],
                len(rows) > limit, total)

    # --- internals -----------------------------------------------------------------------

    @staticmethod
    def _trace_conditions(scope: str | None, where: TraceFilter) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if scope is not None:
            out.append(T.c.owner == scope)
        its_span = _in_trace(T.c.owner, T.c.id)
        for key, value in where.tags:
            out.append(exists().where(*its_span, TAGS.c.span_seq == S.c.seq, TAGS.c.key == key,
                                      TAGS.c.value == value))
        if where.model is not None:
            out.append(exists().where(*its_span, S.c.model == where.model))
        if where.user is not None:
            out.append(exists().where(*its_span, S.c.user == where.user))
        if where.name is not None:
            out.append(T.c.name == where.name)
        if where.status == "error":
            out.append(T.c.num_errors > 0)
        elif where.status == "running":
            out.extend([T.c.num_errors == 0, T.c.num_open > 0])
        elif where.status == "ok":
            out.extend([T.c.num_errors == 0, T.c.num_open == 0])
        if where.since is not None:
            out.append(T.c.start_time >= where.since)
        if where.until is not None:
            out.append(T.c.start_time < where.until)
        return out

    async def _insert(self, conn: AsyncConnection, records: list[SpanRecord]) -> None:
        """Three statements whatever the number of spans: their traces' aggregates upserted,
        the spans, their tags."""
        if not records:
            return
        await conn.execute(_trace_upsert(conn.dialect.name), list(_trace_increments(records).values()))
        rows = await conn.execute(insert(S).returning(S.c.seq, sort_by_parameter_order=True),
                                  [_columns(r) for r in records])
        tags = [row for r, seq in zip(records, rows.scalars()) for row in _tag_rows(seq, r.tags)]
        if tags:
            await conn.execute(insert(TAGS), tags)

    @staticmethod
    async def _recount(conn: AsyncConnection, trace_owner: str, trace_id: str) -> None:
        """Recompute a trace's aggregates from its spans (after deleting some); drop it if empty."""
        spans_of = _in_trace(trace_owner, trace_id)
        left = (await conn.execute(select(
            func.count(), func.sum(case((S.c.end_time.is_(None), 1), else_=0)),
            func.sum(case((S.c.error.is_not(None), 1), else_=0)), func.sum(S.c.total_tokens),
            func.min(S.c.start_time), func.max(S.c.end_time)).where(*spans_of))).one()
        if not left[0]:
            await conn.execute(delete(T).where(*_the_trace(trace_owner, trace_id)))
            return
        root = (await conn.execute(select(S.c.id, S.c.name).where(*spans_of, S.c.parent_id.is_(None))
                                   .order_by(S.c.start_time).limit(1))).one_or_none()
        await conn.execute(update(T).where(*_the_trace(trace_owner, trace_id)).values(
            num_spans=left[0], num_open=left[1] or 0, num_errors=left[2] or 0, total_tokens=left[3] or 0,
            start_time=left[4], end_time=left[5],
            root_span_id=root.id if root else None, name=root.name if root else None))


_FIELDS = tuple(f.name for f in dataclasses.fields(SpanRecord))


def _columns(record: SpanRecord) -> dict[str, Any]:
    # not dataclasses.asdict: it deep-copies the input messages, a third of the writer's time
    return {name: getattr(record, name) for name in _FIELDS}


def _record(row: Any) -> SpanRecord:
    return SpanRecord(**{k: v for k, v in row._mapping.items() if k in _FIELDS})


def _one_span(query: Select[Any], scope: str | None, span_id: str, own: str | None) -> Select[Any]:
    """The span `span_id` names for this scope: a span with that id before one that recorded a
    completion of that id; then (an admin's) its own; then the first written."""
    query = query.where(or_(S.c.id == span_id, S.c.completion_id == span_id))
    if scope is not None:
        query = query.where(S.c.owner == scope)
    return query.order_by(case((S.c.id == span_id, 0), else_=1), *_own_first(S.c.owner, scope, own),
                          S.c.seq).limit(1)


def _one_trace(query: Select[Any], scope: str | None, trace_id: str, own: str | None) -> Select[Any]:
    """The trace `trace_id` names for this scope (an admin's own first, then the first written)."""
    query = query.where(T.c.id == trace_id)
    if scope is not None:
        query = query.where(T.c.owner == scope)
    return query.order_by(*_own_first(T.c.owner, scope, own), T.c.seq).limit(1)


def _own_first(owner: Any, scope: str | None, own: str | None) -> list[Any]:
    return [case((owner == own, 0), else_=1)] if scope is None and own is not None else []


def _in_trace(trace_owner: Any, trace_id: Any) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The spans of a trace (a trace's key: values, or the traces table's columns)."""
    return S.c.trace_owner == trace_owner, S.c.trace_id == trace_id


def _the_trace(owner: str, trace_id: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return T.c.owner == owner, T.c.id == trace_id


def _trace_increments(records: list[SpanRecord]) -> dict[tuple[str, str], dict[str, Any]]:
    """What a batch of spans adds to each of their traces."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        key = (r.trace_of(), r.trace_id)
        t = out.get(key)
        if t is None:
            t = out[key] = {"id": r.trace_id, "owner": key[0], "start_time": r.start_time, "end_time": None,
                                   "num_spans": 0, "num_open": 0, "num_errors": 0, "total_tokens": 0,
                                   "root_span_id": None, "name": None}
        t["num_spans"] += 1
        t["num_open"] += r.end_time is None
        t["num_errors"] += r.error is not None
        t["total_tokens"] += r.total_tokens
        t["start_time"] = min(t["start_time"], r.start_time)
        if r.end_time is not None and (t["end_time"] is None or r.end_time > t["end_time"]):
            t["end_time"] = r.end_time
        if r.parent_id is None and t["root_span_id"] is None:  # the first parentless span is the root
            t["root_span_id"], t["name"] = r.id, r.name
    return out


@functools.cache
def _trace_upsert(dialect: str) -> Any:
    """INSERT a trace's row or add to the one there (both databases spell it ON CONFLICT)."""
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(T)
    new = stmt.excluded
    return stmt.on_conflict_do_update(index_elements=["id", "owner"], set_={
        "num_spans": T.c.num_spans + new.num_spans, "num_open": T.c.num_open + new.num_open,
        "num_errors": T.c.num_errors + new.num_errors, "total_tokens": T.c.total_tokens + new.total_tokens,
        "start_time": case((new.start_time < T.c.start_time, new.start_time), else_=T.c.start_time),
        "end_time": case((T.c.end_time.is_(None), new.end_time), (new.end_time > T.c.end_time, new.end_time),
                         else_=T.c.end_time),
        "root_span_id": func.coalesce(T.c.root_span_id, new.root_span_id),
        "name": case((T.c.root_span_id.is_(None), new.name), else_=T.c.name),
    })


def _widened_range(record: SpanRecord) -> dict[str, Any]:
    """The trace's time range grown to cover this span."""
    out: dict[str, Any] = {"start_time": case((T.c.start_time > record.start_time, record.start_time),
                                              else_=T.c.start_time)}
    if record.end_time is not None:
        out["end_time"] = case((or_(T.c.end_time.is_(None), T.c.end_time < record.end_time), record.end_time),
                               else_=T.c.end_time)
    return out


async def _insert_tags(conn: AsyncConnection, seq: int, tags: dict[str, Any]) -> None:
    """(update's tags; _insert writes a batch's in one statement)"""
    rows = _tag_rows(seq, tags)
    if rows:
        await conn.execute(insert(TAGS), rows)


def _tag_rows(seq: int, tags: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"span_seq": seq, "key": k, "value": v} for k, v in ((k, tag_text(v)) for k, v in tags.items())
            if v is not None and len(k) <= MAX_TAG_KEY and "\0" not in k]


def tag_text(value: Any) -> str | None:
    """A tag value as filters compare it: strings as they are, numbers and booleans as JSON;
    None for values that are not filterable (objects, lists, null, very long strings, strings
    with NUL characters, which Postgres's text cannot hold)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bool, int, float)):
        text = json.dumps(value)
    else:
        return None
    return text if len(text) <= MAX_TAG_VALUE and "\0" not in text else None


def _subtree(root: str, edges: list[tuple[str, str | None]]) -> list[str]:
    children: dict[str | None, list[str]] = {}
    for span_id, parent in edges:
        children.setdefault(parent, []).append(span_id)
    out, todo = [], [root]
    while todo:
        span_id = todo.pop()
        out.append(span_id)
        todo.extend(children.get(span_id, ()))
    return out


def _tree_order(records: list[SpanRecord]) -> list[dict[str, Any]]:
    """Depth-first, each span after its parent (records come sorted by start); a span whose
    parent is gone (deleted) is shown as a root. Each span gets its `depth`."""
    ids = {r.id for r in records}
    children: dict[str | None, list[SpanRecord]] = {}
    for r in records:
        children.setdefault(r.parent_id if r.parent_id in ids else None, []).append(r)
    out: list[dict[str, Any]] = []
    todo = [(r, 0) for r in reversed(children.get(None, []))]
    while todo:
        record, depth = todo.pop()
        out.append({**span_object(record), "depth": depth})
        todo.extend((c, depth + 1) for c in reversed(children.get(record.id, [])))
    return out
