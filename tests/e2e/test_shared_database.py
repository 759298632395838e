"""Two `rill serve --config` processes on one Postgres database behave as one service: a key made
or revoked with `rill keys` is honoured by both within the key cache's TTL, and stored
completions, stored responses, spans and traces written through one are found through the other.
Both start together on a fresh database, so their migrations race too.

The upstream is benchmarks/fast_upstream.py (no model to load); the database is a throwaway one,
created for the module and dropped after it."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import asyncpg
import httpx
import pytest

from rill.api.http.auth import CACHE_TTL_S
from tests.e2e.support import CLIENT_TIMEOUT_S, RillFactory, RillServer, wait_ready
from tests.e2e.test_api_keys import rill_keys

pytestmark = pytest.mark.e2e

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"  # as tests/store's: the machine's Postgres
OPERATOR_KEY = "e2e-shared-operator-key-0123456789"
FAST_UPSTREAM = Path(__file__).resolve().parents[2] / "benchmarks" / "fast_upstream.py"
SLACK_S = 30.0  # beyond the TTL, for a busy machine
ASK = [{"role": "user", "content": "Hi"}]


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A fresh Postgres database (not a schema: `rill serve` takes only a URL)."""
    name = f"rill_e2e_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, str(FAST_UPSTREAM), "--port", "0", "--chunks", "4"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()  # "fast_upstream: http://127.0.0.1:PORT/v1 ..." once listening
        found = re.search(r"(http://\S+/v1)", banner)
        assert found, f"fast_upstream did not start: {banner!r}"
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


@pytest.fixture(scope="module")
def gateways(rill_factory: RillFactory, database_url: str, upstream_url: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RillServer, RillServer]]:
    config = tmp_path_factory.mktemp("shared") / "rill.toml"
    config.write_text(f'[[models]]\nname = "fast"\nbase_url = "{upstream_url}"\ntimeout = 30\n')
    flags = ("--config", str(config), "--database-url", database_url, "--api-key", OPERATOR_KEY)
    servers = [rill_factory.launch(*flags) for _ in range(2)]  # started together: concurrent migrations
    try:
        for server in servers:
            wait_ready(server)
        yield servers[0], servers[1]
    finally:  # before the database is dropped
        for server in servers:
            server.stop()


def call(server: RillServer, method: str, path: str, key: str = OPERATOR_KEY, **kwargs) -> httpx.Response:
    return httpx.request(method, server.url + path, headers={"Authorization": f"Bearer {key}"},
                         timeout=CLIENT_TIMEOUT_S, **kwargs)


def eventually(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {within:.0f} s"
        time.sleep(0.1)


def test_both_migrated_the_fresh_database_and_serve(gateways) -> None:
    for server in gateways:
        assert server.proc.poll() is None
        assert [m["id"] for m in call(server, "GET", "/v1/models").json()["data"]] == ["fast"]


def test_a_key_made_or_revoked_through_one_is_honoured_by_both(gateways, database_url: str) -> None:
    a, b = gateways
    secret = rill_keys("create", "--name", "shared", "--database-url", database_url).strip()
    for server in (a, b):
        eventually(lambda: call(server, "GET", "/v1/models", secret).status_code == 200, CACHE_TTL_S + SLACK_S,
                   f"the new key working on {server.url}")
    key_id = next(line.split()[0] for line in rill_keys("list", "--database-url", database_url).splitlines()
                  if line.split()[1] == "shared")
    rill_keys("revoke", key_id, "--database-url", database_url)
    for server in (b, a):  # both have it cached as good: the TTL ends that
        eventually(lambda: call(server, "GET", "/v1/models", secret).status_code == 401, CACHE_TTL_S + SLACK_S,
                   f"the revoked key refused on {server.url}")


def test_a_completion_stored_through_one_is_found_through_the_other(gateways) -> None:
    a, b = gateways
    made = call(a, "POST", "/v1/chat/completions", json={"model": "fast", "messages": ASK, "max_tokens": 3,
                                                         "store": True, "metadata": {"via": "a"}}).json()
    found = call(b, "GET", f"/v1/chat/completions/{made['id']}")
    assert found.status_code == 200, found.text
    assert found.json()["metadata"] == {"via": "a"}
    assert found.json()["choices"][0]["message"]["content"] == made["choices"][0]["message"]["content"]
    messages = call(b, "GET", f"/v1/chat/completions/{made['id']}/messages").json()["data"]
    assert [m["content"] for m in messages] == ["Hi"]


def test_a_response_stored_through_one_is_found_through_the_other(gateways) -> None:
    a, b = gateways
    made = call(a, "POST", "/v1/responses", json={"model": "fast", "input": "Hi", "max_output_tokens": 3,
                                                  "store": True})
    assert made.status_code == 200, made.text
    found = call(b, "GET", f"/v1/responses/{made.json()['id']}")
    assert found.status_code == 200, found.text
    assert found.json()["output"] == made.json()["output"]


def test_spans_and_traces_written_through_one_are_listed_by_the_other(gateways) -> None:
    a, b = gateways
    root = call(a, "POST", "/v1/spans", json={"name": "shared-e2e"}).json()  # written at once
    made = call(a, "POST", "/v1/chat/completions", json={"model": "fast", "messages": ASK, "max_tokens": 3,
                                                         "parent_span_id": root["id"]}).json()

    def listed_by_b() -> set[str]:
        return {t["id"] for t in call(b, "GET", "/v1/traces", params={"limit": 100}).json()["data"]}

    assert root["trace_id"] in listed_by_b()
    # the completion's span goes through A's batching writer: on B once A has flushed it
    eventually(lambda: call(b, "GET", f"/v1/spans/{made['id']}").status_code == 200, SLACK_S,
               "the completion's span on the other server")
    span = call(b, "GET", f"/v1/spans/{made['id']}").json()
    assert span["parent_id"] == root["id"] and span["trace_id"] == root["trace_id"]
    trace = call(b, "GET", f"/v1/traces/{root['trace_id']}").json()
    assert {s["id"] for s in trace["spans"]} == {root["id"], span["id"]}
