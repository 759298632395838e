"""Which browser pages may use the API: the Host check, the Origin check (CORS) and JSON-only
bodies from browsers (docs/security.md).

A server without keys trusts whoever can reach it, and a browser is a way to reach it from any web
page. Three rules close that:

- **Host.** After DNS rebinding (an attacker's name, resolved again to 127.0.0.1) the attacker's
  page is same-origin with Rill and may read every answer. The name is then in the `Host` header,
  so only names that cannot be rebound are served: IP literals, `localhost`, the `--host` name, the
  address the connection came in on, and `--allowed-hosts`. The port is not checked: a rebinding
  page has to name a host, and port mappings (Docker, SSH tunnels) change ports. A request without
  a `Host` header is not from a browser (browsers always send one) and is served.
- **Origin.** A cross-origin browser request (`Origin` naming another host than `Host`, or
  `Sec-Fetch-Site: cross-site | same-site` on a request that has no `Origin`) is refused unless its
  origin is in `--cors-origins`; an allowed one gets CORS headers (preflights answered here). A
  cross-site top-level navigation (a link to the web UI) is served: its answer goes to the user,
  not to the page that linked.
- **JSON bodies.** A browser request with a body must say `application/json` (or nothing): a
  `text/plain` or form body is what a page can send without a preflight.

Requests without `Origin` and `Sec-Fetch-*` headers (curl, SDKs) pass the last two rules untouched:
`curl -d` (a form content type) keeps working. Installed outside the API-key check: a refused
request costs no key lookup, and its body is never read.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rill.api.http.errors import JSONResponse
from rill.config import ServerConfig, normalized_origin
from rill.errors import HostNotAllowed, InvalidRequest, OriginNotAllowed, RillError, UnsupportedMediaType, error_body

ANY = "*"
LOOPBACK_NAMES = frozenset({"localhost"})  # resolved by the client itself, never by DNS
CORS_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
CORS_ALWAYS_ALLOWED_HEADERS = ("authorization", "content-type")
CORS_EXPOSED_HEADERS = "x-rill-span-id, x-rill-trace-id, retry-after"
CORS_MAX_AGE_S = "600"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CROSS_FETCH_SITES = frozenset({"cross-site", "same-site"})
_REG_NAME = re.compile(r"[a-z0-9._~%!$&'()*+,;=-]+")  # RFC 3986


def host_name(value: str) -> str | None:
    """The host of a Host header (`name`, `name:port`, `1.2.3.4:80`, `[::1]:80`): lowercased,
    without the port or a trailing dot; None when it is not of that form."""
    value = value.strip().lower()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if bracket and is_ip_literal(host) and (not rest or (rest[0] == ":" and rest[1:].isdigit())):
            return host
        return None
    host, colon, port = value.partition(":")
    host = host.rstrip(".")
    if (colon and not port.isdigit()) or not _REG_NAME.fullmatch(host):
        return None
    return host


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class BrowserPolicy:
    """Which hosts and origins are served (ServerConfig's --host, --allowed-hosts, --cors-origins)."""

    listen_host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()  # names, `.example.com` (it and its subdomains), or `*`
    cors_origins: tuple[str, ...] = ()  # `scheme://host[:port]`, or `*`

    @classmethod
    def of(cls, config: ServerConfig) -> BrowserPolicy:
        return cls(config.host, config.allowed_hosts, config.cors_origins)

    def host_allowed(self, host: str, server_host: str | None) -> bool:
        """`host` (from host_name) names this server in a way no other site can take over."""
        if ANY in self.allowed_hosts or is_ip_literal(host) or host in LOOPBACK_NAMES:
            return True
        if host in (self.listen_host.lower(), (server_host or "").lower()):
            return True
        for allowed in self.allowed_hosts:
            if host == allowed or (allowed.startswith(".") and (host.endswith(allowed) or host == allowed[1:])):
                return True
        return False

    def origin_allowed(self, origin: str) -> bool:
        return ANY in self.cors_origins or origin in self.cors_origins


class BrowserGuard:
    """Pure-ASGI middleware enforcing a BrowserPolicy. Refusals are OpenAI-shaped JSON errors naming
    the flag that would allow the request; a refused origin gets no CORS headers, so its page
    cannot even read why."""

    def __init__(self, app: ASGIApp, policy: BrowserPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = _Headers(scope["headers"])
        refused, cors_origin = self._check(scope, headers)
        if cors_origin is not None:
            send = _with_cors_headers(send, cors_origin)
        if refused is not None:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})  # policy violation
            response = JSONResponse(error_body(refused), status_code=refused.status,
                                    headers={"Vary": "Origin"} if headers.get(b"origin") is not None else None)
            return await response(scope, receive, send)
        preflight = scope.get("method") == "OPTIONS" and headers.get(b"access-control-request-method")
        if cors_origin is not None and preflight:
            return await _preflight(headers)(scope, receive, send)
        await self.app(scope, receive, send)

    def _check(self, scope: Scope, headers: _Headers) -> tuple[RillError | None, str | None]:
        """(why the request is refused, or None; the foreign origin allowed by --cors-origins, whose
        answer carries CORS headers, or None)."""
        hosts = headers.all(b"host")
        if len(hosts) > 1:
            return InvalidRequest("The request has more than one Host header."), None
        host_value = hosts[0] if hosts else None
        if host_value is not None:
            refused = self._host_refusal(scope, host_value)
            if refused is not None:
                return refused, None
        cors_origin = None
        origin_value = headers.get(b"origin")
        if origin_value is not None:
            origin = normalized_origin(origin_value)
            same_origin = (origin is not None and host_value is not None
                           and urlsplit(origin).netloc == host_value.strip().lower())
            if not same_origin:
                if origin is None or not self.policy.origin_allowed(origin):
                    return OriginNotAllowed(
                        f"Cross-origin requests from {origin_value!r} are not allowed. To let that origin's "
                        f"pages call this server, start it with --cors-origins {origin or origin_value} "
                        "(or RILL_CORS_ORIGINS)."), None
                cors_origin = origin
        elif headers.get(b"sec-fetch-site") in CROSS_FETCH_SITES and not _top_level_navigation(scope, headers):
            return OriginNotAllowed(
                "Cross-site requests from a browser are not allowed: a page of another origin may call this "
                "server only from an origin listed with --cors-origins (or RILL_CORS_ORIGINS)."), None
        content_type = headers.get(b"content-type")
        if (scope["type"] == "http" and scope["method"] in BODY_METHODS and _from_browser(headers)
                and not _json_or_none(content_type)):
            return UnsupportedMediaType(f"A request body sent from a browser must be application/json, "
                                        f"not {content_type!r}."), cors_origin
        return None, cors_origin

    def _host_refusal(self, scope: Scope, host_value: str) -> RillError | None:
        host = host_name(host_value)
        if host is None:
            return InvalidRequest(f"The Host header {host_value!r} is not a host name or address.")
        server = scope.get("server")
        if self.policy.host_allowed(host, server[0] if server else None):
            return None
        return HostNotAllowed(
            f"Requests for the host {host!r} are not allowed (a defence against DNS rebinding). If this server "
            f"is meant to be reached by that name, start it with --allowed-hosts {host} (or RILL_ALLOWED_HOSTS).")


def _preflight(headers: _Headers) -> Response:
    """An allowed origin's preflight answered: the API's methods, and the headers the page asked
    for (the openai SDK's x-stainless-* among them) besides Authorization and Content-Type.
    Access-Control-Allow-Origin and Vary come from _with_cors_headers."""
    requested = (h.strip().lower() for h in (headers.get(b"access-control-request-headers") or "").split(","))
    allowed = dict.fromkeys([*CORS_ALWAYS_ALLOWED_HEADERS, *(h for h in requested if _is_token(h))])
    return Response(status_code=204, headers={
        "Access-Control-Allow-Methods": CORS_METHODS, "Access-Control-Allow-Headers": ", ".join(allowed),
        "Access-Control-Max-Age": CORS_MAX_AGE_S})


class _Headers:
    """Lookups in an ASGI header list (names are lowercase bytes), values decoded as latin-1."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]):
        self._raw = raw

    def all(self, name: bytes) -> list[str]:
        return [value.decode("latin-1") for key, value in self._raw if key == name]

    def get(self, name: bytes) -> str | None:
        for key, value in self._raw:
            if key == name:
                return value.decode("latin-1")
        return None


def _from_browser(headers: _Headers) -> bool:
    """Browsers send Origin with every request that has a body, and Sec-Fetch-Site with every
    request (Chrome 76, Firefox 90, Safari 16.4 on)."""
    return headers.get(b"origin") is not None or headers.get(b"sec-fetch-site") is not None


def _top_level_navigation(scope: Scope, headers: _Headers) -> bool:
    """A link followed to this server (the web UI): the answer goes to the user, not to the page
    that linked. A frame is no such navigation (a foreign page could overlay the UI)."""
    return (scope.get("method") in ("GET", "HEAD") and headers.get(b"sec-fetch-mode") == "navigate"
            and headers.get(b"sec-fetch-dest") in (None, "document"))


def _json_or_none(content_type: str | None) -> bool:
    return content_type is None or content_type.partition(";")[0].strip().lower() == "application/json"


def _is_token(name: str) -> bool:
    """An HTTP token (RFC 9110), as a header name must be."""
    return bool(name) and name.isascii() and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name)


def _with_cors_headers(send: Send, origin: str) -> Send:
    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
            headers.add_vary_header("Origin")
        await send(message)

    return send_with_cors
