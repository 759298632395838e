"""`n > 1`: one prefill, n choices decoded together, interleaved by `index` on the wire."""

from __future__ import annotations

import pytest

from tests.api.conftest import CHAT_URL, chat, chatml_prompt_tokens, chunks_of, engine_idle, engine_of, parse_sse

BATCHING = pytest.mark.parametrize("engine_slots", [4], indirect=True)
MESSAGE = "choices share the prompt"


@BATCHING
async def test_greedy_choices_are_all_the_greedy_answer_with_summed_usage(client, backend, app):
    r = await client.post(CHAT_URL, json=chat(MESSAGE, n=3, temperature=0))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["message"]["content"] for c in body["choices"]] == [MESSAGE] * 3
    assert all(c["finish_reason"] == "stop" for c in body["choices"])
    prompt = chatml_prompt_tokens([{"role": "user", "content": MESSAGE}])
    assert body["usage"]["prompt_tokens"] == prompt  # counted once
    assert body["usage"]["completion_tokens"] == 3 * len(MESSAGE.encode())
    assert engine_idle(app, backend)  # all three sequences released (their caches kept idle)
    assert len(engine_of(app)._loop.slots.cached()) == 3


@BATCHING
async def test_streamed_choices_each_get_a_role_chunk_content_and_a_finish_chunk(client):
    r = await client.post(CHAT_URL, json=chat(MESSAGE, n=3, temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    chunks = chunks_of(parse_sse(r.text))
    per_choice = {i: [c for c in chunks if c["choices"] and c["choices"][0]["index"] == i] for i in range(3)}
    for i, own in per_choice.items():
        assert own[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert own[-1]["choices"][0]["finish_reason"] == "stop"
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in own) == MESSAGE
    indices = [c["choices"][0]["index"] for c in chunks if c["choices"]]
    assert indices != sorted(indices)  # interleaved, not one choice after another
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3 * len(MESSAGE)


@BATCHING
async def test_seeded_choices_differ_from_each_other_and_choice_0_equals_the_n1_answer(client):
    fields = dict(temperature=1.0, seed=11)
    one = (await client.post(CHAT_URL, json=chat(MESSAGE, **fields))).json()
    many = (await client.post(CHAT_URL, json=chat(MESSAGE, n=3, **fields))).json()
    again = (await client.post(CHAT_URL, json=chat(MESSAGE, n=3, **fields))).json()
    texts = [c["message"]["content"] for c in many["choices"]]
    assert texts[0] == one["choices"][0]["message"]["content"]
    assert len(set(texts)) == 3
    assert texts == [c["message"]["content"] for c in again["choices"]]


@BATCHING
async def test_n_with_a_length_cap_caps_every_choice(client):
    body = (await client.post(CHAT_URL, json=chat(MESSAGE, n=2, temperature=0, max_tokens=4))).json()
    assert [c["message"]["content"] for c in body["choices"]] == [MESSAGE[:4]] * 2
    assert [c["finish_reason"] for c in body["choices"]] == ["length", "length"]
    assert body["usage"]["completion_tokens"] == 8
