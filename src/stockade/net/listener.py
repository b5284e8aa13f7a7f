"""Listening sockets: bind every configured interface, report the ports actually bound."""

from __future__ import annotations

import asyncio
import socket
from typing import Callable


class ListenError(Exception):
    """A port could not be opened; the text names the address and the reason."""


async def listen(factory: Callable[[], asyncio.Protocol], interfaces: list[str], port: int, *,
                 ssl_context=None, name: str, reuse_port: bool = False) -> tuple[list[asyncio.AbstractServer], int]:
    """Open `port` on every interface (port 0: the first bind picks a port, the others reuse it).
    Returns the servers and the bound port. `reuse_port`: other processes of this node open the
    same port (SO_REUSEPORT, several worker processes)."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    bound = port
    hosts = ["0.0.0.0" if i == "*" else i for i in interfaces]
    try:
        for host in hosts:
            try:
                server = await loop.create_server(factory, host, bound, ssl=ssl_context, reuse_address=True,
                                                  reuse_port=reuse_port or None, backlog=1024)
            except OSError as exc:
                reason = "the port is already in use" if exc.errno == 98 else (exc.strerror or str(exc))
                raise ListenError(f"cannot listen for {name} on {host}:{bound}: {reason}; "
                                  "stop what uses it or choose another port in the configuration") from None
            servers.append(server)
            if bound == 0:
                sock = server.sockets[0]
                bound = sock.getsockname()[1]
                if sock.family == socket.AF_INET6:
                    bound = sock.getsockname()[1]
    except ListenError:
        for s in servers:
            s.close()
        raise
    return servers, bound
