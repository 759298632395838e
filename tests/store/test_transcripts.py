"""Transcripts of spoken answers: kept per owner until they expire, on SQLite and Postgres."""

from __future__ import annotations

import time

from rill.store.transcripts import TranscriptStore


async def test_a_transcript_is_found_by_its_owner_until_it_expires(engine):
    store = TranscriptStore(engine)
    now = time.time()
    await store.save("key_a", "audio_1", "Hello there.", now + 3600)
    await store.save("key_a", "audio_old", "Long ago.", now - 1)
    await store.save("key_b", "audio_2", "Someone else's.", now + 3600)
    assert await store.get("key_a", ["audio_1", "audio_old", "audio_2", "audio_none"]) == {"audio_1": "Hello there."}
    assert await store.get(None, ["audio_1", "audio_2"]) == {"audio_1": "Hello there.", "audio_2": "Someone else's."}


async def test_saving_forgets_the_expired(engine, database):
    store = TranscriptStore(engine)
    await store.save("", "audio_old", "Long ago.", time.time() - 1)
    await store.save("", "audio_new", "Now.", time.time() + 60)
    reopened = await database.open()  # a restart keeps what has not expired
    try:
        from sqlalchemy import func, select

        from rill.store.schema import audio_transcripts
        async with reopened.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(audio_transcripts))).scalar() == 1
        assert await TranscriptStore(reopened).get("", ["audio_new"]) == {"audio_new": "Now."}
    finally:
        await reopened.dispose()
