"""Running the real agent CLIs, Codex CLI (`codex exec`) and Claude Code (`claude -p`), against a
server on 127.0.0.1, the way shared/AGENT-CLIENTS.md describes them (what each sends and
needs; the lean configurations that fit an 8,192-token model come from there).

The CLIs are installed by scripts/install-agent-clis.sh (`make test` runs it; the pinned versions are
written down only there): `cli_bin()` asks it where they are and skips the calling test, with the
script's reason, when they are not there (no npm, an install that failed).

Every run gets a fresh HOME (and CODEX_HOME), an environment built from nothing but PATH (no
proxies, no OPENAI_/ANTHROPIC_ variables or XDG folders of the caller), stdin from /dev/null, its
own process group and a hard timeout: Codex retries an unreachable server forever, so a run that
passes its deadline is killed with its children and reported as timed out.

Also here: reading a Rill server's request counters from /metrics (how many requests reached a
route and with which status, so that a test can tell a retry loop from one refusal) and the text
of the spans it recorded. Standard library only.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install-agent-clis.sh"

# One CLI run, start to exit (a hang or a retry loop fails the test instead of blocking it).
RUN_TIMEOUT_S = 180.0

# What Codex prints when the server refuses the prompt as too long (400 context_length_exceeded).
CODEX_CONTEXT_FULL = "ran out of room in the model's context window"
# Claude Code's result when the server refuses with Anthropic's 400 "prompt is too long: N tokens
# > M maximum": it reads N and M from that message and rewrites it (2.1.328: "Prompt is too long ·
# the request is ~N tokens (limit M) but this conversation is only ..."), so M is the server's.
CLAUDE_PROMPT_TOO_LONG = re.compile(r"Prompt is too long\b.*?~?(\d+) tokens \(limit (\d+)\)", re.S)

CODEX_INSTRUCTIONS = ("You are a helpful assistant. Answer the user directly in one or two short sentences. "
                      "Do not run commands.\n")
CLAUDE_SYSTEM_PROMPT = "You are a helpful assistant. Answer in one or two short sentences."


@functools.cache
def _where() -> tuple[Path | None, str]:
    try:
        r = subprocess.run(["bash", str(INSTALL_SCRIPT), "--where"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{INSTALL_SCRIPT.name} --where failed: {exc}"
    if r.returncode == 0 and r.stdout.strip():
        return Path(r.stdout.strip()), ""
    return None, r.stderr.strip() or f"{INSTALL_SCRIPT.name} --where exited with {r.returncode}"


def cli_bin() -> Path:
    """The folder holding `codex` and `claude`; skips the test, saying why, when they are missing."""
    folder, why = _where()
    if folder is None:
        pytest.skip(why)
    return folder


def _clean_env(home: Path) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "TERM": "dumb", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    if os.environ.get("TMPDIR"):
        env["TMPDIR"] = os.environ["TMPDIR"]
    return env


@dataclass
class CliRun:
    """One finished (or killed) CLI run."""

    argv: list[str]
    env: dict[str, str]
    rc: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool
    last_message: str | None = None  # codex: the file -o wrote (None: it wrote none)
    result: dict[str, Any] | None = field(default=None)  # claude: the --output-format json object

    def report(self, limit: int = 4000) -> str:
        """Everything a failure message needs: the command, how it ended, and its output's tails."""
        shown_env = {k: v for k, v in self.env.items() if k not in ("PATH", "NO_PROXY", "no_proxy", "LANG", "TERM")}
        ended = f"killed after {self.seconds:.1f} s (timeout)" if self.timed_out else \
            f"rc {self.rc} after {self.seconds:.1f} s"
        return (f"$ {' '.join(self.argv)}\n  env: {shown_env}\n  {ended}\n"
                f"--- stdout (tail) ---\n{self.stdout[-limit:]}\n--- stderr (tail) ---\n{self.stderr[-limit:]}\n"
                f"--- last message ---\n{self.last_message!r}")


def run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = RUN_TIMEOUT_S) -> CliRun:
    """Run a CLI in its own process group with stdin from /dev/null; past `timeout` the whole group
    is killed (Codex's sandbox helpers included)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
    seconds = time.monotonic() - start
    return CliRun(argv, env, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                  seconds, timed_out)


# ------------------------------------------------------------------------------------------------
# Codex CLI

def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_codex_home(home: Path, *, base_url: str, model: str, lean: bool = True, context_window: int = 8192) -> Path:
    """CODEX_HOME's config.toml for a provider `rill` at `base_url` (".../v1"), key from the
    RILL_API_KEY variable, one retry at most. `lean` adds AGENT-CLIENTS.md's keys that shrink the
    prompt from ~9.6k to ~1.2k tokens (short instructions file, no environment context, skills,
    apps, goals, image or web tools, no multi-agent namespace); without them it is Codex's stock
    prompt. `--strict-config` rejects any key 0.169.0 does not know."""
    home.mkdir(parents=True, exist_ok=True)
    top = [f"model = {_toml(model)}", 'model_provider = "rill"', 'approval_policy = "never"',
           'sandbox_mode = "read-only"', "check_for_update_on_startup = false"]
    tables = ["[analytics]", "enabled = false",
              "[model_providers.rill]", 'name = "Rill"', f"base_url = {_toml(base_url)}",
              'wire_api = "responses"', 'env_key = "RILL_API_KEY"', "stream_max_retries = 1",
              "request_max_retries = 1"]
    if lean:
        instructions = home / "instructions.md"
        instructions.write_text(CODEX_INSTRUCTIONS)
        top += [f"model_context_window = {context_window}", f"model_instructions_file = {_toml(str(instructions))}",
                "include_permissions_instructions = false", "include_apps_instructions = false",
                "include_collaboration_mode_instructions = false", "include_environment_context = false",
                'web_search = "disabled"']
        tables += ["[features]", "goals = false", "view_image = false", "apps = false", "plugins = false",
                   "[agents]", "enabled = false",
                   "[skills]", "include_instructions = false"]
    (home / "config.toml").write_text("\n".join(top + tables) + "\n")
    return home


def run_codex(bin_dir: Path, home: Path, *, key: str, prompt: str, timeout: float = RUN_TIMEOUT_S) -> CliRun:
    """`codex exec` non-interactively in a fresh empty folder under `home` (written by
    write_codex_home); the last agent message is read from the file `-o` names."""
    work = home / "work"
    work.mkdir(exist_ok=True)
    last = home / "last.txt"
    last.unlink(missing_ok=True)
    env = {**_clean_env(home), "CODEX_HOME": str(home), "RILL_API_KEY": key}
    argv = [str(bin_dir / "codex"), "exec", "--strict-config", "--skip-git-repo-check", "--ephemeral",
            "-s", "read-only", "-o", str(last), prompt]
    done = run(argv, env, work, timeout)
    done.last_message = last.read_text("utf-8") if last.exists() else None
    return done


# ------------------------------------------------------------------------------------------------
# Claude Code

def run_claude(bin_dir: Path, home: Path, *, base_url: str, model: str, key: str, prompt: str,
               bearer: bool = False, bare: bool = True, max_context_tokens: int | None = 8192,
               max_output_tokens: int | None = 256, auto_compact: bool = True,
               timeout: float = RUN_TIMEOUT_S) -> CliRun:
    """`claude -p --output-format json` against `base_url` (the server's root: Claude Code adds
    /v1/messages). The key goes as x-api-key (ANTHROPIC_API_KEY) or, with `bearer`, as
    `Authorization: Bearer` (ANTHROPIC_AUTH_TOKEN). `bare` is the lean prompt (~0.6k tokens:
    `--bare`, a short system prompt, only the Bash tool); without it, Claude Code's stock prompt
    (~13k tokens). Without `auto_compact` (DISABLE_AUTO_COMPACT), an answer cut at max_tokens is
    followed by at most three "Output token limit hit. Resume directly" requests; with it, also by
    ~9 kB summarising requests in between, and a refused prompt's message names the server's token
    counts (without it, only "Prompt is too long"). The result object is parsed from stdout into
    `.result` (None if there is none)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {**_clean_env(home), "ANTHROPIC_BASE_URL": base_url,
           ("ANTHROPIC_AUTH_TOKEN" if bearer else "ANTHROPIC_API_KEY"): key,
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
           # one retry, as Codex is given: by default a 401 or 5xx is retried with back-off for ~3 minutes
           "CLAUDE_CODE_MAX_RETRIES": "1"}
    if not auto_compact:
        env["DISABLE_AUTO_COMPACT"] = "1"
    if max_context_tokens is not None:
        env["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] = str(max_context_tokens)
    if max_output_tokens is not None:
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(max_output_tokens)
    argv = [str(bin_dir / "claude"), "-p"]
    if bare:
        argv += ["--bare", "--system-prompt", CLAUDE_SYSTEM_PROMPT, "--tools", "Bash"]
    argv += ["--model", model, "--output-format", "json", "--", prompt]
    work = home / "work"
    work.mkdir(exist_ok=True)
    done = run(argv, env, work, timeout)
    done.result = _last_json_object(done.stdout)
    return done


def _last_json_object(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


# ------------------------------------------------------------------------------------------------
# What the Rill server saw

def _get(url: str, key: str, timeout: float = 30) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=timeout) as r:  # noqa: S310 (loopback only)
        return r.read()


_SAMPLE = re.compile(r'^rill_http_requests_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def request_counts(root: str, key: str) -> Counter[tuple[str, str, str]]:
    """rill_http_requests_total from /metrics: {(route, method, status): count}. The difference of
    two readings around a CLI run is what the run sent (the tests give each server to one run at
    a time)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in _get(root + "/metrics", key).decode().splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = dict(_LABEL.findall(m["labels"]))
            counts[(labels.get("route", ""), labels.get("method", ""), labels.get("status", ""))] += \
                int(float(m["value"]))
    return counts


def counts_since(before: Counter[tuple[str, str, str]], root: str, key: str) -> dict[tuple[str, str, str], int]:
    """What was answered since `before`, without the reading's own GET /metrics."""
    after = request_counts(root, key)
    return {k: after[k] - before[k] for k in after
            if after[k] != before[k] and k[0] != "/metrics"}


def _texts(value: Any) -> list[str]:
    """The text an output holds, in order, whatever its shape: a chat message's `content` string,
    content parts' or output items' `text` (Chat Completions, Responses and Messages shapes)."""
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    if isinstance(value, dict):
        found: list[str] = []
        for k, v in value.items():
            if k in ("content", "text") and isinstance(v, str):
                found.append(v)
            elif k in ("content", "output") and isinstance(v, (list, dict)):
                found += _texts(v)
        return found
    return []


def output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    return "".join(_texts(output))


def recorded_spans(root: str, key: str, *, model: str, since: float) -> list[dict[str, Any]]:
    """The spans of `model`'s requests that started at or after `since` (Unix seconds), oldest
    first, read through the trace API (which flushes the span writer before it reads)."""
    query = urllib.parse.urlencode({"model": model, "since": f"{since:.3f}", "limit": 100})
    traces = json.loads(_get(f"{root}/v1/traces?{query}", key))["data"]
    spans = []
    for trace in traces:
        tree = json.loads(_get(f"{root}/v1/traces/{trace['id']}", key))
        spans += [s for s in tree.get("spans", []) if s.get("model") == model]
    return sorted(spans, key=lambda s: s.get("start_time") or "")
