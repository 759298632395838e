"""In-process API tests: the real app and engine thread over the deterministic fake backend.

Fixtures: `backend`, `config` (both parametrizable with `indirect=True`, see their docstrings),
`app`, `client` (httpx over its ASGITransport: the whole body arrives at once) and `live_client`
(a transport that hands the body over as the app sends it and disconnects when the response is
closed early, for tests that catch a stream mid-way). Helpers: `chat`, `parse_sse`, `stream_text`,
`chatml_prompt_tokens`, `assert_error`, `wait_until`, `engine_of`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Any, AsyncIterator, Callable

import httpx
import pytest

from rill.api.app import create_app
from rill.backends.fake import FakeBackend
from rill.config import ServerConfig
from rill.engine.engine import Engine
from rill.router import LocalModel, Router
from rill.sampling.template import ChatTemplate

MODEL = "fake-echo"
CHAT_URL = "/v1/chat/completions"
# llguidance 1.9.1 panics (a Rust panic, raised as a BaseException) cutting its error message for
# this schema inside the multi-byte "é": it must still be a 400.
PANICS = {"$ref": {"a": "x" * 91 + "éééé"}}


def fake_loader(backend: FakeBackend, *, max_queue: int = 256, max_running: int = 1) -> Callable[[Router], None]:
    def load(router: Router) -> None:
        info = backend.info
        # drafted tokens priced as on 2 CPU cores, not by the fake's microsecond timings, so
        # that `prediction`'s drafts (not only its output) are the same every run
        engine = Engine(backend, max_queue=max_queue, max_running=max_running, draft_cost=0.4)
        engine.start()
        template = ChatTemplate(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
        router.add(LocalModel(id=MODEL, engine=engine, template=template, aliases=frozenset({"echo"})))

    return load


class GatedBackend(FakeBackend):
    """A FakeBackend whose forward() waits until `gate` is set: the engine is provably busy on
    the first request for as long as a test needs."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.gate = threading.Event()

    def forward(self, batch):  # type: ignore[override]
        self.gate.wait()
        return super().forward(batch)


@pytest.fixture
def backend(request) -> FakeBackend:
    """The fake model. Parametrize indirectly with FakeBackend keyword arguments, plus an optional
    `cls` (e.g. GatedBackend): `@pytest.mark.parametrize("backend", [{"step_delay": 0.01}],
    indirect=True)`."""
    params = dict(getattr(request, "param", {}))
    cls = params.pop("cls", FakeBackend)
    return cls(**params)


@pytest.fixture
def config(request, tmp_path) -> ServerConfig:
    """Server configuration; parametrize indirectly with ServerConfig keyword arguments.
    `max_queue` is handed to the fake model's engine. The store is a SQLite file of the test's."""
    return ServerConfig(**{"max_body_bytes": 64 * 1024, "database_url": f"sqlite:///{tmp_path / 'rill.db'}",
                           **getattr(request, "param", {})})


@pytest.fixture
def engine_slots(request) -> int:
    """Sequences the fake model's engine decodes at once (1: one request at a time, FIFO);
    parametrize indirectly to batch."""
    return getattr(request, "param", 1)


@pytest.fixture
async def app(backend: FakeBackend, config: ServerConfig, engine_slots: int):
    loader = fake_loader(backend, max_queue=config.max_queue, max_running=engine_slots)
    app = create_app(config, loader, expected_models=(MODEL,), exit_on_load_failure=False)
    async with app.router.lifespan_context(app):
        assert await asyncio.to_thread(app.state.loaded.wait, 10)
        if app.state.load_error:
            raise app.state.load_error
        yield app


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://rill.test") as c:
        yield c


@pytest.fixture
async def live_client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=StreamingASGITransport(app), base_url="http://rill.test") as c:
        yield c


@pytest.fixture
def gate(app, backend: GatedBackend) -> Any:
    """The GatedBackend's gate, opened again at teardown before the app stops its engine."""
    yield backend.gate
    backend.gate.set()


# ---- a streaming in-process transport --------------------------------------------------------


class _AppBody(httpx.AsyncByteStream):
    def __init__(self, chunks: asyncio.Queue, disconnected: asyncio.Event, task: asyncio.Task):
        self._chunks = chunks
        self._disconnected = disconnected
        self._task = task

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._chunks.get()) is not None:
            yield chunk

    async def aclose(self) -> None:
        self._disconnected.set()  # the client is gone: the app's receive() says http.disconnect
        # A guard against a hang, not a timing check: the app must end once the client left.
        await asyncio.wait_for(self._task, 10)


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """Like httpx.ASGITransport, but the response body is handed over chunk by chunk as the app
    sends it, and closing the response (or cancelling the request) before the end makes the app's
    `receive()` answer `http.disconnect`, as a real server does when the client goes away."""

    def __init__(self, app: Any):
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": request.url.scheme, "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0], "query_string": request.url.query,
            "server": (request.url.host, request.url.port), "client": ("127.0.0.1", 123),
            "root_path": "",
        }
        body = request.stream.__aiter__()  # type: ignore[union-attr]
        body_done = False
        disconnected = asyncio.Event()
        started: asyncio.Future = asyncio.get_running_loop().create_future()
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def receive() -> dict[str, Any]:
            nonlocal body_done
            if not body_done:
                try:
                    data = await body.__anext__()
                except StopAsyncIteration:
                    body_done = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                return {"type": "http.request", "body": data, "more_body": True}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.set_result((message["status"], message.get("headers", [])))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    chunks.put_nowait(message["body"])
                if not message.get("more_body", False):
                    chunks.put_nowait(None)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:
                if not started.done():
                    started.set_exception(exc)
                    return
                raise
            finally:
                chunks.put_nowait(None)
                if not started.done():
                    started.set_exception(RuntimeError("the app ended without starting a response"))

        task = asyncio.create_task(run())
        try:
            status, headers = await started
        except BaseException:  # cancelled by the caller (client gone), or the app failed
            disconnected.set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
            raise
        return httpx.Response(status, headers=headers, stream=_AppBody(chunks, disconnected, task))


# ---- helpers ------------------------------------------------------------------------------------


def chat(content: str, **fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


DONE = "[DONE]"


def parse_sse(text: str) -> list[Any]:
    """Strictly parse an SSE body of `data: <json>\\n\\n` events ending with `data: [DONE]\\n\\n`
    (when present): the JSON objects, and the string "[DONE]" for the sentinel. Anything else
    (other fields, comments, stray newlines, bad JSON) fails the test."""
    assert text.endswith("\n\n"), f"stream does not end with a blank line: {text[-80:]!r}"
    events: list[Any] = []
    for raw in text[:-2].split("\n\n"):
        assert raw.startswith("data: "), f"not a `data: ` event: {raw!r}"
        payload = raw[len("data: "):]
        assert "\n" not in payload and "\r" not in payload, f"multi-line event: {raw!r}"
        if payload == DONE:
            events.append(DONE)
        else:
            obj = json.loads(payload)
            assert isinstance(obj, dict), raw
            events.append(obj)
    assert DONE not in events[:-1], "[DONE] before the end of the stream"
    return events


def chunks_of(events: list[Any]) -> list[dict]:
    """The `chat.completion.chunk` objects of a parsed stream ([DONE] dropped)."""
    return [e for e in events if e != DONE]


def stream_text(events: list[Any]) -> str:
    """The assistant text of a parsed stream: its content deltas joined."""
    return "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks_of(events) if c.get("choices"))


def finish_reason_of(events: list[Any]) -> str | None:
    reasons = [c["choices"][0]["finish_reason"] for c in chunks_of(events)
               if c.get("choices") and c["choices"][0]["finish_reason"] is not None]
    assert len(reasons) == 1, f"expected exactly one finish chunk, got {reasons}"
    return reasons[0]


def chatml_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """Tokens the fake model sees for these messages, worked out independently of the server:
    ChatML (`<|im_start|>role\\ncontent<|im_end|>\\n` per message, then `<|im_start|>assistant\\n`)
    over a vocabulary of single bytes plus the two control tokens."""
    per_message = sum(1 + len(m["role"].encode()) + 1 + len(m["content"].encode()) + 1 + 1
                      for m in messages)
    return per_message + 1 + len(b"assistant\n")


def assert_error(r: httpx.Response, status: int, *, type: str | None = None, code: Any = ...,
                 param: Any = ...) -> dict:
    """`r` is an OpenAI-shaped JSON error with this status; returns the `error` object."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers["content-type"]
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    if type is not None:
        assert err["type"] == type, err
    if code is not ...:
        assert err["code"] == code, err
    if param is not ...:
        assert err["param"] == param, err
    return err


def engine_of(app) -> Engine:
    return app.state.router.resolve(MODEL).engine


async def wait_until(condition: Callable[[], bool], *, what: str, deadline: float = 5.0) -> None:
    """Poll `condition` (bounded); fail with `what` if it does not become true in time."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        if loop.time() > end:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.005)


def engine_idle(app, backend: FakeBackend) -> bool:
    """Nothing running or waiting, and the backend holds no cache but what idle slots keep for
    prefix reuse."""
    engine = engine_of(app)
    held = {seq_id: tokens for seq_id, tokens in backend._seqs.items() if tokens}
    return engine.num_running == 0 and engine.num_waiting == 0 and held == engine._loop.slots.cached()
