"""Helpers for the end-to-end tests: starting `rill serve` on a free port, waiting for /health,
stopping it with SIGTERM (then SIGKILL after a deadline); each server's output goes to a log file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

MODEL = "SmolLM2-135M-Instruct"
# Greedy SmolLM2 answers this with digits and never stops (checked to 2,500 tokens): a generation
# that runs far longer than any test waits, unless it is aborted.
# A generation that runs to max_tokens: the end-of-text and turn tokens (SmolLM2 ids 0, 1, 2) are
# banned, so it cannot stop early whatever greedy decoding makes of the prompt on this CPU (with
# prefix-cache reuse it once answered a short list and stopped within the 2 s a test allowed).
COUNT = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
    "temperature": 0,
    "max_tokens": 4000,
    "logit_bias": {"0": -100, "1": -100, "2": -100},
}
RILL = Path(sys.executable).parent / "rill"

READY_TIMEOUT_S = 90.0  # loading takes ~1-2 s; generous for a busy 2-core machine
STOP_TIMEOUT_S = 20.0  # uvicorn's graceful shutdown is 5 s, then the engine joins
CLIENT_TIMEOUT_S = 120.0  # an upper bound so that a hang fails the test (not a speed assertion)

_live: list["RillServer"] = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RillServer:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    flags: tuple[str, ...] = ()
    _log_file: object = field(default=None, repr=False)
    _terminated: bool = field(default=False, repr=False)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def thread_stacks(self, wait: float = 5.0) -> str:
        """Every thread's stack, which `rill serve` prints on SIGUSR1: what a stuck server is doing."""
        before = len(self.log_text())
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + wait
        dumped = ""
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.log_text()[before:]
            if "most recent call first" in now and now == dumped:  # written, and no longer growing
                break
            dumped = now
        return "its threads:\n" + (dumped or "(no stack dump came)")

    def terminate(self) -> None:
        """Send SIGTERM once (a second one makes uvicorn skip its graceful shutdown)."""
        if not self._terminated and self.proc.poll() is None:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> tuple[int, bool]:
        """SIGTERM, then SIGKILL after `timeout`. Returns (exit code, whether it had to be killed)."""
        killed = False
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                self.proc.kill()
                self.proc.wait(10)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None
        if self in _live:
            _live.remove(self)
        assert self.proc.returncode is not None
        return self.proc.returncode, killed


def _server_env(data_dir: Path) -> dict[str, str]:
    # RILL_* variables in the caller's environment would change the defaults under test; the
    # store's default database goes in a directory of the server's own.
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RILL_")}, "RILL_DATA_DIR": str(data_dir)}


def launch(log_dir: Path, *flags: str) -> RillServer:
    """Start `rill serve` on a free port (no readiness wait)."""
    assert RILL.is_file(), f"the `rill` console script is not installed next to {sys.executable}"
    port = free_port()
    log_path = log_dir / f"rill-{port}.log"
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(
        [str(RILL), "serve", "--host", "127.0.0.1", "--port", str(port), *flags],
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=_server_env(log_dir / f"data-{port}"),
    )
    server = RillServer(f"http://127.0.0.1:{port}", proc, log_path, tuple(flags), log_file)
    _live.append(server)
    return server


def wait_ready(server: RillServer, timeout: float = READY_TIMEOUT_S) -> None:
    """Poll GET /health until 200; fail with the server's log if it exits or the deadline passes."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as http:
        while True:
            rc = server.proc.poll()
            if rc is not None:
                server.stop()
                pytest.fail(f"`rill serve {' '.join(server.flags)}` exited with {rc} before it was "
                            f"ready; its output:\n{server.log_tail()}", pytrace=False)
            try:
                r = http.get(server.url + "/health")
                if r.status_code == 200:
                    return
                assert r.status_code == 503, f"/health answered {r.status_code}: {r.text}"
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                stacks = server.thread_stacks()
                server.stop()
                pytest.fail(f"`rill serve {' '.join(server.flags)}` was not ready within {timeout:.0f} s; "
                            f"its output:\n{server.log_tail()}\n{stacks}", pytrace=False)
            time.sleep(0.1)


def start_server(log_dir: Path, *flags: str) -> RillServer:
    for attempt in range(3):
        server = launch(log_dir, *flags)
        try:
            wait_ready(server)
            return server
        except pytest.fail.Exception:
            # the free port can be taken between finding it and binding it: try another one
            if "address already in use" in server.log_text().lower() and attempt < 2:
                continue
            raise
    raise AssertionError("unreachable")


# The engines the API suite runs on. The default on a CPU is the torch backend with int8 weights,
# batch-invariant as llama.cpp's build is (docs/torch-backend.md); where it cannot run (no vector
# code for this CPU, say), `default` is llama.cpp too.
BACKEND_FLAGS = {"default": (), "llamacpp": ("--backend", "llamacpp")}


class RillFactory:
    """Starts extra servers; `cached=True` shares one server per set of flags within a test module
    (conftest stops a module's servers when it ends: alive for the whole session, the suite's
    ~25 servers held 17 GB at once)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self._cache: dict[tuple[str, ...], RillServer] = {}
        self._started: list[RillServer] = []

    def __call__(self, *flags: str, cached: bool = True) -> RillServer:
        if cached and flags in self._cache and self._cache[flags].proc.poll() is None:
            return self._cache[flags]
        server = start_server(self.log_dir, *flags)
        self._started.append(server)
        if cached:
            self._cache[flags] = server
        return server

    def launch(self, *flags: str) -> RillServer:
        """Start without waiting for readiness (for tests of start-up itself)."""
        server = launch(self.log_dir, *flags)
        self._started.append(server)
        return server

    def stop_all(self) -> list[str]:
        problems = []
        for server in self._started:
            if server.proc.poll() is None:
                rc, killed = server.stop()
                if killed:
                    problems.append(f"`rill serve {' '.join(server.flags)}` ignored SIGTERM for "
                                    f"{STOP_TIMEOUT_S:.0f} s and was killed; its output:\n{server.log_tail()}")
            else:
                server.stop()
        self._started.clear()
        self._cache.clear()
        return problems


def make_client(root: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=root + "/v1", api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S)


def live_servers() -> list[RillServer]:
    return list(_live)
