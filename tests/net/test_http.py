"""The HTTPS listener (net/http.py) over a real TLS socket: an answer given before the request body
was read must still reach the client whole (RFC 9112 section 9.6).

    client sends PUT /api/v1/.../members with content-length: 2 MiB, no body yet
    server answers 413 with connection: close (the admin API's body limit)
    client sends the 2 MiB body: it is read and dropped; client reads the whole 413 and a clean close
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Iterator

import pytest

from stockade.net.http import DrainRequestBody
from stockade.testing.server import RunningServer

DOMAIN = "example.com"
TIMEOUT = 30                       # generous: every wait below ends on an event, never on this
BIG = 2 * 1024 * 1024              # far above what the kernel buffers between the two ends hold (see _connect)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with RunningServer(domains=[DOMAIN]) as srv:
        yield srv


def _connect(server: RunningServer) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(server.cert_path))
    ctx.check_hostname = False          # the certificate names the domains, we connect by address
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A fixed, small send buffer: the client cannot park a 2 MiB body in its kernel and so finds out
    # whether the server goes on reading it.
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    raw.settimeout(TIMEOUT)
    raw.connect(("127.0.0.1", server.https_port))
    return ctx.wrap_socket(raw)


def _read_head(sock: ssl.SSLSocket) -> tuple[bytes, bytes]:
    """Read up to the end of the response headers: (head, what came after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed before the end of the response headers: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _read_body(sock: ssl.SSLSocket, head: bytes, rest: bytes) -> bytes:
    length = int(_header(head, b"content-length"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed before the end of the response body"
        rest += chunk
    return rest


def _header(head: bytes, name: bytes) -> bytes:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    raise AssertionError(f"no {name!r} header in {head!r}")


def test_an_oversized_body_refused_before_it_was_sent_is_read_and_the_answer_arrives(server):
    sock = _connect(server)
    try:
        sock.sendall(b"PUT /api/v1/hosts/example.com/groups/staff/members HTTP/1.1\r\nhost: localhost\r\n"
                     b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % BIG)
        head, rest = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 413 "), head
        assert _header(head, b"connection") == b"close"
        # The server has answered and will close; the client, as clients do, still sends its body.
        # Without draining, the server's TLS layer refuses the first record after its close_notify
        # and resets the connection: this sendall fails (SSLEOFError, EPIPE or ECONNRESET).
        sock.sendall(b"x" * BIG)
        body = json.loads(_read_body(sock, head, rest))
        assert "over 65536 bytes" in body["error"]
        assert sock.recv(65536) == b""           # then a clean close (close_notify), not a reset
    finally:
        sock.close()


def test_an_early_answer_on_a_kept_alive_connection_lets_the_next_request_through(server):
    """A keep-alive answer is not held back for the body: uvicorn drops the rest of the body itself."""
    sock = _connect(server)
    try:
        body = b'{"members": []}'
        sock.sendall(b"POST /no/such/route HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n" % len(body))
        head, rest = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 404 "), head
        assert _read_body(sock, head, rest) == b"Not Found"
        sock.sendall(body + b"GET /api/v1/hosts HTTP/1.1\r\nhost: localhost\r\n\r\n")
        head, rest = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 401 "), head
        assert "no API token" in json.loads(_read_body(sock, head, rest))["error"]
    finally:
        sock.close()


# -- the middleware alone: its bounds ------------------------------------------------------------


def _scope(*headers: tuple[bytes, bytes]) -> dict:
    return {"type": "http", "http_version": "1.1", "method": "PUT", "path": "/", "headers": list(headers)}


def _refusing_app(headers: list[tuple[bytes, bytes]]):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": b"too large", "more_body": False})
    return app


class Body:
    """The receive side of a request: `chunks` chunks of 1000 bytes, then the end of the body."""

    def __init__(self, chunks: int) -> None:
        self.left = chunks
        self.taken = 0

    async def receive(self) -> dict:
        self.taken += 1
        self.left -= 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": self.left > 0}


async def test_the_drain_reads_the_whole_body_before_the_answer_that_closes_completes():
    body, sent = Body(chunks=5), []

    async def send(message: dict) -> None:
        sent.append((message["type"], body.taken))
    app = DrainRequestBody(_refusing_app([(b"connection", b"close")]))
    await app(_scope((b"content-length", b"5000")), body.receive, send)
    assert sent == [("http.response.start", 0), ("http.response.body", 5)]


async def test_the_drain_stops_at_its_byte_bound():
    body = Body(chunks=1000)

    async def send(message: dict) -> None:
        pass
    app = DrainRequestBody(_refusing_app([(b"connection", b"close")]), max_bytes=10_000)
    await app(_scope((b"content-length", b"1000000")), body.receive, send)
    assert body.taken == 11                      # the first chunk past the bound ends it


async def test_the_drain_stops_at_its_time_bound():
    async def silent() -> dict:
        await asyncio.Event().wait()             # a client that announced a body and sends nothing
        raise AssertionError("unreachable")
    sent = []

    async def send(message: dict) -> None:
        sent.append(message["type"])
    app = DrainRequestBody(_refusing_app([(b"connection", b"close")]), max_seconds=0.05)
    await asyncio.wait_for(app(_scope((b"content-length", b"10")), silent, send), TIMEOUT)
    assert sent == ["http.response.start", "http.response.body"]


@pytest.mark.parametrize("headers, response_headers", [
    ([(b"content-length", b"5000")], []),                                       # kept alive: uvicorn drains
    ([(b"content-length", b"5000"), (b"expect", b"100-continue")],              # never told to send it
     [(b"connection", b"close")]),
    ([], [(b"connection", b"close")]),                                          # no body at all
], ids=["keep-alive", "100-continue", "no-body"])
async def test_the_drain_leaves_alone_bodies_it_need_not_read(headers, response_headers):
    body = Body(chunks=5)

    async def send(message: dict) -> None:
        pass
    await DrainRequestBody(_refusing_app(response_headers))(_scope(*headers), body.receive, send)
    assert body.taken == 0
