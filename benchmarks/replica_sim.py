"""Simulated inference replicas with prefix caches, for measuring a gateway's routing policies
(prefix-cache-aware routing against round robin, least busy, LiteLLM's router) over 4 to 32
replicas on one small machine.

    .venv/bin/python benchmarks/replica_sim.py --replicas 8 --base-port 9200 [options]

N replicas in one process (one asyncio loop, one listening server per port, consecutive ports),
each an OpenAI-compatible server built on benchmarks/fast_upstream.py's HTTP handling:
`POST /v1/chat/completions` (streamed or not, `stream_options.include_usage`, `max_tokens` /
`max_completion_tokens`), `GET /v1/models`, `GET /health` and `GET /stats` (JSON: requests,
in_flight, prompt_tokens, cached_tokens, hit_rate = cached / prompt tokens, cache_tokens held).
Chat answers carry `x-replica: <index>`, so a benchmark sees which replica served.

The model of a replica:
- Prompt: the request rendered as text (`tools` JSON first, as chat templates put it in the system
  turn, then each message's role, text content and `tool_calls`), ~4 characters a token
  (len // 4, at least 1). Content parts without `text` (images) count as nothing.
- Prefix cache: the text in blocks of `--block-tokens` tokens (4 characters each), hashed as a
  chain (a block's hash covers every block before it), so a request's cached prefix is its
  leading blocks found in the cache. An LRU over block hashes, at most `--cache-tokens` tokens.
  A finished prefill inserts the prompt's blocks (not the answer's: a follow-up turn re-sends the
  answer in its messages and pays for it once, a simplification). Blocks are touched last to
  first, so a chain's tail is older than its head and eviction trims prefixes from the end (as
  vLLM does) instead of orphaning blocks that can no longer match.
- One compute resource: prefills run one at a time, first come first served, each taking
  `--base-ttft-ms` + uncached tokens x `--prefill-ms-per-token`; simultaneous uncached requests
  queue behind each other, which is how load raises time to first token. The cache is looked up
  when a prefill starts, so a request queued behind one with the same prefix gets its blocks.
- Decode: the first token comes when the prefill ends, the next ones
  `--itl-ms` x (1 + others in flight / `--decode-parallelism`) apart (at one stream exactly
  `--itl-ms`). Tokens are paced against deadlines; when the loop wakes late the tokens due go out
  together, so a busy simulator loses no throughput and wakes less often.
- `--max-in-flight`: over it a request is answered 429 at once. `--fail-replicas 2,5`: those
  replicas answer 500 to chat and 503 to /health (for health checks and ejection).

The defaults are calibrated from Rill's own measurements of the embedded SmolLM2-135M on this
project's 2-core machine (docs/benchmarks.md, issue 22's table): a short prompt's TTFT ~22 ms at
one stream, a ~470-token uncached prompt ~252 ms (~0.5 ms per uncached token), the same prompts
cached ~110 ms at 16 streams, ~5.6 ms between tokens at one stream. What matters is the relative
cost of cached and uncached prefill under load, not absolute speed.

For scripts and tests: `cluster = await start(8, base_port=0, itl_ms=0)`, then `cluster.urls`,
`cluster.replicas[i].stats_dict()`, `await cluster.close()`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# fast_upstream.py sits beside this file: importable whether this runs as a script or is loaded
# from its path by a test (appended, so it shadows nothing else)
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)

from fast_upstream import (  # noqa: E402
    _DONE_FRAME, _LAST_FRAME, _REASONS, WORDS, FastUpstream, _dumps, _frame)

MODEL_ID = "sim"
CHARS_PER_TOKEN = 4
_STATUS_REASONS = {**_REASONS, 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Costs:
    """A replica's timing and cache model (the CLI's flags, same names)."""
    prefill_ms_per_token: float = 0.5
    base_ttft_ms: float = 20.0
    itl_ms: float = 6.0
    decode_parallelism: float = 8.0
    block_tokens: int = 16
    cache_tokens: int = 32768
    max_in_flight: int = 0  # 0: unlimited
    output_tokens: int = 128  # the answer's length when the request sets no max_tokens

    def __post_init__(self) -> None:
        if self.block_tokens < 1 or self.decode_parallelism <= 0:
            raise ValueError("block_tokens must be >= 1 and decode_parallelism > 0")
        if min(self.prefill_ms_per_token, self.base_ttft_ms, self.itl_ms, self.cache_tokens,
               self.max_in_flight, self.output_tokens) < 0:
            raise ValueError("costs, sizes and limits must be >= 0")


# ---- prompts and the prefix cache ------------------------------------------------------------

def render_prompt(request: dict[str, Any]) -> str:
    """The request as deterministic text; a conversation extended by a turn renders to an
    extension of the earlier text, which is what makes its prefix reusable."""
    parts = []
    tools = request.get("tools")
    if tools:
        parts.append("<|tools|>\n" + json.dumps(tools, separators=(",", ":")) + "\n")
    messages = request.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        parts.append(f"<|{message.get('role', '')}|>\n{_text(message.get('content'))}\n")
        if message.get("tool_calls"):
            parts.append(json.dumps(message["tool_calls"], separators=(",", ":")) + "\n")
    return "".join(parts)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def count_tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


def block_hashes(text: str, block_tokens: int) -> list[int]:
    """One hash per whole block, chained: equal hashes mean equal text up to that block's end."""
    size = block_tokens * CHARS_PER_TOKEN
    hashes = []
    chain = 0
    for start in range(0, len(text) - size + 1, size):
        chain = hash((chain, text[start:start + size]))
        hashes.append(chain)
    return hashes


class PrefixCache:
    """An LRU over chained block hashes, bounded in blocks."""

    def __init__(self, capacity_blocks: int):
        self.capacity_blocks = capacity_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def cached_blocks(self, hashes: list[int]) -> int:
        """How many of the leading blocks are held."""
        for i, h in enumerate(hashes):
            if h not in self._blocks:
                return i
        return len(hashes)

    def insert(self, hashes: list[int]) -> None:
        # last to first: the head ends up most recent, so eviction takes tails first
        blocks = self._blocks
        for h in reversed(hashes):
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self.capacity_blocks:
            blocks.popitem(last=False)


# ---- one replica -----------------------------------------------------------------------------

def _error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _answer_cap(request: dict[str, Any]) -> int | None:
    cap = request.get("max_completion_tokens", request.get("max_tokens"))
    return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 0 else None


class Replica(FastUpstream):
    """One simulated replica: fast_upstream's HTTP handling, this module's chat model.
    `failing` may be flipped at run time to make a replica fail mid-benchmark."""

    def __init__(self, index: int, costs: Costs, *, model: str = MODEL_ID, failing: bool = False):
        super().__init__(chunks=costs.output_tokens, model=model)
        self.index = index
        self.costs = costs
        self.failing = failing
        self.port = 0
        self.cache = PrefixCache(costs.cache_tokens // costs.block_tokens)
        self.chat_requests = 0
        self.rejected = 0
        self.in_flight = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.completion_tokens = 0
        self._prefill_lock = asyncio.Lock()  # FIFO: the replica's one compute resource
        self._replica_header = b"x-replica: %d\r\n" % index

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.port = await super().start(host, port)
        return self.port

    def stats_dict(self) -> dict[str, Any]:
        return {"replica": self.index, "requests": self.chat_requests, "rejected": self.rejected,
                "in_flight": self.in_flight, "prompt_tokens": self.prompt_tokens,
                "cached_tokens": self.cached_tokens, "completion_tokens": self.completion_tokens,
                "hit_rate": self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0,
                "cache_tokens": len(self.cache) * self.costs.block_tokens,
                "cache_capacity_tokens": self.cache.capacity_blocks * self.costs.block_tokens}

    # ---- HTTP --------------------------------------------------------------------------------

    async def _dispatch(self, writer: asyncio.StreamWriter, method: str, path: str, body: bytes,
                        keep_alive: bool) -> None:
        route = path.split("?", 1)[0].rstrip("/")
        close = not keep_alive
        if route == "/stats" and method == "GET":
            self._json(writer, 200, self.stats_dict(), close)
        elif route == "/health" and method == "GET" and self.failing:
            self._json(writer, 503, {"status": "failing"}, close)
        elif route in ("/v1/chat/completions", "/chat/completions") and method == "POST" and self.failing:
            self._json(writer, 500, _error_body("simulated replica failure", "server_error"), close, chat=True)
        elif (route in ("/v1/chat/completions", "/chat/completions") and method == "POST"
              and self.costs.max_in_flight and self.in_flight >= self.costs.max_in_flight):
            self.rejected += 1
            self._json(writer, 429, _error_body(f"replica {self.index} is at its {self.costs.max_in_flight} "
                                                "requests in flight", "rate_limit_error", "rate_limit_exceeded"),
                       close, chat=True)
        else:
            # the model list, 404s, body errors, and the chat completions below (via _chat)
            await super()._dispatch(writer, method, path, body, keep_alive)
            return
        await writer.drain()

    def _json(self, writer: asyncio.StreamWriter, status: int, obj: Any, close: bool, *, chat: bool = False) -> None:
        payload = _dumps(obj)
        writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s%s\r\n"
                     % (status, _STATUS_REASONS.get(status, "Error").encode(), len(payload),
                        self._replica_header if chat else b"", b"connection: close\r\n" if close else b"")
                     + payload)

    # ---- chat completions --------------------------------------------------------------------

    async def _chat(self, writer: asyncio.StreamWriter, request: dict[str, Any], close: bool) -> None:
        self.chat_requests += 1
        self.in_flight += 1
        try:
            text = render_prompt(request)
            prompt_tokens = count_tokens(text)
            cached = await self._prefill(block_hashes(text, self.costs.block_tokens), prompt_tokens)
            cap = _answer_cap(request)
            n = self.costs.output_tokens if cap is None else min(cap, self.costs.output_tokens)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n,
                     "prompt_tokens_details": {"cached_tokens": cached}}
            self._counter += 1
            head = {"id": f"chatcmpl-sim-{self.index}-{self._counter}", "created": int(time.time()),
                    "model": request.get("model") if isinstance(request.get("model"), str) else self.model}
            finish = "length" if n < self.costs.output_tokens else "stop"
            if request.get("stream"):
                options = request.get("stream_options")
                include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
                await self._stream(writer, head, n, finish, usage if include_usage else None, close)
            else:
                await self._complete(writer, head, n, finish, usage, close)
            self.completion_tokens += n
        finally:
            self.in_flight -= 1

    async def _prefill(self, hashes: list[int], prompt_tokens: int) -> int:
        """Waits for the replica's turn and the prefill's cost; the cached prefix in tokens."""
        costs = self.costs
        async with self._prefill_lock:
            cached = self.cache.cached_blocks(hashes) * costs.block_tokens
            self.prompt_tokens += prompt_tokens
            self.cached_tokens += cached
            await asyncio.sleep((costs.base_ttft_ms + (prompt_tokens - cached) * costs.prefill_ms_per_token) / 1000)
            self.cache.insert(hashes)
        return cached

    async def _paced(self, n: int) -> AsyncIterator[int]:
        """Yields how many tokens are due, until n have been: the first at once (the prefill has
        just ended), the rest on deadlines, those overdue together (lag never accumulates)."""
        if n == 0:
            return
        if self.costs.itl_ms <= 0:
            yield n
            return
        loop = asyncio.get_running_loop()
        due = loop.time()  # deadlines count from the first token, not from when its write returned
        yield 1
        sent = 1
        while sent < n:
            due += self._token_gap()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            now, batch = loop.time(), 1
            while sent + batch < n and due + self._token_gap() <= now:
                due += self._token_gap()
                batch += 1
            sent += batch
            yield batch

    def _token_gap(self) -> float:
        """Seconds between two tokens of a stream, stretched by the others in flight."""
        return self.costs.itl_ms / 1000 * (1 + (self.in_flight - 1) / self.costs.decode_parallelism)

    async def _complete(self, writer: asyncio.StreamWriter, head: dict[str, Any], n: int, finish: str,
                        usage: dict[str, Any], close: bool) -> None:
        async with contextlib.aclosing(self._paced(n)) as batches:
            async for _ in batches:
                pass
        text = "".join(WORDS[i % len(WORDS)] for i in range(n))
        self._json(writer, 200, {
            "id": head["id"], "object": "chat.completion", "created": head["created"], "model": head["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": usage}, close, chat=True)
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, head: dict[str, Any], n: int, finish: str,
                      usage: dict[str, Any] | None, close: bool) -> None:
        # every frame is this request's fixed head plus a pre-serialised tail: no JSON per token
        prefix = b'data: {"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s,' % (
            _dumps(head["id"]), head["created"], _dumps(head["model"]))

        def event(tail: bytes) -> bytes:
            return _frame(prefix + tail + b"}\n\n")

        tokens = [event(tail) for tail in _TOKEN_TAILS]
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                     b"transfer-encoding: chunked\r\n%s%s\r\n"
                     % (self._replica_header, b"connection: close\r\n" if close else b""))
        writer.write(event(_ROLE_TAIL))
        sent = 0
        async with contextlib.aclosing(self._paced(n)) as batches:
            async for batch in batches:
                writer.write(b"".join(tokens[i % len(tokens)] for i in range(sent, sent + batch)))
                sent += batch
                await writer.drain()  # raises once the client has gone, which ends the stream
        tail = [event(_finish_tail(finish))]
        if usage is not None:
            tail.append(event(b'"choices":[],"usage":' + _dumps(usage)))
        writer.write(b"".join(tail + [_DONE_FRAME, _LAST_FRAME]))
        await writer.drain()


def _choice_tail(delta: dict[str, Any], finish: str | None) -> bytes:
    return b'"choices":' + _dumps([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])


def _finish_tail(finish: str) -> bytes:
    return _FINISH_TAILS.get(finish) or _choice_tail({}, finish)


_ROLE_TAIL = _choice_tail({"role": "assistant", "content": ""}, None)
_TOKEN_TAILS = [_choice_tail({"content": word}, None) for word in WORDS]
_FINISH_TAILS = {f: _choice_tail({}, f) for f in ("stop", "length")}


# ---- the cluster -----------------------------------------------------------------------------

@dataclass
class Cluster:
    replicas: list[Replica]
    host: str

    @property
    def urls(self) -> list[str]:
        """Each replica's OpenAI base URL."""
        return [f"http://{self.host}:{r.port}/v1" for r in self.replicas]

    async def close(self) -> None:
        await asyncio.gather(*(r.close() for r in self.replicas))


async def start(replicas: int, host: str = "127.0.0.1", base_port: int = 0, *, model: str = MODEL_ID,
                fail_replicas: set[int] | frozenset[int] = frozenset(), **costs: Any) -> Cluster:
    """Listens with `replicas` replicas on base_port, base_port + 1, ... (base_port 0: free ports);
    `costs` are Costs' fields."""
    model_costs = Costs(**costs)
    cluster = Cluster([Replica(i, model_costs, model=model, failing=i in fail_replicas) for i in range(replicas)],
                      host)
    try:
        for i, replica in enumerate(cluster.replicas):
            await replica.start(host, base_port + i if base_port else 0)
    except BaseException:
        await cluster.close()
        raise
    return cluster


# ---- command line ----------------------------------------------------------------------------

def _replica_indexes(text: str) -> set[int]:
    return {int(part) for part in text.split(",") if part.strip()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=8, help="how many replicas [8]")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--base-port", type=int, default=9200, help="the first replica's port; the next ones follow "
                        "[9200]")
    parser.add_argument("--model", default=MODEL_ID, help=f"the model id /v1/models lists [{MODEL_ID}]")
    parser.add_argument("--fail-replicas", type=_replica_indexes, default=set(), metavar="I,J",
                        help="replica indexes that answer 500 to chat and 503 to /health")
    defaults = Costs()
    helps = {"prefill_ms_per_token": "prefill time per uncached prompt token",
             "base_ttft_ms": "fixed cost of every prefill",
             "itl_ms": "time between two tokens at one stream",
             "decode_parallelism": "in-flight requests that double the time between tokens",
             "block_tokens": "prefix cache block, in tokens (4 characters each)",
             "cache_tokens": "prefix cache capacity per replica, in tokens",
             "max_in_flight": "requests in flight per replica before answering 429 (0: unlimited)",
             "output_tokens": "answer length without max_tokens; max_tokens caps it"}
    for field in fields(Costs):
        default = getattr(defaults, field.name)
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(default), default=default,
                            help=f"{helps[field.name]} [{default:g}]")
    return parser


def _cost_flags(args: argparse.Namespace) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in fields(Costs)}


async def _serve(args: argparse.Namespace) -> None:
    cluster = await start(args.replicas, args.host, args.base_port, model=args.model,
                          fail_replicas=args.fail_replicas, **_cost_flags(args))
    print(f"replica_sim: {args.replicas} replicas, {cluster.urls[0]} .. {cluster.urls[-1]}, "
          f"failing {sorted(args.fail_replicas) or 'none'}; {cluster.replicas[0].costs}", flush=True)
    await asyncio.Event().wait()  # until interrupted


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error("--replicas must be >= 1")
    try:
        Costs(**_cost_flags(args))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
