"""`prediction` on the embedded model through the official `openai` client: greedy answers are
byte-identical with and without a prediction (right, wrong from the first token, right only at
the end, longer or shorter than the answer), streaming or not, next to ordinary requests, with
stop strings and logprobs; usage reports the draft tokens, accepted plus rejected."""

from __future__ import annotations

import asyncio
import difflib
from typing import Any

import openai
import pytest

from rill.bench.prompts import make_prompts, predictions

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]

MODEL = "SmolLM2-135M-Instruct"
MAX_TOKENS = 96
EDITS = make_prompts("edit", 3)
ORIGINALS = predictions("edit", 3)


def create(client: openai.OpenAI, messages, prediction: str | None = None, *, stream: bool = False, **fields: Any):
    """(content, usage) of a greedy completion, streamed or not."""
    extra = {"prediction": {"type": "content", "content": prediction}} if prediction is not None else {}
    if not stream:
        r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=MAX_TOKENS, temperature=0,
                                           **extra, **fields)
        return r.choices[0].message.content, r.usage
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=MAX_TOKENS,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}, **extra, **fields))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].usage


def counts(usage) -> tuple[int, int]:
    d = usage.completion_tokens_details
    return d.accepted_prediction_tokens, d.rejected_prediction_tokens


@pytest.fixture(scope="module")
def plain(client: openai.OpenAI) -> list[str]:
    """The answers to the edit prompts without a prediction."""
    return [create(client, messages)[0] for messages in EDITS]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("case", range(len(EDITS)))
def test_the_original_code_as_prediction_changes_nothing_but_the_speed(client, plain, case, stream):
    text, usage = create(client, EDITS[case], ORIGINALS[case], stream=stream)
    assert text == plain[case]
    accepted, rejected = counts(usage)
    # Which answers copy the module depends on the CPU's arithmetic (greedy SmolLM2 answered
    # prompt 1 with code on one machine, with prose on another, and with prose then the code on a
    # third): an answer that copies a long stretch of the prediction gets drafts kept there. One
    # that does not may still have a few kept where a token or two happen to match, so nothing is
    # claimed of it beyond the text.
    if copied_run(plain[case], ORIGINALS[case]) >= 200:
        assert accepted > 0
    assert accepted < usage.completion_tokens


def copied_run(answer: str, original: str) -> int:
    """The longest stretch of the original the answer repeats, in characters."""
    match = difflib.SequenceMatcher(None, answer, original, autojunk=False).find_longest_match()
    return match.size


def predictions_for(answer: str) -> dict[str, str]:
    return {
        "wrong from the first token": "SELECT name, total FROM orders WHERE total > 100 ORDER BY total;",
        "right only at the end": "Nothing like the start at all. " + answer[len(answer) // 2:],
        "longer than the answer": answer + answer,
        "shorter than the answer": answer[: len(answer) // 4],
        "the answer shifted by a word": answer[answer.find(" ") + 1:],
    }


@pytest.mark.parametrize("kind", list(predictions_for("x y")))
def test_any_prediction_gives_the_same_answer(client, plain, kind):
    prediction = predictions_for(plain[0])[kind]
    text, usage = create(client, EDITS[0], prediction)
    assert text == plain[0]
    accepted, rejected = counts(usage)
    if kind == "wrong from the first token":
        assert accepted == 0
    else:
        assert accepted > 0


def test_stop_strings_and_logprobs_are_the_same_with_a_prediction(client):
    messages = EDITS[1]
    fields = dict(stop=["def allow"], logprobs=True, top_logprobs=2)
    a = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=MAX_TOKENS, temperature=0, **fields)
    # the answer itself as the prediction: drafts are kept whatever this CPU's greedy answer is
    b = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=MAX_TOKENS, temperature=0,
                                       prediction={"type": "content", "content": a.choices[0].message.content},
                                       **fields)
    assert b.choices[0].message.content == a.choices[0].message.content
    assert b.choices[0].finish_reason == a.choices[0].finish_reason
    assert b.choices[0].logprobs.model_dump() == a.choices[0].logprobs.model_dump()  # exact floats
    assert counts(b.usage)[0] > 0


async def test_predicted_and_ordinary_requests_batched_together_give_their_own_answers(async_client, plain):
    async def one(i: int, predicted: bool) -> str:
        extra = {"prediction": {"type": "content", "content": ORIGINALS[i]}} if predicted else {}
        r = await async_client.chat.completions.create(model=MODEL, messages=EDITS[i], max_tokens=MAX_TOKENS,
                                                       temperature=0, **extra)
        return r.choices[0].message.content

    texts = await asyncio.gather(one(0, True), one(1, False), one(2, True), one(0, False))
    assert texts == [plain[0], plain[1], plain[2], plain[0]]


@pytest.mark.parametrize("fields, named", [({"n": 2}, "`n`"), ({"response_format": {"type": "json_object"}},
                                                                  "`response_format`")])
def test_what_it_cannot_be_combined_with_is_a_400(client, fields, named):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=EDITS[0], max_tokens=4,
                                       prediction={"type": "content", "content": "x"}, **fields)
    assert e.value.param == "prediction" and named in e.value.message
