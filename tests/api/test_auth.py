"""API keys on the fake model: an open server needs no key; with `--api-key` or database keys every
endpoint but /health needs `Authorization: Bearer`, a bad one is OpenAI's 401; keys made or
revoked while the server runs take effect after the cache's TTL (an injected clock moves it)."""

from __future__ import annotations

import hashlib

import pytest

from rill.api.http.auth import CACHE_TTL_S, Authenticator, Caller, operator_key_id
from rill.config import ServerConfig
from rill.errors import ConfigError
from tests.api.conftest import CHAT_URL, assert_error, chat

OPERATOR_KEY = "operator-secret-0123456789"
KEYED = pytest.mark.parametrize("config", [{"api_keys": (OPERATOR_KEY,)}], indirect=True)

# Every kind of endpoint: model list, metrics, chat, stored completions, tokenizer, API docs.
PROTECTED = [
    ("GET", "/v1/models", None), ("GET", "/metrics", None), ("POST", CHAT_URL, chat("hi", max_tokens=2)),
    ("POST", CHAT_URL, chat("hi", max_tokens=2, stream=True)), ("GET", CHAT_URL, None),
    ("GET", f"{CHAT_URL}/chatcmpl-x", None), ("DELETE", f"{CHAT_URL}/chatcmpl-x", None),
    ("POST", "/tokenize", {"content": "hi"}), ("GET", "/openapi.json", None), ("GET", "/v1/nowhere", None),
]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingStore:
    """A KeyStore that counts the queries the Authenticator makes."""

    def __init__(self, store) -> None:
        self.store, self.lookups, self.checks = store, 0, 0

    async def lookup(self, secret: str):
        self.lookups += 1
        return await self.store.lookup(secret)

    async def has_keys(self) -> bool:
        self.checks += 1
        return await self.store.has_keys()


@pytest.fixture
def clock(app) -> Clock:
    """The app's Authenticator rebuilt on a clock the test moves."""
    clock = Clock()
    app.state.auth = Authenticator(app.state.config.api_keys, app.state.keys, clock=clock)
    return clock


@pytest.fixture
def counted(app, clock) -> CountingStore:
    store = CountingStore(app.state.keys)
    app.state.auth = Authenticator(app.state.config.api_keys, store, clock=clock)  # type: ignore[arg-type]
    return store


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def send(client, method: str, path: str, body, headers=None):
    return await client.request(method, path, json=body, headers=headers or {})


def assert_refused(r, *, missing: bool) -> None:
    err = assert_error(r, 401, type="authentication_error", code="invalid_api_key", param=None)
    assert r.headers["www-authenticate"] == "Bearer"
    assert ("didn't provide an API key" in err["message"]) == missing, err


async def test_an_open_server_needs_no_key_and_ignores_one(client):
    for headers in ({}, bearer("anything-the-client-sends"), {"Authorization": "Basic eDp5"}):
        assert (await client.get("/v1/models", headers=headers)).status_code == 200
        r = await client.post(CHAT_URL, json=chat("hi", max_tokens=2), headers=headers)
        assert r.status_code == 200, r.text


@KEYED
@pytest.mark.parametrize("method, path, body", PROTECTED)
async def test_every_endpoint_needs_the_key(client, method, path, body):
    assert_refused(await send(client, method, path, body), missing=True)
    assert_refused(await send(client, method, path, body, {"Authorization": "Basic eDp5"}), missing=True)
    assert_refused(await send(client, method, path, body, bearer("")), missing=True)
    assert_refused(await send(client, method, path, body, bearer(OPERATOR_KEY + "x")), missing=False)
    r = await send(client, method, path, body, bearer(OPERATOR_KEY))
    assert r.status_code != 401, r.text


@KEYED
async def test_the_key_is_accepted_in_any_scheme_case(client):
    assert (await client.get("/v1/models", headers={"Authorization": f"bearer  {OPERATOR_KEY} "})).status_code == 200


@KEYED
async def test_health_is_open(client):
    r = await client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert (await client.get("/health", headers=bearer("wrong-key-0123456789"))).status_code == 200


@KEYED
async def test_a_refused_request_never_reaches_the_model(client, app):
    r = await client.post(CHAT_URL, json=chat("hi", store=True))
    assert_refused(r, missing=True)
    assert (await app.state.completions.list(None))[0] == []


async def test_a_database_key_closes_the_server_within_the_ttl(client, app, clock):
    assert (await client.get("/v1/models")).status_code == 200
    _, secret = await app.state.keys.create("alice")
    assert (await client.get("/v1/models")).status_code == 200, "open until the TTL passes"
    clock.advance(CACHE_TTL_S)
    assert_refused(await client.get("/v1/models"), missing=True)
    assert (await client.get("/v1/models", headers=bearer(secret))).status_code == 200


async def test_a_revoked_key_is_refused_after_the_ttl(client, app, clock):
    alice, alice_secret = await app.state.keys.create("alice")
    _, bob_secret = await app.state.keys.create("bob")
    assert (await client.get("/v1/models", headers=bearer(alice_secret))).status_code == 200
    assert await app.state.keys.revoke(alice.id)
    clock.advance(CACHE_TTL_S / 2)
    assert (await client.get("/v1/models", headers=bearer(alice_secret))).status_code == 200, "cached"
    clock.advance(CACHE_TTL_S / 2)
    assert_refused(await client.get("/v1/models", headers=bearer(alice_secret)), missing=False)
    assert (await client.get("/v1/models", headers=bearer(bob_secret))).status_code == 200


async def test_revoking_the_last_key_locks_the_server(client, app, clock):
    """Not open again: a server that once needed keys never silently stops needing them."""
    alice, secret = await app.state.keys.create("alice")
    assert_refused(await client.get("/v1/models"), missing=True)
    await app.state.keys.revoke(alice.id)
    clock.advance(CACHE_TTL_S)
    assert_refused(await client.get("/v1/models"), missing=True)
    assert_refused(await client.get("/v1/models", headers=bearer(secret)), missing=False)


@KEYED
async def test_operator_and_database_keys_work_together(client, app):
    _, secret = await app.state.keys.create("alice")
    for key in (OPERATOR_KEY, secret):
        assert (await client.get("/v1/models", headers=bearer(key))).status_code == 200


async def test_an_open_server_asks_the_store_once_per_ttl(client, counted, clock):
    for _ in range(5):
        assert (await client.get("/v1/models")).status_code == 200
    assert counted.checks == 1 and counted.lookups == 0
    clock.advance(CACHE_TTL_S)
    assert (await client.get("/v1/models")).status_code == 200
    assert counted.checks == 2


async def test_a_key_is_looked_up_once_per_ttl_found_or_not(client, app, counted, clock):
    _, secret = await app.state.keys.create("alice")
    for _ in range(3):
        assert (await client.get("/v1/models", headers=bearer(secret))).status_code == 200
        assert_refused(await client.get("/v1/models", headers=bearer("wrong-key-0123456789")), missing=False)
    assert counted.lookups == 2 and counted.checks == 1
    clock.advance(CACHE_TTL_S)
    assert (await client.get("/v1/models", headers=bearer(secret))).status_code == 200
    assert counted.lookups == 3 and counted.checks == 2


@KEYED
async def test_the_operator_key_never_touches_the_store(client, counted):
    for _ in range(3):
        assert (await client.get("/v1/models", headers=bearer(OPERATOR_KEY))).status_code == 200
    assert counted.checks == 0 and counted.lookups == 0


async def test_the_cache_is_bounded_and_drops_the_oldest(app, clock):
    store = CountingStore(app.state.keys)
    auth = Authenticator((), store, clock=clock, max_cached=2)  # type: ignore[arg-type]
    made = [await app.state.keys.create(name) for name in ("a", "b", "c")]
    callers = [await auth.identify(secret) for _, secret in made]
    assert callers == [Caller(record.id, admin=False) for record, _ in made] and store.lookups == 3
    await auth.identify(made[2][1])  # still cached
    assert store.lookups == 3
    await auth.identify(made[0][1])  # dropped when "c" came in
    assert store.lookups == 4


async def test_an_operator_key_is_an_admin_with_an_id_stable_across_restarts(app, clock):
    auth = Authenticator((OPERATOR_KEY,), app.state.keys, clock=clock)
    expected = "key_" + hashlib.sha256(OPERATOR_KEY.encode()).hexdigest()[:12]
    assert operator_key_id(OPERATOR_KEY) == expected
    assert await auth.identify(OPERATOR_KEY) == Caller(expected, admin=True)
    assert await auth.identify(None) is None and await auth.identify("wrong-key-0123456789") is None
    admin, secret = await app.state.keys.create("root", admin=True)
    assert await auth.identify(secret) == Caller(admin.id, admin=True)


@pytest.mark.parametrize("keys", [("",), ("short-key",), ("has a space in it, long enough",),
                                  ("tab\tseparated-0123456789",), (OPERATOR_KEY, "x" * 15)])
def test_unusable_operator_keys_are_config_errors_that_do_not_echo_them(keys):
    with pytest.raises(ConfigError) as raised:
        ServerConfig(api_keys=keys)
    assert "16 characters" in raised.value.message
    assert not any(k and k in raised.value.message for k in keys)


def test_the_config_repr_hides_the_keys():
    assert OPERATOR_KEY not in repr(ServerConfig(api_keys=(OPERATOR_KEY,)))
