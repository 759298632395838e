"""Schemathesis against the server's own OpenAPI document, every operation in it: no answer is
a 5xx (nor a 200 stream that breaks off with an error event), and every 4xx is its protocol's error
object.

Two servers with the smallest context (`--ctx 256`, so every generation is bounded; generated
chat requests also get their token caps lowered to 8): an open one, and one with an `--api-key`
whose requests carry the key, so the keyed paths (owners, scopes) are fuzzed too; requests to
it without the key, or with a wrong one, must all be 401s. Each operation is fuzzed in positive
and negative modes; the open server also gets schemathesis's coverage phase (bounds, wrong
types, missing and unexpected fields, methods a path does not allow). Valid (positive) cases
name, half of the time, a span, trace, stored completion and message that exist (seeded per
server), so the lookups that find something run as well as the 404s; each DELETE of a seeded
kind removes an object made for it. Last, valid requests carrying one hostile value each
(integers past 64 bits, JSON nested past the encoders' limits, NUL characters, very long text,
a thousand filters: what generation from the schema almost never draws) go to the open server
and to one on Postgres. Everything is derandomized: the same cases every run.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Iterator

import asyncpg

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.generation.drivers import CoverageGenerator
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.generation.overrides import Override

from tests.e2e.fuzzing import (CALL_TIMEOUT_S, MUTATIONS, Seeds, assert_error_shape, cap_generation,
                               check_answer, fresh_object, hostile, seed, with_known_ids)
from tests.e2e.support import RillFactory

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# No shrinking: the servers keep state (spans made, seeds changed), so a shrunk case may fail only
# because of what earlier ones stored; the case reported is the one that failed first.
NO_SHRINK = (Phase.explicit, Phase.generate)

API_KEY = "sk-fuzz-0123456789"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
RESPONSES = "/v1/responses"
COMPLETIONS = "/v1/completions"
GENERATES = {("POST", CHAT), ("POST", MESSAGES), ("POST", RESPONSES), ("POST", COMPLETIONS)}  # valid requests cost a generation: their caps are lowered

# Every operation of /openapi.json -> examples per generation mode on the open server (the keyed
# one runs half as many). About 3,500 requests in all with the coverage phase, most of them 400s
# answered in milliseconds; a valid chat request costs a generation of up to 8 tokens.
OPERATIONS: dict[tuple[str, str], int] = {
    ("POST", CHAT): 40,
    ("GET", CHAT): 30,
    ("GET", CHAT + "/{completion_id}"): 20,
    ("POST", CHAT + "/{completion_id}"): 25,
    ("DELETE", CHAT + "/{completion_id}"): 12,
    ("GET", CHAT + "/{completion_id}/messages"): 25,
    ("POST", "/v1/spans"): 40,
    ("GET", "/v1/spans/{span_id}"): 20,
    ("PATCH", "/v1/spans/{span_id}"): 40,
    ("DELETE", "/v1/spans/{span_id}"): 15,
    ("GET", "/v1/traces"): 40,
    ("GET", "/v1/traces/{trace_id}"): 20,
    ("GET", "/health"): 3,
    ("GET", "/v1/models"): 3,
    ("GET", "/v1/models/{model_id}"): 20,
    ("GET", "/metrics"): 3,
    ("GET", "/v1/upstreams"): 3,
    ("POST", "/tokenize"): 40,
    ("POST", "/detokenize"): 40,
    ("POST", MESSAGES): 40,
    ("POST", MESSAGES + "/count_tokens"): 30,
    ("POST", RESPONSES): 40,
    ("GET", RESPONSES + "/{response_id}"): 20,
    ("GET", RESPONSES + "/{response_id}/input_items"): 25,
    ("DELETE", RESPONSES + "/{response_id}"): 12,
    ("POST", COMPLETIONS): 40,
}
# operations whose only input is a path's free string, or nothing: no negative case exists
NOTHING_TO_NEGATE = {("GET", "/health"), ("GET", "/v1/models"), ("GET", "/metrics"), ("GET", "/v1/upstreams"),
                     ("GET", CHAT + "/{completion_id}"), ("DELETE", CHAT + "/{completion_id}"),
                     ("GET", "/v1/spans/{span_id}"), ("DELETE", "/v1/spans/{span_id}"),
                     ("GET", "/v1/traces/{trace_id}"), ("GET", "/v1/models/{model_id}"),
                     ("DELETE", RESPONSES + "/{response_id}")}
PUBLIC = {("GET", "/health")}
DELETES = {("DELETE", CHAT + "/{completion_id}"): "completion_id", ("DELETE", "/v1/spans/{span_id}"): "span_id",
           ("DELETE", RESPONSES + "/{response_id}"): "response_id"}
# a seeded object looked up by a valid request: found
LOOKUPS = {("GET", CHAT + "/{completion_id}"), ("GET", "/v1/spans/{span_id}"), ("GET", "/v1/traces/{trace_id}"),
           ("GET", "/v1/models/{model_id}"), ("GET", RESPONSES + "/{response_id}")}


class Target:
    """One server under fuzzing: its schema, a session (carrying the key when it has one), seeds."""

    def __init__(self, base_url: str, headers: dict[str, str]):
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers.update(headers)
        self.schema = schemathesis.openapi.from_url(base_url + "/openapi.json", headers=headers,
                                                    timeout=CALL_TIMEOUT_S)
        self.schema.config.output.sanitization.update(enabled=False)  # reports show the values sent
        self.seeds: Seeds = seed(self.session, base_url)

    def call(self, case: Any, **kwargs: Any) -> Any:
        return case.call(base_url=self.base_url, session=self.session, timeout=CALL_TIMEOUT_S, **kwargs)


@pytest.fixture(scope="module")
def open_target(rill_factory: RillFactory) -> Iterator[Target]:
    server = rill_factory("--ctx", "256")
    target = Target(server.url, {})
    yield target
    target.session.close()


@pytest.fixture(scope="module")
def keyed_target(rill_factory: RillFactory) -> Iterator[Target]:
    server = rill_factory("--ctx", "256", "--api-key", API_KEY)
    target = Target(server.url, {"Authorization": f"Bearer {API_KEY}"})
    yield target
    target.session.close()


def _cases(target: Target, key: tuple[str, str], mode: GenerationMode) -> st.SearchStrategy:
    """Generated cases; a valid one names seeded objects when the drawn flag says so."""
    operation = target.schema[key[1]][key[0]]
    generated = operation.as_strategy(generation_mode=mode)
    if key in GENERATES:
        generated = generated.map(cap_generation)
    if mode is GenerationMode.NEGATIVE:
        return st.tuples(generated, st.just(False))
    return st.tuples(generated, st.booleans())


def fuzz(target: Target, key: tuple[str, str], mode: GenerationMode, examples: int) -> dict[int, int]:
    seen: dict[int, int] = {}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True, phases=NO_SHRINK,
              suppress_health_check=list(HealthCheck))
    @given(drawn=_cases(target, key, mode))
    def run(drawn: tuple[Any, bool]) -> None:
        case, known = drawn
        if known:
            case = with_known_ids(case, target.seeds)
            if key in DELETES:
                case.path_parameters[DELETES[key]] = fresh_object(target.session, target.base_url, DELETES[key])
        response = target.call(case)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        check_answer(case, response)
        if known and (key in DELETES or key in LOOKUPS):  # the object exists: found, or deleted
            assert response.status_code in (200, 204), f"{case.as_curl_command()}\n{response.text[:1000]}"

    run()
    return seen


def _params(examples_scale: float) -> list[Any]:
    out = []
    for key, examples in OPERATIONS.items():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and key in NOTHING_TO_NEGATE:
                continue
            out.append(pytest.param(key, mode, max(2, round(examples * examples_scale)),
                                    id=f"{mode.value}-{key[0]} {key[1]}"))
    return out


@pytest.mark.parametrize(("key", "mode", "examples"), _params(1.0))
def test_open_server_never_5xx(open_target: Target, key: tuple[str, str], mode: GenerationMode,
                               examples: int) -> None:
    seen = fuzz(open_target, key, mode, examples)
    print(f"{key}: {mode.value}: status counts {seen}")
    assert sum(seen.values()) > 0  # requests reached the server
    if mode is GenerationMode.POSITIVE and key in (("POST", CHAT), ("POST", "/tokenize"), ("POST", "/detokenize"),
                                                   ("POST", "/v1/spans"), ("GET", "/v1/traces"),
                                                   ("POST", MESSAGES + "/count_tokens")):
        assert seen.get(200, 0) > 0, seen  # some valid requests did what they ask
    if mode is GenerationMode.NEGATIVE:
        assert any(400 <= s < 500 for s in seen), seen


@pytest.mark.parametrize(("key", "mode", "examples"), _params(0.5))
def test_keyed_server_never_5xx(keyed_target: Target, key: tuple[str, str], mode: GenerationMode,
                                examples: int) -> None:
    seen = fuzz(keyed_target, key, mode, examples)
    print(f"{key}: {mode.value}: status counts {seen}")
    assert 401 not in seen, seen  # the key was accepted on every route
    if mode is GenerationMode.POSITIVE and key in (("POST", CHAT), ("POST", "/v1/spans")):
        assert seen.get(200, 0) > 0, seen


@pytest.mark.parametrize("credentials", [None, "Bearer sk-wrong", "Basic " + API_KEY], ids=["none", "wrong", "basic"])
def test_keyed_server_refuses_every_route_without_its_key(keyed_target: Target, credentials: str | None) -> None:
    """Valid requests to every operation without the key (or with a wrong one) are 401s in
    their protocol's shape (Anthropic's under /v1/messages, else OpenAI's); only /health answers."""
    headers = {} if credentials is None else {"Authorization": credentials}
    with requests.Session() as anonymous:
        for key in OPERATIONS:
            operation = keyed_target.schema[key[1]][key[0]]

            @settings(max_examples=3, deadline=None, database=None, derandomize=True, phases=NO_SHRINK,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
            def run(case: Any) -> None:
                case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
                response = case.call(base_url=keyed_target.base_url, session=anonymous, headers=headers,
                                     timeout=CALL_TIMEOUT_S)
                if key in PUBLIC:
                    assert response.status_code == 200, response.text
                    return
                assert response.status_code == 401, f"{case.as_curl_command()}\n{response.text[:500]}"
                assert_error_shape(key[1], response)

            run()


# valid chat requests of the coverage phase (279 of them) each cost a generation: every 14th is sent
CHAT_COVERAGE_STRIDE = 14


def coverage_cases(target: Target, key: tuple[str, str]) -> list[Any]:
    """Schemathesis's coverage phase for one operation (what `schemathesis run` sends before
    fuzzing): each field at its bounds and just past them, wrong types, missing and unexpected
    properties, and the methods the path does not allow. Deterministic."""
    operation = target.schema[key[1]][key[0]]
    cases = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        generated = list(CoverageGenerator(
            operation=operation, generation_modes=[mode], auth_storage=None, override=Override(),
            generation_config=target.schema.config.generation_for(operation=operation, phase="coverage"),
            feedback=FeedbackSources()))
        if key in GENERATES:
            generated = [cap_generation(case) for case in generated]
            if mode is GenerationMode.POSITIVE:
                generated = generated[::CHAT_COVERAGE_STRIDE]
        cases += generated
    return cases


@pytest.mark.parametrize("key", [pytest.param(key, id=f"{key[0]} {key[1]}") for key in OPERATIONS])
def test_open_server_coverage_phase_never_5xx(open_target: Target, key: tuple[str, str]) -> None:
    cases = coverage_cases(open_target, key)
    seen: dict[int, int] = {}
    failures = []
    for case in cases:
        response = open_target.call(case)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        try:
            check_answer(case, response)
        except AssertionError as exc:  # every failing case is reported, not only the first
            failures.append(f"{case.meta.phase.data.description}: {exc}")
    print(f"{key}: {len(cases)} coverage cases: status counts {seen}")
    assert not failures, "\n\n".join(failures[:20])
    assert sum(seen.values()) > 0


async def _postgres(statement: str) -> None:
    conn = await asyncpg.connect(POSTGRES + "/test")
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_target(request: pytest.FixtureRequest, rill_factory: RillFactory) -> Iterator[Target]:
    """The open server (SQLite), or one on a fresh Postgres database, dropped afterwards."""
    if request.param == "sqlite":
        yield request.getfixturevalue("open_target")
        return
    database = f"rill_fuzz_{uuid.uuid4().hex[:12]}"
    asyncio.run(_postgres(f'CREATE DATABASE "{database}"'))
    try:
        server = rill_factory("--ctx", "256", "--database-url", f"{POSTGRES}/{database}", cached=False)
        target = Target(server.url, {})
        yield target
        target.session.close()
        server.stop()
    finally:
        asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


HOSTILE_EXAMPLES = 25


@pytest.mark.parametrize("key", [pytest.param(key, id=f"{key[0]} {key[1]}") for key in OPERATIONS
                                 if key not in NOTHING_TO_NEGATE or "{" in key[1]])
def test_hostile_values_never_5xx(store_target: Target, key: tuple[str, str]) -> None:
    """Valid requests with one hostile value each (fuzzing.hostile: integers past 64 bits, JSON
    nested past the encoders' limits, NUL characters, very long text, a thousand filters), on
    SQLite and on Postgres: a 4xx naming the problem, or an answer, never a 5xx."""
    operation = store_target.schema[key[1]][key[0]]
    generated = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    if key in GENERATES:
        generated = generated.map(cap_generation)
    seen: dict[int, int] = {}

    @settings(max_examples=HOSTILE_EXAMPLES, deadline=None, database=None, derandomize=True, phases=NO_SHRINK,
              suppress_health_check=list(HealthCheck))
    @given(case=generated, mutation=st.sampled_from(MUTATIONS), pick=st.integers(0, 7), known=st.booleans())
    def run(case: Any, mutation: str, pick: int, known: bool) -> None:
        if known:
            case = with_known_ids(case, store_target.seeds)
        case = hostile(case, mutation, pick)
        response = store_target.call(case)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        check_answer(case, response)

    run()
    print(f"{key}: hostile values: status counts {seen}")
    assert sum(seen.values()) > 0


def test_every_operation_is_fuzzed(open_target: Target) -> None:
    """A route added to the API is added to OPERATIONS (with its number of examples)."""
    document = requests.get(open_target.base_url + "/openapi.json", timeout=CALL_TIMEOUT_S).json()
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert documented == set(OPERATIONS)
