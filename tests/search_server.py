"""A fake web search server on loopback, speaking the three providers' JSON: SearxNG's
(`GET /search?q=&format=json`), Brave's (`GET /brave/res/v1/web/search`, X-Subscription-Token) and
Tavily's (`POST /tavily/search`, Bearer). It records every request; `/broken/search` answers 500,
`/notjson/search` text, `/nolist/search` JSON without results."""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import contextlib

RESULTS = [{"title": f"Result {n}", "url": f"https://site{n}.example/page", "text": f"Snippet number {n}. " * 8}
           for n in range(1, 7)]
KEY = "test-search-key-123"


@dataclass
class Seen:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class SearchServer:
    url: str
    requests: list[Seen] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body: Any = None) -> Seen:
        url = urllib.parse.urlsplit(self.path)
        seen = Seen(self.command, url.path, dict(urllib.parse.parse_qsl(url.query)),
                    {k.lower(): v for k, v in self.headers.items()}, body)
        self.server.seen.append(seen)
        return seen

    def do_GET(self) -> None:
        seen = self._record()
        if seen.path == "/search" and seen.params.get("format") == "json":
            return self._answer(200, {"query": seen.params.get("q"), "results": [
                {"title": r["title"], "url": r["url"], "content": r["text"]} for r in RESULTS]})
        if seen.path == "/brave/res/v1/web/search":
            if seen.headers.get("x-subscription-token") != KEY:
                return self._answer(401, {"error": "bad token"})
            return self._answer(200, {"web": {"results": [
                {"title": r["title"], "url": r["url"], "description": r["text"]} for r in RESULTS]}})
        if seen.path == "/notjson/search":
            self.send_response(200)
            self.send_header("content-length", "5")
            self.end_headers()
            self.wfile.write(b"hello")
            return
        if seen.path == "/nolist/search":
            return self._answer(200, {"answers": []})
        self._answer(500 if seen.path == "/broken/search" else 404, {"error": "no"})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        seen = self._record(json.loads(self.rfile.read(length) or b"null"))
        if seen.path == "/tavily/search":
            if seen.headers.get("authorization") != f"Bearer {KEY}":
                return self._answer(401, {"error": "bad key"})
            return self._answer(200, {"results": [
                {"title": r["title"], "url": r["url"], "content": r["text"]} for r in RESULTS]})
        self._answer(404, {"error": "no"})


@contextlib.contextmanager
def search_server() -> Iterator[SearchServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, name="fake-search", daemon=True)
    thread.start()
    try:
        yield SearchServer(f"http://127.0.0.1:{httpd.server_address[1]}", httpd.seen)  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()
