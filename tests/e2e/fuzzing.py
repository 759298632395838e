"""What the schemathesis suite needs besides schemathesis: the checks every answer must pass,
objects that exist (so path parameters also name real spans, traces and stored completions),
and generated requests kept cheap for the model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import requests

from tests.e2e.support import MODEL

MAX_TOKENS_CAP = 8
CALL_TIMEOUT_S = 60


def cap_generation(case: Any) -> Any:
    """A chat request that would run to the context's end gets `max_tokens` 8, and a larger
    `max_completion_tokens` comes down to 8 too (only a missing or larger cap is lowered; an
    invalid one is left alone), so valid requests stay cheap. A Responses request's cap is
    `max_output_tokens`."""
    body = case.body
    if isinstance(body, dict) and case.operation.path == RESPONSES_PREFIX:
        cap = body.get("max_output_tokens")
        if cap is None or (isinstance(cap, int) and not isinstance(cap, bool) and cap > MAX_TOKENS_CAP):
            body["max_output_tokens"] = MAX_TOKENS_CAP
    elif isinstance(body, dict):
        for name in ("max_tokens", "max_completion_tokens"):
            cap = body.get(name)
            if (cap is None and name == "max_tokens") or (
                    isinstance(cap, int) and not isinstance(cap, bool) and cap > MAX_TOKENS_CAP):
                body[name] = MAX_TOKENS_CAP
    return case


def content_type(response: Any) -> str:
    """schemathesis's responses keep each header as a list of values."""
    return (response.headers.get("content-type") or [""])[0]


def assert_openai_error_shape(response: Any) -> None:
    assert content_type(response).startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert err["param"] is None or isinstance(err["param"], str)
    assert err["code"] is None or isinstance(err["code"], str)


# Anthropic's Messages API: its errors are {"type": "error", "error": {type, message}}, its streams
# named events ending with message_stop
ANTHROPIC_PREFIX = "/v1/messages"


def is_anthropic(path: str) -> bool:
    return path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/")


def assert_anthropic_error_shape(response: Any) -> None:
    assert content_type(response).startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"type", "error"} and body["type"] == "error", body
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"type", "message"}, err
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str) and err["type"]


def assert_error_shape(path: str, response: Any) -> None:
    """The error object of the protocol `path` belongs to."""
    if is_anthropic(path):
        assert_anthropic_error_shape(response)
    else:
        assert_openai_error_shape(response)


def assert_complete_anthropic_stream(response: Any) -> None:
    """Anthropic's events, ending with message_stop, no `error` event (the streaming 5xx)."""
    names = [line[len("event: "):] for line in response.text.splitlines() if line.startswith("event: ")]
    assert "error" not in names, response.text[-500:]
    if not response.stream_cut_short:
        assert names and names[0] == "message_start" and names[-1] == "message_stop", response.text[-500:]


# OpenAI's Responses API: named events with sequence numbers, ending with response.completed (or
# response.incomplete at the token cap); an `error` event or response.failed is the streaming 5xx
RESPONSES_PREFIX = "/v1/responses"


def assert_complete_responses_stream(response: Any, replay: bool = False) -> None:
    """Also a stored response's events sent again (`replay`: GET ...?stream=true, after a
    `starting_after` that may be past the last event: then there are none)."""
    names = [line[len("event: "):] for line in response.text.splitlines() if line.startswith("event: ")]
    assert "error" not in names and "response.failed" not in names, response.text[-500:]
    if not response.stream_cut_short and (names or not replay):
        assert names and names[-1] in ("response.completed", "response.incomplete"), response.text[-500:]


def assert_complete_stream(response: Any) -> None:
    """A 200 event stream is whole: every event JSON without an `error`, ending with [DONE] (an
    error event after the 200 is the streaming form of a 5xx). schemathesis stops reading a stream
    after 20 events: such a stream is only checked for errors."""
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    if response.stream_cut_short:
        events = events[:-1]  # possibly cut inside
    else:
        assert events and events[-1] == "[DONE]", response.text[-500:]
    for data in events:
        if data == "[DONE]":
            continue
        chunk = json.loads(data)
        assert "error" not in chunk, data


def check_answer(case: Any, response: Any) -> None:
    """No 5xx; a 4xx is its protocol's error object (a HEAD answer has no body to check)."""
    request = case.as_curl_command()
    assert response.status_code < 500, f"{response.status_code} for\n{request}\n{response.text[:2000]}"
    if 400 <= response.status_code < 500 and case.method.upper() != "HEAD":
        assert_error_shape(case.path, response)
    if response.status_code == 200 and content_type(response).startswith("text/event-stream"):
        if is_anthropic(case.path):
            assert_complete_anthropic_stream(response)
        elif case.path.startswith(RESPONSES_PREFIX):
            assert_complete_responses_stream(response, replay=case.path != RESPONSES_PREFIX)
        else:
            assert_complete_stream(response)


@dataclass(frozen=True)
class Seeds:
    """Objects that exist on a server: a workflow span, the stored completion nested under it."""

    span_id: str
    trace_id: str
    completion_id: str
    message_id: str
    response_id: str = ""  # a stored response (Responses API) and its input item
    input_item_id: str = ""

    def path_value(self, name: str) -> str:
        return {"span_id": self.span_id, "trace_id": self.trace_id, "completion_id": self.completion_id,
                "model_id": MODEL, "response_id": self.response_id}[name]


def create_span(session: requests.Session, base_url: str, name: str = "fuzz-seed") -> dict[str, Any]:
    r = session.post(base_url + "/v1/spans", json={"name": name, "type": "workflow", "tags": {"fuzz": "seed"}},
                     timeout=CALL_TIMEOUT_S)
    assert r.status_code == 200, r.text
    return r.json()


def create_stored_completion(session: requests.Session, base_url: str, parent_span_id: str | None = None) -> str:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}],
                            "max_tokens": 2, "store": True, "metadata": {"fuzz": "seed"}}
    if parent_span_id is not None:
        body["parent_span_id"] = parent_span_id
    r = session.post(base_url + "/v1/chat/completions", json=body, timeout=CALL_TIMEOUT_S)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def create_stored_response(session: requests.Session, base_url: str) -> str:
    body = {"model": MODEL, "input": "Say hi.", "max_output_tokens": 2, "metadata": {"fuzz": "seed"}}
    r = session.post(base_url + RESPONSES_PREFIX, json=body, timeout=CALL_TIMEOUT_S)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def seed(session: requests.Session, base_url: str) -> Seeds:
    span = create_span(session, base_url)
    completion_id = create_stored_completion(session, base_url, parent_span_id=span["id"])
    r = session.get(f"{base_url}/v1/chat/completions/{completion_id}/messages", timeout=CALL_TIMEOUT_S)
    assert r.status_code == 200, r.text
    response_id = create_stored_response(session, base_url)
    items = session.get(f"{base_url}{RESPONSES_PREFIX}/{response_id}/input_items", timeout=CALL_TIMEOUT_S)
    assert items.status_code == 200, items.text
    return Seeds(span["id"], span["trace_id"], completion_id, r.json()["data"][0]["id"], response_id,
                 items.json()["data"][0]["id"])


def fresh_object(session: requests.Session, base_url: str, param: str) -> str:
    """A new object for a DELETE to remove (the shared seeds stay for the other operations)."""
    if param == "span_id":
        return create_span(session, base_url, "fuzz-doomed")["id"]
    if param == "response_id":
        return create_stored_response(session, base_url)
    assert param == "completion_id", param
    return create_stored_completion(session, base_url)


# body and query fields that name an object: a generated value rarely exists, a seeded one does
_BODY_IDS = {"parent_span_id": "span_id", "parent_id": "span_id", "trace_id": "trace_id", "model": "model_id",
             "previous_response_id": "response_id"}
_QUERY_IDS = {"/v1/traces": {"after": "trace_id"}, "/v1/chat/completions": {"after": "completion_id"}}


def with_known_ids(case: Any, seeds: Seeds) -> Any:
    """The case with its path parameters, and the ids (and model) its body or query names, set
    to objects that exist (a positive case stays valid: the ids match the same patterns)."""
    for name in case.path_parameters or {}:
        case.path_parameters[name] = seeds.path_value(name)
    if isinstance(case.body, dict):
        for name, kind in _BODY_IDS.items():
            if name in case.body:
                case.body[name] = seeds.path_value(kind)
    query_ids = _QUERY_IDS.get(case.operation.path, {})
    if case.operation.path.endswith("/messages"):
        query_ids = {"after": "message_id"}
    if case.operation.path.endswith("/input_items"):
        query_ids = {"after": "input_item_id"}
    for name, kind in query_ids.items():
        if case.query and name in case.query:
            case.query[name] = (seeds.message_id if kind == "message_id" else seeds.input_item_id
                                if kind == "input_item_id" else seeds.path_value(kind))
    return case


# ---- hostile values: what schema-driven generation almost never draws, and what broke the
# store before (integers past 64 bits, JSON nested deeper than the encoders go, NUL characters
# Postgres's text cannot hold, text far past any stored value, filters by the thousand) ----

HUGE_INTS = (2**63, -(2**63) - 1, 2**64 + 1, 10**40)
DEEP = 300  # levels of nesting: past orjson's 255, within the stdlib encoder the client uses
MANY_FILTERS = 1000
# filters the OpenAPI document does not list: repeated query parameters
UNDOCUMENTED_FILTERS = {"/v1/traces": lambda i: ("tag", f"k{i}:v"),
                        "/v1/chat/completions": lambda i: (f"metadata[k{i}]", "v")}
MUTATIONS = ("huge-int", "deep-json", "nul-text", "long-text", "many-filters")


def deep_json(depth: int = DEEP) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _fits(value: Any, mutation: str) -> bool:
    if mutation == "huge-int":
        return isinstance(value, int) and not isinstance(value, bool)
    if mutation in ("nul-text", "long-text"):
        return isinstance(value, str)
    return mutation == "deep-json"  # any body field: the free-form ones (span input, meta) reach the store


def _hostile_value(value: Any, mutation: str, pick: int, long: int) -> Any:
    if mutation == "huge-int":
        return HUGE_INTS[pick % len(HUGE_INTS)]
    if mutation == "deep-json":
        return deep_json()
    if mutation == "nul-text":
        return value + "\x00nul"
    return value + "x" * long


def hostile(case: Any, mutation: str, pick: int) -> Any:
    """The case with one field (query parameter, top-level body field or path id; the pick-th
    that fits) set to a hostile value, so the rest of the request stays valid and the value
    gets as far as it can; for many-filters, a thousand repeated filters on the list endpoints
    that take them."""
    if mutation == "many-filters":
        make = UNDOCUMENTED_FILTERS.get(case.operation.path)
        if make is not None and case.method.upper() == "GET":
            pairs = [make(i) for i in range(MANY_FILTERS)]
            names = {name for name, _ in pairs}
            case.query = {**(case.query or {}), **{n: [v for k, v in pairs if k == n] for n in names}}
        return case
    # (container, name, longest text): a URL's parts get text short enough for a request line
    places = [(case.body, 100_000)] if mutation == "deep-json" else [
        (case.query, 5_000), (case.path_parameters, 5_000), (case.body, 100_000)]
    slots = [(c, name, long) for c, long in places if isinstance(c, dict) for name in c if _fits(c[name], mutation)]
    if slots:
        container, name, long = slots[pick % len(slots)]
        container[name] = _hostile_value(container[name], mutation, pick, long)
    return case
