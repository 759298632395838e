"""Stored completions through the official openai client on the real model: store (streamed
and not), list with a metadata filter, retrieve, messages, update, delete."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.support import MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]

ASK = [{"role": "user", "content": "Name a colour."}]


def test_store_list_update_and_delete_round_trip(client: openai.OpenAI) -> None:
    tag = {"suite": "e2e-stored", "run": "json"}
    made = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8, temperature=0, store=True,
                                          metadata=tag)
    stream = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8, temperature=0, store=True,
                                            metadata={**tag, "run": "sse"}, stream=True)
    chunks = list(stream)  # the stream reached [DONE]: the completion is stored
    streamed_id, streamed_text = chunks[0].id, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    listed = client.chat.completions.list(metadata={"suite": "e2e-stored"})
    assert [c.id for c in listed.data] == [made.id, streamed_id]
    assert [c.id for c in client.chat.completions.list(metadata={"run": "sse"}).data] == [streamed_id]

    got = client.chat.completions.retrieve(streamed_id)
    assert got.choices[0].message.content == streamed_text and got.choices[0].message.content == made.choices[0].message.content
    assert [(m.role, m.content) for m in client.chat.completions.messages.list(made.id).data] == [("user", "Name a colour.")]

    updated = client.chat.completions.update(made.id, metadata={"suite": "e2e-stored", "run": "renamed"})
    assert updated.metadata == {"suite": "e2e-stored", "run": "renamed"}
    assert [c.id for c in client.chat.completions.list(metadata={"run": "renamed"}).data] == [made.id]

    deleted = client.chat.completions.delete(made.id)
    assert deleted.deleted and deleted.id == made.id
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(made.id)
    assert [c.id for c in client.chat.completions.list(metadata={"suite": "e2e-stored"}).data] == [streamed_id]
