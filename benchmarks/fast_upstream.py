"""A minimal, fast OpenAI-compatible chat-completions server, for measuring proxies in front of it.

Only the standard library's asyncio streams: no framework, no JSON parsing beyond the request
body, every answer built from a few pre-serialised pieces, so that the upstream is never the
bottleneck of a gateway benchmark.

    .venv/bin/python benchmarks/fast_upstream.py --port 9100 [--chunks 128] [--delay-ms 0]

- HTTP/1.1 with keep-alive (HTTP/1.0 or `Connection: close` closes after the answer); request
  bodies framed by Content-Length or chunked; `Expect: 100-continue` is answered.
- `POST /v1/chat/completions` (also `/chat/completions`):
  - `stream: true`: a first chunk with the role, `--chunks` chunks of one token each (`"tok "`,
    `"ken "`, ... in turn: see WORDS),
    `--delay-ms` apart (0: written back to back), a chunk with `finish_reason` (`"length"` when
    `max_tokens` cut the answer short, else `"stop"`), a usage chunk (`choices: []`) when
    `stream_options.include_usage` is true, then `data: [DONE]`; sent with chunked transfer
    encoding, one HTTP chunk per event.
  - `stream: false`: one chat.completion with the same text and usage.
  - `max_tokens` (or `max_completion_tokens`) caps the number of token chunks.
- `GET /v1/models` (also `/models`): one model, `fast` (any model name is accepted and echoed).
- `GET /health`: 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

MODEL_ID = "fast"
# The answer's tokens, in turn: no two neighbours alike (LiteLLM's proxy fails a stream with 100
# identical chunks in a row as "the model is repeating the same chunk")
WORDS = ("tok ", "ken ", "word ", "more ", "text ", "here ", "and ", "then ")
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 431: "Request Header Fields Too Large"}


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def answer(n: int) -> list[str]:
    """The n tokens of an answer."""
    return [WORDS[i % len(WORDS)] for i in range(n)]


def _frame(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _event(obj: Any) -> bytes:
    return _frame(b"data: " + _dumps(obj) + b"\n\n")


_DONE_FRAME = _frame(b"data: [DONE]\n\n")
_LAST_FRAME = b"0\r\n\r\n"


class FastUpstream:
    """The server. `connections` counts accepted connections and `requests` answered requests
    (for tests: keep-alive reuse shows as many requests over one connection)."""

    def __init__(self, *, chunks: int = 128, delay_ms: float = 0.0, model: str = MODEL_ID):
        self.chunks = chunks
        self.delay = delay_ms / 1000.0
        self.model = model
        self.connections = 0
        self.requests = 0
        self._counter = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; the port actually bound (port 0: a free one)."""
        self._server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD, backlog=1024)
        return self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ---- HTTP --------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed between requests
                except asyncio.LimitOverrunError:
                    self._simple(writer, 431, {"error": {"message": "request head too large"}}, close=True)
                    await writer.drain()
                    return
                try:
                    method, path, version, headers = _parse_head(head)
                    keep_alive = _keep_alive(version, headers)
                    if headers.get("expect", "").lower() == "100-continue":
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    body = await _read_body(reader, headers)
                except BadRequest as exc:
                    self._simple(writer, exc.status, {"error": {"message": exc.message, "type": "invalid_request_error"}},
                                 close=True)
                    await writer.drain()
                    return
                except asyncio.IncompleteReadError:
                    return
                self.requests += 1
                await self._dispatch(writer, method, path, body, keep_alive)
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, asyncio.CancelledError):
                pass

    def _simple(self, writer: asyncio.StreamWriter, status: int, obj: Any, *, close: bool = False) -> None:
        payload = _dumps(obj)
        writer.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
                     % (status, _REASONS.get(status, "Error").encode(), len(payload),
                        b"connection: close\r\n" if close else b"") + payload)

    async def _dispatch(self, writer: asyncio.StreamWriter, method: str, path: str, body: bytes,
                        keep_alive: bool) -> None:
        path = path.split("?", 1)[0].rstrip("/")
        close = not keep_alive
        if path in ("/v1/chat/completions", "/chat/completions"):
            if method != "POST":
                self._simple(writer, 405, {"error": {"message": "use POST"}}, close=close)
            else:
                try:
                    request = json.loads(body or b"{}")
                    if not isinstance(request, dict):
                        raise ValueError("not an object")
                except ValueError as exc:
                    self._simple(writer, 400, {"error": {"message": f"the body is not a JSON object: {exc}",
                                                         "type": "invalid_request_error"}}, close=close)
                else:
                    await self._chat(writer, request, close)
                    return
        elif path in ("/v1/models", "/models") and method == "GET":
            self._simple(writer, 200, {"object": "list", "data": [
                {"id": self.model, "object": "model", "created": 0, "owned_by": "fast_upstream"}]}, close=close)
        elif path == "/health" and method == "GET":
            self._simple(writer, 200, {"status": "ok"}, close=close)
        else:
            self._simple(writer, 404, {"error": {"message": f"no route {method} {path}"}}, close=close)
        await writer.drain()

    # ---- chat completions --------------------------------------------------------------------

    async def _chat(self, writer: asyncio.StreamWriter, request: dict[str, Any], close: bool) -> None:
        n = self.chunks
        cap = request.get("max_completion_tokens", request.get("max_tokens"))
        if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 0:
            n = min(n, cap)
        finish = "length" if n < self.chunks else "stop"
        model = request.get("model") if isinstance(request.get("model"), str) else self.model
        self._counter += 1
        cid = f"chatcmpl-fast-{self._counter}"
        created = int(time.time())
        usage = {"prompt_tokens": _prompt_tokens(request.get("messages")), "completion_tokens": n}
        usage["total_tokens"] = usage["prompt_tokens"] + n
        if not request.get("stream"):
            self._simple(writer, 200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(answer(n))},
                             "finish_reason": finish, "logprobs": None}],
                "usage": usage}, close=close)
            await writer.drain()
            return
        options = request.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return _event({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                "finish_reason": finish_reason}]})

        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                     b"transfer-encoding: chunked\r\n%s\r\n" % (b"connection: close\r\n" if close else b""))
        writer.write(chunk({"role": "assistant", "content": ""}))
        tokens = [chunk({"content": word}) for word in WORDS]
        for i in range(n):
            if self.delay:
                await writer.drain()
                await asyncio.sleep(self.delay)
            writer.write(tokens[i % len(tokens)])
        tail = [chunk({}, finish)]
        if include_usage:
            tail.append(_event({**base, "choices": [], "usage": usage}))
        tail += [_DONE_FRAME, _LAST_FRAME]
        writer.write(b"".join(tail))
        await writer.drain()


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest(400, "bad request head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, f"bad request line: {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400, f"bad header line: {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()
    return parts[0].upper(), parts[1], parts[2], headers


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = {t.strip() for t in headers.get("connection", "").lower().split(",")}
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        size = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                length = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest(400, "bad chunk size") from None
            if length == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            size += length
            if size > MAX_BODY:
                raise BadRequest(413, "body too large")
            parts.append(await reader.readexactly(length))
            await reader.readexactly(2)
    raw = headers.get("content-length")
    if raw is None:
        return b""
    try:
        length = int(raw)
    except ValueError:
        raise BadRequest(400, "bad content-length") from None
    if length < 0:
        raise BadRequest(400, "bad content-length")
    if length > MAX_BODY:
        raise BadRequest(413, "body too large")
    return await reader.readexactly(length) if length else b""


def _prompt_tokens(messages: Any) -> int:
    """A rough count (words of the text content), so usage is plausible."""
    if not isinstance(messages, list):
        return 0
    words = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            words += sum(len(p.get("text", "").split()) for p in content if isinstance(p, dict))
    return words


async def _main(args: argparse.Namespace) -> None:
    server = FastUpstream(chunks=args.chunks, delay_ms=args.delay_ms, model=args.model)
    port = await server.start(args.host, args.port)
    print(f"fast_upstream: http://{args.host}:{port}/v1  model {args.model}, {args.chunks} chunks, "
          f"{args.delay_ms:g} ms apart", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--chunks", type=int, default=128, help="token chunks per answer [128]")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="pause between token chunks [0]")
    parser.add_argument("--model", default=MODEL_ID, help=f"the model id /v1/models lists [{MODEL_ID}]")
    args = parser.parse_args()
    if args.chunks < 0 or args.delay_ms < 0:
        parser.error("--chunks and --delay-ms must be >= 0")
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
