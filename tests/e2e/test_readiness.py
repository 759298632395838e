"""Readiness of a real `rill serve --config` with one local model (the embedded SmolLM2, which
takes seconds to load) and one upstream model (ready at once): polled from the moment the process
starts, /v1/models never answers 200 with an empty or partial list, and /health and HEAD /health
answer 503 until both models can serve (docs/faults.md)."""

from __future__ import annotations

import time
from typing import Iterator

import httpx
import pytest

from tests.e2e.support import MODEL, READY_TIMEOUT_S, RillFactory
from tests.upstream_faults import FaultyUpstream

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as server:
        yield server


def assert_loading(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "model_loading", err


def test_nothing_says_ready_before_every_model_is(rill_factory: RillFactory, upstream: FaultyUpstream,
                                                  tmp_path) -> None:
    config = tmp_path / "rill.toml"
    config.write_text(f"""
[[models]]
name = "{MODEL}"

[[models]]
name = "remote"
base_url = "{upstream.base_url}"
model = "ok"
""")
    server = rill_factory.launch("--config", str(config))
    seen: list[str] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=10) as http:
        while True:
            assert time.monotonic() < deadline and server.proc.poll() is None, (seen, server.log_tail())
            try:
                health = http.get(server.url + "/health")  # asked first: readiness only ever goes 503 -> 200
                head = http.head(server.url + "/health")
                models = http.get(server.url + "/v1/models")
            except httpx.TransportError:
                seen.append("not listening")
                time.sleep(0.02)
                continue
            seen.append(f"{health.status_code}/{head.status_code}/{models.status_code}")
            # /health never says ready while the list is refused: a probe on either waits alike
            assert health.status_code == 503 or models.status_code == 200, seen
            if models.status_code == 200:
                assert {m["id"] for m in models.json()["data"]} == {MODEL, "remote"}, models.text
                break
            assert_loading(models)
            # a model-dependent route too; the model may have finished loading in between
            chat = http.post(server.url + "/v1/chat/completions",
                             json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
            if chat.status_code != 200:
                assert_loading(chat)
            if health.status_code == 503:
                assert health.json() == {"status": "loading"} and health.headers["retry-after"] == "5"
            time.sleep(0.02)
        # once the list is there, so is readiness (and the other way round: checked above)
        health = http.get(server.url + "/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        head = http.head(server.url + "/health")
        assert head.status_code == 200 and head.content == b""
        r = http.post(server.url + "/v1/chat/completions",
                      json={"model": "remote", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Hello world"
    rc, killed = server.stop()
    assert not killed, server.log_tail()
