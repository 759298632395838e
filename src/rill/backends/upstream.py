"""An OpenAI-compatible server as a model: chat completions forwarded over httpx, streamed through.

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

import anyio
import httpx
import orjson

from rill.config import UpstreamConfig

log = logging.getLogger("rill.upstream")

MAX_ERROR_BODY = 64 * 1024  # of an upstream's error response, read for its message
CONNECT_TIMEOUT_S = 10.0


class UpstreamError(Exception):
    """Failed before the first byte of the answer."""

    def __init__(self, message: str, *, status: int, retryable: bool, type: str | None = None,
                 code: str | None = None, param: str | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message, self.status, self.retryable = message, status, retryable
        self.type, self.code, self.param, self.retry_after = type, code, param, retry_after


class UpstreamBroken(Exception):
    """The stream failed after it started."""


class Upstream:
    def __init__(self, config: UpstreamConfig, *, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.name = config.name
        self._slots = asyncio.Semaphore(config.max_concurrency)
        headers = {"user-agent": "rill-gateway"}
        key = config.api_key()
        if key:
            headers["authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"), headers=headers, transport=transport,
            timeout=httpx.Timeout(config.timeout, connect=min(CONNECT_TIMEOUT_S, config.timeout)),
            limits=httpx.Limits(max_connections=config.max_concurrency,
                                max_keepalive_connections=config.max_concurrency))

    @property
    def in_flight(self) -> int:
        return self.config.max_concurrency - self._slots._value

    async def aclose(self) -> None:
        await self._client.aclose()

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """A non-streamed chat completion: the upstream's chat.completion object."""
        async with self._slot():
            response = await self._send(body)
            try:
                if response.status_code != 200:
                    raise await self._refusal(response)
                try:
                    raw = await response.aread()
                except httpx.HTTPError as exc:
                    raise self._unreachable(exc) from exc
            finally:
                with anyio.CancelScope(shield=True):  # also when the client left mid-request
                    await response.aclose()
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
            if response.status_code != 200:
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

    async def _send(self, body: dict[str, Any], *, stream: bool = False) -> httpx.Response:
        request = self._client.build_request(
            "POST", "/chat/completions", content=orjson.dumps(body),
            headers={"content-type": "application/json", "accept": "text/event-stream" if stream else "application/json"})
        try:
            return await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def _unreachable(self, exc: httpx.HTTPError) -> UpstreamError:
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamError(f"upstream {self.name} timed out ({type(exc).__name__})", status=504, retryable=True,
                                 code="upstream_timeout")
        return UpstreamError(f"upstream {self.name} is unreachable: {exc or type(exc).__name__}", status=502,
                             retryable=True, code="upstream_unreachable")

    async def _refusal(self, response: httpx.Response) -> UpstreamError:
        """An upstream's error response -> its status and message, in OpenAI's terms."""
        status = response.status_code
        raw = b""
        try:
            async for part in response.aiter_bytes():
                raw += part
                if len(raw) >= MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
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
    """The events (parsed `data:` JSON objects) of one streamed answer, ending at `[DONE]`, in
    batches: the events of one network read come together, so relaying costs per read, not per
    event."""

    def __init__(self, upstream: Upstream, response: httpx.Response, slot: _Slot):
        self._upstream = upstream
        self._response = response
        self._slot = slot
        self._batches = self._read()
        self.first: list[dict[str, Any]] | None = None
        self._closed = False

    async def start(self) -> None:
        try:
            self.first = await anext(self._batches)
        except StopAsyncIteration:
            raise UpstreamError(f"upstream {self._upstream.name} ended its stream before any event", status=502,
                                retryable=True, code="upstream_error") from None
        except UpstreamBroken as exc:
            raise UpstreamError(str(exc), status=502, retryable=True, code="upstream_error") from None
        head = self.first[0]
        if "error" in head and not head.get("choices"):
            message, type_, code, param = _error_fields(orjson.dumps(head))
            raise UpstreamError(f"upstream {self._upstream.name}: {message}", status=502, retryable=True,
                                type=type_, code=code, param=param)

    def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[list[dict[str, Any]]]:
        if self.first is not None:
            first, self.first = self.first, None
            yield first
        async for batch in self._batches:
            yield batch

    async def aclose(self) -> None:
        """Close the upstream connection (a client that left closes it too) and free the slot."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._batches.aclose()
            await self._response.aclose()
        finally:
            await self._slot.__aexit__(None, None, None)

    async def _read(self) -> AsyncIterator[list[dict[str, Any]]]:
        name = self._upstream.name
        buffer = b""
        try:
            async for data in self._response.aiter_bytes():
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
                    return
        except httpx.TimeoutException:
            raise UpstreamBroken(f"upstream {name} sent nothing for {self._upstream.config.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise UpstreamBroken(f"upstream {name}'s stream broke: {exc or type(exc).__name__}") from None
        batch, done, broken = _events([buffer], name)  # a last event without its blank line
        if batch:
            yield batch
        if broken is not None:
            raise broken
        if not done:
            raise UpstreamBroken(f"upstream {name} ended its stream without [DONE]")


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


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
