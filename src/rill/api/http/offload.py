"""Blocking work for a request (rendering and tokenizing a prompt, compiling its grammar) on a
worker thread, stopped when the client leaves: the work is handed a `cancelled()` to ask between
its steps, and it is set as soon as the connection reports `http.disconnect`."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Callable, TypeVar

import anyio.to_thread
from starlette.requests import Request

from rill.errors import ClientGone
from rill.prompt_tokens import Cancelled

T = TypeVar("T")


async def off_loop(request: Request, work: Callable[[Callable[[], bool]], T]) -> T:
    """work(cancelled) on a worker thread; ClientGone if the client left before it finished (the
    thread is waited for: it stops at its next check)."""
    stop = threading.Event()
    task = asyncio.ensure_future(anyio.to_thread.run_sync(work, stop.is_set))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        stop.set()
        with contextlib.suppress(Cancelled):
            await task
        raise ClientGone("The client closed the connection; the request was dropped.")
    return task.result()


async def _disconnected(request: Request) -> None:
    """Returns when the connection says the client has gone. The body has been read, so the
    server's next message is the disconnect (or never comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
