"""A real `rill serve` closes connections that stop sending (docs/security.md): an idle one, a
request head sent slowly or left half-way, a body that stalls, a keep-alive connection left idle;
refuses connections past --max-connections; answers an over-long URL or head, or bytes that are no
HTTP, in OpenAI's error shape; and never cuts a response, however long it streams. Raw sockets,
short timeouts through the flags; the EOF bounds are guards against a hang, not speed checks."""

from __future__ import annotations

import json
import select
import socket
import time

import httpx
import pytest

from tests.e2e.support import COUNT, RillServer, make_client

pytestmark = [pytest.mark.e2e]

TIMEOUT_S = 1  # the server's --header-timeout, --body-timeout and --keep-alive-timeout
GUARD_S = 30.0  # a connection still open after this long was never going to be closed
FLAGS = ("--header-timeout", str(TIMEOUT_S), "--body-timeout", str(TIMEOUT_S),
         "--keep-alive-timeout", str(TIMEOUT_S))


@pytest.fixture(scope="module")
def server(rill_factory) -> RillServer:
    return rill_factory(*FLAGS)


def connect(server: RillServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=GUARD_S)
    return sock


def read_until_eof(sock: socket.socket, *, trickle: bytes = b"") -> bytes:
    """Everything the server sends until it closes the connection, sending `trickle` one byte
    every 0.2 s meanwhile (a slow client that never finishes). Fails after GUARD_S."""
    received = b""
    deadline = time.monotonic() + GUARD_S
    pending = trickle
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk
        elif pending:
            try:
                sock.sendall(pending[:1])
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed meanwhile: the next recv sees it
            pending = pending[1:]
    pytest.fail(f"the server kept the connection open for {GUARD_S:.0f} s; it sent {received[:200]!r}")


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def assert_json_error(raw: bytes, status: int, code: str) -> dict:
    got_status, headers, body = parse_response(raw)
    assert got_status == status, raw[:300]
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    return error


def test_a_connection_that_sends_nothing_is_closed(server):
    with connect(server) as sock:
        assert read_until_eof(sock) == b""  # nothing was asked: nothing is answered


def test_a_head_sent_slowly_is_answered_408_and_closed(server):
    """The deadline covers the whole head: bytes trickling in do not extend it."""
    with connect(server) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        raw = read_until_eof(sock, trickle=b"X-Slow: " + b"a" * 400)
    error = assert_json_error(raw, 408, "request_timeout")
    assert "--header-timeout" in error["message"]


def test_a_body_that_stalls_is_answered_408_and_closed(server):
    with connect(server) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"model\": ")
        raw = read_until_eof(sock)
    error = assert_json_error(raw, 408, "request_timeout")
    assert "--body-timeout" in error["message"]
    # the app, reading the body, heard the client leave: counted as 499, no error logged
    deadline = time.monotonic() + GUARD_S
    while 'route="/v1/chat/completions",status="499"' not in (metrics := httpx.get(server.url + "/metrics").text):
        assert time.monotonic() < deadline, [line for line in metrics.splitlines() if "chat/completions" in line]
        time.sleep(0.1)
    assert "unhandled error" not in server.log_text()


def test_an_idle_keep_alive_connection_is_closed_after_its_answer(server):
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        raw = read_until_eof(sock)
    status, headers, body = parse_response(raw)
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_a_stream_outlives_every_timeout(server):
    """Only reading from the client is timed: a stream read for three times the timeouts goes on."""
    with httpx.Client(base_url=server.url, timeout=GUARD_S) as http:
        with http.stream("POST", "/v1/chat/completions", json={**COUNT, "stream": True}) as r:
            assert r.status_code == 200
            started = time.monotonic()
            for line in r.iter_lines():
                assert "[DONE]" not in line  # 4000 tokens take far longer than this test reads
                if time.monotonic() - started > 3 * TIMEOUT_S:
                    break
            else:
                pytest.fail("the stream ended before three times the timeouts")


def test_a_normal_request_still_works(server):
    client = make_client(server.url)
    answer = client.chat.completions.create(model=COUNT["model"], max_tokens=4,
                                            messages=[{"role": "user", "content": "Hi"}])
    assert answer.choices[0].message.content
    client.close()


def send_all_then_read(server: RillServer, data: bytes) -> bytes:
    """Send `data` (the server may answer and close before it has all of it), then read to EOF."""
    with connect(server) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_eof(sock)


def test_a_100_kb_query_string_is_a_json_414(server):
    raw = send_all_then_read(server, b"GET /v1/chat/completions?after=" + b"x" * 100_000
                             + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    error = assert_json_error(raw, 414, "uri_too_long")
    assert error["type"] == "invalid_request_error"


def test_a_head_past_64_kib_is_a_json_431(server):
    headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 1000) for i in range(70))
    raw = send_all_then_read(server, b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers + b"\r\n")
    assert_json_error(raw, 431, "request_header_fields_too_large")


def test_one_endless_header_is_a_json_431(server):
    """llhttp buffers a header value until it ends: the head's bytes are bounded as they arrive."""
    raw = send_all_then_read(server, b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: " + b"z" * 160_000)
    assert_json_error(raw, 431, "request_header_fields_too_large")


def test_bytes_that_are_no_http_get_a_json_400(server):
    with connect(server) as sock:
        sock.sendall(b"HELLO THERE\r\n\r\n")
        raw = read_until_eof(sock)
    assert_json_error(raw, 400, "invalid_http_request")


def test_connections_past_the_limit_are_answered_503(rill_factory):
    limit = 4
    server = rill_factory("--max-connections", str(limit), "--keep-alive-timeout", "60")
    held: list[socket.socket] = []
    statuses = []
    try:
        # Each connection asks for /health and keeps its answer's keep-alive connection open. The
        # readiness poll's last connection may still be open on the server's side, so the first
        # refusal may come one early; every one after it is refused too.
        for _ in range(limit + 2):
            sock = connect(server)
            held.append(sock)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            raw = b""
            while b"\r\n\r\n" not in raw or len(parse_response(raw)[2]) < int(
                    parse_response(raw)[1].get("content-length", "0")):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                raw += chunk
            statuses.append(parse_response(raw)[0])
            if statuses[-1] == 503:
                error = assert_json_error(raw, 503, "too_many_connections")
                assert "--max-connections" in error["message"]
                assert parse_response(raw)[1]["retry-after"] == "1"
    finally:
        for sock in held:
            sock.close()
    first_refused = statuses.index(503)
    assert limit - 1 <= first_refused <= limit, statuses
    assert statuses == [200] * first_refused + [503] * (len(statuses) - first_refused), statuses
    # the held connections closed, new ones are served again (the server notices the closes first)
    deadline = time.monotonic() + GUARD_S
    while httpx.get(server.url + "/health", timeout=GUARD_S).status_code != 200:
        assert time.monotonic() < deadline, "the server kept refusing after the connections closed"
        time.sleep(0.1)
