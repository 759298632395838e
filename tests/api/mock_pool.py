"""httpx.MockTransport-style handlers behind httpcore's connection-pool interface, which is what
rill.backends.upstream.Upstream talks to: a handler takes an httpx.Request and returns an
httpx.Response (its content may be an async generator that raises mid-body) or raises httpx's
network errors; they reach Upstream as httpcore's, as from a real connection."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable

import httpcore
import httpx

Handler = Callable[[httpx.Request], Any]

_ERRORS: list[tuple[type[Exception], type[Exception]]] = [
    (httpx.ConnectTimeout, httpcore.ConnectTimeout), (httpx.ReadTimeout, httpcore.ReadTimeout),
    (httpx.ConnectError, httpcore.ConnectError), (httpx.ReadError, httpcore.ReadError),
    (httpx.RemoteProtocolError, httpcore.RemoteProtocolError),
]


def _as_httpcore(exc: Exception) -> Exception:
    for theirs, ours in _ERRORS:
        if isinstance(exc, theirs):
            return ours(str(exc))
    return exc


class MockPool:
    def __init__(self, handler: Handler):
        self.handler = handler

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        url = request.url
        port = f":{url.port}" if url.port else ""
        content = b"".join([part async for part in request.stream])
        req = httpx.Request(request.method.decode(), f"{url.scheme.decode()}://{url.host.decode()}{port}"
                            f"{url.target.decode()}", headers=request.headers, content=content)
        try:
            response = self.handler(req)
            if asyncio.iscoroutine(response):
                response = await response
        except httpx.HTTPError as exc:
            raise _as_httpcore(exc) from exc

        async def body() -> AsyncIterator[bytes]:
            try:
                async for part in response.stream:
                    yield part
            except httpx.HTTPError as exc:
                raise _as_httpcore(exc) from exc
            finally:
                await response.aclose()

        return httpcore.Response(response.status_code, headers=response.headers.raw, content=body())

    async def aclose(self) -> None:
        pass
