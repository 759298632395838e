"""Errors before the first byte: OpenAI-shaped JSON naming the field, for every field's bounds,
every refused-because-unbuilt field, bad bodies, body limits, unknown models and paths.
None of them may be a 5xx."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.api.conftest import CHAT_URL, MODEL, assert_error, chat

LIMIT = 64 * 1024  # the `config` fixture's max_body_bytes


def body_with(**fields) -> dict:
    """A valid request with `fields` replacing (or, set to ..., removing) its fields."""
    body = chat("hi", temperature=0)
    for key, value in fields.items():
        if value is ...:
            body.pop(key)
        else:
            body[key] = value
    return body


def user(content) -> dict:
    return {"role": "user", "content": content}


# ---- validation: 400 invalid_request_error, `param` naming the field --------------------------

INVALID = [
    # (id, fields, param)
    ("temperature-below-0", {"temperature": -0.01}, "temperature"),
    ("temperature-above-2", {"temperature": 2.01}, "temperature"),
    ("temperature-not-a-number", {"temperature": "hot"}, "temperature"),
    ("top_p-zero", {"top_p": 0}, "top_p"),
    ("top_p-above-1", {"top_p": 1.01}, "top_p"),
    ("top_p-negative", {"top_p": -0.5}, "top_p"),
    ("frequency_penalty-below", {"frequency_penalty": -2.01}, "frequency_penalty"),
    ("frequency_penalty-above", {"frequency_penalty": 2.01}, "frequency_penalty"),
    ("presence_penalty-below", {"presence_penalty": -2.01}, "presence_penalty"),
    ("presence_penalty-above", {"presence_penalty": 2.01}, "presence_penalty"),
    ("logit_bias-value-above-100", {"logit_bias": {"65": 100.5}}, "logit_bias.65"),
    ("logit_bias-value-below-minus-100", {"logit_bias": {"65": -101}}, "logit_bias.65"),
    ("logit_bias-value-not-a-number", {"logit_bias": {"65": "up"}}, "logit_bias.65"),
    ("top_logprobs-above-20", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("top_logprobs-negative", {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ("top_logprobs-without-logprobs", {"top_logprobs": 2}, "top_logprobs"),
    ("top_logprobs-with-logprobs-false", {"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
    ("n-zero", {"n": 0}, "n"),
    ("n-above-server-max", {"n": 17}, "n"),
    ("n-far-above", {"n": 129}, "n"),
    ("max_tokens-zero", {"max_tokens": 0}, "max_tokens"),
    ("max_tokens-negative", {"max_tokens": -5}, "max_tokens"),
    ("max_tokens-fraction", {"max_tokens": 1.5}, "max_tokens"),
    ("max_tokens-string", {"max_tokens": "5"}, "max_tokens"),
    ("max_tokens-bool", {"max_tokens": True}, "max_tokens"),
    ("stream-not-a-bool", {"stream": "yes"}, "stream"),
    ("max_completion_tokens-zero", {"max_completion_tokens": 0}, "max_completion_tokens"),
    ("seed-above-uint64", {"seed": 2**64}, "seed"),
    ("seed-below-int64", {"seed": -(2**63) - 1}, "seed"),
    ("stop-five-strings", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("stop-empty-string", {"stop": ""}, "stop"),
    ("stop-not-a-string", {"stop": 5}, "stop"),
    ("metadata-17-pairs", {"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ("metadata-key-65-chars", {"metadata": {"k" * 65: "v"}}, "metadata." + "k" * 65),
    ("metadata-value-513-chars", {"metadata": {"k": "v" * 513}}, "metadata.k"),
    ("metadata-value-not-a-string", {"metadata": {"k": 1}}, "metadata.k"),
    ("user-257-chars", {"user": "u" * 257}, "user"),
    ("model-not-a-string", {"model": 5}, "model"),
    ("messages-missing", {"messages": ...}, "messages"),
    ("messages-empty", {"messages": []}, "messages"),
    ("messages-not-a-list", {"messages": "hi"}, "messages"),
    ("message-bad-role", {"messages": [{"role": "robot", "content": "x"}]}, ("messages[0]", "messages[0].role")),
    ("message-without-role", {"messages": [{"content": "x"}]}, ("messages[0]", "messages[0].role")),
    ("message-missing-content", {"messages": [{"role": "user"}]}, "messages[0].content"),
    ("message-content-a-number", {"messages": [user(5)]}, "messages[0].content"),
    ("second-message-bad", {"messages": [user("ok"), {"role": "system"}]}, "messages[1].content"),
    ("tool-message-without-tool_call_id", {"messages": [{"role": "tool", "content": "x"}]},
     "messages[0].tool_call_id"),
    ("function-message-without-name", {"messages": [{"role": "function", "content": "x"}]}, "messages[0].name"),
    ("text-part-without-text", {"messages": [user([{"type": "text"}])]}, "messages[0].content[0].text"),
    ("response_format-unknown-type", {"response_format": {"type": "xml"}}, "response_format"),
    ("response_format-json_schema-without-name",
     {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}},
     "response_format.json_schema.name"),
    ("stream_options-with-stream-false", {"stream": False, "stream_options": {"include_usage": True}},
     "stream_options"),
    ("stream_options-with-stream-null", {"stream": None, "stream_options": {"include_usage": True}},
     "stream_options"),
    ("stream_options-unknown-key", {"stream": True, "stream_options": {"include_everything": True}},
     "stream_options.include_everything"),
    ("tool_choice-names-a-tool-without-tools",
     {"tool_choice": {"type": "function", "function": {"name": "lookup"}}}, "tool_choice"),
    ("tool_choice-required-without-tools", {"tool_choice": "required"}, "tool_choice"),
    ("function_call-names-a-function-without-functions", {"function_call": {"name": "lookup"}}, "function_call"),
    ("service_tier-unknown", {"service_tier": "turbo"}, "service_tier"),
    ("reasoning_effort-unknown", {"reasoning_effort": "extreme"}, "reasoning_effort"),
    ("verbosity-unknown", {"verbosity": "loud"}, "verbosity"),
    ("modalities-unknown", {"modalities": ["video"]}, "modalities[0]"),
    ("audio-bad-format", {"audio": {"voice": "alloy", "format": "midi"}}, "audio.format"),
]


@pytest.mark.parametrize("fields, param", [pytest.param(f, p, id=i) for i, f, p in INVALID])
@pytest.mark.parametrize("stream", [False, True])
async def test_invalid_field_is_a_400_naming_it(client, fields, param, stream):
    body = body_with(**fields)
    body.setdefault("stream", stream)
    r = await client.post(CHAT_URL, json=body)
    err = assert_error(r, 400, type="invalid_request_error", code=None)
    allowed = param if isinstance(param, tuple) else (param,)
    assert err["param"] in allowed, err


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    {"type": "file", "file": {"file_id": "file-123"}},
])
@pytest.mark.parametrize("index", [0, 1])
async def test_non_text_content_part_is_a_400_naming_its_type(client, part, index):
    parts = [{"type": "text", "text": "look:"}, part] if index else [part]
    r = await client.post(CHAT_URL, json=body_with(messages=[{"role": "system", "content": "x"}, user(parts)]))
    err = assert_error(r, 400, type="invalid_request_error")
    assert err["param"] == f"messages[1].content[{index}].type"
    assert part["type"] in err["message"]


async def test_empty_string_inside_stop_list_is_explained(client):
    r = await client.post(CHAT_URL, json=body_with(stop=["ok", ""]))
    err = assert_error(r, 400, type="invalid_request_error")
    assert err["param"] in ("stop", "stop[1]")
    assert "at least 1 character" in err["message"], err["message"]


# ---- fields whose behaviour is not built yet: 400 unsupported_parameter -----------------------


NEUTRAL = [
    ("frequency_penalty-0", {"frequency_penalty": 0}),
    ("presence_penalty-0", {"presence_penalty": 0.0}),
    ("n-1", {"n": 1}),
    ("logprobs-false", {"logprobs": False}),
    ("logit_bias-empty", {"logit_bias": {}}),
    ("response_format-text", {"response_format": {"type": "text"}}),
    ("store-false", {"store": False}),
    ("metadata-empty", {"metadata": {}}),
    ("service_tier-auto", {"service_tier": "auto"}),
    ("service_tier-default", {"service_tier": "default"}),
    *[(f"service_tier-{t}", {"service_tier": t}) for t in ("flex", "scale", "priority")],
    ("modalities-text", {"modalities": ["text"]}),
    ("verbosity-medium", {"verbosity": "medium"}),
    # the fake model has no thinking section: the contract says accepted, no effect
    *[(f"reasoning_effort-{e}", {"reasoning_effort": e}) for e in ("none", "minimal", "low", "medium", "high")],
    ("tool_choice-none", {"tool_choice": "none"}),
    ("tool_choice-auto", {"tool_choice": "auto"}),
    ("function_call-none", {"function_call": "none"}),
    ("parallel_tool_calls", {"parallel_tool_calls": True}),
    ("stream-false", {"stream": False}),
    ("user", {"user": "u" * 256}),
    ("metadata-at-limits-with-store-false", {"store": False, "metadata": None}),
    ("unknown-vendor-fields", {"x_vendor_trace": {"id": 1}, "opper_extra": [1, 2], "cache_hint": "yes"}),
    ("explicit-nulls", {k: None for k in (
        "stream", "stream_options", "max_tokens", "max_completion_tokens", "top_p", "frequency_penalty",
        "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "n", "seed", "stop", "response_format",
        "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "prediction",
        "service_tier", "reasoning_effort", "verbosity", "modalities", "audio", "web_search_options", "store",
        "metadata", "user", "tags", "parent_span_id")}),
]


@pytest.mark.parametrize("fields", [pytest.param(f, id=i) for i, f in NEUTRAL])
async def test_neutral_values_are_accepted_and_change_nothing(client, fields):
    r = await client.post(CHAT_URL, json=body_with(**fields))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "hi"


# ---- bodies that are not a request -------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    pytest.param(b"{", id="truncated"),
    pytest.param(b'{"messages": [}', id="bad-array"),
    pytest.param(b"{'messages': []}", id="single-quotes"),
    pytest.param(b"", id="empty"),
    pytest.param(b'{"messages": [{"role": "user", "content": "\xff"}]}', id="invalid-utf8"),
    pytest.param(b"[" * 20_000, id="deeply-nested"),
])
async def test_unparseable_body_is_a_400(client, raw):
    r = await client.post(CHAT_URL, content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400, type="invalid_request_error")


@pytest.mark.parametrize("raw", ["[]", "[{}]", '"messages"', "42", "null", "true"])
async def test_non_object_json_is_a_400(client, raw):
    r = await client.post(CHAT_URL, content=raw.encode(), headers={"content-type": "application/json"})
    err = assert_error(r, 400, type="invalid_request_error")
    assert "object" in err["message"]


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
async def test_json_without_json_content_type_is_still_read(client, content_type):
    """`curl -d` sends form-urlencoded; clients that forget the header send none."""
    headers = {"content-type": content_type} if content_type else {}
    r = await client.post(CHAT_URL, content=json.dumps(chat("hi", temperature=0)).encode(), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "hi"


@pytest.mark.parametrize("field", ["content", "model"])
async def test_lone_surrogate_in_a_string_is_a_400(app, field):
    raw = {"content": b'{"messages": [{"role": "user", "content": "hi \\ud83d"}]}',
           "model": b'{"model": "\\ud83d", "messages": [{"role": "user", "content": "hi"}]}'}[field]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # see the status, not the crash
    async with httpx.AsyncClient(transport=transport, base_url="http://rill.test") as client:
        r = await client.post(CHAT_URL, content=raw, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    assert_error(r, 400, type="invalid_request_error")


# ---- size limits ---------------------------------------------------------------------------------

async def test_body_over_the_limit_with_content_length_is_a_413(client):
    r = await client.post(CHAT_URL, json=chat("x" * (LIMIT + 1)))
    assert_error(r, 413, type="invalid_request_error", code="request_too_large")


async def test_chunked_body_over_the_limit_is_a_413(client):
    async def body():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(LIMIT // 4096 + 2):
            yield b"x" * 4096
        yield b'"}]}'

    r = await client.post(CHAT_URL, content=body(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers  # really sent chunked
    assert_error(r, 413, type="invalid_request_error", code="request_too_large")


async def test_chunked_body_under_the_limit_is_read(client):
    payload = json.dumps(chat("chunked hello", temperature=0)).encode()

    async def body():
        for i in range(0, len(payload), 7):
            yield payload[i : i + 7]

    r = await client.post(CHAT_URL, content=body(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "chunked hello"


async def test_body_just_under_the_limit_is_not_refused_for_size(client):
    body = chat("")
    overhead = len(json.dumps(body).encode())
    r = await client.post(CHAT_URL, content=json.dumps(chat("x" * (LIMIT - overhead))).encode(),
                          headers={"content-type": "application/json"})
    assert len(r.request.content) == LIMIT
    # far more tokens than the context holds: refused, but for that and not for its size
    assert_error(r, 400, code="context_length_exceeded")


# ---- models and paths ----------------------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
async def test_unknown_model_is_a_404(client, stream):
    r = await client.post(CHAT_URL, json={**chat("hi", stream=stream), "model": "gpt-9"})
    err = assert_error(r, 404, type="invalid_request_error", code="model_not_found", param="model")
    assert "gpt-9" in err["message"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/nothing-here"), ("POST", "/v1/edits"), ("GET", "/v1/chat/completions/x/y/z"),
])
async def test_unknown_path_is_a_json_404(client, method, path):
    r = await client.request(method, path)
    assert_error(r, 404)


async def test_wrong_method_is_a_json_405(client):
    r = await client.put(CHAT_URL, json=chat("hi"))
    assert_error(r, 405)


async def test_the_served_model_id_is_the_one_in_errors_and_replies(client):
    r = await client.post(CHAT_URL, json=chat("hi", temperature=0))
    assert r.json()["model"] == MODEL


@pytest.mark.parametrize("n", [2, 16])
async def test_n_beyond_the_engines_slots_is_a_400_naming_n(client, n):
    # the default fake engine decodes one sequence at a time: n choices could never run together
    r = await client.post(CHAT_URL, json=body_with(n=n))
    err = assert_error(r, 400, type="invalid_request_error", param="n")
    assert "--parallel" in err["message"]


@pytest.mark.parametrize("stream", [False, True])
async def test_web_search_without_a_provider_says_how_to_configure_one(client, stream):
    r = await client.post(CHAT_URL, json=body_with(stream=stream, web_search_options={}))
    err = assert_error(r, 400, type="invalid_request_error", code="unsupported_parameter", param="web_search_options")
    assert "[search]" in err["message"] and "rill.toml" in err["message"]
