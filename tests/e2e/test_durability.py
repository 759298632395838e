"""Durability: a streaming load with `store: true`, the server killed with SIGKILL mid-way and
started again on the same database: every request whose stream reached [DONE] is stored, and
the database is intact."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from tests.e2e.support import CLIENT_TIMEOUT_S, MODEL, RillFactory

pytestmark = pytest.mark.e2e

WORKERS = 6
DONE_BEFORE_KILL = 12  # completions that reached [DONE] before the kill (while others stream)


def stream_until_done(http: httpx.Client, url: str, worker: int, number: int) -> str | None:
    """One streamed, stored completion; its id if the stream reached `data: [DONE]`."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": f"Count to {number + 3}."}],
            "max_tokens": 24, "stream": True, "store": True,
            "metadata": {"worker": str(worker), "number": str(number)}}
    completion_id = None
    with http.stream("POST", url + "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {") and completion_id is None:
                completion_id = line.split('"id":"', 1)[1].split('"', 1)[0]
            elif line == "data: [DONE]":
                return completion_id
    return None


def test_every_completion_that_got_done_survives_sigkill(rill_factory: RillFactory, tmp_path: Path) -> None:
    db = tmp_path / "kill.db"
    flags = ("--database-url", f"sqlite:///{db}", "--parallel", "4")
    server = rill_factory(*flags, cached=False)
    done: list[str] = []
    lock, enough = threading.Lock(), threading.Event()

    def worker(i: int) -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as http:
            for number in range(1000):
                try:
                    completion_id = stream_until_done(http, server.url, i, number)
                except httpx.HTTPError:
                    return  # the server is gone
                if completion_id is None:
                    return
                with lock:
                    done.append(completion_id)
                    if len(done) >= DONE_BEFORE_KILL:
                        enough.set()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(WORKERS)]
    for t in threads:
        t.start()
    assert enough.wait(CLIENT_TIMEOUT_S), f"only {len(done)} completions finished"
    server.proc.kill()  # SIGKILL: no shutdown code runs
    server.proc.wait(10)
    for t in threads:
        t.join(CLIENT_TIMEOUT_S)
        assert not t.is_alive()
    with lock:
        survivors = list(done)
    assert len(survivors) >= DONE_BEFORE_KILL

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    restarted = rill_factory(*flags, cached=False)
    with httpx.Client(base_url=restarted.url, timeout=CLIENT_TIMEOUT_S) as http:
        for completion_id in survivors:
            r = http.get(f"/v1/chat/completions/{completion_id}")
            assert r.status_code == 200, (completion_id, r.text)
            assert r.json()["choices"][0]["message"]["content"]
        listed = http.get("/v1/chat/completions", params={"limit": 100}).json()
        assert not listed["has_more"] and set(survivors) <= {c["id"] for c in listed["data"]}
        # and the restarted server keeps storing
        assert stream_until_done(http, restarted.url, 99, 0) is not None
