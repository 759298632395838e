"""frequency_penalty, presence_penalty and logit_bias on the fake echo model (greedy unless said):
its answer is the user's message, one byte per token, so each adjustment's effect is exact."""

from __future__ import annotations

import pytest

from tests.api.conftest import CHAT_URL, assert_error, chat


async def answer(client, message: str, **fields) -> str:
    r = await client.post(CHAT_URL, json=chat(message, temperature=0, **fields))
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


async def test_a_banned_first_token_changes_the_answer_and_never_appears(client):
    assert await answer(client, "abcabc") == "abcabc"
    banned = await answer(client, "abcabc", logit_bias={str(ord("a")): -100}, max_tokens=12)
    assert banned and "a" not in banned


async def test_plus_100_all_but_forces_a_token(client):
    assert await answer(client, "hello", logit_bias={str(ord("z")): 100}, max_tokens=7) == "z" * 7


async def test_a_small_bias_leaves_the_greedy_answer_alone(client):
    # the echo target's logit leads the others by 2 at least: +1 elsewhere changes nothing
    assert await answer(client, "hello", logit_bias={str(ord("q")): 1.0}) == "hello"


async def test_frequency_penalty_grows_with_each_repeat_and_cuts_repetition(client):
    assert await answer(client, "aaaaaaaa") == "aaaaaaaa"
    penalised = await answer(client, "aaaaaaaa", max_tokens=8, frequency_penalty=2.0)
    assert 1 <= penalised.count("a") < 4  # the echo leads by > 2: it survives one repeat, not three


async def test_presence_penalty_is_paid_once_however_often_a_token_came(client):
    # the echo target (8) minus 2 still beats every other token (< 6): repetition goes on
    assert await answer(client, "aaaaaaaa", presence_penalty=2.0) == "aaaaaaaa"


async def test_a_negative_frequency_penalty_encourages_repetition(client):
    # every generated "x" adds 2 to x's logit: after four it outbids the echo target "y" (8)
    assert await answer(client, "xxxxy") == "xxxxy"
    assert await answer(client, "xxxxy", frequency_penalty=-2.0, max_tokens=8) == "x" * 8


@pytest.mark.parametrize(("key", "why"), [("258", "beyond the vocabulary"), ("-1", "negative"),
                                          ("abc", "not a number"), ("1.5", "not an integer"),
                                          (" 65", "not canonical")])
async def test_a_logit_bias_key_that_is_not_a_token_id_is_a_400_naming_it(client, key, why):
    r = await client.post(CHAT_URL, json=chat("hi", logit_bias={key: 5}))
    err = assert_error(r, 400, type="invalid_request_error", param=f"logit_bias.{key}")
    assert repr(key) in err["message"]


async def test_too_many_logit_bias_entries_is_a_400(client):
    r = await client.post(CHAT_URL, json=chat("hi", logit_bias={str(i % 258): 1 for i in range(1025)}))
    assert r.status_code == 200  # 258 distinct keys: fine
    big = {str(i): 1 for i in range(1025)}
    r = await client.post(CHAT_URL, json=chat("hi", logit_bias=big))
    assert_error(r, 400, param="logit_bias")
