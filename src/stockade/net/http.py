"""The HTTPS listener: one ASGI application (Starlette) served by uvicorn inside the server's own
event loop, so that WebSocket clients, file upload, the web client and the admin API share the
process, the sessions and the storage with XMPP.

Features add routes (`add_route`, `add_websocket_route`, `mount`) before the listener starts.
Every HTTP response gets conservative security headers unless the route sets its own, and an answer
that closes the connection first reads what is left of the request body (`DrainRequestBody`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from .listener import ListenError

log = logging.getLogger(__name__)

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"strict-transport-security", b"max-age=31536000"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]


class SecurityHeaders:
    """ASGI middleware: add SECURITY_HEADERS to HTTP responses that do not set them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message = {**message, "headers": headers}
            await send(message)
        await self.app(scope, receive, send_with_headers)


# Bounds of reading a body nobody wants before closing: a client that uploads more, or more slowly,
# gets the connection closed under it (and likely a reset instead of the answer), as before.
DRAIN_MAX_BYTES = 4 * 1024 * 1024
DRAIN_MAX_SECONDS = 10.0


class DrainRequestBody:
    """ASGI middleware: before the last part of an answer that closes the connection goes out, read
    and drop what is left of the request body, up to `max_bytes` and `max_seconds` (RFC 9112
    section 9.6: a server should not close while the client may still be sending).

    Why: an answer given before the body was read (the admin API's 413 for an announced body over
    its limit, ...) made uvicorn close at once. Over TLS the close sends close_notify, OpenSSL then
    refuses the client's next record (APPLICATION_DATA_AFTER_CLOSE_NOTIFY) and asyncio resets the
    connection, so a client still sending its body got "EOF occurred in violation of protocol" or a
    reset instead of the answer. The response headers still go out at once; only the end of the
    answer waits for the body.

    Left alone: answers that keep the connection open (uvicorn reads and drops the rest of the body
    before the next request), requests without a body, and a client that sent `Expect:
    100-continue` and was never asked for its body (it may not send it at all).
    """

    def __init__(self, app: Any, *, max_bytes: int = DRAIN_MAX_BYTES,
                 max_seconds: float = DRAIN_MAX_SECONDS) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        headers = scope["headers"] if scope["type"] == "http" else []
        if not any(name in (b"content-length", b"transfer-encoding") and value != b"0"
                   for name, value in headers):
            await self.app(scope, receive, send)
            return
        is_body_read = is_answering = was_asked_for_body = False
        will_close = scope.get("http_version") == "1.0" or _says_close(headers)
        is_waiting_for_continue = any(name == b"expect" and value.lower() == b"100-continue"
                                      for name, value in headers)

        async def tracking_receive() -> dict:
            nonlocal is_body_read, was_asked_for_body
            was_asked_for_body = was_asked_for_body or not is_answering
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                is_body_read = True
            return message

        async def draining_send(message: dict) -> None:
            nonlocal is_answering, will_close
            if message["type"] == "http.response.start":
                is_answering = True
                will_close = will_close or _says_close(message.get("headers", []))
            elif (message["type"] == "http.response.body" and not message.get("more_body", False)
                  and will_close and not is_body_read
                  and (was_asked_for_body or not is_waiting_for_continue)):
                await self._drain(receive)
            await send(message)
        await self.app(scope, tracking_receive, draining_send)

    async def _drain(self, receive: Callable) -> None:
        drained = 0
        try:
            async with asyncio.timeout(self.max_seconds):
                while drained <= self.max_bytes:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    drained += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return
        except TimeoutError:
            pass
        log.debug("closing with the request body unread after %d bytes (bounds: %d bytes, %.0f s)",
                  drained, self.max_bytes, self.max_seconds)


def _says_close(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"connection" and b"close" in [t.strip().lower() for t in value.split(b",")]
               for name, value in headers)


class HttpService:
    def __init__(self) -> None:
        self.routes: list[BaseRoute] = []
        self.port = 0
        self.public_url = ""          # http.public_url from the configuration
        self.default_host = ""        # the first concrete interface, when there is one
        self._server: uvicorn.Server | None = None
        self._sockets: list[socket.socket] = []

    def base_url(self, domain: str) -> str:
        """Where clients reach this listener (for URLs the server hands out, like upload slots):
        http.public_url; else the first concrete listening address; else the domain."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.default_host or domain
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{self.port}"

    def add_route(self, path: str, endpoint: Callable, methods: list[str]) -> None:
        self.routes.append(Route(path, endpoint, methods=methods))

    def add_websocket_route(self, path: str, endpoint: Callable) -> None:
        self.routes.append(WebSocketRoute(path, endpoint))

    def mount(self, path: str, app: Any, name: str | None = None) -> None:
        self.routes.append(Mount(path, app=app, name=name))

    def build_app(self) -> Any:
        return DrainRequestBody(SecurityHeaders(Starlette(routes=self.routes)))

    async def start(self, interfaces: list[str], port: int, tls: ssl.SSLContext, *,
                    max_message_size: int) -> int:
        """Bind every interface (port 0: the system picks one, shared by all) and serve."""
        self._sockets = _bind(interfaces, port)
        self.port = self._sockets[0].getsockname()[1]
        config = uvicorn.Config(self.build_app(), log_config=None, access_log=False, lifespan="off",
                                ws="websockets-sansio", ws_max_size=max_message_size, ws_per_message_deflate=False,
                                server_header=False, proxy_headers=False, timeout_graceful_shutdown=5,
                                ssl_certfile="unused", ssl_context_factory=lambda _config, _default: tls)
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)     # what Server._serve() would set up
        # startup() creates the asyncio servers on our sockets; uvicorn's own main loop and
        # signal handling are not used: the Stockade process owns both.
        await server.startup(sockets=self._sockets)
        self._server = server
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            await self._server.shutdown(sockets=self._sockets)
            self._server = None


def _bind(interfaces: list[str], port: int) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for host in ["0.0.0.0" if i == "*" else i for i in interfaces]:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                reason = "the port is already in use" if exc.errno == 98 else exc.strerror
                raise ListenError(f"cannot listen for HTTPS on {host}:{port}: {reason}; "
                                  "stop what uses it or choose another http.port") from None
            sock.listen(1024)
            sock.setblocking(False)
            sockets.append(sock)
            port = sock.getsockname()[1]
    except ListenError:
        for s in sockets:
            s.close()
        raise
    return sockets

