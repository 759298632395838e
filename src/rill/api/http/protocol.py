"""uvicorn's httptools protocol with the limits a server facing untrusted clients needs and uvicorn
lacks (docs/security.md):

- a **head deadline**: the request line and headers must arrive within `head_timeout` of the
  connection opening, or of the first byte after an idle keep-alive wait (uvicorn has none: a
  connection that sends nothing, or half a header, was held for ever);
- a **body idle limit**: a request body may pause at most `body_timeout` between chunks (not
  counted while the app has not asked for more, or the client waits for `100 Continue`);
- a **bound on open connections**: one past `max_connections` is answered 503 at once and closed,
  so that slow clients cannot take every file descriptor;
- **size limits** on the URL (414) and the whole head (431): llhttp has none, and a URL past
  64 KiB failed in uvicorn's URL parser with a plain-text 400;
- **OpenAI-shaped JSON** for every answer the protocol gives itself (408, 400, 414, 431, 503).

Only reading from the client is timed: a response, however long it streams, is never cut. Between
requests uvicorn's keep-alive timeout (`--keep-alive-timeout`) closes an idle connection.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from rill.errors import (HeadTooLarge, InvalidRequest, RequestTimeout, RillError, TooManyConnections, UriTooLong,
                         error_body)

log = logging.getLogger("rill.api")

MAX_URL_BYTES = 16 * 1024  # the request target; OpenAI's query strings are a few dozen bytes
MAX_HEAD_BYTES = 64 * 1024  # request line and headers together (nginx's default is 32 KiB)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    head_timeout: float = 10.0  # seconds for a whole request head
    body_timeout: float = 30.0  # seconds a request body may pause between chunks
    max_connections: int = 1000  # open connections; one more is answered 503 and closed
    max_url_bytes: int = MAX_URL_BYTES
    max_head_bytes: int = MAX_HEAD_BYTES


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the reason is in the protocol's _refusal."""


def protocol_class(limits: ConnectionLimits) -> type[LimitedHttpProtocol]:
    """The protocol class to hand uvicorn.Config(http=...), bound to these limits."""
    return type("RillHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})


class LimitedHttpProtocol(HttpToolsProtocol):
    limits = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None  # the head deadline or the body idle limit
        self._reading_head = True  # waiting for (the rest of) a request head
        self._head_bytes = 0  # bytes received while reading this head (an upper bound on its size)
        self._head_fields = 0  # its URL and header bytes, as parsed
        self._url_bytes = 0
        self._message_begun = False  # a byte of this request was parsed (not just an idle connection)
        self._refusal: RillError | None = None  # why a parser callback stopped the parser

    # ---- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            log.warning("refused a connection: %d are open (--max-connections)", len(self.connections) - 1)
            self._answer(TooManyConnections(
                f"The server has {self.limits.max_connections} open connections, its limit "
                "(--max-connections); retry shortly."))
            return
        self._arm(self.limits.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._reading_head:
            self._head_bytes += len(data)
            if self._read_timer is None:  # the first byte after a keep-alive wait starts the clock
                self._arm(self.limits.head_timeout, self._head_timed_out)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # as uvicorn: a WebSocket, or a warning
            if self._should_upgrade():
                self._disarm()
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            refusal, self._refusal = self._refusal, None
            if refusal is None:
                log.info("invalid HTTP request from %s: %s", _address(self.client), exc)
                refusal = InvalidRequest(f"The request is not valid HTTP/1.1: {exc}.", code="invalid_http_request")
            self._answer(refusal)
            return
        if self._reading_head and self._head_bytes > self.limits.max_head_bytes:
            self._answer(self._head_too_large())  # one header that never ends

    # ---- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._message_begun = True
        self._url_bytes = self._head_fields = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        self._head_fields += len(url)
        if self._url_bytes > self.limits.max_url_bytes:
            self._refusal = UriTooLong(f"The request URL is longer than this server's limit of "
                                       f"{self.limits.max_url_bytes} bytes; send large parameters in a body.")
            raise _Refused
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += len(name) + len(value)
        if self._head_fields > self.limits.max_head_bytes:
            self._refusal = self._head_too_large()
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._message_begun = False
        self._head_bytes = 0
        self._arm(self.limits.body_timeout, self._body_timed_out)  # disarmed when the body ends
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._arm(self.limits.body_timeout, self._body_timed_out)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()  # a response may now stream for as long as it takes
        self._reading_head = True
        super().on_message_complete()

    # ---- timers --------------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _head_timed_out(self) -> None:
        self._read_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            # the next request's head began while this response streams: judge it once that ends
            self._arm(self.limits.head_timeout, self._head_timed_out)
        elif not self._message_begun:
            self.transport.close()  # an idle connection: nothing to answer
        else:
            log.debug("closed %s: no complete request head within %s s", _address(self.client),
                      self.limits.head_timeout)
            self._answer(RequestTimeout(f"The request head did not arrive within {self.limits.head_timeout:g} s "
                                        "(--header-timeout)."))

    def _body_timed_out(self) -> None:
        self._read_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and (self.flow.read_paused
                                                                   or cycle.waiting_for_100_continue):
            self._arm(self.limits.body_timeout, self._body_timed_out)  # waiting on the app, not the client
            return
        log.debug("closed %s: its request body paused for %s s", _address(self.client), self.limits.body_timeout)
        self._answer(RequestTimeout(f"The request body paused for more than {self.limits.body_timeout:g} s "
                                    "(--body-timeout)."))

    # ---- answers -------------------------------------------------------------------------------

    def _head_too_large(self) -> HeadTooLarge:
        return HeadTooLarge(f"The request line and headers exceed this server's limit of "
                            f"{self.limits.max_head_bytes} bytes.")

    def _answer(self, error: RillError) -> None:
        """Answer `error` as JSON and close the connection. The app, if it waits for this request's
        body, hears that the client left (its own answer is dropped). Where an answer already began
        (a refused request's body, garbage pipelined behind a stream) the connection just closes."""
        self._disarm()
        cycle = self.cycle  # while reading a head: the previous request's, if any
        if self._reading_head:
            answerable = cycle is None or cycle.response_complete
        else:
            answerable = cycle is None or not cycle.response_started
        if answerable and not self.transport.is_closing():
            body = orjson.dumps(error_body(error))
            headers = [*self.server_state.default_headers, (b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
                       *((k.lower().encode(), v.encode()) for k, v in error.headers().items())]
            self.transport.write(b"".join([STATUS_LINE[error.status], *(b"%s: %s\r\n" % h for h in headers),
                                           b"\r\n", body]))
        self.transport.close()
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()


def _address(client: tuple[str, int] | None) -> str:
    return "%s:%d" % client if client else "a client"
