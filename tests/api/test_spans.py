"""Spans and traces on the fake model: every chat completion is a span (timings, usage, input,
output, tags, outcome), `parent_span_id` nests it under a workflow span, and the span and trace
API creates, reads, updates, deletes and lists them."""

from __future__ import annotations

import pytest

from tests.api.conftest import CHAT_URL, MODEL, assert_error, chat, parse_sse, wait_until

SPANS, TRACES = "/v1/spans", "/v1/traces"


async def settled(app) -> None:
    await app.state.span_writer.flush()


async def completion_span(client, app, **fields) -> dict:
    r = await client.post(CHAT_URL, json=chat("héllo", temperature=0, **fields))
    assert r.status_code == 200, r.text
    await settled(app)
    span = (await client.get(f"{SPANS}/{r.headers['x-rill-span-id']}")).json()
    assert span["trace_id"] == r.headers["x-rill-trace-id"]
    return span


@pytest.mark.parametrize("stream", [False, True])
async def test_a_completion_is_recorded_as_a_span(client, app, stream):
    r = await client.post(CHAT_URL, json=chat("héllo", temperature=0, stream=stream, user="ana",
                                              tags={"team": "search", "run": 7}, max_tokens=50))
    assert r.status_code == 200
    completion_id = parse_sse(r.text)[0]["id"] if stream else r.json()["id"]
    await settled(app)
    span = (await client.get(f"{SPANS}/{r.headers['x-rill-span-id']}")).json()
    assert span["id"] == r.headers["x-rill-span-id"] and span["parent_id"] is None
    assert span["type"] == "chat.completion" and span["status"] == "ok" and span["error"] is None
    assert span["model"] == MODEL and span["user"] == "ana" and span["completion_id"] == completion_id
    assert span["tags"] == {"team": "search", "run": 7}
    assert span["input"] == [{"role": "user", "content": "héllo"}]
    assert span["output"] == {"role": "assistant", "content": "héllo"} and span["finish_reason"] == "stop"
    assert span["usage"]["completion_tokens"] > 0
    assert span["usage"]["total_tokens"] == span["usage"]["prompt_tokens"] + span["usage"]["completion_tokens"]
    assert span["meta"]["params"]["max_tokens"] == 50 and "messages" not in span["meta"]["params"]
    timings = span["timings"]
    assert 0 <= timings["queue_ms"] <= timings["ttft_ms"] <= timings["total_ms"]
    assert span["duration_ms"] == pytest.approx(timings["total_ms"], abs=1)
    # the completion id finds the same span
    assert (await client.get(f"{SPANS}/{completion_id}")).json()["id"] == span["id"]


async def test_a_workflow_span_nests_completions_in_its_trace(client, app):
    root = (await client.post(SPANS, json={"name": "answer-question", "input": {"q": "why"},
                                           "tags": {"env": "prod"}})).json()
    assert root["status"] == "running" and root["end_time"] is None and root["trace_id"]
    first = await completion_span(client, app, parent_span_id=root["id"])
    second = await completion_span(client, app, parent_span_id=first["id"])  # a completion's span nests too
    assert first["parent_id"] == root["id"] and second["parent_id"] == first["id"]
    assert first["trace_id"] == second["trace_id"] == root["trace_id"]
    closed = (await client.patch(f"{SPANS}/{root['id']}", json={
        "end_time": "2099-01-01T00:00:00Z", "output": "because"})).json()
    assert closed["status"] == "ok" and closed["output"] == "because"
    trace = (await client.get(f"{TRACES}/{root['trace_id']}")).json()
    assert [(s["id"], s["depth"]) for s in trace["spans"]] == [(root["id"], 0), (first["id"], 1), (second["id"], 2)]
    assert trace["name"] == "answer-question" and trace["status"] == "ok" and trace["num_spans"] == 3
    assert trace["total_tokens"] == first["usage"]["total_tokens"] + second["usage"]["total_tokens"]
    listed = (await client.get(TRACES, params={"tag": "env:prod"})).json()
    assert [t["id"] for t in listed["data"]] == [root["trace_id"]] and listed["meta"]["total_count"] == 1


async def test_nesting_under_a_span_not_yet_written(client, app):
    """The first completion's span may still be in the writer's queue: it is found there."""
    r = await client.post(CHAT_URL, json=chat("a", temperature=0))
    parent = r.headers["x-rill-span-id"]
    r = await client.post(CHAT_URL, json=chat("b", temperature=0, parent_span_id=parent))
    assert r.status_code == 200, r.text
    assert r.headers["x-rill-trace-id"] == (await client.get(f"{SPANS}/{parent}")).json()["trace_id"]


@pytest.mark.parametrize("stream", [False, True])
async def test_an_unknown_parent_is_a_400_before_anything_runs(client, app, stream):
    r = await client.post(CHAT_URL, json=chat("a", stream=stream, parent_span_id="no-such-span"))
    assert_error(r, 400, param="parent_span_id")
    await settled(app)
    assert (await client.get(TRACES)).json()["data"] == []


async def test_a_failed_completion_is_an_error_span(client, app):
    r = await client.post(CHAT_URL, json=chat("FAIL now", stream=True))
    assert r.status_code == 200 and "error" in parse_sse(r.text)[-1]
    await settled(app)
    span = (await client.get(f"{SPANS}/{r.headers['x-rill-span-id']}")).json()
    assert span["status"] == "error" and span["error"]
    listed = (await client.get(TRACES, params={"status": "error"})).json()
    assert [t["id"] for t in listed["data"]] == [span["trace_id"]]


@pytest.mark.parametrize("backend", [{"step_delay": 0.01}], indirect=True)
async def test_a_client_that_leaves_leaves_a_cancelled_span(live_client, app):
    async with live_client.stream("POST", CHAT_URL, json=chat("x" * 200, stream=True, max_tokens=200)) as r:
        span_id = r.headers["x-rill-span-id"]
        async for line in r.aiter_lines():
            if '"content"' in line:
                break
    await wait_until(lambda: app.state.span_writer.queue_depth > 0 or app.state.span_writer.num_written > 0,
                     what="the span is handed to the writer")
    await settled(app)
    span = (await live_client.get(f"{SPANS}/{span_id}")).json()
    assert span["status"] == "error" and span["error"].startswith("cancelled")


async def test_trace_filters(client, app):
    await completion_span(client, app, user="u1", tags={"k": "a"})
    await completion_span(client, app, user="u2", tags={"k": "b"})

    async def users(**params) -> list[str | None]:
        return [t["user"] for t in (await client.get(TRACES, params=params)).json()["data"]]

    assert await users() == ["u2", "u1"]
    assert await users(**{"tags[k]": "a"}) == ["u1"]
    assert await users(user="u2") == ["u2"]
    assert await users(model=MODEL) == ["u2", "u1"]
    assert await users(model="other") == []
    assert await users(status="ok") == ["u2", "u1"]
    assert await users(since="2000-01-01T00:00:00Z", until="2999-01-01") == ["u2", "u1"]
    assert await users(until="946684800") == []  # Unix seconds: 2000-01-01
    page = (await client.get(TRACES, params={"limit": 1})).json()
    assert page["has_more"] and page["meta"]["total_count"] == 2
    rest = (await client.get(TRACES, params={"after": page["last_id"]})).json()
    assert [t["user"] for t in rest["data"]] == ["u1"] and not rest["has_more"]


@pytest.mark.parametrize("params, param", [
    ({"tag": "nocolon"}, "tag"), ({"tags": "x"}, "tags"), ({"since": "yesterday"}, "since"),
    ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"status": "weird"}, "status"),
    ({"offset": -1}, "offset"),
])
async def test_bad_trace_list_parameters_are_400s(client, params, param):
    assert_error(await client.get(TRACES, params=params), 400, param=param)


async def test_unknown_cursor_and_trace_are_404s(client):
    assert_error(await client.get(TRACES, params={"after": "nope"}), 404, param="after")
    assert_error(await client.get(f"{TRACES}/nope"), 404, param="trace_id")


@pytest.mark.parametrize("body, param", [
    ({}, "name"), ({"name": ""}, "name"), ({"name": "x", "colour": "red"}, "colour"),
    ({"name": "x", "parent_id": "missing"}, "parent_id"),
    ({"name": "x", "start_time": "2030-01-02T00:00:00Z", "end_time": "2030-01-01T00:00:00Z"}, "end_time"),
    ({"name": "x", "start_time": "not a time"}, "start_time"), ({"name": "x", "meta": [1]}, "meta"),
    ({"name": "x", "tags": {"k" * 65: 1}}, "tags." + "k" * 65), ({"name": "x", "id": "has space"}, "id"),
])
async def test_bad_spans_are_400s(client, body, param):
    assert_error(await client.post(SPANS, json=body), 400, param=param)


async def test_span_ids_and_traces_are_checked(client):
    made = (await client.post(SPANS, json={"name": "a", "id": "my-span", "trace_id": "my-trace"})).json()
    assert made["id"] == "my-span" and made["trace_id"] == "my-trace"
    assert_error(await client.post(SPANS, json={"name": "b", "id": "my-span"}), 400, param="id")
    assert_error(await client.post(SPANS, json={"name": "b", "parent_id": "my-span", "trace_id": "elsewhere"}),
                 400, param="trace_id")
    child = (await client.post(SPANS, json={"name": "b", "parent_id": "my-span", "start_time": 1_900_000_000,
                                            "end_time": 1_900_000_002.5})).json()
    assert child["trace_id"] == "my-trace" and child["duration_ms"] == 2500
    assert child["start_time"] == "2030-03-17T17:46:40Z"


async def test_update_and_delete(client):
    span = (await client.post(SPANS, json={"name": "a", "meta": {"v": 1}})).json()
    child = (await client.post(SPANS, json={"name": "b", "parent_id": span["id"]})).json()
    updated = (await client.patch(f"{SPANS}/{span['id']}", json={"error": "gave up", "meta": {"v": 2}})).json()
    assert updated["status"] == "error" and updated["meta"] == {"v": 2} and updated["name"] == "a"
    assert_error(await client.patch(f"{SPANS}/{span['id']}", json={"name": None}), 400, param="name")
    assert_error(await client.patch(f"{SPANS}/{span['id']}", json={"end_time": "1999-01-01T00:00:00Z"}),
                 400, param="end_time")
    assert_error(await client.patch(f"{SPANS}/nope", json={"name": "x"}), 404, param="span_id")
    r = await client.delete(f"{SPANS}/{span['id']}")
    assert r.status_code == 204 and r.content == b""
    assert_error(await client.get(f"{SPANS}/{child['id']}"), 404)  # the subtree went with it
    assert_error(await client.delete(f"{SPANS}/{span['id']}"), 404)


@pytest.mark.parametrize("fields, param", [
    ({"tags": ["a"]}, "tags"), ({"tags": {"": 1}}, "tags."), ({"parent_span_id": 5}, "parent_span_id"),
    ({"parent_span_id": ""}, "parent_span_id"),
])
async def test_bad_tags_and_parents_on_a_completion_are_400s(client, fields, param):
    assert_error(await client.post(CHAT_URL, json=chat("a", **fields)), 400, param=param)


async def test_a_database_outage_is_a_503_not_a_500(client, app, monkeypatch):
    from sqlalchemy.exc import OperationalError

    async def down(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(app.state.spans, "trace", down)
    r = await client.get(f"{TRACES}/any")
    assert_error(r, 503, code="store_unavailable")
    assert r.headers["retry-after"] == "5"
    monkeypatch.setattr(app.state.auth._store, "has_keys", down)
    app.state.auth._keyed_until = -1  # ask the key store again now
    assert_error(await client.get("/v1/models"), 503, code="store_unavailable")
