"""The load: asyncio + httpx, streaming SSE from /v1/chat/completions. Every level is bounded in
requests and in time; every failure (connection, HTTP status, error event, bad stream, timeout)
is recorded on its request and counted, never raised."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import httpx

from rill.bench.prompts import Messages, make_prompts, predictions
from rill.bench.sse import SSEParser
from rill.bench.stats import LevelStats, RequestResult, summarize

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
DISCOVERY_TIMEOUT = 30.0
DETAIL_CHARS = 300


class BenchError(Exception):
    """The run cannot start (e.g. no model id could be found)."""


@dataclass(frozen=True)
class BenchOptions:
    url: str = "http://127.0.0.1:8000"
    model: str | None = None
    concurrency: tuple[int, ...] = (1, 4, 16)
    requests: int = 32
    prompts: str = "short"
    max_tokens: int = 128
    timeout: float = 300.0  # seconds per level (per server)
    compare_url: str | None = None
    compare_model: str | None = None
    seed: int = 0
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into every request body
    # `prediction` (edit prompts): "off"; "on": every request sends its prompt's; "compare": on
    # the one server, A without and B with it at each level, outputs compared request by request
    predict: str = "off"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["concurrency"] = list(self.concurrency)
        return d


@dataclass
class Target:
    label: str  # "A" or "B"
    url: str
    model: str
    predicts: bool = False  # its requests carry their prompt's prediction


@dataclass
class BenchResult:
    options: BenchOptions
    targets: list[Target]
    levels: list[LevelStats] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(lv.errors == 0 and lv.not_run == 0 for lv in self.levels)


def base_url(url: str) -> str:
    """`http://h:p`, `http://h:p/` and `http://h:p/v1` all mean the same server."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


# fields --extra-body may not set: the runner's measurements depend on them
RESERVED_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "max_tokens", "seed", "prediction"})


def request_body(model: str, messages: Messages, *, max_tokens: int, seed: int,
                 extra: dict[str, Any] | None = None, prediction: str | None = None) -> dict[str, Any]:
    body = {
        "model": model, "messages": messages, "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens, "temperature": 0, "seed": seed, **(extra or {}),
    }
    if prediction is not None:
        body["prediction"] = {"type": "content", "content": prediction}
    return body


class Progress:
    """One status line on `stream`: redrawn in place with \\r on a TTY; elsewhere only each
    level's final line is written, so logs stay short."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0
        self._last = 0.0

    def _line(self, label: str, concurrency: int, done: int, errors: int, total: int) -> str:
        return f"[{label}] concurrency {concurrency}: {done}/{total} done, {errors} errors"

    def update(self, label: str, concurrency: int, done: int, errors: int, total: int) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        line = self._line(label, concurrency, done, errors, total)
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self.stream.flush()

    def level_done(self, stats: LevelStats) -> None:
        line = self._line(stats.server, stats.concurrency, stats.completed + stats.errors,
                          stats.errors, stats.requests)
        line += f" in {stats.wall_s:.2f}s" + (" (timed out)" if stats.timed_out else "")
        self.stream.write(("\r" + line.ljust(self._width) if self.tty else line) + "\n")
        self._width = 0
        self.stream.flush()

    def message(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


async def stream_one(client: httpx.AsyncClient, body: dict[str, Any], result: RequestResult) -> None:
    """Run one streamed request into `result`; failures land in result.error, never raised
    (cancellation excepted)."""
    try:
        async with client.stream("POST", CHAT_PATH, json=body) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode("utf-8", errors="replace")
                result.error, result.detail = f"HTTP {r.status_code}", text[:DETAIL_CHARS]
                return
            parser = SSEParser()
            finished = done = False
            async for chunk in r.aiter_bytes():
                now = time.perf_counter()
                for data in parser.feed(chunk):
                    if data.strip() == "[DONE]":
                        done = True
                        continue
                    try:
                        obj = json.loads(data)
                    except ValueError:
                        result.error, result.detail = "bad event", data[:DETAIL_CHARS]
                        return
                    if not isinstance(obj, dict):
                        result.error, result.detail = "bad event", data[:DETAIL_CHARS]
                        return
                    if obj.get("error") is not None:
                        result.error, result.detail = "error event", data[:DETAIL_CHARS]
                        return
                    for choice in obj.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if any(delta.get(k) for k in ("content", "reasoning_content", "tool_calls", "function_call")):
                            result.token_times.append(now)
                        if isinstance(delta.get("content"), str):
                            result.text.append(delta["content"])
                        if choice.get("finish_reason"):
                            finished = True
                    usage = obj.get("usage")
                    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
                        result.completion_tokens = usage["completion_tokens"]
                        details = usage.get("completion_tokens_details") or {}
                        if isinstance(details, dict):
                            result.accepted_prediction_tokens = int(details.get("accepted_prediction_tokens") or 0)
                            result.rejected_prediction_tokens = int(details.get("rejected_prediction_tokens") or 0)
                if done:
                    break
            if not (done or finished):
                result.error = "incomplete stream"
                result.detail = "the stream ended without a finish_reason or [DONE]"
    except httpx.TimeoutException as exc:
        result.error, result.detail = "timeout", f"{type(exc).__name__}: {exc}"
    except httpx.ConnectError as exc:
        result.error, result.detail = "connect error", str(exc) or type(exc).__name__
    except httpx.HTTPError as exc:
        result.error, result.detail = type(exc).__name__, str(exc)[:DETAIL_CHARS]
    except Exception as exc:  # a bench run reports, it does not crash
        result.error, result.detail = type(exc).__name__, repr(exc)[:DETAIL_CHARS]
    finally:
        result.end = time.perf_counter()


async def run_level(client: httpx.AsyncClient, target: Target, prompts: list[Messages], *,
                    concurrency: int, requests: int, max_tokens: int, timeout: float,
                    seed: int = 0, extra_body: dict[str, Any] | None = None,
                    predicted: list[str | None] | None = None, progress: Progress | None = None) -> LevelStats:
    """`requests` requests, `concurrency` at a time (a closed loop), stopped after `timeout`
    seconds: requests still streaming then count as errors ("level timeout"), those never
    started as not run."""
    results: list[RequestResult] = []
    next_index = 0
    finished = errors = 0

    async def worker() -> None:
        nonlocal next_index, finished, errors
        while next_index < requests:
            i = next_index
            next_index += 1
            prediction = predicted[i % len(predicted)] if predicted and target.predicts else None
            body = request_body(target.model, prompts[i % len(prompts)], max_tokens=max_tokens, seed=seed + i,
                                extra=extra_body, prediction=prediction)
            result = RequestResult(start=time.perf_counter(), index=i)
            results.append(result)
            try:
                await stream_one(client, body, result)
            except asyncio.CancelledError:
                result.error, result.detail = "level timeout", f"still running after {timeout:g}s"
                raise
            finished += 1
            errors += not result.ok
            if progress:
                progress.update(target.label, concurrency, finished, errors, requests)

    start = time.perf_counter()
    tasks = [asyncio.create_task(worker()) for _ in range(max(0, min(concurrency, requests)))]
    timed_out = False
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            timed_out = True
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - start
    stats = summarize(target.label, concurrency, requests, results, wall, timed_out=timed_out)
    if progress:
        progress.level_done(stats)
    return stats


async def first_model(client: httpx.AsyncClient, timeout: float = DISCOVERY_TIMEOUT) -> str:
    """The first id of GET /v1/models."""
    try:
        r = await client.get(MODELS_PATH, timeout=timeout)
    except httpx.HTTPError as exc:
        raise BenchError(f"cannot list models at {client.base_url}{MODELS_PATH}: "
                         f"{type(exc).__name__}: {exc}") from exc
    if r.status_code != 200:
        raise BenchError(f"{client.base_url}{MODELS_PATH} answered HTTP {r.status_code}: {r.text[:DETAIL_CHARS]}")
    try:
        return str(r.json()["data"][0]["id"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BenchError(f"{client.base_url}{MODELS_PATH} lists no model id: {r.text[:DETAIL_CHARS]}") from exc


def _client(url: str, options: BenchOptions, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    n = max(options.concurrency, default=1)
    return httpx.AsyncClient(
        base_url=base_url(url), transport=transport,
        timeout=httpx.Timeout(options.timeout),
        limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
    )


async def run(options: BenchOptions, *, transport: httpx.AsyncBaseTransport | None = None,
              compare_transport: httpx.AsyncBaseTransport | None = None,
              progress: Progress | None = None) -> BenchResult:
    """The whole run: each concurrency level in turn; with a compare URL, server A then server B
    at each level with identical prompts, seeds and limits. `transport`s are for tests
    (e.g. httpx.ASGITransport over an app)."""
    prompts = make_prompts(options.prompts, max(1, options.requests))
    predicted = predictions(options.prompts, max(1, options.requests))
    if options.predict != "off" and not any(predicted):
        raise BenchError(f"the {options.prompts!r} prompt set has no predictions (use --prompts edit)")
    if options.predict == "compare" and options.compare_url:
        raise BenchError("--predict compare runs one server with and without predictions; drop --compare")
    clients = [_client(options.url, options, transport)]
    if options.compare_url:
        clients.append(_client(options.compare_url, options, compare_transport))
    elif options.predict == "compare":
        clients.append(clients[0])
    try:
        targets = []
        urls = (options.url, options.compare_url or options.url)
        models = (options.model, options.compare_model if options.compare_url else options.model)
        for label, client, url, model in zip("AB", clients, urls, models):
            model = model or await first_model(client, min(options.timeout, DISCOVERY_TIMEOUT))
            predicts = options.predict == "on" or (options.predict == "compare" and label == "B")
            targets.append(Target(label, base_url(url or ""), model, predicts))
            if progress:
                progress.message(f"[{label}] {base_url(url or '')} model {model}"
                                 + (" with predictions" if predicts else ""))
        result = BenchResult(options, targets)
        for concurrency in options.concurrency:
            for target, client in zip(targets, clients):
                result.levels.append(await run_level(
                    client, target, prompts, concurrency=concurrency, requests=options.requests,
                    max_tokens=options.max_tokens, timeout=options.timeout, seed=options.seed,
                    extra_body=options.extra_body, predicted=predicted, progress=progress))
        return result
    finally:
        for client in {id(c): c for c in clients}.values():
            await client.aclose()
