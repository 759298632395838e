"""logprobs / top_logprobs on the fake echo model: every chunk with text carries exactly its
tokens, their strings join to the content, and greedy picks the best of its top_logprobs."""

from __future__ import annotations

import math

import pytest

from tests.api.conftest import CHAT_URL, chat, chunks_of, parse_sse


def check_entries(entries: list[dict], k: int, *, greedy: bool) -> None:
    for e in entries:
        assert e["logprob"] <= 0.0
        assert bytes(e["bytes"]) or e["token"] == ""
        top = e["top_logprobs"]
        assert len(top) == k
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert sum(math.exp(t["logprob"]) for t in top) <= 1.0 + 1e-6
        if greedy and k:
            assert top[0]["bytes"] == e["bytes"] and top[0]["logprob"] == pytest.approx(e["logprob"])


@pytest.mark.parametrize("k", [0, 1, 5, 20])
async def test_streamed_chunks_carry_exactly_their_tokens(client, k):
    message = "héllo wörld"  # two-byte characters: split over two tokens each
    r = await client.post(CHAT_URL, json=chat(message, temperature=0, stream=True, logprobs=True, top_logprobs=k))
    content = [c for c in chunks_of(parse_sse(r.text)) if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == message
    total_bytes = b""
    for c in content:
        entries = c["choices"][0]["logprobs"]["content"]
        assert "".join(e["token"] for e in entries) == c["choices"][0]["delta"]["content"]
        check_entries(entries, k, greedy=True)
        total_bytes += b"".join(bytes(e["bytes"]) for e in entries)
    assert total_bytes == message.encode()


async def test_non_streamed_choice_carries_all_tokens(client):
    r = await client.post(CHAT_URL, json=chat("abc é", temperature=0, logprobs=True, top_logprobs=3))
    choice = r.json()["choices"][0]
    entries = choice["logprobs"]["content"]
    assert "".join(e["token"] for e in entries) == choice["message"]["content"] == "abc é"
    assert len(entries) == len("abc é".encode())
    check_entries(entries, 3, greedy=True)
    assert choice["logprobs"]["refusal"] is None


async def test_sampled_tokens_report_their_own_logprob(client):
    r = await client.post(CHAT_URL, json=chat("sample", temperature=1.5, seed=3, max_tokens=16,
                                              logprobs=True, top_logprobs=2))
    choice = r.json()["choices"][0]
    entries = choice["logprobs"]["content"]
    assert "".join(e["token"] for e in entries) == choice["message"]["content"]
    # random bytes: a character cut off by max_tokens is dropped from the content, and its tokens
    # from the logprobs
    assert 0 < len(entries) <= r.json()["usage"]["completion_tokens"]
    check_entries(entries, 2, greedy=False)


async def test_tokens_of_a_stop_string_are_not_reported(client):
    r = await client.post(CHAT_URL, json=chat("hello world", temperature=0, stop=["wor"], logprobs=True))
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "hello "
    assert "".join(e["token"] for e in choice["logprobs"]["content"]) == "hello "


async def test_without_logprobs_the_field_is_null(client):
    r = await client.post(CHAT_URL, json=chat("abc", temperature=0))
    assert r.json()["choices"][0]["logprobs"] is None
    r = await client.post(CHAT_URL, json=chat("abc", temperature=0, logprobs=False, stream=True))
    assert all(c["choices"][0]["logprobs"] is None for c in chunks_of(parse_sse(r.text)) if c["choices"])


@pytest.mark.parametrize("engine_slots", [4], indirect=True)
async def test_n_choices_each_carry_their_own_logprobs(client):
    r = await client.post(CHAT_URL, json=chat("xyz", temperature=0, n=2, logprobs=True, top_logprobs=1))
    for choice in r.json()["choices"]:
        assert "".join(e["token"] for e in choice["logprobs"]["content"]) == "xyz"
