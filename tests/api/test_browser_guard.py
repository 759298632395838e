"""The browser guard on the fake model (docs/security.md): the Host check against DNS rebinding, the
Origin check with its CORS answers, JSON-only bodies from browsers, and what stays open to curl
and SDKs. The client's base URL is http://rill.test: the address the in-process server is reached
at, so that name is served as the listening address would be."""

from __future__ import annotations

import json

import pytest

from rill.api.http.browser_guard import BrowserGuard, BrowserPolicy
from tests.api.conftest import CHAT_URL, assert_error, chat

FOREIGN = "http://evil.example"
UI_ORIGIN = "http://rill.test"  # the bundled UI's pages: same origin as the API
APP_ORIGIN = "http://localhost:3000"
WITH_APP = pytest.mark.parametrize("config", [{"cors_origins": (APP_ORIGIN,)}], indirect=True)
BODY = chat("hi", max_tokens=2)
JSON_BODY = {"content-type": "application/json"}


def assert_no_cors(r) -> None:
    assert not any(name.lower().startswith("access-control-") for name in r.headers), dict(r.headers)


@pytest.mark.parametrize("host", ["rill.test", "127.0.0.1", "127.0.0.1:8000", "[::1]:8000", "localhost",
                                  "localhost:1234", "LOCALHOST.", "10.1.2.3:80", "[fe80::1]"])
async def test_ip_literals_localhost_and_the_servers_own_address_are_served(client, host):
    r = await client.get("/v1/models", headers={"host": host})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "rebind.test", "localhost.evil.example",
                                  "127.0.0.1.nip.io", "rill.test.evil.example"])
async def test_other_names_are_refused_naming_the_flag(client, backend, host):
    r = await client.post(CHAT_URL, json=BODY, headers={"host": host})
    err = assert_error(r, 403, type="invalid_request_error", code="host_not_allowed", param=None)
    assert "--allowed-hosts" in err["message"] and "RILL_ALLOWED_HOSTS" in err["message"]
    assert host.partition(":")[0] in err["message"]
    assert backend.num_forwards == 0  # no completion started


@pytest.mark.parametrize("config", [{"allowed_hosts": ("rill.example.com", ".lan")}], indirect=True)
@pytest.mark.parametrize("host, status", [("rill.example.com", 200), ("RILL.example.com:443", 200), ("lan", 200),
                                          ("gpu-box.lan", 200), ("a.b.lan:8000", 200), ("example.com", 403),
                                          ("other.example.com", 403), ("evillan", 403)])
async def test_allowed_hosts_adds_names_and_domains(client, host, status):
    r = await client.get("/v1/models", headers={"host": host})
    assert r.status_code == status, r.text


@pytest.mark.parametrize("config", [{"allowed_hosts": ("*",)}], indirect=True)
async def test_a_star_serves_any_name(client):
    assert (await client.get("/v1/models", headers={"host": "anything.example"})).status_code == 200


@pytest.mark.parametrize("config", [{"host": "gpu-box"}], indirect=True)
async def test_the_host_flags_name_is_served(client):
    assert (await client.get("/v1/models", headers={"host": "gpu-box:8000"})).status_code == 200
    assert (await client.get("/v1/models", headers={"host": "other-box:8000"})).status_code == 403


@pytest.mark.parametrize("hosts", [["exa mple"], ["a:b:c"], ["[::1"], ["rill.test:port"],
                                   ["rill.test", "evil.example"]])
async def test_a_malformed_or_repeated_host_header_is_a_400(client, hosts):
    r = await client.get("/v1/models", headers=[("host", h) for h in hosts])
    assert_error(r, 400, type="invalid_request_error")


@pytest.mark.parametrize("config", [{"api_keys": ("operator-secret-0123456789",)}], indirect=True)
async def test_the_host_check_comes_before_the_key_check(client):
    r = await client.get("/v1/models", headers={"host": "evil.example"})
    assert_error(r, 403, code="host_not_allowed")


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "application/json"])
async def test_a_foreign_page_can_neither_start_a_completion(client, backend, content_type):
    r = await client.post(CHAT_URL, json=BODY, headers={"origin": FOREIGN, "content-type": content_type,
                                                         "sec-fetch-site": "cross-site", "sec-fetch-mode": "cors"})
    err = assert_error(r, 403, code="origin_not_allowed")
    assert "--cors-origins http://evil.example" in err["message"] and "RILL_CORS_ORIGINS" in err["message"]
    assert_no_cors(r)  # the page cannot even read the refusal
    assert r.headers["vary"] == "Origin"
    assert backend.num_forwards == 0


async def test_nor_read_one(client):
    created = await client.post(CHAT_URL, json=chat("secret", max_tokens=2, store=True))
    assert created.status_code == 200, created.text
    for path in ("/v1/traces", CHAT_URL, f"{CHAT_URL}/{created.json()['id']}", "/metrics"):
        r = await client.get(path, headers={"origin": FOREIGN})
        assert_error(r, 403, code="origin_not_allowed")
        assert_no_cors(r)


async def test_a_foreign_preflight_is_refused_without_cors_headers(client):
    r = await client.options(CHAT_URL, headers={"origin": FOREIGN, "access-control-request-method": "POST",
                                                "access-control-request-headers": "content-type"})
    assert_error(r, 403, code="origin_not_allowed")
    assert_no_cors(r)


@pytest.mark.parametrize("origin", ["null", "file://", "http://rill.test/path", "not a url"])
async def test_origins_that_are_no_http_origin_are_foreign(client, origin):
    assert_error(await client.get("/v1/models", headers={"origin": origin}), 403, code="origin_not_allowed")


@pytest.mark.parametrize("fetch", [{"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"},
                                   {"sec-fetch-site": "same-site", "sec-fetch-mode": "cors"},
                                   {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate",
                                    "sec-fetch-dest": "iframe"}])
async def test_cross_site_requests_without_an_origin_are_refused(client, fetch):
    """<script src>, <img src>, a frame: no Origin header, but the browser says where it came from."""
    assert_error(await client.get("/v1/traces", headers=fetch), 403, code="origin_not_allowed")


async def test_a_link_from_another_site_opens_the_web_ui(client):
    r = await client.get("/", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate",
                                       "sec-fetch-dest": "document"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")


async def test_the_bundled_ui_is_same_origin(client, backend):
    headers = {"origin": UI_ORIGIN, "sec-fetch-site": "same-origin", **JSON_BODY}
    r = await client.post(CHAT_URL, json=BODY, headers=headers)
    assert r.status_code == 200, r.text
    assert_no_cors(r)  # same-origin needs none
    assert (await client.get("/v1/traces", headers={"sec-fetch-site": "same-origin"})).status_code == 200


@pytest.mark.parametrize("headers", [{"origin": UI_ORIGIN}, {"sec-fetch-site": "same-origin"},
                                     {"sec-fetch-site": "none"}])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; b=x"])
async def test_a_browser_body_must_be_json(client, backend, headers, content_type):
    r = await client.post(CHAT_URL, json=BODY, headers={**headers, "content-type": content_type})
    err = assert_error(r, 415, code="unsupported_media_type")
    assert "application/json" in err["message"]
    assert backend.num_forwards == 0


async def test_a_browser_body_with_json_parameters_or_no_type_is_read(client):
    for content_type in ("application/json; charset=utf-8", "Application/JSON", None):
        request = client.build_request("POST", CHAT_URL, json=BODY, headers={"origin": UI_ORIGIN})
        if content_type is None:
            del request.headers["content-type"]
        else:
            request.headers["content-type"] = content_type
        r = await client.send(request)
        assert r.status_code == 200, (content_type, r.text)


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain"])
async def test_curl_d_keeps_working(client, content_type):
    """`curl -d '{...}'` sends a form content type and no Origin: not a browser, so its JSON is read."""
    r = await client.post(CHAT_URL, content=json.dumps(BODY),
                          headers={"content-type": content_type, "user-agent": "curl/8.5.0"})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"


@WITH_APP
async def test_an_allowed_origins_preflight_is_answered(client):
    r = await client.options(CHAT_URL, headers={
        "origin": APP_ORIGIN, "access-control-request-method": "POST",
        "access-control-request-headers": "Authorization, Content-Type, X-Stainless-OS, bad header"})
    assert r.status_code == 204 and r.content == b""
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN
    methods = {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PATCH", "DELETE"} <= methods
    allowed = {h.strip() for h in r.headers["access-control-allow-headers"].split(",")}
    assert allowed == {"authorization", "content-type", "x-stainless-os"}  # "bad header" is no header name
    assert int(r.headers["access-control-max-age"]) > 0
    assert r.headers["vary"] == "Origin"


@WITH_APP
async def test_an_allowed_origin_reads_answers_and_their_headers(client):
    r = await client.post(CHAT_URL, json=BODY, headers={"origin": APP_ORIGIN, "sec-fetch-site": "same-site"})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = {h.strip() for h in r.headers["access-control-expose-headers"].split(",")}
    assert "x-rill-span-id" in exposed and "x-rill-span-id" in r.headers
    assert "Origin" in r.headers["vary"]
    traces = await client.get("/v1/traces", headers={"origin": APP_ORIGIN})
    assert traces.status_code == 200 and traces.headers["access-control-allow-origin"] == APP_ORIGIN


@WITH_APP
async def test_an_allowed_origin_reads_its_refusals_too(client):
    r = await client.post(CHAT_URL, json=BODY, headers={"origin": APP_ORIGIN, "content-type": "text/plain"})
    assert_error(r, 415, code="unsupported_media_type")
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN


@WITH_APP
async def test_other_origins_stay_refused(client):
    for origin in ("http://localhost:3001", "https://localhost:3000", FOREIGN):
        r = await client.get("/v1/models", headers={"origin": origin})
        assert_error(r, 403, code="origin_not_allowed")
        assert_no_cors(r)


@pytest.mark.parametrize("config", [{"cors_origins": ("*",)}], indirect=True)
async def test_a_star_allows_every_origin(client):
    r = await client.get("/v1/models", headers={"origin": FOREIGN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == FOREIGN


@pytest.mark.parametrize("config", [{"api_keys": ("operator-secret-0123456789",),
                                     "cors_origins": (APP_ORIGIN,)}], indirect=True)
async def test_a_preflight_needs_no_key_but_the_request_does(client):
    """Browsers send preflights without the Authorization header they ask about."""
    r = await client.options("/v1/models", headers={"origin": APP_ORIGIN, "access-control-request-method": "GET",
                                                    "access-control-request-headers": "authorization"})
    assert r.status_code == 204
    r = await client.get("/v1/models", headers={"origin": APP_ORIGIN})
    assert_error(r, 401, code="invalid_api_key")
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN  # the page can tell the key is missing


async def test_refusals_are_refused_before_the_body_is_read_and_counted(client):
    huge = b"x" * (128 * 1024)  # past the test config's 64 KiB body limit: reading it would be a 413
    r = await client.post(CHAT_URL, content=huge, headers={"origin": FOREIGN, "content-type": "application/json"})
    assert_error(r, 403, code="origin_not_allowed")
    metrics = (await client.get("/metrics")).text
    assert 'rill_http_requests_total{method="POST",route="/v1/chat/completions",status="403"} 1.0' in metrics


async def test_websockets_get_the_host_and_origin_checks():
    """Rill serves no WebSocket yet; one added later is guarded too (a refusal closes it, 1008)."""
    reached, sent = [], []

    async def inner(scope, receive, send):
        reached.append(scope["type"])

    async def send(message):
        sent.append(message)

    guard = BrowserGuard(inner, BrowserPolicy(cors_origins=(APP_ORIGIN,)))
    for host, origin in (("127.0.0.1:8000", FOREIGN), ("rebind.test:8000", APP_ORIGIN)):
        sent.clear()
        scope = {"type": "websocket", "path": "/ws", "server": ("127.0.0.1", 8000),
                 "headers": [(b"host", host.encode()), (b"origin", origin.encode())]}
        await guard(scope, None, send)
        assert sent == [{"type": "websocket.close", "code": 1008}] and reached == [], (host, origin)
    scope = {"type": "websocket", "path": "/ws", "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"127.0.0.1:8000"), (b"origin", APP_ORIGIN.encode())]}
    await guard(scope, None, send)
    assert reached == ["websocket"]
