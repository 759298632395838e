"""A scripted upstream for the gateway tests: chat chunks, SSE bodies, scripted replies (httpx-style
handlers behind httpcore's pool interface: tests/api/mock_pool.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import httpx

from rill.config import UpstreamConfig

Reply = Callable[[httpx.Request], Any]


def chunk(content: str | None = None, *, finish: str | None = None, usage: dict | None = None,
          choices: bool = True, **delta: Any) -> dict:
    out: dict[str, Any] = {"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "remote-name"}
    if choices:
        d = {**({"content": content} if content is not None else {}), **delta}
        out["choices"] = [{"index": 0, "delta": d, "finish_reason": finish}]
    else:
        out["choices"] = []
    if usage is not None:
        out["usage"] = usage
    return out


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def sse_body(*events: dict | str, done: bool = True) -> bytes:
    parts = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return ("".join(parts) + ("data: [DONE]\n\n" if done else "")).encode()


def streamed(*events: dict | str, done: bool = True) -> Reply:
    return lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"},
                                          content=sse_body(*events, done=done))


def status(code: int, body: Any = None, **headers: str) -> Reply:
    return lambda request: httpx.Response(code, json=body if body is not None else {"error": {"message": f"HTTP {code}"}},
                                          headers=headers)


class FakeUpstream:
    """A scripted upstream: each request takes the next reply (the last one repeats)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.replies: dict[str, list[Reply]] = {}

    def script(self, host: str, *replies: Reply) -> None:
        self.replies[host] = list(replies)

    def bodies(self, host: str) -> list[dict]:
        return [json.loads(r.content) for r in self.requests if r.url.host == host]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        replies = self.replies[request.url.host]
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        result = reply(request)
        return await result if asyncio.iscoroutine(result) else result


def upstream(name: str, **fields: Any) -> UpstreamConfig:
    return UpstreamConfig(name=name, base_url=f"http://{name}.test/v1", model="remote-name",
                          **{"retries": 0, "timeout": 5.0, **fields})
