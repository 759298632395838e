"""Stored completions (OpenAI's stored-completions API): `store: true` completions with their
input messages and metadata, each belonging to the API key that made it.

`owner` scopes every call: a key sees only its own completions; None (an admin key) sees all.
Objects go in and come out in OpenAI's shapes, so the API layer only adds the list envelope.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from sqlalchemy import ColumnElement, and_, delete, exists, insert, select, update
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from rill.store.database import delete_in_batches
from rill.store.json_codec import unwrapped
from rill.store.schema import completion_metadata, stored_completions

T = stored_completions
OPEN_OWNER = ""  # the owner of everything while the server has no API keys
Order = Literal["asc", "desc"]


class CompletionStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def save(self, owner: str, completion: dict[str, Any], messages: list[dict[str, Any]],
                   metadata: dict[str, str]) -> None:
        """Keep a finished completion (a chat.completion object) and the messages it answered.
        UnstorableValue (with a short reason) when the messages cannot be written as JSON."""
        try:
            async with self._engine.begin() as conn:
                seq = (await conn.execute(insert(T).returning(T.c.seq), {
                    "id": completion["id"], "owner": owner, "created": float(completion["created"]),
                    "model": completion["model"], "metadata": metadata, "completion": completion,
                    "messages": messages})).scalar_one()
                await self._set_metadata(conn, seq, metadata)
        except StatementError as exc:
            raise unwrapped(exc) from None

    async def get(self, owner: str | None, completion_id: str) -> dict[str, Any] | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(T.c.completion, T.c.metadata)
                                      .where(self._visible(owner, completion_id)))).one_or_none()
        return None if row is None else _shaped(row.completion, row.metadata)

    async def list(self, owner: str | None, *, after: str | None = None, limit: int = 20, order: Order = "asc",
                   model: str | None = None, metadata: dict[str, str] | None = None
                   ) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of completions and whether more follow; None when `after` names no completion
        this owner can see."""
        query = select(T.c.completion, T.c.metadata)
        if owner is not None:
            query = query.where(T.c.owner == owner)
        if model is not None:
            query = query.where(T.c.model == model)
        for key, value in (metadata or {}).items():
            query = query.where(exists().where(and_(completion_metadata.c.completion_seq == T.c.seq,
                                                    completion_metadata.c.key == key,
                                                    completion_metadata.c.value == value)))
        async with self._engine.connect() as conn:
            if after is not None:
                cursor = (await conn.execute(select(T.c.seq).where(self._visible(owner, after)))).scalar_one_or_none()
                if cursor is None:
                    return None
                query = query.where(T.c.seq > cursor if order == "asc" else T.c.seq < cursor)
            query = query.order_by(T.c.seq.asc() if order == "asc" else T.c.seq.desc()).limit(limit + 1)
            rows = (await conn.execute(query)).all()
        return [_shaped(r.completion, r.metadata) for r in rows[:limit]], len(rows) > limit

    async def messages(self, owner: str | None, completion_id: str) -> list[dict[str, Any]] | None:
        """The input messages, each with an id (`<completion id>-<index>`)."""
        async with self._engine.connect() as conn:
            stored = (await conn.execute(select(T.c.messages).where(self._visible(owner, completion_id))
                                         )).scalar_one_or_none()
        if stored is None:
            return None
        return [{"id": f"{completion_id}-{i}", **m} for i, m in enumerate(stored)]

    async def update_metadata(self, owner: str | None, completion_id: str,
                              metadata: dict[str, str]) -> dict[str, Any] | None:
        """Replace the metadata (OpenAI's update); the updated completion, or None."""
        async with self._engine.begin() as conn:
            seq = (await conn.execute(update(T).where(self._visible(owner, completion_id))
                                      .values(metadata=metadata).returning(T.c.seq))).scalar_one_or_none()
            if seq is None:
                return None
            await conn.execute(delete(completion_metadata).where(completion_metadata.c.completion_seq == seq))
            await self._set_metadata(conn, seq, metadata)
            row = (await conn.execute(select(T.c.completion).where(T.c.seq == seq))).one()
        return _shaped(row.completion, metadata)

    async def delete(self, owner: str | None, completion_id: str) -> bool:
        async with self._engine.begin() as conn:
            seq = (await conn.execute(select(T.c.seq).where(self._visible(owner, completion_id)))).scalar_one_or_none()
            if seq is None:
                return False
            await conn.execute(delete(completion_metadata).where(completion_metadata.c.completion_seq == seq))
            await conn.execute(delete(T).where(T.c.seq == seq))
        return True

    async def delete_before(self, cutoff: float, *, batch: int = 500) -> int:
        """Retention: delete completions created before cutoff; how many."""
        async def remove(conn: Any, seqs: Sequence[int]) -> None:
            await conn.execute(delete(completion_metadata).where(completion_metadata.c.completion_seq.in_(seqs)))
            await conn.execute(delete(T).where(T.c.seq.in_(seqs)))

        return await delete_in_batches(self._engine, select(T.c.seq).where(T.c.created < cutoff), remove,
                                       batch=batch)

    @staticmethod
    def _visible(owner: str | None, completion_id: str) -> ColumnElement[bool]:
        condition = T.c.id == completion_id
        return condition if owner is None else and_(condition, T.c.owner == owner)

    @staticmethod
    async def _set_metadata(conn: Any, seq: int, metadata: dict[str, str]) -> None:
        """The filterable pairs: all but those with a NUL character, which Postgres's text
        cannot hold (on either database such a pair is kept in the completion, not filterable)."""
        rows = [{"completion_seq": seq, "key": k, "value": v} for k, v in metadata.items()
                if "\0" not in k and "\0" not in v]
        if rows:
            await conn.execute(insert(completion_metadata), rows)


def _shaped(completion: dict[str, Any], metadata: dict[str, str]) -> dict[str, Any]:
    """A stored completion as OpenAI returns it: the chat.completion with its metadata."""
    return {**completion, "metadata": metadata}
