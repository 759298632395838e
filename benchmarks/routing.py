"""Routing policies side by side, in front of the same simulated replicas: Rill's `prefix`,
`round_robin` and `least_busy` against LiteLLM's proxy (`least-busy`, `simple-shuffle`), over
three workloads and a ladder of arrival rates from light load to past saturation.

    .venv/bin/python benchmarks/routing.py --json /tmp/routing.json   # everything, ~20 min on 2 cores
    .venv/bin/python benchmarks/routing.py --quick                    # a smoke run, ~3 min
    .venv/bin/python benchmarks/routing.py --workload agent --policies prefix,round_robin \\
        --rates 0.5,1.0 --replicas 16 --json /tmp/routing.json

What runs. For each workload, for each policy, one after another (never two at once): a fresh
`benchmarks/replica_sim.py` process (N replicas on consecutive ports: empty prefix caches, zero
counters), a fresh gateway in front of it, three tiny requests to wake it (not measured), then the
rate ladder, low to high, through that one gateway. The gateways:

- `prefix`, `round_robin`, `least_busy`: `.venv/bin/rill serve --config FILE` with one upstream
  model `sim` whose `base_urls` are the replicas, `routing = "<policy>"`, `max_concurrency = 4096`
  (per replica), `timeout = 600`, the other keys at their defaults (health checks every 10 s).
- `litellm-least-busy`, `litellm-simple-shuffle`: LiteLLM's proxy from `--litellm-venv`
  (`pip install 'litellm[proxy]'` there; skipped with a message when it is missing), one worker,
  the replicas as N deployments of one `model_name`, `router_settings.routing_strategy`, started
  offline without a master key as docs/benchmarks.md describes.

Workloads (deterministic: every text comes from seeded generators, so every policy gets the same
conversations at the same arrival times; answers are whatever the simulator streams back):

- `multi-turn`: chat users. A short shared system prompt; each user's conversation has 4 to 10
  turns, each user turn 60 to 120 words; the answer is appended as returned and the next
  question sent as soon as the answer has finished (closed loop per user). New users arrive
  open-loop (Poisson), so they start at staggered times.
- `shared-prefix`: 4 long system prompts (`--prefixes`; ~6,000 characters, ~1,500 tokens each),
  each request one of them plus a distinct short question (one request per arrival).
- `agent`: agent loops of 4 to 10 requests. Each re-sends the whole history: the agent kind's
  system prompt and tools JSON (2 kinds, ~1,550 tokens shared by every loop of a kind), the
  loop's task with a repository overview (~600 tokens of its own), then per step the assistant's
  answer with a tool call and the tool's result (~150 to 450 tokens), so the prompt starts near
  2,100 tokens and grows to ~4,500. New loops arrive open-loop (Poisson).

The ladder. `--rates` are fractions of the replicas' uncached prefill capacity for the workload:
the simulator prefills one request at a time per replica, taking `base_ttft_ms` + prompt tokens x
`prefill_ms_per_token` when nothing is cached, so capacity = replicas / mean uncached prefill time
per request, computed here from a sample of the workload rendered exactly as the simulator
counts it (and printed). 1.0 is what the replicas can take with no cache hits at all; a policy
whose hits save half the prefill work holds about twice that, so the default ladder, 0.25, 0.5,
1, 2 and 3, goes past the saturation of the cache-blind policies (`--rps` gives absolute
requests/s instead). New conversations arrive open-loop, Poisson (seeded by workload and level),
at the level's request rate / requests per conversation, so that in the steady state requests
go out at the level's rate; each conversation is closed-loop inside. The levels run back to
back as one load that steps up, after `--warmup` seconds at the first level's rate (not
measured): conversations started in one level go on into the next (no ramp down and up
between levels), and a request counts in the level it was sent in. After the last level no new
turn is sent; what is in flight has `--drain-timeout` seconds, then it is cut. Caches stay warm
from level to level (each level's conversations are new; the shared-prefix system prompts and the
agent kinds are the same throughout). A policy whose level ends with a median wait for the first
token over `--saturated-ttft` seconds (or over 20% failed) is past saturation: its ladder stops
there and its higher levels are marked skipped (`--no-skip` runs them anyway).

The numbers, per level and policy:
- `sent req/s`: requests sent during the level over its length (in a closed loop it falls below
  `offered` when answers come slowly, and early in the ladder while conversations build up).
- `hit rate`: the replicas' own count, sum of cached_tokens / sum of prompt_tokens of the
  prefills that started during the level (deltas of every replica's `/stats`); the heading's
  `ideal` is one infinite cache that sees every request (the best any routing could do).
- `TTFT p50/p90`: client side, streamed, from sending the request to the first chunk with
  content, over the level's successful requests. The simulator's prefill queues are what raise
  it. `↑` after p50: the p50 of the level's last third is over 1 s and over twice its first
  third's, i.e. the queues were still growing (past saturation).
- `out tok/s`: the usage chunk's completion_tokens (else the content chunks counted) of the
  answers that ended during the level, over its length.
- `failed`: non-200 answers and broken streams (no `[DONE]`, an error event, a dropped
  connection); `+N cut`: unfinished at the drain timeout.
- `spread`: the replicas' request counts during the level, max / min (inf when one got none).
- `CPU gw/sim/lg`: percent of one core used by the gateway's processes, the simulator, and this
  script (the load generator); the JSON adds the load generator's event-loop lag.
- `routed` (Rill prefix only): why Rill sent each request where it did, from `/v1/upstreams`:
  `prefix` (the replica that served the conversation and holds the longest prefix of it),
  `home` (rendezvous hash of the conversation's head, under a load bound), `load` (the load
  guard picked the least loaded replica).

Caveats. The simulator (one process), the gateway and this load generator share the same two
cores. The simulator's prefill and decode costs are sleeps, not CPU, so the replicas' "capacity"
is simulated, but every byte still goes through real HTTP on this machine: at high rates a
gateway's own CPU can become the bottleneck (the CPU column shows it: near 100% is one core
saturated), which is not a routing effect. LiteLLM's proxy is CPU-bound at far lower rates than
Rill on this machine (docs/benchmarks.md: ~550 chunks/s), so its rows past light load mostly
measure its CPU, not its router; answers are kept short (`--max-tokens 32`) to delay that. The
load generator is asyncio + httpx in this process (uvloop when installed); its CPU share and
loop lag are recorded so that a run where it was the bottleneck can be seen. The simulator's
costs are its defaults (calibrated from Rill's own SmolLM2 measurements) unless the cost flags
below override them. Levels are short (seconds) and the light ones carry few conversations (an
agent level at 0.25x sees a handful of loops), so figures move from run to run by several
percent; compare policies within one run, and read one level of one run as an anecdote.

Everything the script starts (simulator, gateways) runs in its own process group and is stopped
on exit, errors and Ctrl-C included. Logs go to a temporary folder (`--log-dir` to keep them).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import httpx
import orjson

from rill.bench.sse import SSEParser
from rill.bench.stats import percentile

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))

import replica_sim  # noqa: E402  (beside this file)

RILL = Path(sys.executable).parent / "rill"
SIM = HERE / "replica_sim.py"
MODEL = "sim"
WORKLOADS = ("multi-turn", "shared-prefix", "agent")
POLICIES = ("prefix", "round_robin", "least_busy", "litellm-least-busy", "litellm-simple-shuffle")
DEFAULT_RATES = (0.25, 0.5, 1.0, 2.0, 3.0)
QUICK_RATES = (0.5, 2.0)
DURATIONS = {"multi-turn": 12.0, "shared-prefix": 8.0, "agent": 20.0}  # seconds of arrivals per level
QUICK_DURATIONS = {"multi-turn": 3.0, "shared-prefix": 2.0, "agent": 4.0}
WARMUP_REQUESTS = 3


# ---- child processes ---------------------------------------------------------------------------

_CHILDREN: list[Child] = []


class Child:
    """A process of ours in its own session (so its whole tree can be stopped and its CPU summed)."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.name, self.log_path = name, log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True, cwd=ROOT)
        _CHILDREN.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU of every live process in the child's session."""
        return session_cpu(self.proc.pid)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text("utf-8", errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)  # the group is the child's own (start_new_session)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            try:  # the leader is gone; anything it left in its group goes too
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._log.close()
        if self in _CHILDREN:
            _CHILDREN.remove(self)


def stop_children() -> None:
    for child in list(reversed(_CHILDREN)):
        try:
            child.stop()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others
            print(f"routing: could not stop {child.name} ({child.pid}): {exc}", file=sys.stderr)


_TICK = os.sysconf("SC_CLK_TCK")


def session_cpu(session: int) -> float:
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        if int(rest[3]) == session:
            total += int(rest[11]) + int(rest[12])
    return total / _TICK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_range(n: int) -> int:
    """A first port whose n consecutive ports are all free now."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - n)
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit(f"routing: no {n} consecutive free ports found")


# ---- text ----------------------------------------------------------------------------------------

VOCAB = """
about above account across action active actual address adjust advance after again agent agree
ahead allow almost alone along already also always amount answer apply approach area argue around
article aside assume attach attempt audit author avoid balance band base basic batch before begin
behind below benefit better beyond block board border bottom branch brief bring broad budget build
buffer cache call capture careful carry case catalog cause center certain change channel check
choose claim class clean clear client close cluster code collect column commit common compare
complete compute config connect consider contain context control convert copy correct cost count
cover create current custom cycle daily data debug decide default define delay deliver depend
deploy design detail detect device direct disk display domain double draft drive during early
edge effect either enable encode engine enough ensure entry error estimate event every exact
example expect export extend factor failure feature field figure filter final first fixed follow
format forward frame function gather general given global graph group guard handle header health
hidden history host however image impact import include index inline input inside install
instead issue itself journal keep kernel label large latency layer leader least level library
limit linear listen local logic lookup machine manage manual margin master match measure memory
merge method metric middle minute model module monitor mostly native nearly network never normal
notice number object offset often online option order origin output owner packet page parse part
partial patch path pattern pause peak pending period permit phase place plain planned policy pool
port position power prefix prepare present primary print process profile prompt proper protect
proxy public query queue quick quota random range rather reach read ready reason record reduce
region regular release remote remove render replace replica report request reserve reset resolve
result retain retry return review route rule runtime safe sample scale schema scope search
second secure segment select send serve server session setting shard share short signal simple
single size slice slow small socket source split stable stage start state status steady step
storage stream strict string strong subject submit suggest summary support switch system table
target task tenant test thread throttle ticket timer token topic total trace track traffic
transfer trigger tune update upper usage user valid value vendor version view volume wait
warning weight while window worker write yield zone
""".split()


def sentence(rng: random.Random, lo: int = 8, hi: int = 16) -> str:
    words = [rng.choice(VOCAB) for _ in range(rng.randint(lo, hi))]
    return " ".join(words).capitalize() + "."


def words_text(rng: random.Random, n: int) -> str:
    """About n words, in sentences."""
    out: list[str] = []
    count = 0
    while count < n:
        s = sentence(rng, 6, min(16, max(6, n - count)))
        out.append(s)
        count += s.count(" ") + 1
    return " ".join(out)


def chars_text(rng: random.Random, chars: int) -> str:
    """Paragraphs of sentences, at least `chars` characters."""
    paragraphs: list[str] = []
    size = 0
    while size < chars:
        p = " ".join(sentence(rng) for _ in range(rng.randint(3, 6)))
        paragraphs.append(p)
        size += len(p) + 2
    return "\n\n".join(paragraphs)


# ---- workloads -----------------------------------------------------------------------------------

class Conversation:
    """One user's (or agent's) requests: next_body() until None, answered() after each answer."""

    def next_body(self) -> dict[str, Any] | None:
        raise NotImplementedError

    def answered(self, text: str) -> None:
        raise NotImplementedError

    def body(self, messages: list[dict[str, Any]], max_tokens: int, **extra: Any) -> dict[str, Any]:
        return {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "stream": True,
                "stream_options": {"include_usage": True}, **extra}


class Chat(Conversation):
    def __init__(self, system: str, turns: list[str], max_tokens: int):
        self.turns, self.max_tokens = turns, max_tokens
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": system},
                                               {"role": "user", "content": turns[0]}]
        self.k = 0

    def next_body(self) -> dict[str, Any] | None:
        return self.body(self.messages, self.max_tokens) if self.k < len(self.turns) else None

    def answered(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})
        self.k += 1
        if self.k < len(self.turns):
            self.messages.append({"role": "user", "content": self.turns[self.k]})


class Single(Conversation):
    def __init__(self, system: str, question: str, max_tokens: int):
        self.messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        self.max_tokens, self.done = max_tokens, False

    def next_body(self) -> dict[str, Any] | None:
        return None if self.done else self.body(self.messages, self.max_tokens)

    def answered(self, text: str) -> None:
        self.done = True


class Agent(Conversation):
    def __init__(self, kind: dict[str, Any], task: str, steps: list[tuple[dict[str, Any], str]], max_tokens: int):
        self.tools, self.steps, self.max_tokens = kind["tools"], steps, max_tokens
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": kind["system"]},
                                               {"role": "user", "content": task}]
        self.k = 0  # requests answered

    def next_body(self) -> dict[str, Any] | None:
        if self.k > len(self.steps):
            return None
        return self.body(self.messages, self.max_tokens, tools=self.tools)

    def answered(self, text: str) -> None:
        if self.k < len(self.steps):
            call, result = self.steps[self.k]
            self.messages.append({"role": "assistant", "content": text, "tool_calls": [call]})
            self.messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        self.k += 1


class Workload:
    name = ""

    def __init__(self, seed: int, max_tokens: int):
        self.seed, self.max_tokens = seed, max_tokens

    def conversation(self, rng: random.Random, cid: str) -> Conversation:
        raise NotImplementedError


class MultiTurn(Workload):
    name = "multi-turn"
    SYSTEM = ("You are a helpful assistant for the users of a hosted data platform. Answer clearly and "
              "briefly, say when you are not sure, and ask for details when a question is ambiguous.")

    def conversation(self, rng: random.Random, cid: str) -> Conversation:
        turns = [f"({cid}) " + words_text(rng, rng.randint(60, 120)) for _ in range(rng.randint(4, 10))]
        return Chat(self.SYSTEM, turns, self.max_tokens)


class SharedPrefix(Workload):
    name = "shared-prefix"

    def __init__(self, seed: int, max_tokens: int, prefixes: int = 4):
        super().__init__(seed, max_tokens)
        rng = random.Random(f"{seed}:shared-prefix:systems")
        self.systems = [f"You are the assistant of product {i}. Follow these instructions.\n\n" + chars_text(rng, 6000)
                        for i in range(prefixes)]

    def conversation(self, rng: random.Random, cid: str) -> Conversation:
        system = rng.choice(self.systems)
        return Single(system, f"({cid}) " + words_text(rng, rng.randint(10, 25)).rstrip(".") + "?", self.max_tokens)


TOOL_NAMES = ("read_file", "write_file", "search_code", "run_tests", "list_directory", "run_shell", "git_diff",
              "open_url")


class AgentLoops(Workload):
    name = "agent"
    KINDS = 2

    def __init__(self, seed: int, max_tokens: int):
        super().__init__(seed, max_tokens)
        rng = random.Random(f"{seed}:agent:kinds")
        self.kinds = [self._kind(rng, i) for i in range(self.KINDS)]

    @staticmethod
    def _kind(rng: random.Random, i: int) -> dict[str, Any]:
        system = (f"You are coding agent {i}. You work in a repository through the tools you are given, one "
                  "call at a time, and you stop when the task is done.\n\n" + chars_text(rng, 1900))
        tools = []
        for name in TOOL_NAMES:
            props = {p: {"type": "string", "description": words_text(rng, rng.randint(5, 9))}
                     for p in rng.sample(["path", "query", "command", "pattern", "content", "ref", "url"], 2)}
            tools.append({"type": "function", "function": {
                "name": name, "description": words_text(rng, rng.randint(14, 22)),
                "parameters": {"type": "object", "properties": props, "required": list(props)[:1]}}})
        return {"system": system, "tools": tools}

    def conversation(self, rng: random.Random, cid: str) -> Conversation:
        kind = self.kinds[rng.randrange(len(self.kinds))]
        lines = []
        size = 0
        while size < 2000:
            line = f"src/{rng.choice(VOCAB)}/{rng.choice(VOCAB)}_{rng.choice(VOCAB)}.py: {sentence(rng, 5, 10)}"
            lines.append(line)
            size += len(line) + 1
        task = f"({cid}) Task: {words_text(rng, rng.randint(30, 50))}\n\nRepository overview:\n" + "\n".join(lines)
        steps = []
        for j in range(rng.randint(4, 10) - 1):  # tool steps between the loop's requests
            name = rng.choice(TOOL_NAMES)
            args = {"path": f"src/{rng.choice(VOCAB)}/{rng.choice(VOCAB)}.py", "query": sentence(rng, 3, 6)}
            call = {"id": f"call_{cid}_{j}", "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)}}
            result = "\n".join(f"{n + 1:4d}  {sentence(rng, 4, 12)}" for n in range(rng.randint(8, 24)))
            steps.append((call, result))
        return Agent(kind, task, steps, self.max_tokens)


WORKLOAD_CLASSES: dict[str, type[Workload]] = {"multi-turn": MultiTurn, "shared-prefix": SharedPrefix,
                                               "agent": AgentLoops}


def calibrate(workload: Workload, costs: replica_sim.Costs, max_tokens: int, sample: int = 200) -> dict[str, Any]:
    """The workload's requests as the simulator counts them: mean prompt, uncached prefill time,
    requests per conversation, and the hit rate of one infinite cache (the ideal)."""
    rng_root = f"{workload.seed}:{workload.name}:calibration"
    n_out = min(max_tokens, costs.output_tokens)
    answer = "".join(replica_sim.WORDS[i % len(replica_sim.WORDS)] for i in range(n_out))
    cache = replica_sim.PrefixCache(1 << 40)
    requests = prompt = cached = 0
    uncached_ms = 0.0
    for i in range(sample):
        conv = workload.conversation(random.Random(f"{rng_root}:{i}"), f"c{i}")
        while (body := conv.next_body()) is not None:
            text = replica_sim.render_prompt(body)
            tokens = replica_sim.count_tokens(text)
            hashes = replica_sim.block_hashes(text, costs.block_tokens)
            cached += cache.cached_blocks(hashes) * costs.block_tokens
            cache.insert(hashes)
            requests += 1
            prompt += tokens
            uncached_ms += costs.base_ttft_ms + tokens * costs.prefill_ms_per_token
            conv.answered(answer)
    mean_ms = uncached_ms / requests
    return {"sample_conversations": sample, "requests_per_conversation": requests / sample,
            "mean_prompt_tokens": prompt / requests, "mean_uncached_prefill_ms": mean_ms,
            "ideal_hit_rate": cached / prompt}


# ---- gateways ------------------------------------------------------------------------------------

@dataclass
class Gateway:
    child: Child
    url: str
    policy: str


def rill_config(urls: list[str], routing: str) -> str:
    return ("[[models]]\n"
            f'name = "{MODEL}"\n'
            f"base_urls = [{', '.join(json.dumps(u) for u in urls)}]\n"
            f'routing = "{routing}"\n'
            "max_concurrency = 4096\n"
            "timeout = 600\n")


def litellm_config(urls: list[str], strategy: str) -> str:
    config = {
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{MODEL}", "api_base": url, "api_key": "dummy", "timeout": 600, "stream_timeout": 600}}
            for url in urls],
        "router_settings": {"routing_strategy": strategy, "timeout": 600},
        "litellm_settings": {"drop_params": True, "telemetry": False, "set_verbose": False, "request_timeout": 600},
        "general_settings": {"disable_spend_logs": True, "disable_error_logs": True,
                             "dangerously_permit_weak_or_unset_master_key": True},
    }
    return json.dumps(config, indent=1)  # JSON is YAML


def start_gateway(policy: str, urls: list[str], folder: Path, litellm_venv: Path) -> tuple[Gateway, str]:
    """The gateway's process and the path that answers 200 once it is ready."""
    port = free_port()
    tag = f"{len(list(folder.glob('gw-*.log')))}-{policy}"
    if policy.startswith("litellm-"):
        config = folder / f"litellm-{tag}.yaml"
        config.write_text(litellm_config(urls, policy.removeprefix("litellm-")))
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
        argv = [str(litellm_venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                "--port", str(port), "--num_workers", "1"]
        ready = "/health/liveliness"
    else:
        config = folder / f"rill-{tag}.toml"
        config.write_text(rill_config(urls, policy))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RILL_")} | {"RILL_DATA_DIR": str(folder)}
        argv = [str(RILL), "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                "--database-url", f"sqlite:///{folder / f'rill-{tag}.db'}", "--log-level", "warning"]
        ready = "/health"
    child = Child(f"gateway {policy}", argv, folder / f"gw-{tag}.log", env)
    return Gateway(child, f"http://127.0.0.1:{port}", policy), ready


def start_sim(replicas: int, costs: replica_sim.Costs, folder: Path) -> tuple[Child, list[str]]:
    base = free_port_range(replicas)
    argv = [sys.executable, str(SIM), "--replicas", str(replicas), "--base-port", str(base), "--host", "127.0.0.1"]
    for f in fields(replica_sim.Costs):
        argv += ["--" + f.name.replace("_", "-"), str(getattr(costs, f.name))]
    child = Child("replica_sim", argv, folder / f"sim-{base}.log")
    return child, [f"http://127.0.0.1:{base + i}" for i in range(replicas)]


async def wait_ready(client: httpx.AsyncClient, child: Child, urls: list[str], timeout: float) -> float:
    began = time.monotonic()
    pending = list(urls)
    while pending:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"{child.name} not ready within {timeout:.0f} s:\n{child.log_tail()}")
        still = []
        for url in pending:
            try:
                if (await client.get(url, timeout=5)).status_code != 200:
                    still.append(url)
            except httpx.HTTPError:
                still.append(url)
        pending = still
        if pending:
            await asyncio.sleep(0.2)
    return time.monotonic() - began


# ---- one request ---------------------------------------------------------------------------------

@dataclass(slots=True)
class Record:
    sent: float  # seconds since the level began
    ttft: float | None = None
    e2e: float | None = None
    completion_tokens: int = 0
    ok: bool = False
    error: str | None = None  # None when ok; "cut" when cancelled at the drain timeout
    text: str = ""


async def send(client: httpx.AsyncClient, url: str, body: dict[str, Any], t0: float) -> Record:
    loop = asyncio.get_running_loop()
    began = loop.time()
    rec = Record(sent=began - t0)
    try:
        request = client.build_request("POST", url, content=orjson.dumps(body),
                                       headers={"content-type": "application/json"})
        response = await client.send(request, stream=True)
        try:
            if response.status_code != 200:
                detail = (await response.aread())[:200].decode("utf-8", "replace")
                rec.error = f"HTTP {response.status_code}: {detail}"
                return rec
            parser = SSEParser()
            parts: list[str] = []
            chunks = 0
            usage = None
            done = False
            async for raw in response.aiter_bytes():
                for data in parser.feed(raw):
                    if data == "[DONE]":
                        done = True
                        continue
                    try:
                        event = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        rec.error = f"unreadable event: {data[:100]}"
                        return rec
                    if event.get("error"):
                        rec.error = f"error event: {str(event['error'])[:200]}"
                        return rec
                    for choice in event.get("choices") or ():
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            if rec.ttft is None:
                                rec.ttft = loop.time() - began
                            parts.append(content)
                            chunks += 1
                    if event.get("usage"):
                        usage = event["usage"]
            if not done:
                rec.error = "stream ended without [DONE]"
                return rec
            rec.text = "".join(parts)
            completion = usage.get("completion_tokens") if isinstance(usage, dict) else None
            rec.completion_tokens = completion if isinstance(completion, int) else chunks
            rec.e2e = loop.time() - began
            rec.ok = True
        finally:
            await response.aclose()
    except asyncio.CancelledError:
        rec.error = "cut"
        raise
    except httpx.HTTPError as exc:
        rec.error = f"{type(exc).__name__}: {exc}"[:200]
    return rec


# ---- the ladder ----------------------------------------------------------------------------------

@dataclass
class Level:
    index: int  # -1: the warm-up
    load: float | None  # fraction of the uncached capacity (None with --rps)
    rps: float  # offered requests/s
    conv_rate: float  # conversations/s
    duration: float
    arrivals: list[float]  # seconds from the level's start
    make: Callable[[int], Conversation]


class LagMonitor:
    """The load generator's event-loop lag: how late a 10 ms sleep wakes, with when."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            now = loop.time()
            self.samples.append((now, now - t - 0.01))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def window(self, start: float, end: float) -> dict[str, float | None]:
        lags = [lag for t, lag in self.samples if start <= t < end]
        return {"p50": _ms(percentile(lags, 50)), "p99": _ms(percentile(lags, 99)),
                "max": _ms(max(lags) if lags else None)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


async def sim_stats(client: httpx.AsyncClient, sim_urls: list[str]) -> list[dict[str, Any]]:
    answers = await asyncio.gather(*(client.get(u + "/stats", timeout=10) for u in sim_urls))
    return [a.json() for a in answers]


async def rill_upstreams(client: httpx.AsyncClient, gateway: Gateway) -> dict[str, Any] | None:
    if gateway.policy.startswith("litellm-"):
        return None
    try:
        answer = await client.get(gateway.url + "/v1/upstreams", timeout=10)
        replicas = answer.json()["data"][0]["replicas"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError):
        return None
    routed: Counter[str] = Counter()
    for r in replicas:
        routed.update(r.get("routed") or {})
    return {"routed": routed, "errors": sum(r.get("errors", 0) for r in replicas),
            "ejections": sum(r.get("ejections", 0) for r in replicas),
            "states": Counter(r.get("state") for r in replicas)}


@dataclass
class Snapshot:
    at: float  # loop time
    sim: list[dict[str, Any]]
    rill: dict[str, Any] | None
    cpu: tuple[float, float, float]  # gateway, simulator, this process


async def snapshot(control: httpx.AsyncClient, gateway: Gateway, sim: Child, sim_urls: list[str]) -> Snapshot:
    at = asyncio.get_running_loop().time()
    cpu = (gateway.child.cpu_seconds(), sim.cpu_seconds(), time.process_time())
    stats, rill = await asyncio.gather(sim_stats(control, sim_urls), rill_upstreams(control, gateway))
    return Snapshot(at, stats, rill, cpu)


async def run_ladder(client: httpx.AsyncClient, control: httpx.AsyncClient, gateway: Gateway, sim: Child,
                     sim_urls: list[str], levels: list[Level], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The warm-up and the levels back to back, one load that steps up: conversations started in
    one level go on into the next, and a request counts in the level it was sent in. After the
    last level (or one past saturation) no new turn is sent; what is in flight has
    --drain-timeout to finish, then is cut."""
    loop = asyncio.get_running_loop()
    url = gateway.url + "/v1/chat/completions"
    records: list[Record] = []
    truncated = [0]
    stop_turns = [float("inf")]
    lag = LagMonitor()
    lag.start()
    t0 = loop.time()

    async def converse(conv: Conversation) -> None:
        while (body := conv.next_body()) is not None:
            if loop.time() >= stop_turns[0]:
                truncated[0] += 1
                return
            position = len(records)
            records.append(Record(sent=loop.time() - t0, error="cut"))  # stays if the request is cancelled
            result = await send(client, url, body, t0)
            records[position] = result
            if not result.ok:
                return
            conv.answered(result.text)
            result.text = ""

    tasks: list[asyncio.Task[None]] = []
    windows: list[tuple[Level, Snapshot, Snapshot, int]] = []  # level, start, end, conversations started
    saturated: str | None = None
    start = t0
    for level in levels:
        begin = await snapshot(control, gateway, sim, sim_urls) if level.index >= 0 else None
        started = len(tasks)
        for i, at in enumerate(level.arrivals):
            delay = start + at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(converse(level.make(i))))
        delay = start + level.duration - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        start += level.duration
        if begin is None:
            continue  # the warm-up: not measured
        end = await snapshot(control, gateway, sim, sim_urls)
        windows.append((level, begin, end, len(tasks) - started))
        # saturated: the level's median wait for a first token, counting those still waiting
        now = loop.time() - t0
        waits = [r.ttft if r.ttft is not None else (now - r.sent if not r.ok and r.error == "cut" else None)
                 for r in records if begin.at - t0 <= r.sent < end.at - t0]
        waits = [w for w in waits if w is not None]
        sent = len(waits)
        bad = sum(1 for r in records if begin.at - t0 <= r.sent < end.at - t0 and not r.ok and r.error != "cut")
        if waits and (percentile(waits, 50) or 0) > args.saturated_ttft:
            saturated = f"TTFT p50 over {args.saturated_ttft:g} s at {level.rps:.1f} req/s"
        elif sent and bad / sent > 0.2:
            saturated = f"{bad} of {sent} requests failed at {level.rps:.1f} req/s"
        if not gateway.child.alive():
            raise RuntimeError(f"{gateway.policy} exited:\n{gateway.child.log_tail()}")
        if saturated and not args.no_skip:
            break
    stop_turns[0] = loop.time()
    drained_at = loop.time()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=args.drain_timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        drained_at = loop.time()
    await lag.stop()

    rows = []
    for level, begin, end, conversations in windows:
        lo, hi = begin.at - t0, end.at - t0
        mine = [r for r in records if lo <= r.sent < hi]
        ok = [r for r in mine if r.ok]
        failed = [r for r in mine if not r.ok and r.error != "cut"]
        ttfts = [r.ttft for r in ok if r.ttft is not None]
        third = (hi - lo) / 3
        first = [r.ttft for r in ok if r.ttft is not None and r.sent < lo + third]
        last = [r.ttft for r in ok if r.ttft is not None and r.sent >= hi - third]
        e2es = [r.e2e for r in ok if r.e2e is not None]
        # output tokens/s: answers that ended within the level's window
        finished = sum(r.completion_tokens for r in records if r.ok and r.e2e is not None and lo <= r.sent + r.e2e < hi)
        span = end.at - begin.at
        per_replica = [a["requests"] - b["requests"] for a, b in zip(end.sim, begin.sim)]
        prompt_tokens = sum(a["prompt_tokens"] - b["prompt_tokens"] for a, b in zip(end.sim, begin.sim))
        cached_tokens = sum(a["cached_tokens"] - b["cached_tokens"] for a, b in zip(end.sim, begin.sim))
        spread = (max(per_replica) / min(per_replica)) if min(per_replica) > 0 else (None if max(per_replica) else 1.0)
        p50_first, p50_last = percentile(first, 50), percentile(last, 50)
        row: dict[str, Any] = {
            "level": level.index, "load": level.load, "offered_rps": round(level.rps, 3),
            "conversation_rate": round(level.conv_rate, 4), "duration_s": round(span, 2),
            "conversations_started": conversations,
            "requests": len(mine), "sent_rps": len(mine) / span, "ok": len(ok), "failed": len(failed),
            "cut": len(mine) - len(ok) - len(failed),
            "errors": dict(Counter(r.error.split(":")[0] for r in failed if r.error)),
            "error_examples": [r.error for r in failed[:3]],
            "hit_rate": cached_tokens / prompt_tokens if prompt_tokens else None,
            "prompt_tokens": prompt_tokens, "cached_tokens": cached_tokens,
            "ttft_ms": {"p50": _ms(percentile(ttfts, 50)), "p90": _ms(percentile(ttfts, 90)),
                        "p99": _ms(percentile(ttfts, 99)), "max": _ms(max(ttfts) if ttfts else None),
                        "p50_first_third": _ms(p50_first), "p50_last_third": _ms(p50_last)},
            "growing": bool(p50_first is not None and p50_last is not None and p50_last > 1.0
                            and p50_last > 2 * p50_first),
            "e2e_ms": {"p50": _ms(percentile(e2es, 50)), "p90": _ms(percentile(e2es, 90))},
            "out_tok_s": finished / span,
            "replica_requests": per_replica, "spread": spread,
            "cpu_pct": {"gateway": 100 * (end.cpu[0] - begin.cpu[0]) / span,
                        "sim": 100 * (end.cpu[1] - begin.cpu[1]) / span,
                        "loadgen": 100 * (end.cpu[2] - begin.cpu[2]) / span},
            "loop_lag_ms": lag.window(begin.at, end.at),
        }
        if begin.rill is not None and end.rill is not None:
            row["routed"] = dict(end.rill["routed"] - begin.rill["routed"])
            row["gateway_replica_errors"] = end.rill["errors"] - begin.rill["errors"]
            row["ejections"] = end.rill["ejections"] - begin.rill["ejections"]
            row["replica_states"] = dict(end.rill["states"])
        rows.append(row)
    if rows:
        rows[-1]["after_ladder"] = {"drain_s": round(drained_at - stop_turns[0], 2),
                                    "conversations_truncated": truncated[0],
                                    "saturated": saturated}
    measured = {level.index for level, *_ in windows}
    for level in levels:
        if level.index >= 0 and level.index not in measured:
            rows.append({"level": level.index, "load": level.load, "offered_rps": round(level.rps, 3),
                         "skipped": saturated or "not run"})
    return rows


def make_levels(workload: Workload, calibration: dict[str, Any], args: argparse.Namespace) -> list[Level]:
    """The warm-up (index -1, at the first level's rate) and the levels, each with its Poisson
    arrivals of new conversations (seeded by workload and level: the same for every policy)."""
    duration = args.duration or (QUICK_DURATIONS if args.quick else DURATIONS)[workload.name]
    per_conv = calibration["requests_per_conversation"]
    capacity = calibration["capacity_rps"]
    specs = [(None, r) for r in args.rps] if args.rps else [(f, f * capacity) for f in args.rates]
    if args.warmup > 0:
        specs = [(specs[0][0], specs[0][1], -1, args.warmup)] + [(f, r, i, duration) for i, (f, r) in enumerate(specs)]
    else:
        specs = [(f, r, i, duration) for i, (f, r) in enumerate(specs)]
    levels = []
    for load, rps, index, length in specs:
        conv_rate = rps / per_conv
        rng = random.Random(f"{args.seed}:{workload.name}:{index}:arrivals")
        arrivals: list[float] = []
        t = rng.expovariate(conv_rate)
        while t < length:
            arrivals.append(t)
            t += rng.expovariate(conv_rate)

        def make(i: int, index: int = index) -> Conversation:
            return workload.conversation(random.Random(f"{args.seed}:{workload.name}:{index}:{i}"), f"L{index}u{i}")
        levels.append(Level(index, load, rps, conv_rate, length, arrivals, make))
    return levels


# ---- report ----------------------------------------------------------------------------------------

def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _routed(row: dict[str, Any]) -> str:
    routed = row.get("routed")
    if not routed or row["policy"] != "prefix":
        return ""
    total = sum(routed.values()) or 1
    return " / ".join(f"{k} {100 * v / total:.0f}%" for k, v in sorted(routed.items(), key=lambda kv: -kv[1]))


def table(rows: list[dict[str, Any]], policies: list[str]) -> str:
    head = ("| load | offered req/s | policy | sent req/s | hit rate | TTFT p50 ms | TTFT p90 ms | out tok/s | failed "
            "| spread max/min | CPU % gw / sim / lg | routed (Rill prefix) |")
    lines = [head, "| " + " | ".join(["---"] * 12) + " |"]
    order = {p: i for i, p in enumerate(policies)}
    for row in sorted(rows, key=lambda r: (r["level"], order.get(r["policy"], 99))):
        load = "-" if row["load"] is None else f"{row['load']:g}x"
        if row.get("skipped"):
            lines.append(f"| {load} | {row['offered_rps']:.1f} | {row['policy']} | skipped: {row['skipped']} "
                         "| | | | | | | | |")
            continue
        failed = str(row["failed"]) + (f" +{row['cut']} cut" if row["cut"] else "")
        spread = "inf" if row["spread"] is None else f"{row['spread']:.2f}"
        cpu = row["cpu_pct"]
        hit = "-" if row["hit_rate"] is None else f"{100 * row['hit_rate']:.1f}%"
        growing = " ↑" if row["growing"] else ""
        lines.append(f"| {load} | {row['offered_rps']:.1f} | {row['policy']} | {row['sent_rps']:.1f} | {hit} "
                     f"| {_fmt_ms(row['ttft_ms']['p50'])}{growing} | {_fmt_ms(row['ttft_ms']['p90'])} "
                     f"| {row['out_tok_s']:,.0f} | {failed} | {spread} "
                     f"| {cpu['gateway']:.0f} / {cpu['sim']:.0f} / {cpu['loadgen']:.0f} | {_routed(row)} |")
    return "\n".join(lines)


def progress(workload: str, row: dict[str, Any]) -> str:
    if row.get("skipped"):
        return f"[{workload}] level {row['level']} {row['policy']}: skipped ({row['skipped']})"
    hit = "-" if row["hit_rate"] is None else f"{100 * row['hit_rate']:.1f}%"
    return (f"[{workload}] level {row['level']} ({row['offered_rps']:.1f} req/s) {row['policy']}: "
            f"{row['requests']} req ({row['sent_rps']:.1f}/s), hit {hit}, TTFT p50 {_fmt_ms(row['ttft_ms']['p50'])} "
            f"p90 {_fmt_ms(row['ttft_ms']['p90'])} ms (p50 first/last third {_fmt_ms(row['ttft_ms']['p50_first_third'])}"
            f"/{_fmt_ms(row['ttft_ms']['p50_last_third'])}), {row['out_tok_s']:.0f} tok/s, {row['failed']} failed "
            f"+{row['cut']} cut, spread {row['spread'] if row['spread'] is None else round(row['spread'], 2)}, "
            f"CPU gw {row['cpu_pct']['gateway']:.0f}% sim {row['cpu_pct']['sim']:.0f}% "
            f"lg {row['cpu_pct']['loadgen']:.0f}%, lag p99 {row['loop_lag_ms']['p99']} ms"
            + (f", routed {row['routed']}" if row.get("routed") else "")
            + (f", errors {row['error_examples']}" if row["failed"] else "")
            + (f"; after the ladder {row['after_ladder']}" if row.get("after_ladder") else ""))


# ---- the run -----------------------------------------------------------------------------------------

async def run(args: argparse.Namespace, costs: replica_sim.Costs, folder: Path) -> dict[str, Any]:
    started = time.monotonic()
    policies = list(args.policies)
    litellm_bin = args.litellm_venv / "bin" / "litellm"
    notes: list[str] = []
    if any(p.startswith("litellm-") for p in policies) and not litellm_bin.exists():
        note = (f"LiteLLM skipped: no {litellm_bin} (python3 -m venv {args.litellm_venv} && "
                f"{args.litellm_venv}/bin/pip install 'litellm[proxy]')")
        print(note, file=sys.stderr, flush=True)
        notes.append(note)
        policies = [p for p in policies if not p.startswith("litellm-")]
    if not RILL.exists():
        raise SystemExit(f"routing: no {RILL}; run this with the project's .venv/bin/python")
    result: dict[str, Any] = {
        "meta": {"replicas": args.replicas, "costs": {f.name: getattr(costs, f.name) for f in fields(costs)},
                 "max_tokens": args.max_tokens, "prefixes": args.prefixes, "seed": args.seed, "policies": policies,
                 "quick": args.quick,
                 "warmup_s": args.warmup, "drain_timeout_s": args.drain_timeout,
                 "saturated_ttft_s": args.saturated_ttft,
                 "started": time.strftime("%Y-%m-%d %H:%M:%S"), "python": sys.version.split()[0],
                 "cpus": os.cpu_count(), "rill": git_state(), "notes": notes},
        "workloads": {}, "results": []}

    def save() -> None:
        if args.json:
            result["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
            Path(args.json).write_text(json.dumps(result, indent=1, default=str))

    print(f"# Routing policies in front of {args.replicas} simulated replicas\n", flush=True)
    print(f"Simulator costs: {costs}; answers of {args.max_tokens} tokens; seed {args.seed}; "
          f"policies {', '.join(policies)}.\n", flush=True)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=2048)
    timeout = httpx.Timeout(600.0, connect=10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client, \
            httpx.AsyncClient(timeout=10.0, trust_env=False) as control:
        for name in args.workload:
            workload = (SharedPrefix(args.seed, args.max_tokens, args.prefixes) if name == "shared-prefix"
                        else WORKLOAD_CLASSES[name](args.seed, args.max_tokens))
            cal = calibrate(workload, costs, args.max_tokens)
            cal["capacity_rps"] = args.replicas * 1000 / cal["mean_uncached_prefill_ms"]
            levels = make_levels(workload, cal, args)
            result["workloads"][name] = {"calibration": cal,
                                         "levels": [{"level": lv.index, "load": lv.load, "offered_rps": lv.rps,
                                                     "duration_s": lv.duration, "conversations": len(lv.arrivals)}
                                                    for lv in levels]}
            print(f"[{name}] {cal['requests_per_conversation']:.2f} requests a conversation, mean prompt "
                  f"{cal['mean_prompt_tokens']:.0f} tokens, uncached prefill {cal['mean_uncached_prefill_ms']:.0f} ms: "
                  f"capacity {cal['capacity_rps']:.1f} req/s uncached; ideal hit rate "
                  f"{100 * cal['ideal_hit_rate']:.1f}%; levels "
                  + ", ".join(f"{lv.rps:.1f} req/s ({len(lv.arrivals)} conv.{', warm-up' if lv.index < 0 else ''})"
                              for lv in levels), file=sys.stderr,
                  flush=True)
            rows: list[dict[str, Any]] = []
            for policy in policies:
                sim, sim_urls = start_sim(args.replicas, costs, folder)
                gateway = None
                try:
                    await wait_ready(control, sim, [u + "/stats" for u in sim_urls], 30)
                    gateway, ready = start_gateway(policy, [u + "/v1" for u in sim_urls], folder, args.litellm_venv)
                    startup = await wait_ready(control, gateway.child, [gateway.url + ready], 180)
                    for i in range(WARMUP_REQUESTS):
                        warm = await send(client, gateway.url + "/v1/chat/completions",
                                          {"model": MODEL, "max_tokens": 4, "stream": True,
                                           "stream_options": {"include_usage": True},
                                           "messages": [{"role": "user", "content": f"warm-up {policy} {i}"}]}, 0.0)
                        if not warm.ok:
                            raise RuntimeError(f"warm-up through {policy} failed: {warm.error}\n"
                                               f"{gateway.child.log_tail()}")
                    print(f"[{name}] {policy}: gateway ready in {startup:.1f} s", file=sys.stderr, flush=True)
                    for row in await run_ladder(client, control, gateway, sim, sim_urls, levels, args):
                        row = {"workload": name, "policy": policy, **row}
                        rows.append(row)
                        result["results"].append(row)
                        print(progress(name, row), file=sys.stderr, flush=True)
                    save()
                finally:
                    if gateway is not None:
                        gateway.child.stop()
                    sim.stop()
            cal_line = (f"{cal['requests_per_conversation']:.1f} requests a conversation, mean prompt "
                        f"{cal['mean_prompt_tokens']:.0f} tokens, uncached capacity {cal['capacity_rps']:.1f} req/s, "
                        f"ideal hit rate {100 * cal['ideal_hit_rate']:.1f}%")
            print(f"## {name} ({args.replicas} replicas; {cal_line})\n", flush=True)
            print(table(rows, policies) + "\n", flush=True)
    elapsed = time.monotonic() - started
    measured = [r for r in result["results"] if not r.get("skipped")]
    if measured:
        lg = max(measured, key=lambda r: r["cpu_pct"]["loadgen"])
        lag = max(measured, key=lambda r: r["loop_lag_ms"]["p99"] or 0)
        print(f"Load generator: at most {lg['cpu_pct']['loadgen']:.0f}% of a core ({lg['workload']}, {lg['policy']}, "
              f"{lg['offered_rps']:.1f} req/s); event-loop lag p99 at most {lag['loop_lag_ms']['p99']} ms "
              f"({lag['workload']}, {lag['policy']}, {lag['offered_rps']:.1f} req/s).", flush=True)
    print(f"Total time {elapsed / 60:.1f} min.", flush=True)
    result["meta"]["elapsed_s"] = round(elapsed, 1)
    save()
    return result


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the gateway's routing code differed from it."""
    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_in_src": git("status", "--porcelain", "--", "src").splitlines()}


def _csv(kind: Callable[[str], Any], allowed: tuple[str, ...] | None = None) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [kind(part.strip()) for part in text.split(",") if part.strip()]
        if allowed is not None:
            if items == ["all"]:
                return list(allowed)
            bad = [i for i in items if i not in allowed]
            if bad:
                raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}: choose from {', '.join(allowed)}")
        return items
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", type=_csv(str, WORKLOADS), default=list(WORKLOADS),
                   help="multi-turn, shared-prefix, agent, comma-separated, or all [all]")
    p.add_argument("--policies", type=_csv(str, POLICIES), default=list(POLICIES),
                   help=f"comma-separated, of {', '.join(POLICIES)} [all]")
    p.add_argument("--replicas", type=int, default=8, help="simulated replicas, 4 to 32 [8]")
    p.add_argument("--rates", type=_csv(float), default=None,
                   help="levels as fractions of the uncached prefill capacity [0.25,0.5,1,2,3; --quick 0.5,2]")
    p.add_argument("--rps", type=_csv(float), default=None, help="levels as absolute requests/s instead of --rates")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds per level [multi-turn 12, shared-prefix 8, agent 20; --quick 3, 2, 4]")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds at the first level's rate before the first level, not measured [5; --quick 2]")
    p.add_argument("--drain-timeout", type=float, default=None,
                   help="seconds after the last level for what is in flight, then it is cut [20; --quick 10]")
    p.add_argument("--saturated-ttft", type=float, default=5.0,
                   help="a level whose TTFT p50 is over this many seconds ends the policy's ladder [5]")
    p.add_argument("--no-skip", action="store_true", help="run every level even past saturation")
    p.add_argument("--max-tokens", type=int, default=32, help="answer length (max_tokens) [32]")
    p.add_argument("--prefixes", type=int, default=4,
                   help="shared-prefix: how many long system prompts (~1,500 tokens each) [4]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 levels, short durations (~3 min)")
    p.add_argument("--json", help="write the results here as JSON (rewritten after each policy's ladder)")
    p.add_argument("--litellm-venv", type=Path, default=Path("/tmp/litellm-venv"),
                   help="a venv with `litellm[proxy]` [/tmp/litellm-venv]")
    p.add_argument("--log-dir", type=Path, help="keep the gateways' and simulator's logs and configs here")
    defaults = replica_sim.Costs()
    sim = p.add_argument_group("simulator costs (replica_sim.py's flags; its defaults)")
    for f in fields(replica_sim.Costs):
        default = getattr(defaults, f.name)
        sim.add_argument("--" + f.name.replace("_", "-"), type=type(default), default=default, help=f"[{default:g}]")
    return p


def main() -> None:
    p = parser()
    args = p.parse_args()
    if not 1 <= args.replicas <= 64:
        p.error("--replicas must be between 1 and 64")
    if args.rates is None:
        args.rates = list(QUICK_RATES if args.quick else DEFAULT_RATES)
    if args.drain_timeout is None:
        args.drain_timeout = 10.0 if args.quick else 20.0
    if args.warmup is None:
        args.warmup = 2.0 if args.quick else 5.0
    if any(r <= 0 for r in (args.rps or args.rates)):
        p.error("rates must be more than 0")
    if args.max_tokens < 1 or args.prefixes < 1:
        p.error("--max-tokens and --prefixes must be at least 1")
    try:
        costs = replica_sim.Costs(**{f.name: getattr(args, f.name) for f in fields(replica_sim.Costs)})
    except ValueError as exc:
        p.error(str(exc))
    atexit.register(stop_children)

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    if args.log_dir:
        args.log_dir.mkdir(parents=True, exist_ok=True)
        folder = args.log_dir
    else:
        folder = Path(tempfile.mkdtemp(prefix="rill-routing-"))
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(run(args, costs, folder))
    except KeyboardInterrupt:
        print("routing: interrupted; stopping what it started", file=sys.stderr, flush=True)
        sys.exit(130)
    finally:
        stop_children()
        if not args.log_dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
