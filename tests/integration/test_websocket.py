"""RFC 7395 XMPP over WebSocket and XEP-0156 discovery (host-meta)."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import urllib.request

import pytest
import websockets

from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


def tls(server) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.cert_path))
    ctx.check_hostname = False
    return ctx


def ws_url(server) -> str:
    return f"wss://127.0.0.1:{server.https_port}/xmpp-websocket"


async def recv(ws, until: str) -> list[str]:
    frames = []
    while True:
        frame = await asyncio.wait_for(ws.recv(), 20)
        frames.append(frame)
        if until in frame:
            return frames


async def open_stream(ws) -> list[str]:
    await ws.send(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>")
    return await recv(ws, "</stream:features>")


async def login(ws, user: str) -> str:
    features = await open_stream(ws)
    assert any("<mechanism>PLAIN</mechanism>" in f for f in features)     # wss counts as TLS
    token = base64.b64encode(f"\0{user}\0{USERS[user]}".encode()).decode()
    await ws.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    assert "<success" in (await recv(ws, "success"))[-1]
    await open_stream(ws)
    await ws.send("<iq type='set' id='b1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  "<resource>web</resource></bind></iq>")
    bound = await recv(ws, "</iq>")
    assert f"{jid(user)}/web" in bound[-1]
    return bound[-1]


async def test_a_websocket_client_chats_with_a_tcp_client(server):
    async with client(server, jid("bob"), USERS["bob"]) as bob:
        async with websockets.connect(ws_url(server), subprotocols=["xmpp"], ssl=tls(server)) as ws:
            assert ws.subprotocol == "xmpp"
            await login(ws, "alice")
            await ws.send("<presence xmlns='jabber:client'/>")
            await ws.send(f"<message xmlns='jabber:client' to='{jid('bob')}' type='chat'><body>over websocket</body></message>")
            msg = await bob.next_message()
            assert msg["body"] == "over websocket" and str(msg["from"]) == f"{jid('alice')}/web"
            bob.send_message(mto=f"{jid('alice')}/web", mbody="back to the browser", mtype="chat")
            frames = await recv(ws, "back to the browser")
            assert frames[-1].startswith("<message") and "xmlns=\"jabber:client\"" in frames[-1]
            await ws.send(f"<close xmlns='{FRAMING}'/>")
            assert "<close" in (await recv(ws, "close"))[-1]


async def test_a_websocket_without_the_xmpp_subprotocol_is_refused(server):
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(ws_url(server), ssl=tls(server)) as ws:
            await ws.recv()


async def test_bad_xml_over_websocket_gets_a_stream_error(server):
    async with websockets.connect(ws_url(server), subprotocols=["xmpp"], ssl=tls(server)) as ws:
        await open_stream(ws)
        await ws.send("<message><body>&undefined;</body></message>")
        frames = await recv(ws, "</stream:error>")
        assert "restricted-xml" in frames[-1]


def fetch(server, path: str) -> tuple[dict, bytes]:
    req = urllib.request.urlopen(f"https://127.0.0.1:{server.https_port}{path}", context=tls(server), timeout=20)
    return {k.lower(): v for k, v in req.headers.items()}, req.read()


async def test_host_meta_points_at_the_websocket(server):
    headers, body = await asyncio.to_thread(fetch, server, "/.well-known/host-meta")
    assert b"urn:xmpp:alt-connections:websocket" in body and b"/xmpp-websocket" in body
    assert headers["access-control-allow-origin"] == "*"
    assert headers["x-content-type-options"] == "nosniff"
    headers, body = await asyncio.to_thread(fetch, server, "/.well-known/host-meta.json")
    links = json.loads(body)["links"]
    assert links == [{"rel": "urn:xmpp:alt-connections:websocket",
                      "href": f"wss://127.0.0.1:{server.https_port}/xmpp-websocket"}]
