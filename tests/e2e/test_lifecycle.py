"""`rill serve` as a process: bad flags, start-up, limits (413, 429) and shutdown on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx
import pytest

from tests.e2e.support import CLIENT_TIMEOUT_S, COUNT, MODEL, RILL, STOP_TIMEOUT_S, RillFactory

pytestmark = pytest.mark.e2e



# uvicorn re-raises the SIGTERM it caught once its graceful shutdown is done, so a clean exit
# reads as "terminated by SIGTERM" (what process managers expect), or 0
CLEAN_EXIT = (0, -signal.SIGTERM)


def assert_error(r: httpx.Response, status: int, code: str | None) -> dict:
    assert r.status_code == status, f"{r.status_code}: {r.text}"
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code
    return err


# ---- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "message"), [
    (["--ctx", "100"], "--ctx must be at least 256"),
    (["--model", "/nonexistent/model.gguf"], "model file not found"),
    (["--port", "70000"], "port out of range"),
    (["--max-stall", "0.5"], "--max-stall must be between 1 and 100"),
])
def test_bad_flags_exit_2_with_a_message(flags: list[str], message: str) -> None:
    p = subprocess.run([str(RILL), "serve", *flags], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert message in p.stderr


def test_version() -> None:
    p = subprocess.run([str(RILL), "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    assert p.stdout.startswith("rill ")


def test_health_is_503_then_200_and_models_list(rill_factory: RillFactory) -> None:
    """Every /health answer before readiness is 503 {"status": "loading"}; then 200; and a chat
    request sent while loading gets 503 model_loading (when the window is caught at all)."""
    server = rill_factory.launch("--ctx", "256")
    seen: list[int] = []
    deadline = time.monotonic() + 90
    with httpx.Client(timeout=10) as http:
        while time.monotonic() < deadline and server.proc.poll() is None:
            try:
                r = http.get(server.url + "/health")
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            seen.append(r.status_code)
            if r.status_code == 200:
                assert r.json() == {"status": "ok"}
                break
            assert r.status_code == 503 and r.json() == {"status": "loading"}, r.text
            chat = http.post(server.url + "/v1/chat/completions",
                             json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
            if chat.status_code != 200:  # the model may have finished loading in between
                assert_error(chat, 503, "model_loading")
        assert seen and seen[-1] == 200, (seen, server.log_tail())
        models = http.get(server.url + "/v1/models").json()
        assert [m["id"] for m in models["data"]] == [MODEL]
        assert models["data"][0]["context_length"] == 256
    rc, killed = server.stop()
    assert not killed and rc in CLEAN_EXIT, (rc, killed)


# ---- limits -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(rill_factory: RillFactory) -> str:
    return rill_factory("--max-body-bytes", "2048", "--max-queue", "1", "--parallel", "1").url


def test_body_over_the_limit_is_413(limited: str) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 5000}], "max_tokens": 2}).encode()
    r = httpx.post(limited + "/v1/chat/completions", content=body,
                   headers={"content-type": "application/json"}, timeout=CLIENT_TIMEOUT_S)
    assert_error(r, 413, "request_too_large")

    def chunked():  # no Content-Length: the limit applies while the body streams in
        for i in range(0, len(body), 500):
            yield body[i:i + 500]

    r = httpx.post(limited + "/v1/chat/completions", content=chunked(),
                   headers={"content-type": "application/json"}, timeout=CLIENT_TIMEOUT_S)
    assert_error(r, 413, "request_too_large")


def test_small_chunked_body_is_fine(limited: str) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    r = httpx.post(limited + "/v1/chat/completions", content=iter([body[:10], body[10:]]),
                   headers={"content-type": "application/json"}, timeout=CLIENT_TIMEOUT_S)
    assert r.status_code == 200, r.text


def test_full_queue_is_429_with_retry_after(limited: str) -> None:
    """--max-queue 1: A runs, B waits, C is refused with 429 + Retry-After; once A and B are gone
    the server accepts requests again."""
    small = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with httpx.Client(timeout=60) as a, httpx.Client(timeout=60) as b:
        with a.stream("POST", limited + "/v1/chat/completions", json={**COUNT, "stream": True}) as ra:
            # keep a reference to the iterator: a dropped one is garbage-collected, and closing it
            # makes httpx close the connection, which aborts A
            lines = ra.iter_lines()
            for line in lines:  # A is running once its first content chunk arrives
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    break
            with b.stream("POST", limited + "/v1/chat/completions", json={**COUNT, "stream": True}) as rb:
                assert rb.status_code == 200  # B is queued (its role chunk comes at once)
                r = httpx.post(limited + "/v1/chat/completions", json=small, timeout=30)
                err = assert_error(r, 429, "rate_limit_exceeded")
                assert err["type"] == "rate_limit_error"
                assert int(r.headers["retry-after"]) >= 1
                r = httpx.post(limited + "/v1/chat/completions", json={**small, "stream": True}, timeout=30)
                assert_error(r, 429, "rate_limit_exceeded")  # before the stream starts
    # both clients went away: the server notices and frees the queue (poll with a deadline)
    deadline = time.monotonic() + 60
    while True:
        r = httpx.post(limited + "/v1/chat/completions", json=small, timeout=CLIENT_TIMEOUT_S)
        if r.status_code == 200:
            break
        assert r.status_code == 429, r.text
        assert time.monotonic() < deadline, "the queue stayed full after its clients disconnected"
        time.sleep(0.2)


# ---- shutdown -----------------------------------------------------------------------------------------


def test_sigterm_on_an_idle_server_exits_cleanly(rill_factory: RillFactory) -> None:
    server = rill_factory("--ctx", "256", cached=False)
    rc, killed = server.stop()
    assert not killed, f"ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s"
    assert rc in CLEAN_EXIT, server.log_tail()
    assert "Traceback" not in server.log_text()


def test_sigusr1_prints_every_threads_stack_and_the_server_goes_on(rill_factory: RillFactory) -> None:
    server = rill_factory("--ctx", "256", cached=False)
    stacks = server.thread_stacks()
    assert "most recent call first" in stacks
    assert "rill/engine/loop.py" in stacks  # the engine thread, where it waits
    assert httpx.get(server.url + "/health", timeout=CLIENT_TIMEOUT_S).status_code == 200
    rc, killed = server.stop()
    assert not killed and rc in CLEAN_EXIT


def _stream_then_sigterm(rill_factory: RillFactory) -> tuple[list[str], Exception | None, int, bool]:
    """Start a long stream, SIGTERM the server after a few chunks, read the rest. Returns the data
    lines seen, the error that ended the read (if any), the exit code and whether it was killed."""
    server = rill_factory("--ctx", "8192", cached=False)
    lines: list[str] = []
    ended_by: Exception | None = None
    with httpx.Client(timeout=httpx.Timeout(STOP_TIMEOUT_S + 10)) as http:
        with http.stream("POST", server.url + "/v1/chat/completions", json={**COUNT, "stream": True}) as r:
            try:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        lines.append(line[len("data: "):])
                        if len(lines) == 4:
                            server.terminate()
            except httpx.HTTPError as exc:
                ended_by = exc
    rc, killed = server.stop()
    return lines, ended_by, rc, killed


def test_sigterm_during_a_stream_exits_cleanly_without_hanging_the_client(rill_factory: RillFactory) -> None:
    lines, ended_by, rc, killed = _stream_then_sigterm(rill_factory)
    assert len(lines) >= 4
    assert not isinstance(ended_by, httpx.TimeoutException), "the stream hung after SIGTERM"
    assert not killed, f"ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s"
    assert rc in CLEAN_EXIT


def test_sigterm_during_a_stream_ends_it_with_an_error_event(rill_factory: RillFactory) -> None:
    lines, ended_by, rc, killed = _stream_then_sigterm(rill_factory)
    assert ended_by is None, f"the stream was not terminated properly: {ended_by!r}"
    last = json.loads(lines[-1]) if lines[-1] != "[DONE]" else None
    assert last is not None and "error" in last, lines[-3:]
    assert set(last["error"]) == {"message", "type", "param", "code"}
