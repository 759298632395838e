"""Simulated replicas for the replica-routing e2e tests: benchmarks/replica_sim.py, one process
per replica on a free port (real sockets, real prefix caches), and a gateway config in front of
them (with a dead replica beside them)."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from tests.e2e.support import free_port

SIM = Path(__file__).resolve().parents[2] / "benchmarks" / "replica_sim.py"
READY_S = 30.0


@contextmanager
def sim_replicas(n: int) -> Iterator[list[str]]:
    """n replicas (fast costs), yielding their base URLs (…/v1); stopped afterwards."""
    procs, urls = [], []
    try:
        for _ in range(n):
            port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, str(SIM), "--replicas", "1", "--base-port", str(port), "--model", "sea",
                 "--prefill-ms-per-token", "0.05", "--base-ttft-ms", "1", "--itl-ms", "1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            urls.append(f"http://127.0.0.1:{port}/v1")
        deadline = time.monotonic() + READY_S
        for url, proc in zip(urls, procs):
            while True:
                assert proc.poll() is None, f"replica_sim.py for {url} exited with {proc.returncode}"
                try:
                    if httpx.get(url.removesuffix("/v1") + "/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"replica_sim.py for {url} did not come up"
                time.sleep(0.05)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def stats(url: str) -> dict:
    return httpx.get(url.removesuffix("/v1") + "/stats", timeout=5).json()


def gateway_config(path: Path, urls: list[str]) -> Path:
    """`sea`: the replicas, eject a failing one at once, active checks every second."""
    listed = ", ".join(f'"{u}"' for u in urls)
    path.write_text(f"""
[[models]]
name = "sea"
base_urls = [{listed}]
routing = "prefix"
eject_after = 1
eject_seconds = 300
health_path = "/health"
health_interval = 1
timeout = 10
retries = 0
""")
    return path
