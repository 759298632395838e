"""`rill bench` against the real app over the deterministic fake backend: in-process through a
streaming ASGI transport, and once over real loopback HTTP through the command entry point."""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import uvicorn

from rill.api.app import create_app
from rill.backends.fake import FakeBackend
from rill.bench.command import add_bench_parser, run_bench
from rill.bench.prompts import make_prompts
from rill.bench.report import compare_rows, format_table
from rill.bench.runner import BenchOptions, run
from rill.config import ServerConfig
from tests.api.conftest import MODEL, StreamingASGITransport, fake_loader


def echo_tokens(kind: str, n: int, max_tokens: int) -> int:
    """Output tokens the fake model produces for the first n prompts: it echoes the last user
    message, one token per byte, cut at max_tokens."""
    return sum(min(len(m[-1]["content"].encode()), max_tokens) for m in make_prompts(kind, n))


async def test_each_level_completes_every_request_with_the_echoed_token_counts(app):
    options = BenchOptions(url="http://rill.test", concurrency=(1, 3), requests=7, max_tokens=128)
    result = await run(options, transport=StreamingASGITransport(app))
    assert [t.model for t in result.targets] == [MODEL]  # found through GET /v1/models
    assert [lv.concurrency for lv in result.levels] == [1, 3]
    expected = echo_tokens("short", 7, 128)
    for lv in result.levels:
        assert (lv.completed, lv.errors, lv.not_run, lv.timed_out) == (7, 0, 0, False), lv.error_examples
        assert lv.output_tokens == expected
        assert lv.ttft_ms["p50"] is not None and lv.itl_ms["p50"] is not None
        assert lv.output_tokens_per_s > 0 and lv.requests_per_s > 0
    assert result.ok


@pytest.mark.parametrize("backend", [{"n_ctx": 8192}], indirect=True)
@pytest.mark.parametrize("prompts", ["long", "shared-prefix"])
async def test_long_prompt_sets_are_served_and_capped_by_max_tokens(app, prompts):
    options = BenchOptions(url="http://rill.test", model=MODEL, concurrency=(2,), requests=4,
                           prompts=prompts, max_tokens=9)
    [lv] = (await run(options, transport=StreamingASGITransport(app))).levels
    assert (lv.completed, lv.errors) == (4, 0), lv.error_examples
    assert lv.output_tokens == echo_tokens(prompts, 4, 9) == 4 * 9


async def test_an_unknown_model_is_counted_as_errors(app):
    options = BenchOptions(url="http://rill.test", model="no-such-model", concurrency=(2,), requests=3)
    result = await run(options, transport=StreamingASGITransport(app))
    [lv] = result.levels
    assert (lv.completed, lv.errors) == (0, 3)
    assert lv.error_kinds == {"HTTP 404": 3}
    assert not result.ok


async def test_compare_against_the_same_app_reports_positive_ratios(app):
    options = BenchOptions(url="http://a.test", compare_url="http://b.test", concurrency=(1, 2),
                           requests=4, max_tokens=16)
    result = await run(options, transport=StreamingASGITransport(app),
                       compare_transport=StreamingASGITransport(app))
    assert [(lv.server, lv.concurrency) for lv in result.levels] == [("A", 1), ("B", 1), ("A", 2), ("B", 2)]
    assert all(lv.completed == 4 and lv.errors == 0 for lv in result.levels)
    rows = compare_rows(result)
    assert [r["concurrency"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("output_tokens_per_s_ratio", "ttft_p50_ratio"):
            assert isinstance(r[key], float) and r[key] > 0, (key, r)
    assert "tok/s A/B" in format_table(result)


# ---- over real loopback HTTP, through run_bench() ----------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rill")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["bench", *argv])


@contextlib.contextmanager
def serving_fake_app(data_dir: Path) -> Iterator[str]:
    """The app over the fake backend on a free loopback port, in a background thread."""
    app = create_app(ServerConfig(database_url=f"sqlite:///{data_dir / 'rill.db'}"), fake_loader(FakeBackend()),
                     expected_models=(MODEL,), exit_on_load_failure=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="bench-test-server", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not (server.started and app.state.loaded.is_set()):  # bounded poll for start-up
            assert thread.is_alive(), "the server thread died"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        assert not thread.is_alive(), "the server did not stop"


def _run_bounded(args: argparse.Namespace, limit: float = 60) -> int:
    """run_bench in a thread; fail (instead of hanging the suite) if it does not return in time."""
    box: list[int] = []
    thread = threading.Thread(target=lambda: box.append(run_bench(args)), daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), "rill bench did not stop by itself"
    return box[0]


def test_run_bench_over_loopback_writes_the_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    with serving_fake_app(tmp_path) as url:
        code = _run_bounded(_parse(["--url", url, "--concurrency", "1,4", "--requests", "8",
                                    "--max-tokens", "32", "--timeout", "30", "--json", str(out)]))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(out.read_text())
    assert doc["ok"] is True and doc["servers"]["A"]["model"] == MODEL
    assert [(lv["concurrency"], lv["completed"], lv["errors"]) for lv in doc["levels"]] == [(1, 8, 0), (4, 8, 0)]
    assert all(lv["output_tokens"] == echo_tokens("short", 8, 32) for lv in doc["levels"])
    assert "TTFT p50 ms" in captured.out and f"model {MODEL}" in captured.out
    assert "[A] concurrency 4: 8/8 done, 0 errors" in captured.err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: nothing listens there


def test_nothing_listening_reports_errors_and_exits_nonzero(tmp_path, capsys):
    url = f"http://127.0.0.1:{_free_port()}"
    out = tmp_path / "bench.json"
    code = _run_bounded(_parse(["--url", url, "--model", "m", "--concurrency", "1,2", "--requests", "3",
                                "--timeout", "5", "--json", str(out)]))
    captured = capsys.readouterr()
    assert code == 1
    doc = json.loads(out.read_text())
    assert doc["ok"] is False
    assert [(lv["completed"], lv["errors"]) for lv in doc["levels"]] == [(0, 3), (0, 3)]
    assert "connect error" in captured.out


def test_nothing_listening_without_a_model_says_so_and_exits_nonzero(capsys):
    url = f"http://127.0.0.1:{_free_port()}"
    assert _run_bounded(_parse(["--url", url, "--timeout", "5"])) == 1
    assert "cannot list models" in capsys.readouterr().err
