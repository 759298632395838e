"""Web pages against a key-less `rill serve`, in headless chromium (docs/security.md): a page of
another origin can neither start a completion nor read one, with text/plain or JSON, with CORS or
without; a page reached by DNS rebinding (chromium's --host-resolver-rules maps rebind.test to
127.0.0.1) is refused by the Host check; a page of an origin given with --cors-origins can call
the API. What the page sees is checked in the page, what reached the model on the server
(/metrics, the trace list)."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.browser.conftest import CHROMIUM
from tests.e2e.support import CLIENT_TIMEOUT_S, MODEL, RillFactory, RillServer, free_port

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the test extras install it
    sync_playwright = None  # type: ignore[assignment]

# Names chromium resolves to 127.0.0.1 itself: a foreign site, a rebinding attacker's name, and an
# app the operator allows. Being local, the pages may call 127.0.0.1 (Private Network Access).
RESOLVER_RULES = "MAP evil.test 127.0.0.1, MAP rebind.test 127.0.0.1, MAP allowed.test 127.0.0.1"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 4,
        "temperature": 0}

# Tries fetch() the ways a page can; each outcome says whether the page could read the answer.
FETCH = """async ([url, init]) => {
  if (init.blob !== undefined) init = {...init, body: new Blob([init.blob])};  // a body with no type
  delete init.blob;
  try {
    const r = await fetch(url, init);
    return {read: true, status: r.status, text: await r.text(), span: r.headers.get("x-rill-span-id")};
  } catch (e) {
    return {read: false, error: String(e)};
  }
}"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"<!doctype html><title>another site</title><p>a page</p>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def page_port() -> Iterator[int]:
    """A plain web server on 127.0.0.1 for the pages of the other origins."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def rill(rill_factory: RillFactory, page_port: int) -> RillServer:
    """A server of its own (its metrics and traces start empty) allowing one origin's pages."""
    return rill_factory("--cors-origins", f"http://allowed.test:{page_port}")


@pytest.fixture(scope="module")
def rebinding_browser() -> Iterator["Browser"]:
    if sync_playwright is None:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", f"--host-resolver-rules={RESOLVER_RULES}"])
        yield browser
        browser.close()


@pytest.fixture
def page_at(rebinding_browser: "Browser") -> Iterator:
    contexts = []

    def open_page(url: str) -> "Page":
        context = rebinding_browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.goto(url)
        return page

    yield open_page
    for context in contexts:
        context.close()


def requests_seen(rill: RillServer) -> dict[tuple[str, str, str], float]:
    """rill_http_requests_total by (method, route, status), as the server counted them."""
    text = httpx.get(rill.url + "/metrics", timeout=CLIENT_TIMEOUT_S).text
    return {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == "rill_http_requests_total"}


def completions_made(rill: RillServer) -> float:
    text = httpx.get(rill.url + "/metrics", timeout=CLIENT_TIMEOUT_S).text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "rill_completion_tokens_total")


def grown(before: dict, after: dict, key: tuple[str, str, str]) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


CHAT = ("POST", "/v1/chat/completions")


def test_a_foreign_page_cannot_start_a_completion(rill: RillServer, page_port: int, page_at) -> None:
    page = page_at(f"http://evil.test:{page_port}/")
    before, tokens_before = requests_seen(rill), completions_made(rill)
    url = rill.url + "/v1/chat/completions"
    body = json.dumps(BODY)
    plain = page.evaluate(FETCH, [url, {"method": "POST", "headers": {"content-type": "text/plain"}, "body": body}])
    as_json = page.evaluate(FETCH, [url, {"method": "POST", "headers": {"content-type": "application/json"},
                                          "body": body}])
    blind = page.evaluate(FETCH, [url, {"method": "POST", "mode": "no-cors", "body": body}])
    untyped = page.evaluate(FETCH, [url, {"method": "POST", "blob": body}])

    assert not plain["read"] and not as_json["read"], (plain, as_json)  # no CORS headers: unreadable
    assert blind["read"] and blind["status"] == 0 and blind["text"] == "", blind  # opaque
    assert not untyped["read"], untyped
    after = requests_seen(rill)
    # text/plain, no-cors and the untyped body reached Rill and were refused; the JSON one's
    # preflight was refused, so the browser never sent the POST
    assert grown(before, after, (*CHAT, "403")) == 3, after
    assert grown(before, after, ("OPTIONS", "/v1/chat/completions", "403")) == 1, after
    assert grown(before, after, (*CHAT, "200")) == 0
    assert completions_made(rill) == tokens_before  # the model generated nothing


def test_a_foreign_page_cannot_read_traces_or_stored_completions(rill: RillServer, page_port: int,
                                                                 page_at) -> None:
    made = httpx.post(rill.url + "/v1/chat/completions", json={**BODY, "store": True}, timeout=CLIENT_TIMEOUT_S)
    assert made.status_code == 200, made.text
    page = page_at(f"http://evil.test:{page_port}/")
    before = requests_seen(rill)
    for path in ("/v1/traces", "/v1/chat/completions", f"/v1/chat/completions/{made.json()['id']}"):
        seen = page.evaluate(FETCH, [rill.url + path, {}])
        assert not seen["read"], (path, seen)
        blind = page.evaluate(FETCH, [rill.url + path, {"mode": "no-cors"}])
        assert blind["text"] == "", (path, blind)
    after = requests_seen(rill)
    assert grown(before, after, ("GET", "/v1/traces", "403")) == 2, after
    assert grown(before, after, ("GET", "/v1/traces", "200")) == 0, after


def test_a_page_reached_by_dns_rebinding_is_refused(rill: RillServer, page_at) -> None:
    """rebind.test now resolves to 127.0.0.1: to the browser the page and the API are one origin,
    so only the Host header tells them apart."""
    port = rill.url.rsplit(":", 1)[1]
    page = page_at(f"http://rebind.test:{port}/")
    assert "host_not_allowed" in page.content()  # not the web UI
    for path in ("/v1/traces", "/v1/chat/completions", "/v1/models"):
        seen = page.evaluate(FETCH, [path, {}])
        assert seen["read"] and seen["status"] == 403 and "host_not_allowed" in seen["text"], (path, seen)
    started = page.evaluate(FETCH, ["/v1/chat/completions", {"method": "POST", "body": json.dumps(BODY),
                                                              "headers": {"content-type": "application/json"}}])
    assert started["status"] == 403 and "host_not_allowed" in started["text"], started


def test_the_same_server_by_its_address_serves_the_web_ui(rill: RillServer, page_at) -> None:
    page = page_at(rill.url + "/")
    assert page.title() and "host_not_allowed" not in page.content()
    models = page.evaluate(FETCH, ["/v1/models", {}])
    assert models["status"] == 200 and MODEL in models["text"], models


def test_a_page_of_an_allowed_origin_calls_the_api(rill: RillServer, page_port: int, page_at) -> None:
    page = page_at(f"http://allowed.test:{page_port}/")
    answer = page.evaluate(FETCH, [rill.url + "/v1/chat/completions", {
        "method": "POST", "body": json.dumps(BODY),
        "headers": {"content-type": "application/json", "authorization": "Bearer unused"}}])  # preflighted
    assert answer["read"] and answer["status"] == 200, answer
    assert json.loads(answer["text"])["choices"][0]["message"]["content"]
    assert answer["span"], answer  # an exposed header
