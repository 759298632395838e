"""Schemathesis against the server's own OpenAPI document: POST /v1/chat/completions must never
answer 5xx, and every 4xx must be OpenAI's error object.

A dedicated server with the smallest context (`--ctx 256`) bounds every generation; on top of that,
generated requests that would run to the context's end get `max_tokens` capped at 8 (only a
missing or larger cap is lowered; an invalid one is left alone), so valid requests stay cheap.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.e2e.support import RillFactory

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

PATH = "/v1/chat/completions"
MAX_TOKENS_CAP = 8
CALL_TIMEOUT_S = 60


def cap_generation(case: Any) -> Any:
    body = case.body
    if isinstance(body, dict):
        cap = body.get("max_tokens")
        if cap is None or (isinstance(cap, int) and not isinstance(cap, bool) and cap > MAX_TOKENS_CAP):
            body["max_tokens"] = MAX_TOKENS_CAP
    return case


def assert_openai_error_shape(response: Any) -> None:
    content_type = response.headers.get("content-type") or [""]
    assert content_type[0].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert err["param"] is None or isinstance(err["param"], str)
    assert err["code"] is None or isinstance(err["code"], str)


@pytest.fixture(scope="module")
def fuzz_target(rill_factory: RillFactory):
    server = rill_factory("--ctx", "256")
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json", timeout=30)
    operation = schema[PATH]["POST"]
    with requests.Session() as session:
        yield server.url, operation, session


@pytest.mark.parametrize(("mode", "examples"), [(GenerationMode.POSITIVE, 50), (GenerationMode.NEGATIVE, 40)],
                         ids=["positive", "negative"])
def test_chat_completions_never_5xx(fuzz_target, mode: GenerationMode, examples: int) -> None:
    base_url, operation, session = fuzz_target
    seen: dict[int, int] = {}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode).map(cap_generation))
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, timeout=CALL_TIMEOUT_S)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500, response.text
        if 400 <= response.status_code < 500:
            assert_openai_error_shape(response)

    run()
    print(f"{mode.value}: status counts {seen}")
    # the run exercised the server, not only a client-side failure path
    assert sum(seen.values()) > 0
    if mode is GenerationMode.POSITIVE:
        assert seen.get(200, 0) > 0, seen  # some valid requests reached the model
    if mode is GenerationMode.NEGATIVE:
        assert any(400 <= s < 500 for s in seen), seen


@pytest.mark.parametrize("path", ["/tokenize", "/detokenize"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_token_endpoints_never_5xx(fuzz_target, path: str, mode: GenerationMode) -> None:
    base_url, _, session = fuzz_target
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json", timeout=30)
    operation = schema[path]["POST"]
    seen: dict[int, int] = {}

    @settings(max_examples=40, deadline=None, database=None, derandomize=True, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, timeout=CALL_TIMEOUT_S)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, response.text
        if 400 <= response.status_code < 500:
            assert_openai_error_shape(response)

    run()
    assert sum(seen.values()) > 0
    if mode is GenerationMode.POSITIVE:
        assert seen.get(200, 0) > 0, seen
