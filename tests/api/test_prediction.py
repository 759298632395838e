"""`prediction` over HTTP on the fake model: the same answer with and without it, its usage
counts in both response shapes (and the stream's usage chunk), and a 400 naming each field it
cannot be combined with."""

from __future__ import annotations

import pytest

from tests.api.conftest import CHAT_URL, assert_error, chat, chunks_of, parse_sse, stream_text

MESSAGE = "The quick brown fox jumps over the lazy dog, then naps in the warm sun."


def predicted(prediction, **fields) -> dict:
    return chat(MESSAGE, temperature=0, prediction={"type": "content", "content": prediction}, **fields)


def details(usage: dict) -> tuple[int, int]:
    d = usage["completion_tokens_details"]
    return d["accepted_prediction_tokens"], d["rejected_prediction_tokens"]


async def test_the_answer_is_the_same_and_usage_reports_the_prediction(client):
    plain = (await client.post(CHAT_URL, json=chat(MESSAGE, temperature=0))).json()
    r = await client.post(CHAT_URL, json=predicted(MESSAGE.replace("fox", "cat")))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == plain["choices"][0]["message"]["content"] == MESSAGE
    accepted, rejected = details(body["usage"])
    assert accepted > len(MESSAGE) // 2 and rejected > 0  # "cat" is not what the model wrote
    assert body["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]
    assert details(plain["usage"]) == (0, 0)


async def test_a_stream_reports_the_counts_in_its_usage_chunk(client):
    parts = [{"type": "text", "text": MESSAGE[:20]}, {"type": "text", "text": MESSAGE[20:]}]
    r = await client.post(CHAT_URL, json=predicted(parts, stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200, r.text
    events = parse_sse(r.text)
    assert stream_text(events) == MESSAGE
    usage = chunks_of(events)[-1]["usage"]
    accepted, rejected = details(usage)
    assert rejected == 0 and accepted > len(MESSAGE) // 2  # the prediction was the answer


async def test_logprobs_are_the_same_with_a_prediction(client):
    plain = (await client.post(CHAT_URL, json=chat(MESSAGE, temperature=0, logprobs=True, top_logprobs=2))).json()
    body = (await client.post(CHAT_URL, json=predicted(MESSAGE, logprobs=True, top_logprobs=2))).json()
    assert body["choices"][0]["logprobs"] == plain["choices"][0]["logprobs"]


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
COMBINATIONS = [
    ("n", {"n": 2}, "`n`"),
    ("tools", {"tools": [TOOL]}, "`tools`"),
    ("functions", {"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "`functions`"),
    ("json_object", {"response_format": {"type": "json_object"}}, "`response_format`"),
    ("json_schema", {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}},
     "`response_format`"),
]


@pytest.mark.parametrize("fields, named", [pytest.param(f, n, id=i) for i, f, n in COMBINATIONS])
@pytest.mark.parametrize("stream", [False, True])
async def test_combinations_it_cannot_serve_are_refused_before_the_first_byte(client, fields, named, stream):
    r = await client.post(CHAT_URL, json=predicted(MESSAGE, stream=stream, **fields))
    err = assert_error(r, 400, type="invalid_request_error", param="prediction")
    assert named in err["message"] and "`prediction`" in err["message"]


async def test_a_non_text_content_part_is_refused_by_its_path(client):
    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:,"}}]
    r = await client.post(CHAT_URL, json=predicted(parts))
    assert_error(r, 400, type="invalid_request_error", param="prediction.content[1]")


async def test_an_empty_prediction_is_an_ordinary_request(client):
    body = (await client.post(CHAT_URL, json=predicted(""))).json()
    assert body["choices"][0]["message"]["content"] == MESSAGE
    assert details(body["usage"]) == (0, 0)


async def test_metrics_count_the_prediction_tokens(client):
    from tests.api.test_metrics import parse_metrics

    body = (await client.post(CHAT_URL, json=predicted(MESSAGE.replace("lazy", "busy")))).json()
    accepted, rejected = details(body["usage"])
    values = parse_metrics((await client.get("/metrics")).text)
    assert values["rill_engine_prediction_accepted_tokens_total"] == accepted > 0
    assert values["rill_engine_prediction_rejected_tokens_total"] == rejected > 0
