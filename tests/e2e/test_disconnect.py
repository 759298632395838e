"""A client that goes away must not keep the engine busy.

These tests run a server with `--parallel 1`, so requests are served one at a time, FIFO: a
request that was not aborted blocks the next one. Each test starts a long generation, drops the connection
early, then sends a small request with a client timeout. Greedy "count from 1 to 1000" makes
SmolLM2 emit "1234567890..." without ever stopping (checked to 2500 tokens); 4000 tokens take about
90 s on this machine unloaded (decode slows as the context grows), so the small request can only
finish within its 45 s bound if the long one was aborted. The bound is an upper limit that turns
a hang into a failure, not a speed assertion.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.support import COUNT, MODEL, make_client

pytestmark = [pytest.mark.e2e, pytest.mark.both_backends]

FOLLOW_UP_TIMEOUT_S = 45.0


@pytest.fixture(scope="module")
def root(rill_factory) -> str:
    """A one-slot server: the follow-up request can only run once the long one is gone."""
    return rill_factory("--parallel", "1").url


def follow_up(root: str) -> None:
    """A short request that must complete within the bound (it waits behind any running request)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
    try:
        r = httpx.post(root + "/v1/chat/completions", json=body, timeout=FOLLOW_UP_TIMEOUT_S)
    except httpx.TimeoutException:
        pytest.fail(f"a short request did not finish within {FOLLOW_UP_TIMEOUT_S:.0f} s after the client "
                    "of a long generation disconnected: the long generation was not aborted")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_closing_a_raw_stream_aborts_the_generation(root: str) -> None:
    content_chunks = []
    with httpx.Client(timeout=httpx.Timeout(60.0)) as http:
        with http.stream("POST", root + "/v1/chat/completions", json={**COUNT, "stream": True}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[len("data: "):])
                assert "error" not in chunk, chunk
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    content_chunks.append(chunk["choices"][0]["delta"]["content"])
                    if len(content_chunks) == 3:
                        break
    # leaving both `with` blocks closed the response and the connection
    assert len(content_chunks) == 3
    follow_up(root)


def test_closing_an_openai_stream_aborts_the_generation(root: str) -> None:
    client = make_client(root)
    try:
        s = client.chat.completions.create(stream=True, **COUNT)
        got = 0
        for chunk in s:
            if chunk.choices and chunk.choices[0].delta.content:
                got += 1
                if got == 3:
                    break
        s.close()
        assert got == 3
    finally:
        client.close()
    follow_up(root)


def test_a_non_streaming_client_that_gives_up_aborts_the_generation(root: str) -> None:
    # the read timeout fires while the server is still generating; leaving the client closes
    # the connection, which the server sees as a disconnect
    with httpx.Client(timeout=httpx.Timeout(30.0, read=2.0)) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post(root + "/v1/chat/completions", json=COUNT)
    follow_up(root)
