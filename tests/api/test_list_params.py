"""Query and path values of the span, trace and stored-completion endpoints are checked before
they reach the database: an offset past 64 bits, more than 32 filters, NUL characters, ids not of
ids' form, over-long text and times that are not finite are 400s naming the parameter (they were
500s, or 503 store_unavailable); the largest values allowed work."""

from __future__ import annotations

import pytest

from tests.api.conftest import CHAT_URL, assert_error, chat

SPANS, TRACES = "/v1/spans", "/v1/traces"
MAX_OFFSET = 2**63 - 1


def tags(count: int) -> str:
    return "&".join(f"tag=k{i}:v" for i in range(count))


@pytest.mark.parametrize("url, param", [
    (f"{TRACES}?offset={MAX_OFFSET + 1}", "offset"),
    (f"{TRACES}?offset={10**30}", "offset"),
    (f"{TRACES}?{tags(33)}", "tag"),
    (f"{TRACES}?{tags(1001)}", "tag"),
    (f"{TRACES}?{tags(20)}&" + "&".join(f"tags[t{i}]=v" for i in range(13)), "tag"),
    (f"{TRACES}?tag=k%00:v", "tag"), (f"{TRACES}?tags[k]=a%00", "tags"),
    (f"{TRACES}?tag={'k' * 65}:v", "tag"), (f"{TRACES}?tags[k]={'v' * 513}", "tags"),
    (f"{TRACES}?model=a%00b", "model"), (f"{TRACES}?model={'m' * 513}", "model"),
    (f"{TRACES}?name=%00", "name"), (f"{TRACES}?user=u%00", "user"),
    (f"{TRACES}?after=t%00", "after"), (f"{TRACES}?after={'t' * 65}", "after"),
    (f"{TRACES}?since=nan", "since"), (f"{TRACES}?since=inf", "since"), (f"{TRACES}?until=1e999", "until"),
    (f"{TRACES}?until=%00", "until"),
    (f"{CHAT_URL}?" + "&".join(f"metadata[k{i}]=v" for i in range(33)), "metadata"),
    (f"{CHAT_URL}?metadata[k]=v%00", "metadata"), (f"{CHAT_URL}?metadata[{'k' * 65}]=v", "metadata"),
    (f"{CHAT_URL}?model=%00", "model"), (f"{CHAT_URL}?after=chatcmpl-%00", "after"),
    (f"{SPANS}/a%00b", "span_id"), (f"{SPANS}/{'s' * 65}", "span_id"), (f"{SPANS}/%FF", "span_id"),
    (f"{TRACES}/a%00b", "trace_id"), (f"{CHAT_URL}/chatcmpl-%00", "completion_id"),
    (f"{CHAT_URL}/chatcmpl-%00/messages", "completion_id"),
])
async def test_values_the_database_cannot_take_are_400s(client, url, param):
    assert_error(await client.get(url), 400, type="invalid_request_error", param=param)


@pytest.mark.parametrize("method, url, param", [
    ("PATCH", f"{SPANS}/a%00b", "span_id"), ("DELETE", f"{SPANS}/a%00b", "span_id"),
    ("POST", f"{CHAT_URL}/chatcmpl-%00", "completion_id"), ("DELETE", f"{CHAT_URL}/chatcmpl-%00", "completion_id"),
])
async def test_ids_in_the_path_of_changes_are_checked_too(client, method, url, param):
    assert_error(await client.request(method, url, json={"name": "x", "metadata": {}}), 400, param=param)


async def test_the_largest_values_allowed_work(client, app):
    r = await client.post(SPANS, json={"name": "n", "tags": {f"k{i}": "v" for i in range(32)}})
    assert r.status_code == 200, r.text
    found = (await client.get(f"{TRACES}?{tags(32)}&offset=0")).json()
    assert [t["id"] for t in found["data"]] == [r.json()["trace_id"]]
    beyond = (await client.get(TRACES, params={"offset": MAX_OFFSET})).json()
    assert beyond["data"] == [] and beyond["meta"]["total_count"] == 1
    stored = await client.post(CHAT_URL, json=chat("hi", store=True, metadata={f"k{i}": "v" for i in range(16)}))
    assert stored.status_code == 200, stored.text
    pairs = "&".join(f"metadata[k{i % 16}]=v" for i in range(32))  # repeated keys count: 32 filters
    assert [c["id"] for c in (await client.get(f"{CHAT_URL}?{pairs}")).json()["data"]] == [stored.json()["id"]]
    # a value that is not UTF-8 arrives as U+FFFD: no match, no error
    assert (await client.get(f"{TRACES}?model=%FF%FE")).json()["data"] == []
    assert (await client.get(f"{CHAT_URL}?model=%FF")).json()["data"] == []


@pytest.mark.parametrize("body, param", [
    ({"name": "a\0b"}, "name"), ({"name": "n", "type": "t\0"}, "type"), ({"name": "n", "error": "\0"}, "error"),
])
async def test_span_text_with_a_nul_character_is_a_400(client, body, param):
    assert_error(await client.post(SPANS, json=body), 400, param=param)
    made = (await client.post(SPANS, json={"name": "n"})).json()
    assert_error(await client.patch(f"{SPANS}/{made['id']}", json=body), 400, param=param)
