"""Soak: one `rill serve` under mixed traffic for --minutes; once a minute, the server's memory,
open file descriptors, threads, database size and the minute's latencies, so that a leak shows as
a slope rather than as a crash a week later.

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--workers 8] [--out soak.jsonl]
    .venv/bin/python benchmarks/soak.py --database-url postgresql://127.0.0.1:5432/test
    .venv/bin/python benchmarks/soak.py --url http://127.0.0.1:8000 --pid PID [--db PATH.db]

Without --url it starts `rill serve` (the embedded model) on a free port with a fresh SQLite
database in a temporary folder (or --database-url), and stops it at the end. The traffic (KINDS):
streams read to the end, streams the client drops mid-way (the connection closed), non-streamed
answers, forced tool calls, json_schema answers, `store: true` with metadata, spans opened with a
completion nested under them then patched or deleted and traces read, stored completions listed,
read, updated and deleted, n > 1, and bad requests that must be 4xx in OpenAI's error shape. Any
5xx, unexpected status, malformed answer or request past --request-timeout is an error, listed
in its minute's row. Rows go to stdout and, as JSON lines, to --out; the summary fits a line to
the anonymous RSS (the model's mapped file pages come and go with the machine's memory
pressure) and the descriptors over the last 20 minutes and says whether they are flat.

Not a CI test: it runs for half an hour and its figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx

from rill.bench.sse import SSEParser
from rill.bench.stats import percentile

CHAT = "/v1/chat/completions"
RILL = Path(sys.executable).parent / "rill"
QUESTIONS = ["Name three rivers in Europe.", "What is a prime number?", "Write a haiku about rain.",
             "Explain what a compiler does.", "Give me a short recipe for pancakes.",
             "Why is the sky blue?", "List four kinds of trees.", "What does HTTP stand for?"]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"], "properties": {
        "city": {"type": "string", "maxLength": 24}, "unit": {"type": "string", "enum": ["c", "f"]}}}}}
ANSWER_SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
    "type": "object", "additionalProperties": False, "required": ["answer", "confident"],
    "properties": {"answer": {"type": "string", "maxLength": 40}, "confident": {"type": "boolean"}}}}}


class Unexpected(Exception):
    """The server answered, but not as it should: an error of the minute it happened in."""


@dataclass
class Minute:
    """What finished during one minute of the run."""

    done: collections.Counter = field(default_factory=collections.Counter)  # kind -> requests finished
    errors: list[str] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)  # streams: seconds to the first content
    total: list[float] = field(default_factory=list)  # non-streamed generations: seconds to the answer
    admin: list[float] = field(default_factory=list)  # span/trace/stored-completion calls
    tokens: int = 0  # completion tokens reported by usage
    seconds: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))  # kind -> durations


@dataclass
class Soak:
    http: httpx.AsyncClient
    model: str
    run_id: str
    stored: collections.deque = field(default_factory=lambda: collections.deque(maxlen=500))
    minute: Minute = field(default_factory=Minute)

    def chat(self, rng: random.Random, max_tokens: int, **extra: Any) -> dict[str, Any]:
        question = f"{rng.choice(QUESTIONS)} (#{rng.randrange(10**6)})"  # varied prompts, shared prefixes
        return {"model": self.model, "messages": [{"role": "user", "content": question}],
                "max_tokens": max_tokens, "temperature": 0.7, "seed": rng.randrange(2**31), **extra}

    async def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> httpx.Response:
        started = time.perf_counter()
        response = await self.http.request(method, path, **kwargs)
        check_status(response, expect, f"{method} {path}")
        if not path.startswith(CHAT) or method != "POST":
            self.minute.admin.append(time.perf_counter() - started)
        return response

    async def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed completion, timed; its usage counted."""
        started = time.perf_counter()
        response = await self.http.post(CHAT, json=body)
        check_status(response, 200, "POST chat")
        self.minute.total.append(time.perf_counter() - started)
        data = response.json()
        self.minute.tokens += data["usage"]["completion_tokens"]
        if len(data["choices"]) != body.get("n", 1):
            raise Unexpected(f"{len(data['choices'])} choices for n={body.get('n', 1)}")
        return data

    async def stream(self, body: dict[str, Any], drop_after: int | None = None) -> list[dict[str, Any]]:
        """A streamed completion read to [DONE] (or, with drop_after, closed by the client after
        that many content chunks); its chunks, TTFT and usage recorded."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        started, chunks, contents, parser = time.perf_counter(), [], 0, SSEParser()
        async with self.http.stream("POST", CHAT, json=body) as response:
            if response.status_code != 200:
                await response.aread()
                check_status(response, 200, "POST chat stream")
            async for piece in response.aiter_bytes():
                for data in parser.feed(piece):
                    if data == "[DONE]":
                        return chunks
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise Unexpected(f"error event: {data[:300]}")
                    chunks.append(chunk)
                    if chunk.get("usage"):
                        self.minute.tokens += chunk["usage"]["completion_tokens"]
                    if any(c["delta"].get("content") or c["delta"].get("tool_calls") for c in chunk["choices"]):
                        contents += 1
                        if contents == 1:
                            self.minute.ttft.append(time.perf_counter() - started)
                        if drop_after is not None and contents >= drop_after:
                            return chunks  # leaving the block closes the connection mid-stream
        if drop_after is None:
            raise Unexpected("the stream ended without [DONE]")
        return chunks


def check_status(response: httpx.Response, expect: int, what: str) -> None:
    if response.status_code != expect:
        raise Unexpected(f"{what}: HTTP {response.status_code} (expected {expect}): {response.text[:300]}")
    if response.status_code >= 400:
        err = response.json().get("error")
        if not isinstance(err, dict) or set(err) != {"message", "type", "param", "code"}:
            raise Unexpected(f"{what}: {response.status_code} not in OpenAI's error shape: {response.text[:300]}")


# ---- the kinds of traffic ----

async def plain_stream(soak: Soak, rng: random.Random) -> None:
    chunks = await soak.stream(soak.chat(rng, rng.randint(32, 96)))
    if not any(c.get("usage") for c in chunks):
        raise Unexpected("a stream with include_usage sent no usage chunk")


async def dropped_stream(soak: Soak, rng: random.Random) -> None:
    await soak.stream(soak.chat(rng, 400), drop_after=rng.randint(1, 12))


async def non_streamed(soak: Soak, rng: random.Random) -> None:
    await soak.answer(soak.chat(rng, rng.randint(16, 64)))


async def forced_tool(soak: Soak, rng: random.Random) -> None:
    body = soak.chat(rng, 64, tools=[WEATHER_TOOL],
                     tool_choice={"type": "function", "function": {"name": "get_weather"}})
    if rng.random() < 0.5:
        await soak.stream(body)
        return
    choice = (await soak.answer(body))["choices"][0]
    if choice["finish_reason"] == "tool_calls":
        json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])
    elif choice["finish_reason"] != "length":
        raise Unexpected(f"forced tool call finished with {choice['finish_reason']!r}")


async def json_schema(soak: Soak, rng: random.Random) -> None:
    choice = (await soak.answer(soak.chat(rng, 64, response_format=ANSWER_SCHEMA)))["choices"][0]
    if choice["finish_reason"] == "stop":
        answer = json.loads(choice["message"]["content"])
        if set(answer) != {"answer", "confident"}:
            raise Unexpected(f"json_schema answer off the schema: {answer}")


async def stored(soak: Soak, rng: random.Random) -> None:
    metadata = {"soak": soak.run_id, "topic": rng.choice(["a", "b", "c"])}
    data = await soak.answer(soak.chat(rng, 24, store=True, metadata=metadata))
    soak.stored.append(data["id"])


async def spans(soak: Soak, rng: random.Random) -> None:
    """A workflow span, a completion under it, the span closed (or deleted), the trace read."""
    opened = (await soak.call("POST", "/v1/spans", json={
        "name": "soak-workflow", "type": "workflow", "input": {"step": rng.randrange(100)},
        "tags": {"soak": soak.run_id}})).json()
    await soak.answer(soak.chat(rng, 16, parent_span_id=opened["id"], tags={"soak": soak.run_id}))
    trace = (await soak.call("GET", f"/v1/traces/{opened['trace_id']}")).json()
    if len(trace["spans"]) != 2:
        raise Unexpected(f"trace {opened['trace_id']} has {len(trace['spans'])} spans, expected 2")
    if rng.random() < 0.3:
        await soak.call("DELETE", f"/v1/spans/{opened['id']}", expect=204)
        await soak.call("GET", f"/v1/traces/{opened['trace_id']}", expect=404)
    else:
        await soak.call("PATCH", f"/v1/spans/{opened['id']}", json={"end_time": time.time(), "output": "done"})
    await soak.call("GET", "/v1/traces", params={"limit": 20, "offset": rng.randrange(40)})
    await soak.call("GET", "/v1/traces", params={"tag": f"soak:{soak.run_id}", "status": "ok", "limit": 5})


async def stored_admin(soak: Soak, rng: random.Random) -> None:
    """Stored completions listed (by metadata), one read, updated and deleted."""
    await soak.call("GET", CHAT, params={"limit": 20, "order": rng.choice(["asc", "desc"]),
                                         "metadata[soak]": soak.run_id})
    if not soak.stored:
        return
    completion_id = soak.stored.popleft()  # the oldest: written long ago
    await soak.call("GET", f"{CHAT}/{completion_id}")
    await soak.call("GET", f"{CHAT}/{completion_id}/messages")
    await soak.call("POST", f"{CHAT}/{completion_id}", json={"metadata": {"soak": soak.run_id, "seen": "1"}})
    deleted = (await soak.call("DELETE", f"{CHAT}/{completion_id}")).json()
    if deleted.get("deleted") is not True:
        raise Unexpected(f"delete answered {deleted}")
    await soak.call("GET", f"{CHAT}/{completion_id}", expect=404)


async def several(soak: Soak, rng: random.Random) -> None:
    await soak.answer(soak.chat(rng, 24, n=rng.randint(2, 3)))


async def bad_request(soak: Soak, rng: random.Random) -> None:
    ok = soak.chat(rng, 8)
    cases: list[tuple[str, str, Any, int]] = [
        ("POST", CHAT, {**ok, "messages": []}, 400),
        ("POST", CHAT, {**ok, "temperature": 9}, 400),
        ("POST", CHAT, {**ok, "messages": [{"role": "wizard", "content": "hi"}]}, 400),
        ("POST", CHAT, {**ok, "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "nonsense"}}}}, 400),
        ("POST", CHAT, {**ok, "model": "no-such-model"}, 404),
        ("POST", CHAT, "{not json", 400),
        ("GET", f"{CHAT}/chatcmpl-{rng.randrange(10**9)}", None, 404),
        ("GET", f"/v1/spans/{rng.randrange(10**9):x}", None, 404),
        ("GET", "/v1/traces", {"limit": 1000}, 400),
    ]
    method, path, payload, expect = rng.choice(cases)
    if method == "GET":
        await soak.call(method, path, expect=expect, params=payload)
    elif isinstance(payload, str):
        await soak.call(method, path, expect=expect, content=payload, headers={"content-type": "application/json"})
    else:
        await soak.call(method, path, expect=expect, json=payload)


async def probes(soak: Soak, rng: random.Random) -> None:
    await soak.call("GET", "/v1/models")
    await soak.call("GET", "/health")
    await soak.call("GET", "/metrics")
    await soak.call("POST", "/tokenize", json={"model": soak.model, "content": rng.choice(QUESTIONS)})


Kind = Callable[[Soak, random.Random], Awaitable[None]]
KINDS: dict[str, tuple[Kind, int]] = {  # name -> (traffic, weight)
    "stream": (plain_stream, 6), "drop": (dropped_stream, 3), "plain": (non_streamed, 4),
    "tool": (forced_tool, 2), "schema": (json_schema, 2), "store": (stored, 2), "spans": (spans, 2),
    "stored_api": (stored_admin, 2), "n>1": (several, 1), "bad": (bad_request, 2), "probe": (probes, 1),
}


async def worker(soak: Soak, number: int, deadline: float, timeout: float, seed: int) -> None:
    rng = random.Random(seed * 1000 + number)
    names, weights = list(KINDS), [w for _, w in KINDS.values()]
    while time.monotonic() < deadline:
        kind = rng.choices(names, weights)[0]
        started = time.perf_counter()
        try:
            await asyncio.wait_for(KINDS[kind][0](soak, rng), timeout)
        except asyncio.TimeoutError:
            soak.minute.errors.append(f"{kind}: no answer within {timeout:.0f} s (hung)")
        except (Unexpected, httpx.HTTPError, json.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
            soak.minute.errors.append(f"{kind}: {type(exc).__name__}: {str(exc)[:300]}")
        soak.minute.done[kind] += 1
        soak.minute.seconds[kind].append(time.perf_counter() - started)


# ---- the server's resources ----

def proc_status(pid: int, field: str) -> int:
    """A number from /proc/PID/status (kB fields in bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            value = line.split()
            return int(value[1]) * (1024 if value[-1] == "kB" else 1)
    raise RuntimeError(f"no {field} for pid {pid}")


def rss_bytes(pid: int) -> int:
    return proc_status(pid, "VmRSS")


def threads(pid: int) -> int:
    return proc_status(pid, "Threads")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> dict[str, int]:
    """What the descriptors are (socket, pipe, anon_inode:[eventfd], files by name): for a leak's report."""
    kinds: collections.Counter = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kinds[target.split(":[")[0] + ":" if ":[" in target else target] += 1
    return dict(kinds.most_common(8))


async def database_bytes(db_path: Path | None, pg_url: str | None) -> int | None:
    if db_path is not None:
        return sum(p.stat().st_size for p in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")) if p.exists())
    if pg_url is not None:
        import asyncpg  # the server's own driver

        conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return await conn.fetchval("SELECT pg_database_size(current_database())")
        finally:
            await conn.close()
    return None


ENGINE_GAUGES = ("rill_engine_running_sequences", "rill_engine_waiting_requests", "rill_trace_queue_depth")


async def engine_gauges(http: httpx.AsyncClient) -> dict[str, float]:
    """The engine's running and waiting counts and the span writer's queue, from /metrics: a
    sequence a dropped stream left behind would show here once the traffic stops."""
    text = (await http.get("/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in ENGINE_GAUGES:
            out[name.removeprefix("rill_engine_").removeprefix("rill_")] = float(line.rsplit(" ", 1)[1])
    return out


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None for fewer than two points."""
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else None


def pct_ms(values: list[float], p: float) -> float | None:
    v = percentile(values, p)
    return None if v is None else round(v * 1000, 1)


async def row(soak: Soak, minute: Minute, elapsed: float, pid: int | None, args: argparse.Namespace,
              db_path: Path | None) -> dict[str, Any]:
    r: dict[str, Any] = {"minute": round(elapsed / 60, 2), "done": dict(minute.done),
                         "requests": sum(minute.done.values()), "errors": len(minute.errors),
                         "error_list": minute.errors[:20]}
    if pid is not None:
        # RSS = anonymous memory (the heaps, the KV cache) + file pages (the model's mapped GGUF,
        # which the kernel drops under memory pressure and reads back): a leak shows in the first
        r |= {"rss_mib": round(rss_bytes(pid) / 2**20, 1),
              "rss_anon_mib": round(proc_status(pid, "RssAnon") / 2**20, 1),
              "fds": open_fds(pid), "threads": threads(pid)}
    size = await database_bytes(db_path, args.database_url if db_path is None else None)
    r["db_mib"] = None if size is None else round(size / 2**20, 2)
    r |= await engine_gauges(soak.http)
    r |= {"ttft_p50_ms": pct_ms(minute.ttft, 50), "ttft_p99_ms": pct_ms(minute.ttft, 99),
          "total_p50_ms": pct_ms(minute.total, 50), "total_p99_ms": pct_ms(minute.total, 99),
          "admin_p99_ms": pct_ms(minute.admin, 99), "tokens_per_s": round(minute.tokens / 60, 1),
          "kind_p50_ms": {kind: pct_ms(values, 50) for kind, values in sorted(minute.seconds.items())}}
    return r


def print_row(r: dict[str, Any]) -> None:
    print(f"{r['minute']:6.1f} min  req {r['requests']:5d}  err {r['errors']:3d}  "
          f"rss {r.get('rss_mib', '-')} (anon {r.get('rss_anon_mib', '-')}) MiB  fds {r.get('fds', '-')}  "
          f"thr {r.get('threads', '-')}  "
          f"db {r['db_mib']} MiB  ttft p50/p99 {r['ttft_p50_ms']}/{r['ttft_p99_ms']} ms  "
          f"total p50/p99 {r['total_p50_ms']}/{r['total_p99_ms']} ms  admin p99 {r['admin_p99_ms']} ms  "
          f"{r['tokens_per_s']} tok/s  running {r.get('running_sequences')} waiting {r.get('waiting_requests')}",
          flush=True)
    for error in r["error_list"]:
        print(f"        ! {error}", flush=True)


def summary(rows: list[dict[str, Any]], args: argparse.Namespace, pid: int | None) -> dict[str, Any]:
    tail = [r for r in rows if r["minute"] > rows[-1]["minute"] - args.window] if rows else []
    out: dict[str, Any] = {"summary": True, "minutes": rows[-1]["minute"] if rows else 0,
                           "requests": sum(r["requests"] for r in rows), "errors": sum(r["errors"] for r in rows),
                           "window_minutes": args.window}
    for key in ("rss_mib", "rss_anon_mib", "fds", "threads", "db_mib"):
        s = slope([(r["minute"], r[key]) for r in tail if r.get(key) is not None])
        out[f"{key}_per_min"] = None if s is None else round(s, 3)
    if pid is not None and rows:
        out["fd_kinds_at_end"] = fd_kinds(pid)
    flat_rss = out["rss_anon_mib_per_min"] is not None and out["rss_anon_mib_per_min"] <= args.rss_slope
    flat_fds = out["fds_per_min"] is not None and out["fds_per_min"] <= args.fd_slope
    out["verdict"] = ("no server process to measure" if pid is None else
                      ("flat" if flat_rss and flat_fds else "GROWING") +
                      f": anonymous RSS {out['rss_anon_mib_per_min']} MiB/min (limit {args.rss_slope}; all of RSS "
                      f"{out['rss_mib_per_min']}), "
                      f"fds {out['fds_per_min']}/min (limit {args.fd_slope}) over the last {args.window} min; "
                      f"{out['errors']} errors in {out['requests']} requests")
    return out


# ---- the server ----

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, database_url: str, extra: list[str]) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log_path = folder / "rill.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RILL_")} | {"RILL_DATA_DIR": str(folder)}
    proc = subprocess.Popen([str(RILL), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--database-url", database_url, *extra],
                            stdin=subprocess.DEVNULL, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rill serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc, url, log_path
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"rill serve was not ready within 120 s:\n{log_path.read_text()[-3000:]}")


async def run_soak(args: argparse.Namespace, url: str, pid: int | None, db_path: Path | None) -> list[dict[str, Any]]:
    out = open(args.out, "w") if args.out else None
    rows: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=args.workers + 4, max_keepalive_connections=args.workers + 4)
    async with httpx.AsyncClient(base_url=url, timeout=args.request_timeout, limits=limits) as http:
        model = (await http.get("/v1/models")).json()["data"][0]["id"]
        state = Soak(http, model, run_id=f"soak-{int(time.time())}")
        started = time.monotonic()
        deadline = started + args.minutes * 60
        tasks = [asyncio.create_task(worker(state, i, deadline, args.request_timeout, args.seed))
                 for i in range(args.workers)]
        header = {"start": True, "url": url, "pid": pid, "db": str(db_path or args.database_url),
                  "workers": args.workers, "minutes": args.minutes, "kinds": {k: w for k, (_, w) in KINDS.items()}}
        print(json.dumps(header), flush=True)
        if out:
            out.write(json.dumps(header) + "\n")
        for n in itertools.count(1):
            await asyncio.sleep(max(0.0, started + n * 60 - time.monotonic()))
            minute, state.minute = state.minute, Minute()
            if pid is not None and not Path(f"/proc/{pid}").exists():
                raise SystemExit("the server process is gone")
            r = await row(state, minute, time.monotonic() - started, pid, args, db_path)
            rows.append(r)
            print_row(r)
            if out:
                out.write(json.dumps(r) + "\n")
                out.flush()
            if time.monotonic() >= deadline:
                break
        done, pending = await asyncio.wait(tasks, timeout=args.request_timeout + 10)
        for task in pending:
            task.cancel()
        if state.minute.errors:  # requests that ended after the last row
            rows[-1]["errors"] += len(state.minute.errors)
            rows[-1]["error_list"] += state.minute.errors[:20]
            print_row(rows[-1])
        result = summary(rows, args, pid)
        result["health_at_end"] = (await http.get("/health")).status_code
        await asyncio.sleep(5)  # aborted sequences leave at the engine's next step
        result["idle_after"] = await engine_gauges(http)
        if pid is not None:
            result["idle_after"] |= {"rss_mib": round(rss_bytes(pid) / 2**20, 1), "fds": open_fds(pid)}
    print(json.dumps(result, indent=1), flush=True)
    if out:
        out.write(json.dumps(result) + "\n")
        out.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--workers", type=int, default=8, help="requests in flight [8]")
    parser.add_argument("--url", help="attach to this server instead of starting one")
    parser.add_argument("--pid", type=int, help="with --url: the server's process, for RSS and descriptors")
    parser.add_argument("--db", type=Path, help="with --url: its SQLite file, for the database's size")
    parser.add_argument("--database-url", help="the started server's database (postgresql://..., one of its "
                                               "own: its size is measured); default: a fresh SQLite file in "
                                               "a temporary folder")
    parser.add_argument("--serve-arg", action="append", default=[], help="an extra `rill serve` argument")
    parser.add_argument("--request-timeout", type=float, default=120, help="seconds before a request counts as hung")
    parser.add_argument("--out", default="soak.jsonl", help="the rows as JSON lines [soak.jsonl]")
    parser.add_argument("--window", type=float, default=20, help="minutes at the end the slopes are fitted over")
    parser.add_argument("--rss-slope", type=float, default=0.25, help="MiB/min still called flat [0.25]")
    parser.add_argument("--fd-slope", type=float, default=0.05, help="descriptors/min still called flat [0.05]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.url:
        asyncio.run(run_soak(args, args.url.rstrip("/"), args.pid, args.db))
        return
    with tempfile.TemporaryDirectory(prefix="rill-soak-") as tmp:
        folder = Path(tmp)
        db_path = None if args.database_url else folder / "soak.db"
        proc, url, log_path = start_server(folder, args.database_url or f"sqlite:///{db_path}", args.serve_arg)
        try:
            asyncio.run(run_soak(args, url, proc.pid, db_path))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            log = log_path.read_text("utf-8", errors="replace")
            print(f"server exit code {rc}; its log has {log.count('Traceback')} tracebacks, "
                  f"{sum(' 500 ' in line for line in log.splitlines())} lines with ' 500 '", flush=True)
            if "Traceback" in log:
                print(log[log.index("Traceback"):][:4000])


if __name__ == "__main__":
    main()
