"""A server whose example.com host denies every feature to the group "contractors".

    contractors   alice                  every feature denied (hosts.permissions.deny)
    projectx      alice, carol           an ordinary (not shared) group: carol shares it with alice
    staff         bob, carol             bob shares no group with alice

other.org is a second tenant on the same server, without permissions.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from stockade.policy.permissions import FEATURES
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import TIMEOUT, client

DOMAIN = "example.com"
OTHER = "other.org"
USERS = {"alice": "alice-pw-1", "bob": "bob-pw-22", "carol": "carol-pw-3", "dave": "dave-pw-44"}
GROUPS = {"contractors": ["alice"], "projectx": ["alice", "carol"], "staff": ["bob", "carol"]}
DENY_ALL = {"deny": {feature: ["contractors"] for feature in FEATURES}}
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


def jid(user: str) -> str:
    return f"{user}@{DOMAIN}"


def login(server: RunningServer, user: str, **kwargs: Any):
    """A logged-in slixmpp client of user@example.com."""
    return client(server, jid(user), USERS[user], **kwargs)


def make_groups(server: RunningServer, groups: dict[str, list[str]], host: str = DOMAIN) -> None:
    """Create the groups through the server's GroupService, as `stockade group` would."""
    service = server.server.groups
    for name, members in groups.items():
        server.call(service.create(host, name))
        server.call(service.set_members(host, name, add=members))


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with RunningServer(config={"hosts": [{"domain": DOMAIN, "permissions": DENY_ALL}, {"domain": OTHER}]}) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        make_groups(srv, GROUPS)
        yield srv


# -- XMPP over WebSocket (RFC 7395), the web client's transport -----------------------------------
def ws_tls(server: RunningServer) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.cert_path))
    ctx.check_hostname = False
    return ctx


def ws_connect(server: RunningServer):
    return websockets.connect(f"wss://127.0.0.1:{server.https_port}/xmpp-websocket", subprotocols=["xmpp"],
                              ssl=ws_tls(server))


async def ws_until(ws: Any, marker: str) -> list[str]:
    """The frames received up to the first one containing `marker`."""
    frames = []
    while True:
        frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
        frames.append(frame)
        if marker in frame:
            return frames


async def ws_login(ws: Any, user: str, password: str, domain: str = DOMAIN) -> list[str]:
    """Open, authenticate (PLAIN: wss counts as TLS), bind; returns the frames after the bind
    request up to the bind result or the stream error."""
    opening = f"<open xmlns='{FRAMING}' to='{domain}' version='1.0'/>"
    await ws.send(opening)
    await ws_until(ws, "</stream:features>")
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    await ws.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    assert "<success" in (await ws_until(ws, "success"))[-1]
    await ws.send(opening)
    await ws_until(ws, "</stream:features>")
    await ws.send("<iq type='set' id='bind1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  "<resource>web</resource></bind></iq>")
    frames = []
    while True:
        try:
            frame = await asyncio.wait_for(ws.recv(), TIMEOUT)
        except websockets.ConnectionClosed:
            return frames
        frames.append(frame)
        if "</iq>" in frame or "stream:error" in frame or "<error" in frame:
            return frames
