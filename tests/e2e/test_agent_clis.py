"""The real agent CLIs against a real `rill serve`: Codex CLI 0.169.0 over `POST /v1/responses`
and Claude Code 2.1.328 over `POST /v1/messages`, on the embedded SmolLM2 with an API key, so that
a passing run also proves auth by `Authorization: Bearer` (Codex, and Claude Code with
ANTHROPIC_AUTH_TOKEN) and by `x-api-key` (Claude Code with ANTHROPIC_API_KEY).

* With the lean configurations of shared/AGENT-CLIENTS.md (~1.2k and ~0.6k tokens of prompt)
  each CLI exits 0 and prints the model's answer: the same text the server recorded in the
  request's span, and every request it sent was answered 200.
* With their stock prompts (~9.6k and ~13k tokens), more than the 8,192-token model holds, each
  stops after the server's one 400 with its own clean message (Codex: "ran out of room in the
  model's context window", rc 1; Claude Code: is_error, terminal_reason "prompt_too_long", and the
  token counts of the server's "prompt is too long: N tokens > 8192 maximum"), never in a retry loop.

What reached the server comes from its request counters (/metrics, by route and status), read
around each run. The CLIs are installed by scripts/install-agent-clis.sh (`make test`); these
tests skip, saying why, where they could not be. Each run has a hard timeout (agent_clis.py).

Neither CLI sends a temperature or lets one be set, so SmolLM2 sampled at 1.0 now and then never
stopped (measured on the CLIs' lean prompts: 3 to 37% of answers ran past 256 tokens, by prompt;
Codex's ran to the end of the context), and a cut answer fails the CLI (Codex on the `incomplete`
response; Claude Code after asking the model to resume). The servers here run with the operator's
answer to that, `--temperature 0`: requests that send no temperature are decoded greedily, so
each run's answer is the same short one. Each run's cost is bounded all the same: Claude Code's
answers by CLAUDE_CODE_MAX_OUTPUT_TOKENS, Codex's (Codex sends no cap) by a 2,048-token context on
the server it talks to. The servers compute on one thread: two OpenMP threads on a busy machine
collapse to a few tokens per second (README's soak note).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.e2e.agent_clis import (CLAUDE_PROMPT_TOO_LONG, CODEX_CONTEXT_FULL, RUN_TIMEOUT_S, CliRun, cli_bin,
                                  counts_since, output_text, recorded_spans, request_counts, run_claude, run_codex,
                                  write_codex_home)
from tests.e2e.support import MODEL, RillServer

pytestmark = [pytest.mark.e2e, pytest.mark.agent_cli, pytest.mark.timeout(RUN_TIMEOUT_S + 120)]

KEY = "e2e-agent-cli-key-0123456789"
CTX = 8192  # the embedded model's whole training context: what the stock prompts exceed
CODEX_CTX = 2048  # the server Codex's lean runs talk to (see above)
PROMPT = "Say hello to me in one short sentence."
RESPONSES = ("/v1/responses", "POST")
MESSAGES = ("/v1/messages", "POST")

Sent = dict[tuple[str, str, str], int]


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return cli_bin()


def _serve(rill_factory, ctx: int) -> RillServer:
    """--temperature 0: the CLIs send no temperature (see above)."""
    return rill_factory("--api-key", KEY, "--ctx", str(ctx), "--parallel", "1", "--threads", "1", "--temperature", "0")


@pytest.fixture(scope="module")
def server(bin_dir: Path, rill_factory) -> RillServer:
    """`rill serve` with an admin key and the model's whole 8,192-token context (one sequence: the
    CLIs send one request at a time). Started after the CLIs are found, so a skip costs no server."""
    return _serve(rill_factory, CTX)


@pytest.fixture(scope="module")
def codex_server(bin_dir: Path, rill_factory) -> RillServer:
    """The same with a 2,048-token context, for Codex's lean runs (Codex sends no output cap)."""
    return _serve(rill_factory, CODEX_CTX)


@dataclass
class Attempt:
    done: CliRun
    sent: Sent  # what the server answered during the run: {(route, method, status): count}
    spans: list[dict[str, Any]]  # the spans it recorded for the run, oldest first

    def report(self) -> str:
        """What the CLI did, and what the server answered and recorded (a finish reason "length":
        the model ran out of tokens)."""
        reasons = [s.get("finish_reason") for s in self.spans]
        return f"the server answered: {_describe(self.sent)}; finish reasons {reasons}\n{self.done.report()}"


def _attempt(server: RillServer, run: Callable[[], CliRun]) -> Attempt:
    before, since = request_counts(server.url, KEY), time.time()
    done = run()
    sent = counts_since(before, server.url, KEY)  # before the spans are read: those reads are requests too
    return Attempt(done, sent, recorded_spans(server.url, KEY, model=MODEL, since=since))


def _statuses(sent: Sent, route: tuple[str, str]) -> dict[str, int]:
    return {status: n for (r, m, status), n in sent.items() if (r, m) == route}


def _describe(sent: Sent) -> str:
    return ", ".join(f"{m} {r} -> {s} x{n}" for (r, m, s), n in sorted(sent.items())) or "no requests"


def _assert_answered(attempt: Attempt, route: tuple[str, str]) -> None:
    """Every request the run sent went to `route` and was answered 200 (a 404 means the server
    has no such route; a 401, that it refused the key as the CLI sent it)."""
    sent = attempt.sent
    assert sent and set(sent) == {(*route, "200")}, attempt.report()


def _assert_recorded(attempt: Attempt, text: str) -> None:
    """The CLI's answer is the output of the last span the server recorded for the run."""
    outputs = [output_text(s.get("output")) for s in attempt.spans if s.get("output") is not None]
    assert outputs, f"the server recorded no span with an output for the run: {attempt.spans}\n{attempt.done.report()}"
    assert outputs[-1].strip() == text.strip(), \
        f"the CLI printed {text!r}; the server's last span says {outputs[-1]!r}\n{attempt.done.report()}"


def test_codex_exec_prints_the_models_answer(bin_dir: Path, codex_server: RillServer, tmp_path: Path) -> None:
    home = write_codex_home(tmp_path / "codex", base_url=codex_server.url + "/v1", model=MODEL, lean=True,
                            context_window=CODEX_CTX)
    attempt = _attempt(codex_server, lambda: run_codex(bin_dir, home, key=KEY, prompt=PROMPT))
    done = attempt.done
    _assert_answered(attempt, RESPONSES)
    assert not done.timed_out and done.rc == 0, attempt.report()
    assert done.last_message is not None and done.last_message.strip(), \
        f"codex exited 0 but wrote no last message (an output item it never got?)\n{done.report()}"
    _assert_recorded(attempt, done.last_message)


@pytest.mark.parametrize("bearer", [False, True], ids=["x-api-key", "bearer"])
def test_claude_print_gives_the_models_answer(bin_dir: Path, server: RillServer, tmp_path: Path,
                                              bearer: bool) -> None:
    attempt = _attempt(server, lambda: run_claude(
        bin_dir, tmp_path / "claude", base_url=server.url, model=MODEL, key=KEY, prompt=PROMPT, bearer=bearer,
        bare=True, max_context_tokens=CTX, max_output_tokens=256, auto_compact=False))
    done = attempt.done
    _assert_answered(attempt, MESSAGES)
    assert not done.timed_out and done.rc == 0, attempt.report()
    assert done.result is not None, f"no JSON result on stdout\n{done.report()}"
    assert done.result.get("is_error") is False, done.report()
    assert isinstance(done.result.get("result"), str) and done.result["result"].strip(), done.report()
    _assert_recorded(attempt, done.result["result"])


def test_codex_stock_prompt_ends_with_one_context_error(bin_dir: Path, server: RillServer, tmp_path: Path) -> None:
    """~9.6k tokens of stock prompt against 8,192: one 400 context_length_exceeded, then Codex's
    own message and rc 1 (with stream/request retries at 1 and no network retry loop)."""
    home = write_codex_home(tmp_path / "codex", base_url=server.url + "/v1", model=MODEL, lean=False)
    attempt = _attempt(server, lambda: run_codex(bin_dir, home, key=KEY, prompt=PROMPT))
    done, sent = attempt.done, attempt.sent
    assert sent == {(*RESPONSES, "400"): 1}, \
        f"expected exactly one 400 on POST /v1/responses; the server answered: {_describe(sent)}\n{done.report()}"
    assert not done.timed_out and done.rc == 1, done.report()
    assert CODEX_CONTEXT_FULL in done.stdout + done.stderr, done.report()
    assert not (done.last_message or "").strip(), done.report()


def test_claude_stock_prompt_ends_with_prompt_too_long(bin_dir: Path, server: RillServer, tmp_path: Path) -> None:
    """~13k tokens of stock prompt against 8,192, and no CLAUDE_CODE_MAX_CONTEXT_TOKENS (told the
    window and left its default 32,000-token max_tokens, Claude Code refuses by itself before
    sending): the server's 400 "prompt is too long: N tokens > 8192 maximum" must be what stops
    it. Claude Code shows that message rewritten, with the server's N and M in it. At most two
    requests: Claude Code sends the request once more without its role-"system" message if a
    server refuses that message with a 400 (AGENT-CLIENTS.md), never more."""
    attempt = _attempt(server, lambda: run_claude(
        bin_dir, tmp_path / "claude", base_url=server.url, model=MODEL, key=KEY, prompt=PROMPT,
        bare=False, max_context_tokens=None, max_output_tokens=256, auto_compact=True))
    done, sent = attempt.done, attempt.sent
    assert set(sent) == {(*MESSAGES, "400")} and sent[(*MESSAGES, "400")] <= 2, \
        f"expected one (at most two) 400 on POST /v1/messages; the server answered: {_describe(sent)}\n{done.report()}"
    assert not done.timed_out and done.rc == 1, done.report()
    assert done.result is not None, f"no JSON result on stdout\n{done.report()}"
    assert done.result.get("is_error") is True, done.report()
    assert done.result.get("terminal_reason") == "prompt_too_long", done.report()
    assert done.result.get("api_error_status") == 400, done.report()
    found = CLAUDE_PROMPT_TOO_LONG.search(str(done.result.get("result")))
    assert found, f"the result does not carry the server's token counts\n{done.report()}"
    assert int(found[1]) > CTX and int(found[2]) == CTX, done.report()
