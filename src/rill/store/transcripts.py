"""Transcripts of spoken answers, by audio id, until they expire (OpenAI's `audio.expires_at`).

A client continues a spoken conversation by sending back `{"role": "assistant", "audio": {"id"}}`
instead of the text; the id stands for its transcript, for the key that made it, until then.
"""

from __future__ import annotations

import time
from typing import Iterable

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from rill.store.schema import audio_transcripts as T


class TranscriptStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    async def save(self, owner: str, audio_id: str, transcript: str, expires_at: float) -> None:
        """Keep one transcript, and forget those that have expired (an indexed range delete)."""
        async with self._engine.begin() as conn:
            await conn.execute(delete(T).where(T.c.expires_at <= time.time()))
            await conn.execute(insert(T), {"id": audio_id, "owner": owner, "transcript": transcript,
                                           "expires_at": expires_at})

    async def get(self, owner: str | None, audio_ids: Iterable[str]) -> dict[str, str]:
        """The unexpired transcripts among these ids that `owner` may see (None: an admin, all)."""
        query = select(T.c.id, T.c.transcript).where(T.c.id.in_(list(audio_ids)), T.c.expires_at > time.time())
        if owner is not None:
            query = query.where(T.c.owner == owner)
        async with self._engine.connect() as conn:
            return {row.id: row.transcript for row in await conn.execute(query)}
