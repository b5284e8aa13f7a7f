"""A message storm cannot make the server queue writes without bound: while the archive writer is
behind, client connections stop reading, the rest waits in the network, and nothing is lost.

    the database stalls (the archive writer's commits are held)
    alice -> 20,000 chat messages to bob, written at once
    server: the archive queue passes two batches -> client input pauses (storage/backlog.py)
            the queue stops growing while the event loop goes on (carol's ping is answered)
    the database resumes -> input resumes -> bob gets all 20,000, in order, and both archives
            hold them all
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import pytest

from stockade.testing.raw import RawStream
from stockade.testing.server import RunningServer

from .conftest import DOMAIN, USERS, jid

COUNT = 20_000
TIMEOUT = 120


async def wait_for(server, condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not server.run(condition):
        assert time.monotonic() < deadline, "timed out waiting for the server"
        await asyncio.sleep(0.02)


async def read_messages(bob: RawStream, count: int) -> list[int]:
    """The numbers of the flood messages bob receives, until `count` of them arrived."""
    numbers: list[int] = []
    rest = b""
    while len(numbers) < count:
        chunk = await asyncio.wait_for(bob.reader.read(65536), TIMEOUT)
        assert chunk, "bob's stream was closed"
        rest += chunk
        found = re.findall(rb"<body>flood (\d+)</body>", rest)
        numbers.extend(int(n) for n in found)
        rest = rest[rest.rfind(b"</body>") + 7:] if found else rest
    return numbers


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """Flood limits off: the storm is what a legitimate bulk sender (a gateway, a bot the admin
    allowed) can send; the limits have tests of their own (tests/policy/test_flood.py)."""
    with RunningServer(config={"hosts": [{"domain": DOMAIN, "policy": {"flood": {"enabled": False}}}]}) as srv:
        for user in ("alice", "bob", "carol"):
            srv.add_user(jid(user), USERS[user])
        yield srv


async def read_all(stream: RawStream) -> bytes:
    """Everything the server sends on `stream` until it closes (a client that keeps reading)."""
    received = b""
    while chunk := await stream.reader.read(65536):
        received += chunk
    return received


async def bob_and_carol(server) -> tuple[RawStream, RawStream]:
    """bob, available, receives the storm; carol's ping shows that the event loop goes on."""
    bob = await RawStream.open(server)
    await bob.login("bob", USERS["bob"], "desk")
    await bob.send("<presence/>")
    await bob.read_until(b"<presence")
    carol = await RawStream.open(server)
    await carol.login("carol", USERS["carol"])
    return bob, carol


def stall_the_database(server) -> asyncio.Event:
    """Hold every archive commit until the returned event is set, with batches of 50 (so that
    the writer is behind after 100 queued appends)."""
    writer = server.server.storage.archive_files.writers[0]
    gate = server.run(asyncio.Event)

    def stall() -> None:
        writer._max_batch, writer._high = 50, 100
        commit = writer._commit

        async def held_commit(batch):
            await gate.wait()
            await commit(batch)
        writer._commit = held_commit

    server.run(stall)
    return gate


async def assert_no_input_is_read_while_behind(server, carol: RawStream, rows: int) -> None:
    """`rows`: the archive rows the whole storm makes (two per chat message between users)."""
    storage = server.server.storage
    await wait_for(server, lambda: storage.backlog.congested)
    queued = server.run(lambda: storage.archive_files.writers[0]._queued)
    await carol.send(f"<iq type='get' id='ping1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await carol.read_until(b"ping1")              # the event loop went on meanwhile
    assert server.run(lambda: storage.archive_files.writers[0]._queued) == queued, \
        "input was read while the writer was behind"
    assert queued < rows                          # part of the storm still waits in the network


async def test_a_message_storm_waits_in_the_network_while_the_archive_writer_is_behind(server):
    storage = server.server.storage
    bob, carol = await bob_and_carol(server)
    alice = await RawStream.open(server)
    await alice.login("alice", USERS["alice"])
    gate = stall_the_database(server)
    receiving = asyncio.create_task(read_messages(bob, COUNT))
    alice_hears = asyncio.create_task(read_all(alice))
    alice.writer.write(b"".join(f"<message to='{jid('bob')}' type='chat' id='m{n}'><body>flood {n}</body>"
                                f"</message>".encode() for n in range(COUNT)))

    await assert_no_input_is_read_while_behind(server, carol, 2 * COUNT)

    server.run(gate.set)
    numbers = await asyncio.wait_for(receiving, TIMEOUT)
    assert numbers == list(range(COUNT))          # every message, in order
    await alice.writer.drain()
    await server.acall(storage.flush(), TIMEOUT)
    mam = storage.archive("mam")
    assert await server.acall(mam.count(DOMAIN, "bob")) == COUNT
    assert await server.acall(mam.count(DOMAIN, "alice")) == COUNT
    assert server.run(lambda: storage.backlog.congested) is False
    assert server.run(lambda: storage.backlog.pauses) >= 1
    await alice.send("</stream:stream>")
    assert b"error" not in await asyncio.wait_for(alice_hears, TIMEOUT)    # nothing bounced
    for stream in (alice, bob, carol):
        await stream.close()


async def test_a_websocket_client_is_held_back_the_same_way(server):
    """RFC 7395: each message is one frame; while the writer is behind, the server reads no
    further frame, and every one of them is delivered once it caught up."""
    import websockets

    from .test_websocket import login, tls, ws_url

    count = 3000
    storage = server.server.storage
    bob, carol = await bob_and_carol(server)
    async with websockets.connect(ws_url(server), subprotocols=["xmpp"], ssl=tls(server)) as ws:
        await login(ws, "alice")
        gate = stall_the_database(server)
        receiving = asyncio.create_task(read_messages(bob, count))

        async def storm() -> None:
            for n in range(count):
                await ws.send(f"<message xmlns='jabber:client' to='{jid('bob')}' type='chat'>"
                              f"<body>flood {n}</body></message>")
        sending = asyncio.create_task(storm())

        await assert_no_input_is_read_while_behind(server, carol, 2 * count)

        server.run(gate.set)
        assert await asyncio.wait_for(receiving, TIMEOUT) == list(range(count))
        await asyncio.wait_for(sending, TIMEOUT)
    await server.acall(storage.flush(), TIMEOUT)
    assert await server.acall(storage.archive("mam").count(DOMAIN, "alice")) == count
    for stream in (bob, carol):
        await stream.close()


async def test_a_component_is_held_back_the_same_way():
    """An external component (XEP-0114) writing a storm to a user: its input is not read while
    the archive writer is behind, and every message arrives once the writer catches up."""
    import hashlib

    bot, secret, total = "bot.example.com", "bot-shared-secret-1", 3000
    config = {"hosts": [{"domain": DOMAIN, "policy": {"flood": {"enabled": False}}}],
              "components": [{"domain": bot, "secret": secret}],
              "component_listener": {"enabled": True, "port": 0}}
    with RunningServer(config=config) as srv:
        for user in ("bob", "carol"):
            srv.add_user(jid(user), USERS[user])
        bob, carol = await bob_and_carol(srv)
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.server.ports["component"])
        writer.write(f"<stream:stream xmlns='jabber:component:accept' "
                     f"xmlns:stream='http://etherx.jabber.org/streams' to='{bot}'>".encode())
        opened = b""
        while b" id=" not in opened or b">" not in opened.split(b" id=", 1)[1]:
            opened += await asyncio.wait_for(reader.read(4096), TIMEOUT)
        stream_id = re.search(rb" id=['\"]([^'\"]+)['\"]", opened).group(1).decode()
        writer.write(f"<handshake>{hashlib.sha1((stream_id + secret).encode()).hexdigest()}</handshake>".encode())
        answer = b""
        while b"<handshake/>" not in answer:
            chunk = await asyncio.wait_for(reader.read(4096), TIMEOUT)
            assert chunk, f"the component was refused: {answer!r}"
            answer += chunk
        gate = stall_the_database(srv)
        receiving = asyncio.create_task(read_messages(bob, total))
        writer.write(b"".join(f"<message from='news@{bot}' to='{jid('bob')}' type='chat' id='c{n}'>"
                              f"<body>flood {n}</body></message>".encode() for n in range(total)))

        await assert_no_input_is_read_while_behind(srv, carol, total)     # one archive row each (bob's)

        srv.run(gate.set)
        numbers = await asyncio.wait_for(receiving, TIMEOUT)
        assert numbers == list(range(total))
        writer.close()
