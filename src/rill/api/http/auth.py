"""API keys: who is calling, checked on every request but `GET /health`.

The server is open (local use: no header needed, any header ignored, everything owned by
OPEN_OWNER) while it has no keys. It has keys when `rill serve` was given `--api-key` (the
operator's keys: admin) or the database has keys (`rill keys create`; revoked ones count, so
revoking every key locks the server rather than opening it); then every
request needs `Authorization: Bearer <key>` or `x-api-key: <key>` (Anthropic's header, which its
SDK and Claude Code send), and a missing, unknown or revoked one is a 401 (in the error shape of
the protocol the path belongs to: http/errors.py's error_response).

`rill keys` runs in another process, so the database is asked again after CACHE_TTL_S: a key
created or revoked there takes effect here within that many seconds (and so does the first key
closing an open server). Until then a request costs a dict
lookup. The middleware puts the Caller in the request's state; routes ask owner_of() (who owns
what this request creates) and scope_of() (whose objects it may read).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from rill.api.http.errors import STORE_UNAVAILABLE, error_response
from rill.errors import AuthenticationError
from rill.store.completions import OPEN_OWNER
from rill.store.keys import KeyStore, secret_hash

log = logging.getLogger("rill.api")

CACHE_TTL_S = 2.0  # how stale a key's state (and open vs keyed) may be
MAX_CACHED = 4096  # secrets remembered (good and bad); the oldest is dropped beyond this
PUBLIC = frozenset({("GET", "/health"), ("HEAD", "/health"),  # load balancers probe without a key
                    ("GET", "/"), ("HEAD", "/")})  # the web UI's page: no data in it
PUBLIC_PREFIXES = ("/ui/",)  # the web UI's scripts and styles


@dataclass(frozen=True, slots=True)
class Caller:
    owner: str  # what this request's spans and completions are owned by: a key id, or OPEN_OWNER
    admin: bool  # reads see every owner's objects


OPEN = Caller(OPEN_OWNER, admin=False)


def operator_key_id(secret: str) -> str:
    """The id of an `--api-key`: derived from the secret, so it is the same after a restart and
    the key's objects stay its own."""
    return "key_" + secret_hash(secret)[:12]


class Authenticator:
    """Secret -> Caller, through the operator's keys and a TTL cache over the KeyStore."""

    def __init__(self, operator_keys: Iterable[str], store: KeyStore, *, ttl: float = CACHE_TTL_S,
                 clock: Callable[[], float] = time.monotonic, max_cached: int = MAX_CACHED):
        # A dict lookup compares the secret only on a (randomised) hash match: no timing oracle.
        self._operator = {key: Caller(operator_key_id(key), admin=True) for key in operator_keys}
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._max_cached = max_cached
        self._cache: dict[str, tuple[float, Caller | None]] = {}  # secret -> (expires, caller or refused)
        self._keyed: bool | None = True if self._operator else None  # None: not asked yet
        self._keyed_until = math.inf if self._operator else -math.inf  # the operator's keys never lapse
        self._refreshing = asyncio.Lock()
        if self._operator:
            log.info("API keys: every request but GET /health needs a key (%d from --api-key, and the "
                     "database's)", len(self._operator))

    async def is_open(self) -> bool:
        if self._clock() >= self._keyed_until:
            async with self._refreshing:  # one query per TTL, however many requests arrive meanwhile
                if self._clock() >= self._keyed_until:
                    keyed = await self._store.has_keys()
                    if keyed != self._keyed:
                        log.info("API keys: %s", "every request but GET /health needs a key" if keyed
                                 else "the database has no keys, the server is open")
                    self._keyed, self._keyed_until = keyed, self._clock() + self._ttl
        return not self._keyed

    async def identify(self, secret: str | None) -> Caller | None:
        """The caller a request's bearer secret names; None: refuse the request."""
        if await self.is_open():
            return OPEN
        if secret is None:
            return None
        caller = self._operator.get(secret)
        if caller is not None:
            return caller
        cached = self._cache.get(secret)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        record = await self._store.lookup(secret)
        caller = None if record is None else Caller(record.id, record.admin)
        self._remember(secret, caller)
        return caller

    def _remember(self, secret: str, caller: Caller | None) -> None:
        self._cache.pop(secret, None)  # re-inserted at the end: the dict stays oldest-first
        self._cache[secret] = (self._clock() + self._ttl, caller)
        if len(self._cache) > self._max_cached:
            del self._cache[next(iter(self._cache))]


def request_secret(scope: Scope) -> str | None:
    """The key a request carries: its Bearer token, else its `x-api-key` header, else None."""
    secret = bearer_secret(scope)
    if secret is None:
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                return value.decode("latin-1").strip() or None
    return secret


def bearer_secret(scope: Scope) -> str | None:
    """The token of `Authorization: Bearer <token>` (scheme in any case), or None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


class ApiKeyAuth:
    """Pure-ASGI middleware: refuses requests without a valid key (401 in the path's protocol's
    error shape, `WWW-Authenticate: Bearer`) and puts the Caller in scope["state"] (Starlette's request.state).
    It reads the Authenticator the lifespan put in `app.state.auth`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] not in ("http", "websocket") or (scope.get("method"), scope["path"]) in PUBLIC
                or (scope.get("method") in ("GET", "HEAD") and scope["path"].startswith(PUBLIC_PREFIXES))):
            return await self.app(scope, receive, send)
        secret = request_secret(scope)
        try:
            caller = await scope["app"].state.auth.identify(secret)
        except (SQLAlchemyError, OSError) as exc:  # the key store is down: not the client's fault
            log.error("API keys: the database failed: %s", exc)
            return await error_response(STORE_UNAVAILABLE, scope["path"])(scope, receive, send)
        if caller is None:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})  # policy violation
            refused = AuthenticationError(
                "Incorrect API key provided." if secret else
                "You didn't provide an API key. Send it in an Authorization header using Bearer auth "
                "(Authorization: Bearer YOUR_KEY), or in an x-api-key header.")
            return await error_response(refused, scope["path"])(scope, receive, send)
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


def caller_of(request: HTTPConnection) -> Caller:
    try:
        return request.state.caller
    except AttributeError:
        raise RuntimeError("the request has no caller: ApiKeyAuth is not installed") from None


def owner_of(request: HTTPConnection) -> str:
    """Who owns the objects this request creates: its key's id, or OPEN_OWNER on an open server."""
    return caller_of(request).owner


def scope_of(request: HTTPConnection) -> str | None:
    """The owner filter for this request's reads, updates and deletes: None (everything) for an
    admin key, else owner_of(request)."""
    caller = caller_of(request)
    return None if caller.admin else caller.owner
