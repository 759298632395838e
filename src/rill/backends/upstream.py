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
import functools
import logging
import ssl
from typing import Any, AsyncIterator, Callable, Protocol

import certifi
import httpcore
import orjson

from rill.backends.asyncio_net import AsyncioBackend
from rill.backends.upstream_errors import (NETWORK_ERRORS, TIMEOUTS, UpstreamBroken, UpstreamError, completion_problem,
                                          error_fields)
from rill.backends.upstream_stream import UpstreamStream
from rill.config import UpstreamConfig
from rill.telemetry.propagation import forward_headers

log = logging.getLogger("rill.upstream")

MAX_ERROR_BODY = 64 * 1024  # of an upstream's error response, read for its message
CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_EXPIRY_S = 30.0  # idle pooled connections are closed after this


class Pool(Protocol):
    """What Upstream needs of a connection pool (httpcore.AsyncConnectionPool's interface)."""

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response: ...
    async def aclose(self) -> None: ...


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
        # where a traced call goes (server.address/port on its span)
        self._server = (url.host.decode(), url.port or (443 if url.scheme == b"https" else 80))
        host = url.host.decode() if url.port is None else f"{url.host.decode()}:{url.port}"
        self._headers = [(b"host", host.encode()), (b"user-agent", b"rill-gateway"),
                         (b"content-type", b"application/json")]
        key = config.api_key()
        if key:
            self._headers.append((b"authorization", f"Bearer {key}".encode()))
        self._timeouts = {"connect": min(CONNECT_TIMEOUT_S, config.timeout), "read": config.timeout,
                          "write": config.timeout, "pool": config.timeout}
        self._pool = pool or httpcore.AsyncConnectionPool(
            ssl_context=_tls_context(),
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
            raise UpstreamError(f"upstream {self.name} answered with invalid JSON", status=502, retryable=True,
                                code="upstream_error") from None
        problem = completion_problem(result)
        if problem is not None:
            raise UpstreamError(f"upstream {self.name} answered with a chat.completion Rill cannot read: {problem}",
                                status=502, retryable=True, code="upstream_error")
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

    async def relay(self, path: str, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> Relayed:
        """POST `body` to {base_url}/{path}, a protocol the upstream serves itself, for its answer as
        it comes: any status but 429 and 5xx, which are retryable UpstreamErrors as for chat (so a
        fallback may still take the request). The answer holds a concurrency slot until closed."""
        slot = self._slot()
        await slot.__aenter__()
        try:
            content = orjson.dumps(body)
            extra = list(headers or ())
            key = self.config.api_key()
            if key and path == "messages":  # Anthropic's API reads x-api-key
                extra.append((b"x-api-key", key.encode()))
            request = httpcore.Request(
                b"POST", httpcore.URL(self.config.base_url.rstrip("/") + "/" + path),
                headers=[*self._headers, *extra, *forward_headers(*self._server),
                         (b"content-length", str(len(content)).encode())],
                content=content, extensions={"timeout": self._timeouts})
            try:
                response = await self._pool.handle_async_request(request)
            except NETWORK_ERRORS as exc:
                raise self._unreachable(exc) from exc
            if response.status == 429 or response.status >= 500:
                try:
                    raise await self._refusal(response)
                finally:
                    await response.aclose()
            return Relayed(response, slot)
        except BaseException:
            await slot.__aexit__(None, None, None)
            raise

    def _slot(self) -> _Slot:
        return _Slot(self)

    async def probe(self, path: str, timeout: float) -> int:
        """GET `path` (under base_url, or from the host's root when it starts with "/") with this
        upstream's key, outside its concurrency limit: the status of a health check."""
        if path.startswith("/"):
            url = httpcore.URL(scheme=self._url.scheme, host=self._url.host, port=self._url.port, target=path.encode())
        else:
            url = httpcore.URL(self.config.base_url.rstrip("/") + "/" + path)
        request = httpcore.Request(b"GET", url, headers=[h for h in self._headers if h[0] != b"content-type"],
                                   extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)})
        async with asyncio.timeout(timeout):
            response = await self._pool.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response.status

    async def _send(self, body: dict[str, Any], *, stream: bool = False) -> httpcore.Response:
        content = orjson.dumps(body)
        headers = [*self._headers, (b"accept", b"text/event-stream" if stream else b"application/json"),
                   *forward_headers(*self._server), (b"content-length", str(len(content)).encode())]
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
        message, type_, code, param = error_fields(raw[:MAX_ERROR_BODY])
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


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One context for every upstream: loading certifi's CA bundle takes ~40 ms, per upstream
    model at start-up before."""
    return ssl.create_default_context(cafile=certifi.where())


def _retry_after(response: httpcore.Response) -> float | None:
    value = next((v.decode("latin-1") for k, v in response.headers if k.lower() == b"retry-after"), None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class Relayed:
    """An upstream's answer passed through as bytes (status and content type kept)."""

    def __init__(self, response: httpcore.Response, slot: _Slot):
        self._response, self._slot = response, slot
        self.on_end: Callable[[dict[str, Any] | None, bool], None] | None = None  # set by a ReplicaSet
        self._broken = False
        self.status = response.status
        self.content_type = next((v.decode("latin-1") for k, v in response.headers if k.lower() == b"content-type"),
                                 "application/json")

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; a connection lost mid-body ends it (UpstreamBroken)."""
        try:
            async for part in self._response.aiter_stream():
                yield part
        except NETWORK_ERRORS as exc:
            self._broken = True
            raise UpstreamBroken(f"the upstream's answer broke off: {exc or type(exc).__name__}") from exc

    async def aclose(self) -> None:
        try:
            await self._response.aclose()
        finally:
            await self._slot.__aexit__(None, None, None)
            if self.on_end is not None:
                on_end, self.on_end = self.on_end, None
                on_end(None, self._broken)
