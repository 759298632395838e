"""logit_bias and the penalties on the real model, through the official openai client."""

from __future__ import annotations

import collections

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.support import MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]

WATER = [{"role": "user", "content": "Describe the water cycle in a few sentences."}]
# Greedy SmolLM2 lists "1, 2, 3, ..." here: the comma token repeats with every number (a prompt
# asking to repeat a word was answered differently by builds of llama.cpp for other CPUs)
REPEAT = [{"role": "user", "content": "List the numbers from 1 to 100, separated by commas."}]


def tokenize(root: str, text: str) -> list[int]:
    r = httpx.post(root + "/tokenize", json={"model": MODEL, "content": text}, timeout=30)
    assert r.status_code == 200, r.text
    return [t["id"] for t in r.json()["tokens"]]


def test_banning_the_first_greedy_token_changes_the_answer_and_it_never_appears(client: openai.OpenAI,
                                                                              root: str) -> None:
    greedy = client.chat.completions.create(model=MODEL, messages=WATER, max_tokens=24, temperature=0)
    text = greedy.choices[0].message.content
    first = tokenize(root, text)[0]
    banned = client.chat.completions.create(model=MODEL, messages=WATER, max_tokens=24, temperature=0,
                                            logit_bias={str(first): -100})
    other = banned.choices[0].message.content
    assert other != text
    assert first not in tokenize(root, other)


def test_frequency_penalty_cuts_repeated_tokens(client: openai.OpenAI, root: str) -> None:
    def most_repeated(**kw) -> int:
        r = client.chat.completions.create(model=MODEL, messages=REPEAT, max_tokens=96, temperature=0, **kw)
        counts = collections.Counter(tokenize(root, r.choices[0].message.content))
        return counts.most_common(1)[0][1]

    plain, penalised = most_repeated(), most_repeated(frequency_penalty=2.0)
    assert plain >= 10  # the prompt invites repetition
    assert penalised < plain / 2


# Byte values SmolLM2's vocabulary has no token for (besides those UTF-8 never uses): control
# characters 0x04 0x06 0x13 0x14 0x16 0x1d, and 0xf1 0xf2, which start U+40000..U+BFFFF.
MISSING_BYTES = {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xF1, 0xF2}


def representable(text: str) -> bool:
    return not MISSING_BYTES.intersection(text.encode())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60))
def test_tokenize_then_detokenize_round_trips_any_text(root: str, text: str) -> None:
    r = httpx.post(root + "/tokenize", json={"model": MODEL, "content": text}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    back = httpx.post(root + "/detokenize", json={"model": MODEL, "tokens": [t["id"] for t in body["tokens"]]},
                      timeout=30).json()["content"]
    assert body["exact"] == representable(text)
    if body["exact"]:
        assert back == text


def test_text_the_vocabulary_cannot_spell_is_flagged(root: str) -> None:
    r = httpx.post(root + "/tokenize", json={"content": "a\U00040000b"}, timeout=30).json()
    assert r["exact"] is False


def check_logprobs(content: str, entries, k: int, *, greedy: bool) -> None:
    assert "".join(e.token for e in entries) == content
    for e in entries:
        assert e.logprob <= 0.0
        assert len(e.top_logprobs) == k
        values = [t.logprob for t in e.top_logprobs]
        assert values == sorted(values, reverse=True)
        if greedy:  # the sampled token is the argmax of its top_logprobs
            assert e.top_logprobs[0].bytes == e.bytes and e.top_logprobs[0].logprob == pytest.approx(e.logprob)


def test_logprobs_non_streaming(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=WATER, max_tokens=32, temperature=0,
                                       logprobs=True, top_logprobs=5)
    choice = r.choices[0]
    check_logprobs(choice.message.content, choice.logprobs.content, 5, greedy=True)
    assert len(choice.logprobs.content) == r.usage.completion_tokens


def test_logprobs_streaming_every_text_chunk_carries_its_tokens(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=WATER, max_tokens=32, temperature=0,
                                            logprobs=True, top_logprobs=3, stream=True)
    text = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            check_logprobs(chunk.choices[0].delta.content, chunk.choices[0].logprobs.content, 3, greedy=True)
            text += chunk.choices[0].delta.content
    plain = client.chat.completions.create(model=MODEL, messages=WATER, max_tokens=32, temperature=0)
    assert text == plain.choices[0].message.content  # asking for logprobs changes nothing else


def test_logprobs_of_sampled_tokens(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=WATER, max_tokens=32, temperature=1.0,
                                       seed=7, logprobs=True, top_logprobs=2)
    check_logprobs(r.choices[0].message.content, r.choices[0].logprobs.content, 2, greedy=False)
