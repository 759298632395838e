"""The FastAPI app: routes, error handling, body limit, and a lifespan that loads the models in
the background (so /health can answer 503 meanwhile) and stops their engines on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import httpx
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from rill import __version__
from rill.api import health, tokens
from rill.api.admin import spans, stored, upstreams
from rill.api.metrics import route as metrics
from rill.api.protocols.chat import route as chat
from rill.api.protocols.completions import route as completions
from rill.api.protocols.messages import route as messages
from rill.api.protocols.responses import route as responses
from rill.api.http.auth import ApiKeyAuth, Authenticator
from rill.api.http.browser_guard import BrowserGuard, BrowserPolicy
from rill.api.http.errors import BodyLimit, install_error_handlers
from rill.api.metrics.route import install_metrics
from rill.api.speech_setup import open_speech
from rill.api.ui import mount_ui
from rill.api.admin.schemas import CreateSpan, UpdateSpan, UpdateStoredCompletion
from rill.api.protocols.chat.schemas import ChatCompletionRequest
from rill.api.protocols.completions.schemas import CompletionRequest
from rill.api.protocols.messages.schemas import CountMessageTokensRequest, MessagesRequest
from rill.api.protocols.responses.schemas import ResponseRequest
from rill.api.token_schemas import (DetokenizeRequest, LlamaServerTokenizeRequest, TokenizeRequest,
                                    VllmChatTokenizeRequest, VllmTokenizeRequest)
from rill.backends.upstream import Pool
from rill.config import ServerConfig, UpstreamConfig
from rill.router import Router, UpstreamModel
from rill.search.providers import open_provider
from rill.store.completions import CompletionStore
from rill.store.responses import ResponseStore
from rill.store.database import default_database_url, open_database
from rill.store.keys import KeyStore
from rill.store.retention import Retention
from rill.store.spans import SpanStore
from rill.store.transcripts import TranscriptStore
from rill.store.writer import SpanWriter
from rill.telemetry.settings import OtelConfig
from rill.upstreams.replica_set import ReplicaSet

if TYPE_CHECKING:
    from rill.telemetry.tracer import Telemetry

log = logging.getLogger("rill.api")

# Loads models into the router; runs on a background thread at start-up.
ModelLoader = Callable[[Router], None]


def create_app(config: ServerConfig, load_models: ModelLoader, *, expected_models: tuple[str, ...] = (),
               exit_on_load_failure: bool = True,
               upstream_pool: Pool | None = None,
               search_transport: httpx.AsyncBaseTransport | None = None,
               span_exporter: Any = None) -> FastAPI:
    """`load_models` adds the local models (on a thread: it takes seconds); the upstream models
    of `config.models` are added here. `upstream_pool` and `search_transport` replace the
    network, `span_exporter` the OTLP exporter when config.otel is set (tests)."""
    telemetry = open_telemetry(config.otel, span_exporter) if config.otel is not None else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        router = Router()
        for model_id in expected_models:
            router.expect(model_id)
        for model in config.models:
            if isinstance(model, UpstreamConfig):
                replicas = ReplicaSet(model, pool=upstream_pool)
                replicas.start()  # its active health checks
                router.add(UpstreamModel(id=model.id, upstream=replicas,
                                         aliases=frozenset(model.aliases), fallbacks=model.fallbacks))
        if isinstance(config.models[0], UpstreamConfig):  # the first configured model is the default
            router.default_id = config.models[0].id
        app.state.router = router
        app.state.config = config
        app.state.load_error = None
        app.state.loaded = loaded = threading.Event()  # set when loading ended, well or not

        def load() -> None:
            try:
                load_models(router)
            except Exception as exc:
                app.state.load_error = exc
                log.exception("loading the model failed")
                if exit_on_load_failure:
                    os.kill(os.getpid(), signal.SIGTERM)
            finally:
                loaded.set()

        database = await open_database(config.database_url or default_database_url())
        app.state.completions = CompletionStore(database)
        app.state.responses = ResponseStore(database)
        app.state.spans = SpanStore(database)
        app.state.span_writer = writer = SpanWriter(app.state.spans)
        writer.start()
        retention = None
        if config.retention_days is not None:
            retention = Retention(app.state.completions, app.state.spans, config.retention_days,
                                  responses=app.state.responses)
            retention.start()
        app.state.keys = KeyStore(database)
        app.state.auth = Authenticator(config.api_keys, app.state.keys)
        app.state.transcripts = TranscriptStore(database)
        app.state.speech, app.state.no_speech = open_speech(config.audio)
        app.state.search = open_provider(config.search, transport=search_transport) if config.search else None
        loader = threading.Thread(target=load, name="rill-loader", daemon=True)
        loader.start()
        try:
            yield
        finally:
            loader.join()
            if app.state.speech is not None:
                app.state.speech.close()
            if app.state.search is not None:
                await app.state.search.aclose()
            router.close()
            await router.aclose()
            await writer.close()
            if telemetry is not None:
                await asyncio.to_thread(telemetry.shutdown)  # exports what is queued (a few seconds at most)
            if retention is not None:
                await retention.close()
            await database.dispose()

    app = FastAPI(
        title="Rill",
        version=__version__,
        description="Self-hosted, streaming-first OpenAI-compatible chat completions.",
        lifespan=lifespan,
        **NO_FASTAPI_TELEMETRY,
    )
    install_error_handlers(app)
    app.state.telemetry = telemetry
    protocols = (chat, responses, messages, completions)
    app.router.routes[0:0] = [r for p in protocols for r in p.fast_routes]  # matched first: see protocols/chat/route.py
    for protocol in protocols:
        app.include_router(protocol.router)
    app.include_router(stored.router)
    app.include_router(spans.router)
    app.include_router(upstreams.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(tokens.router)
    mount_ui(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(ApiKeyAuth)  # outside BodyLimit: a refused request's body is never read
    # outside ApiKeyAuth: a foreign page's request costs no key lookup (docs/security.md)
    app.add_middleware(BrowserGuard, policy=BrowserPolicy.of(config))
    if telemetry is not None:  # the generation routes' SERVER spans; inside the metrics, outside auth
        install_server_spans(app, telemetry, frozenset(r.path for p in protocols for r in p.fast_routes))
    install_metrics(app)  # last: the outermost middleware, so it counts the 401s, 403s and 413s too
    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    return app


# FastAPI 0.16x traces every request itself once any library sets a global tracer provider;
# Rill's own SERVER spans (rill.telemetry.server) stand for those, so FastAPI's stay off.
NO_FASTAPI_TELEMETRY: dict[str, Any] = ({"telemetry": {"tracing": False, "metrics": False, "logs": False}}
                                        if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})


def open_telemetry(config: OtelConfig, exporter: Any) -> Telemetry:
    from rill.telemetry.tracer import Telemetry  # the `otel` extra: loaded only when spans are exported

    return Telemetry(config, exporter)


def install_server_spans(app: FastAPI, telemetry: Telemetry, paths: frozenset[str]) -> None:
    from rill.telemetry.server import ServerSpans

    app.add_middleware(ServerSpans, telemetry=telemetry, paths=paths)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the request schemas of the bodies parsed by hand (see protocols/chat/route.py)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (ChatCompletionRequest, TokenizeRequest, LlamaServerTokenizeRequest, VllmTokenizeRequest,
                      VllmChatTokenizeRequest, DetokenizeRequest, UpdateStoredCompletion, CreateSpan, UpdateSpan,
                      MessagesRequest, CountMessageTokensRequest, CompletionRequest, ResponseRequest):
            request = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(request.pop("$defs", {}))
            components[model.__name__] = request
        app.openapi_schema = schema
    return app.openapi_schema
