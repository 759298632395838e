"""An OpenAI-compatible server as a model: chat completions forwarded over httpx's transport
(httpcore's connection pool), streamed through.

Everything that can go wrong before the first event of the answer is an UpstreamError, which
says whether another try (or a fallback) may do better: connect errors, timeouts, a full
concurrency limit, 429 and 5xx are retryable; other 4xx are the request's fault and come back to
the client with the upstream's status and message. After the first event, a failure is an
UpstreamBroken raised from the stream. Each upstream has its own connection pool and concurrency
limit, so a slow or hung one never holds up requests to other models.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

import ssl
from typing import Protocol

import certifi
import httpcore
import orjson

from rill.backends.asyncio_net import AsyncioBackend
from rill.config import UpstreamConfig

log = logging.getLogger("rill.upstream")

MAX_ERROR_BODY = 64 * 1024  # of an upstream's error response, read for its message
CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_EXPIRY_S = 30.0  # idle pooled connections are closed after this
READ_AHEAD = 8  # batches a stream's reader may be ahead of the client
FIRST_OUTPUT_WAIT_S = 0.02  # a role-only first event waits this long for the first token to join it
DRAIN_S = 0.5  # after [DONE], how long the rest of the body may take before the connection is dropped


class Pool(Protocol):
    """What Upstream needs of a connection pool (httpcore.AsyncConnectionPool's interface)."""

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response: ...
    async def aclose(self) -> None: ...


class UpstreamError(Exception):
    """Failed before the first byte of the answer."""

    def __init__(self, message: str, *, status: int, retryable: bool, type: str | None = None,
                 code: str | None = None, param: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message, self.status, self.retryable = message, status, retryable
        self.type, self.code, self.param, self.retry_after = type, code, param, retry_after


class UpstreamBroken(Exception):
    """The stream failed after it started."""


# What the network can raise: httpcore's errors (timeouts first, to say which it was)
TIMEOUTS = (httpcore.TimeoutException, TimeoutError)
NETWORK_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError, OSError)


class Upstream:
    """One upstream model. Requests go through httpx's transport layer (httpcore's connection
    pool) directly: the client layer on top (URL merging, cookies, auth and redirect hooks,
    response wrappers) cost about a third of the gateway's CPU per request, and none of it is
    needed to POST one JSON body to one fixed URL. `pool` replaces the network (tests)."""

    def __init__(self, config: UpstreamConfig, *, pool: Pool | None = None):
        self.config = config
        self.name = config.name
        self._slots = asyncio.Semaphore(config.max_concurrency)
        url = httpcore.URL(config.base_url.rstrip("/") + "/chat/completions")
        self._url = url
        host = url.host.decode() if url.port is None else f"{url.host.decode()}:{url.port}"
        self._headers = [(b"host", host.encode()), (b"user-agent", b"rill-gateway"),
                         (b"content-type", b"application/json")]
        key = config.api_key()
        if key:
            self._headers.append((b"authorization", f"Bearer {key}".encode()))
        self._timeouts = {"connect": min(CONNECT_TIMEOUT_S, config.timeout), "read": config.timeout,
                          "write": config.timeout, "pool": config.timeout}
        self._pool = pool or httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=config.max_concurrency, max_keepalive_connections=config.max_concurrency,
            keepalive_expiry=KEEPALIVE_EXPIRY_S, network_backend=AsyncioBackend())

    @property
    def in_flight(self) -> int:
        return self.config.max_concurrency - self._slots._value

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed chat completion: the upstream's chat.completion object."""
        async with self._slot():
            response = await self._send(body)
            try:
                if response.status != 200:
                    raise await self._refusal(response)
                try:
                    raw = await response.aread()
                except NETWORK_ERRORS as exc:
                    raise self._unreachable(exc) from exc
            finally:
                await asyncio.shield(asyncio.ensure_future(response.aclose()))  # also when the client left
        try:
            result = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"upstream {self.name} answered with invalid JSON", status=502, retryable=True) from None
        if not isinstance(result, dict) or not isinstance(result.get("choices"), list):
            raise UpstreamError(f"upstream {self.name} answered without choices", status=502, retryable=True)
        return result

    async def stream(self, body: dict[str, Any]) -> UpstreamStream:
        """Open a streamed chat completion and read up to its first event (so that a failure
        until then can still be retried); the stream holds a concurrency slot until closed."""
        slot = self._slot()
        await slot.__aenter__()
        try:
            response = await self._send(body, stream=True)
            if response.status != 200:
                try:
                    raise await self._refusal(response)
                finally:
                    await response.aclose()
            stream = UpstreamStream(self, response, slot)
            try:
                await stream.start()
            except BaseException:
                await stream.aclose()
                raise
            return stream
        except BaseException:
            await slot.__aexit__(None, None, None)
            raise

    def _slot(self) -> _Slot:
        return _Slot(self)

    async def _send(self, body: dict[str, Any], *, stream: bool = False) -> httpcore.Response:
        content = orjson.dumps(body)
        headers = [*self._headers, (b"accept", b"text/event-stream" if stream else b"application/json"),
                   (b"content-length", str(len(content)).encode())]
        request = httpcore.Request(b"POST", self._url, headers=headers, content=content,
                                   extensions={"timeout": self._timeouts})
        try:
            return await self._pool.handle_async_request(request)
        except NETWORK_ERRORS as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: BaseException) -> UpstreamError:
        if isinstance(exc, TIMEOUTS):
            return UpstreamError(f"upstream {self.name} timed out ({type(exc).__name__})", status=504, retryable=True,
                                 code="upstream_timeout")
        return UpstreamError(f"upstream {self.name} is unreachable: {exc or type(exc).__name__}", status=502,
                             retryable=True, code="upstream_unreachable")

    async def _refusal(self, response: httpcore.Response) -> UpstreamError:
        """An upstream's error response -> its status and message, in OpenAI's terms."""
        status = response.status
        raw = b""
        try:
            async for part in response.aiter_stream():
                raw += part
                if len(raw) >= MAX_ERROR_BODY:
                    break
        except NETWORK_ERRORS:
            pass
        message, type_, code, param = _error_fields(raw[:MAX_ERROR_BODY])
        retryable = status == 429 or status >= 500
        if status >= 500 or status < 400:
            message = f"upstream {self.name} failed with HTTP {status}: {message}"
        return UpstreamError(message, status=status if 400 <= status < 600 else 502, retryable=retryable,
                             type=type_, code=code, param=param, retry_after=_retry_after(response))


class _Slot:
    """A concurrency slot, waited for at most the upstream's timeout (then: retryable, 503)."""

    def __init__(self, upstream: Upstream):
        self._upstream = upstream
        self._held = False

    async def __aenter__(self) -> None:
        try:
            async with asyncio.timeout(self._upstream.config.timeout):
                await self._upstream._slots.acquire()
        except TimeoutError:
            raise UpstreamError(f"upstream {self._upstream.name} is at its limit of "
                                f"{self._upstream.config.max_concurrency} concurrent requests", status=503,
                                retryable=True, code="upstream_busy") from None
        self._held = True

    async def __aexit__(self, *exc: Any) -> None:
        if self._held:
            self._held = False
            self._upstream._slots.release()


class UpstreamStream:
    """The events (parsed `data:` JSON objects) of one streamed answer, up to `[DONE]`, in
    batches. A reader task reads ahead (a few batches at most) while the relay sends, and
    next_batch() joins what has arrived, so the cost goes per write, not per event. After
    `[DONE]` the reader reads the body to its end, so the connection goes back to the pool."""

    def __init__(self, upstream: Upstream, response: httpcore.Response, slot: _Slot):
        self._upstream = upstream
        self._response = response
        self._slot = slot
        self._events = self._read()
        self._queue: asyncio.Queue[list[dict[str, Any]] | UpstreamBroken | None] = asyncio.Queue(READ_AHEAD)
        self._reader: asyncio.Task[None] | None = None
        self._first: list[dict[str, Any]] | None = None
        self._last: UpstreamBroken | None = None  # the end (None) or the failure, once reached
        self._ended = False
        self._closed = False

    async def start(self) -> None:
        """Read the first batch here: until it has come, a failure is still an UpstreamError."""
        try:
            self._first = await anext(self._events)
        except StopAsyncIteration:
            raise UpstreamError(f"upstream {self._upstream.name} ended its stream before any event", status=502,
                                retryable=True, code="upstream_error") from None
        except UpstreamBroken as exc:
            raise UpstreamError(str(exc), status=502, retryable=True, code="upstream_error") from None
        if self._first is None:
            raise UpstreamError(f"upstream {self._upstream.name} ended its stream before any event", status=502,
                                retryable=True, code="upstream_error")
        head = self._first[0]
        if "error" in head and not head.get("choices"):
            message, type_, code, param = _error_fields(orjson.dumps(head))
            raise UpstreamError(f"upstream {self._upstream.name}: {message}", status=502, retryable=True,
                                type=type_, code=code, param=param)
        pending = None
        if not any(_has_output(event) for event in self._first):
            # Often the first event is the role alone and the first token follows at once: wait
            # a moment for it, so that both go out in one write.
            pending = asyncio.ensure_future(anext(self._events))
            try:
                await asyncio.wait((pending,), timeout=FIRST_OUTPUT_WAIT_S)
            except BaseException:
                pending.cancel()
                await asyncio.wait((pending,))
                raise
            if pending.done():
                try:
                    more = pending.result()
                except StopAsyncIteration:
                    more = None
                except UpstreamBroken as exc:
                    more = exc
                pending = None
                if isinstance(more, list):
                    self._first.extend(more)
                else:
                    self._queue.put_nowait(more)  # the end, or the failure: after the first batch
        self._reader = asyncio.create_task(self._read_ahead(pending), name=f"rill-upstream-{self._upstream.name}")

    async def next_batch(self) -> list[dict[str, Any]] | None:
        """The events that arrived since the last call (waiting for at least one), or None at
        `[DONE]`; raises UpstreamBroken when the stream failed. Safe to cancel (a timeout)."""
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self._ended:
            return self._end()
        item = await self._queue.get()
        batch: list[dict[str, Any]] = []
        while True:
            if not isinstance(item, list):
                self._ended, self._last = True, item
                return batch or self._end()
            batch.extend(item)
            if self._queue.empty():
                return batch
            item = self._queue.get_nowait()

    def _end(self) -> None:
        if self._last is not None:
            raise self._last
        return None

    async def aclose(self) -> None:
        """Close the upstream connection (a client that left closes it too) and free the slot."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._reader is not None:
                if self._ended and self._last is None:  # it is reading the body's end: let it, briefly
                    await asyncio.wait((self._reader,), timeout=DRAIN_S)
                self._reader.cancel()
                await asyncio.wait((self._reader,))
            await self._events.aclose()
            await self._response.aclose()
        finally:
            await self._slot.__aexit__(None, None, None)

    async def _read_ahead(self, pending: asyncio.Future[Any] | None) -> None:
        try:
            if pending is not None:  # start()'s read of the second batch, still on its way
                try:
                    await self._queue.put(await pending)
                except StopAsyncIteration:
                    return
            async for batch in self._events:
                await self._queue.put(batch)
        except UpstreamBroken as exc:
            await self._queue.put(exc)

    async def _read(self) -> AsyncIterator[list[dict[str, Any]] | None]:
        """Batches of events; None once at `[DONE]`, after which the body is read to its end."""
        name = self._upstream.name
        buffer = b""
        done = False
        try:
            async for data in self._response.aiter_stream():
                if done:
                    continue  # the body's last bytes (the chunked encoding's end)
                buffer += data
                if b"\r" in buffer:
                    buffer = buffer.replace(b"\r\n", b"\n")
                blocks = buffer.split(b"\n\n")
                buffer = blocks.pop()  # the unfinished event, if any
                batch, done, broken = _events(blocks, name)
                if batch:
                    yield batch
                if broken is not None:
                    raise broken
                if done:
                    yield None
        except TIMEOUTS:
            if done:
                return
            raise UpstreamBroken(f"upstream {name} sent nothing for {self._upstream.config.timeout:g} s") from None
        except NETWORK_ERRORS as exc:
            if done:
                return
            raise UpstreamBroken(f"upstream {name}'s stream broke: {exc or type(exc).__name__}") from None
        if done:
            return
        batch, done, broken = _events([buffer], name)  # a last event without its blank line
        if batch:
            yield batch
        if broken is not None:
            raise broken
        if not done:
            raise UpstreamBroken(f"upstream {name} ended its stream without [DONE]")
        yield None


def _has_output(event: dict[str, Any]) -> bool:
    """Whether an event carries something for the reader (content, a tool call, a refusal)."""
    for choice in event.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        if delta.get("content") or delta.get("tool_calls") or delta.get("refusal") or delta.get("function_call"):
            return True
    return False


def _events(blocks: list[bytes], name: str) -> tuple[list[dict[str, Any]], bool, UpstreamBroken | None]:
    """SSE event blocks -> their data objects, whether `[DONE]` came, and what broke the
    stream, if something did (the events before it still count)."""
    out: list[dict[str, Any]] = []
    for block in blocks:
        data = [line[6:] if line.startswith(b"data: ") else line[5:]
                for line in block.split(b"\n") if line.startswith(b"data:")]
        if not data:  # comments (`: keep-alive`), `event:`/`id:` only
            continue
        payload = b"\n".join(data)
        if payload.strip() == b"[DONE]":
            return out, True, None
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return out, False, UpstreamBroken(f"upstream {name} sent an event that is not JSON: {payload[:200]!r}")
        if not isinstance(event, dict):
            return out, False, UpstreamBroken(f"upstream {name} sent an event that is not an object")
        out.append(event)
    return out, False, None


def _error_fields(raw: bytes) -> tuple[str, str | None, str | None, str | None]:
    """(message, type, code, param) of an error body: OpenAI's {"error": {...}}, FastAPI's
    {"detail": ...}, {"message": ...}, or plain text."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace").strip()
        return (text[:500] or "no message"), None, None, None
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        message = err.get("message") or err.get("detail") or orjson.dumps(err).decode()
        code = err.get("code")
        return (str(message), _str(err.get("type")), None if code is None else str(code), _str(err.get("param")))
    return str(err), None, None, None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _retry_after(response: httpcore.Response) -> float | None:
    value = next((v.decode("latin-1") for k, v in response.headers if k.lower() == b"retry-after"), None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
