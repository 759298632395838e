"""Stored responses (OpenAI's Responses API): each response object as returned, its input items,
and the response it continues (`previous_response_id`), each belonging to the API key that made it.

`owner` scopes every call as in CompletionStore: a key sees only its own responses; None (an
admin key) sees all. A conversation is not copied into each response: a continuation keeps only
its own input, and `conversation()` walks the chain back to its root. So a deleted (or pruned)
response really is gone, and every continuation through it loses its history (see `delete`).

A response's items are kept as given; the API layer gives every input item an `id` first.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from sqlalchemy import ColumnElement, Integer, and_, delete, func, insert, literal_column, select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rill.store.database import delete_in_batches
from rill.store.json_codec import unwrapped
from rill.store.schema import response_input_items, stored_responses

R, I = stored_responses, response_input_items
Order = Literal["asc", "desc"]

# The most responses one conversation may chain. Each is a turn or a tool round trip, and the
# model's context runs out long before; the bound is what stops a cycle (a row naming a later one).
MAX_CHAIN = 1000


class UnknownCursor(LookupError):
    """`after` names no item of the list (the API's 404 on `after`, as for stored messages)."""


class ChainTooLong(ValueError):
    """previous_response_id leads back through more than the store's bound (or round a cycle)."""


class ResponseStore:
    def __init__(self, engine: AsyncEngine, *, max_chain: int = MAX_CHAIN):
        self._engine = engine
        self._max_chain = max_chain

    async def save(self, owner: str, response: dict[str, Any], input_items: list[dict[str, Any]], *,
                   previous_response_id: str | None) -> None:
        """Keep a response (the `response` object: id, created_at, model, output, ...) and its input
        items, each a dict with an `id`. Nothing is kept when anything cannot be written:
        UnstorableValue (a short reason) for a value JSON cannot hold."""
        for i, item in enumerate(input_items):
            if not isinstance(item.get("id"), str):
                raise ValueError(f"input item {i} has no id")
        try:
            async with self._engine.begin() as conn:
                seq = (await conn.execute(insert(R).returning(R.c.seq), {
                    "id": response["id"], "owner": owner, "created": float(response["created_at"]),
                    "model": response["model"], "previous_response_id": previous_response_id,
                    "response": response})).scalar_one()
                if input_items:
                    await conn.execute(insert(I), [
                        {"response_seq": seq, "position": i, "item_id": _text(item["id"]), "item": item}
                        for i, item in enumerate(input_items)])
        except StatementError as exc:
            raise unwrapped(exc) from None

    async def get(self, owner: str | None, response_id: str) -> dict[str, Any] | None:
        """The response as saved; None for a missing id or another owner's."""
        if not _findable(response_id):
            return None
        async with self._engine.connect() as conn:
            return (await conn.execute(select(R.c.response).where(_visible(owner, response_id)))).scalar_one_or_none()

    async def input_items(self, owner: str | None, response_id: str, *, after: str | None = None, limit: int = 20,
                          order: Order = "desc", include_previous: bool = False
                          ) -> tuple[list[dict[str, Any]], bool] | None:
        """A page of the response's input items (OpenAI's default order is desc: the last given
        first) and whether more follow; None for a response this owner cannot see, UnknownCursor
        when `after` names no item of the list (where an id repeats, its first place in `order`).

        With include_previous, the list is what the model read: the conversation before this
        response (inputs and outputs of the responses it continues, as far back as they still
        exist) and then its own input. OpenAI documents this for `conversation` ("items from this
        conversation are prepended to input_items"); without it, only this response's own input."""
        if not _findable(response_id):
            return None
        if include_previous:
            return await self._listed_with_history(owner, response_id, after, limit, order)
        async with self._engine.connect() as conn:
            seq = (await conn.execute(select(R.c.seq).where(_visible(owner, response_id)))).scalar_one_or_none()
            if seq is None:
                return None
            query = select(I.c.item).where(I.c.response_seq == seq)
            if after is not None:
                first = func.min(I.c.position) if order == "asc" else func.max(I.c.position)
                cursor = (await conn.execute(select(first).where(I.c.response_seq == seq,
                                                                 I.c.item_id == _text(after)))).scalar()
                if cursor is None:
                    raise UnknownCursor(after)
                query = query.where(I.c.position > cursor if order == "asc" else I.c.position < cursor)
            query = query.order_by(I.c.position.asc() if order == "asc" else I.c.position.desc()).limit(limit + 1)
            items = list((await conn.scalars(query)).all())
        return items[:limit], len(items) > limit

    async def conversation(self, owner: str | None, response_id: str) -> list[dict[str, Any]] | None:
        """What a request with previous_response_id=response_id continues: from the root of its
        chain to this response, oldest first, each response's input items then its output items.
        Instructions are not among them (OpenAI does not carry them over; the caller adds the new
        request's own). None when the response, or any response before it, is missing or another
        owner's: a history with a hole is not offered as if whole. ChainTooLong past the bound.

        One recursive query walks the chain (SQLite and Postgres alike), one more per 500
        responses reads their items."""
        if not _findable(response_id):
            return None
        async with self._engine.connect() as conn:
            chain = await self._chain(conn, owner, response_id)
            if chain is None or chain[-1][1] is not None:  # not found, or the oldest one continues a missing one
                return None
            items = await self._items_of(conn, [seq for seq, _, _ in chain])
        history: list[dict[str, Any]] = []
        for seq, _, response in reversed(chain):
            history += items.get(seq, [])
            history += response.get("output") or []
        return history

    async def delete(self, owner: str | None, response_id: str) -> bool:
        """Delete a response and its input items. Responses that continue from it are kept, but
        their history now has a hole: conversation() through it is None, and continuing them is
        the API's 404, as for a missing previous response. OpenAI does not document what deleting
        a response does to its continuations; Rill keeps no copy, so a deletion removes the
        content from every conversation it was in."""
        if not _findable(response_id):
            return False
        async with self._engine.begin() as conn:
            seq = (await conn.execute(select(R.c.seq).where(_visible(owner, response_id)))).scalar_one_or_none()
            if seq is None:
                return False
            await conn.execute(delete(I).where(I.c.response_seq == seq))
            await conn.execute(delete(R).where(R.c.seq == seq))
        return True

    async def delete_before(self, cutoff: float, *, batch: int = 500) -> int:
        """Retention: delete responses created before cutoff; how many. Newer responses that
        continue them lose their history as after delete()."""
        async def remove(conn: AsyncConnection, seqs: Sequence[int]) -> None:
            await conn.execute(delete(I).where(I.c.response_seq.in_(seqs)))
            await conn.execute(delete(R).where(R.c.seq.in_(seqs)))

        return await delete_in_batches(self._engine, select(R.c.seq).where(R.c.created < cutoff), remove,
                                       batch=batch)

    async def _chain(self, conn: AsyncConnection, owner: str | None, response_id: str
                     ) -> list[tuple[int, str | None, dict[str, Any]]] | None:
        """(seq, previous_response_id, response) from response_id back as far as the links hold
        (each visible to owner), newest first; None when response_id itself is not found."""
        depth = literal_column("0", Integer).label("depth")  # inline: an untyped parameter is text to Postgres
        walk = select(R.c.seq, R.c.previous_response_id.label("prev"), depth).where(
            _visible(owner, response_id)).cte("chain", recursive=True)
        step = select(R.c.seq, R.c.previous_response_id, walk.c.depth + 1).join(walk, R.c.id == walk.c.prev).where(
            walk.c.depth < self._max_chain)
        if owner is not None:
            step = step.where(R.c.owner == owner)
        walk = walk.union_all(step)
        rows = (await conn.execute(select(walk.c.seq, walk.c.prev, walk.c.depth, R.c.response)
                                   .join(R, R.c.seq == walk.c.seq).order_by(walk.c.depth))).all()
        if not rows:
            return None
        if rows[-1].depth >= self._max_chain:
            raise ChainTooLong(f"previous_response_id leads back through more than {self._max_chain} responses")
        return [(row.seq, row.prev, row.response) for row in rows]

    @staticmethod
    async def _items_of(conn: AsyncConnection, seqs: list[int]) -> dict[int, list[dict[str, Any]]]:
        items: dict[int, list[dict[str, Any]]] = {}
        for start in range(0, len(seqs), 500):  # within any database's limit on parameters
            rows = await conn.execute(select(I.c.response_seq, I.c.item).where(I.c.response_seq.in_(
                seqs[start:start + 500])).order_by(I.c.response_seq, I.c.position))
            for row in rows:
                items.setdefault(row.response_seq, []).append(row.item)
        return items

    async def _listed_with_history(self, owner: str | None, response_id: str, after: str | None, limit: int,
                                   order: Order) -> tuple[list[dict[str, Any]], bool] | None:
        async with self._engine.connect() as conn:
            chain = await self._chain(conn, owner, response_id)
            if chain is None:
                return None
            items = await self._items_of(conn, [seq for seq, _, _ in chain])
        listed: list[dict[str, Any]] = []
        for seq, _, response in reversed(chain[1:]):
            listed += items.get(seq, [])
            listed += response.get("output") or []
        listed += items.get(chain[0][0], [])
        if order == "desc":
            listed.reverse()
        if after is not None:
            ids = [item.get("id") for item in listed]
            if after not in ids:
                raise UnknownCursor(after)
            listed = listed[ids.index(after) + 1:]
        return listed[:limit], len(listed) > limit


def _visible(owner: str | None, response_id: str) -> ColumnElement[bool]:
    condition = R.c.id == response_id
    return condition if owner is None else and_(condition, R.c.owner == owner)


def _findable(value: str) -> bool:
    """Whether a stored id could equal it: Postgres's text cannot hold NUL (a query with one fails)."""
    return "\0" not in value


def _text(item_id: str) -> str:
    """An item id as its column holds it: NUL (a client's own id may have one) replaced."""
    return item_id.replace("\0", "\ufffd")
