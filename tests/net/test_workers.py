"""The stream between two worker processes (net/workers.py), on a real Unix socket pair."""

from __future__ import annotations

import asyncio
import gc
import marshal
import struct
import weakref

import pytest

from stockade.net.workers import Link, Mesh, WorkerSpec, make_links, stanza_frame
from stockade.protocol import ns
from stockade.protocol.xml import Element, StreamReader, parse
from stockade.storage.backlog import WriteBacklog

TIMEOUT = 30.0


def worker_0_and_the_ends_of_worker_1() -> tuple[Mesh, tuple]:
    ends = make_links(2)
    mine = {peer: (s.detach(), h.detach()) for peer, (s, h) in ends[0].items()}
    return Mesh(WorkerSpec(0, 2, {}, mine)), ends[1][0]


def read(xml: str) -> Element:
    """A stanza as a client connection reads it: with its raw content kept."""
    reader = StreamReader(max_stanza_size=1 << 25)
    [stanza] = [e for e in reader.feed(f"<stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAMS}'>{xml}".encode())
                if isinstance(e, Element)]
    return stanza


def message(n: int) -> Element:
    msg = Element("message", ns.CLIENT, {"from": "alice@example.com/a", "to": "bob@example.com", "id": str(n)})
    msg.add("body", text="x" * 65536)
    return msg


async def test_stanzas_cross_in_order_and_keep_their_content():
    mesh, (stream, handoff) = worker_0_and_the_ends_of_worker_1()
    await mesh.start()
    other = Mesh(WorkerSpec(1, 2, {}, {0: (stream.detach(), handoff.detach())}))
    got: list[Element] = []
    arrived = asyncio.Event()

    def on_stanza(peer: int, stanza: Element) -> None:
        got.append(stanza)
        if len(got) == 3:
            arrived.set()
    other.on_stanza = on_stanza
    await other.start()
    try:
        for n in range(3):
            assert mesh.forward(1, message(n))
        await asyncio.wait_for(arrived.wait(), TIMEOUT)
        assert [s.attrs["id"] for s in got] == ["0", "1", "2"]
        assert got[0].xmlns == ns.CLIENT and got[0].find_text("body", ns.CLIENT) == "x" * 65536
    finally:
        mesh.close()
        other.close()


async def test_input_pauses_while_the_other_worker_does_not_read_and_resumes_once_it_did():
    mesh, (stream, handoff) = worker_0_and_the_ends_of_worker_1()
    backlog = WriteBacklog()
    mesh.on_congestion = lambda peer, is_over: backlog.over(f"worker process {peer}", is_over)
    await mesh.start()
    try:
        # worker 1 reads nothing: the kernel's buffer fills, then asyncio's passes its mark
        for n in range(2000):
            mesh.forward(1, message(n))
            await asyncio.sleep(0)                  # let the link write what this turn queued
            if backlog.congested:
                break
        assert backlog.congested
        resumed = asyncio.Event()
        backlog.when_clear(resumed.set)
        # worker 1 reads everything: the backlog clears and paused input may resume
        stream.setblocking(False)
        loop = asyncio.get_running_loop()
        while not resumed.is_set():
            reading = asyncio.ensure_future(loop.sock_recv(stream, 1 << 20))
            done, _ = await asyncio.wait({reading, asyncio.ensure_future(resumed.wait())}, timeout=TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
            assert done, "the link never drained"
            if not reading.done():
                reading.cancel()
        assert not backlog.congested
    finally:
        mesh.close()
        stream.close()
        handoff.close()


async def test_a_stanza_crosses_as_the_same_tree_with_its_raw_content():
    """What the other worker rebuilds is the element the sender had: names, namespaces,
    namespaced attributes, mixed text, and the raw content it was read with, which the receiving
    side serialises again unchanged and drops once a child changes."""
    mesh, (stream, handoff) = worker_0_and_the_ends_of_worker_1()
    await mesh.start()
    other = Mesh(WorkerSpec(1, 2, {}, {0: (stream.detach(), handoff.detach())}))
    got: list[Element] = []
    controls: list[Element] = []
    arrived = asyncio.Event()
    other.on_stanza = lambda peer, stanza: (got.append(stanza), arrived.set())
    other.on_control = lambda peer, element: controls.append(element)
    await other.start()
    try:
        stanza = read("<message from='alice@example.com/a' to='bob@example.com' "
                       "xml:lang='en' type='chat'><body>a &lt;b&gt; &amp; c</body>"
                       "<x xmlns='urn:example:x' xmlns:e='urn:example:e' e:flag='1'>one<y/>two</x></message>")
        assert stanza._inner is not None
        mesh.control(1, "ready", {"n": "1"})
        assert mesh.forward(1, stanza)
        await asyncio.wait_for(arrived.wait(), TIMEOUT)
        [crossed] = got
        assert [(c.name, c.attrs) for c in controls] == [("ready", {"n": "1"})]
        assert crossed.serialize() == stanza.serialize()
        assert crossed._inner == stanza._inner
        assert crossed.attrs == {"from": "alice@example.com/a", "to": "bob@example.com", "xml:lang": "en",
                                 "type": "chat"}
        x = crossed.find("x", "urn:example:x")
        assert x is not None and x.attrs == {"{urn:example:e}flag": "1"} and x.children[0] == "one"
        assert crossed.find_text("body") == "a <b> & c"
        x.set("{urn:example:e}flag", "2")
        assert crossed._inner is None
        assert parse(crossed.serialize()).find("x", "urn:example:x").attrs == {"{urn:example:e}flag": "2"}
    finally:
        mesh.close()
        other.close()


def test_frames_split_over_many_reads_arrive_whole():
    """However the socket cuts the stream, each frame is read once it is complete: a head
    arriving byte by byte, a large stanza in pieces, two frames in one read."""
    mesh, (stream, handoff) = worker_0_and_the_ends_of_worker_1()
    got: list[Element] = []
    mesh.on_stanza = lambda peer, stanza: got.append(stanza)
    link = Link(mesh, 1)
    data = stanza_frame(message(1)) + stanza_frame(message(2)) + stanza_frame(message(3))
    cuts = [*range(0, 10), *range(10, len(data) - 70000, 4093), len(data) - 70000]   # the last read: 2 frames' ends
    for start, stop in zip(cuts, [*cuts[1:], len(data)]):
        link.data_received(data[start:stop])
        if stop < len(data) - 140000:
            assert not got
    assert [s.attrs["id"] for s in got] == ["1", "2", "3"]
    assert got[2].find_text("body") == "x" * 65536
    stream.close()
    handoff.close()


def test_a_stanza_read_from_another_worker_is_freed_without_the_cyclic_collector():
    """Its children know it by a weak reference, as the XML reader makes them (protocol/xml.py):
    no reference cycle per forwarded stanza."""
    mesh, (stream, handoff) = worker_0_and_the_ends_of_worker_1()
    got: list[Element] = []
    mesh.on_stanza = lambda peer, stanza: got.append(stanza)
    link = Link(mesh, 1)
    gc.collect()
    gc.disable()
    try:
        link.data_received(stanza_frame(read("<message to='bob@example.com'><body>hi</body></message>")))
        crossed = got.pop()
        assert crossed._inner is not None and crossed.find_text("body") == "hi"
        freed = weakref.ref(crossed)
        del crossed
        assert freed() is None
    finally:
        gc.enable()
        stream.close()
        handoff.close()


def test_a_stanza_of_the_largest_size_a_client_may_send_crosses():
    """[c2s] max_stanza_size goes up to 16 MiB; a frame holds the raw content and the text, so
    a stanza that large makes a frame of about twice that, which the link still takes."""
    mesh, (stream, handoff) = worker_0_and_the_ends_of_worker_1()
    got: list[Element] = []
    lost: list[int] = []
    mesh.on_stanza = lambda peer, stanza: got.append(stanza)
    mesh.on_lost = lost.append
    link = Link(mesh, 1)
    body = "y" * (16 * 1024 * 1024 - 200)
    stanza = read(f"<message from='alice@example.com/a' to='bob@example.com'><body>{body}</body></message>")
    data = stanza_frame(stanza)
    assert len(data) > 2 * len(body) > 1 << 24
    for start in range(0, len(data), 1 << 20):
        link.data_received(data[start:start + (1 << 20)])
    assert len(got) == 1 and got[0].find_text("body") == body
    assert not lost
    stream.close()
    handoff.close()


# What no worker writes on a link: XML (its first bytes read as a length far over the limit), a
# frame of a kind that does not exist, and a frame whose payload is not marshal data.
FOREIGN = {
    "xml": b"<message to='bob@example.com'><body>hi</body></message>",
    "unknown kind": struct.pack("!IB", len(marshal.dumps("hello")), 9) + marshal.dumps("hello"),
    "not marshal": struct.pack("!IB", 4, 1) + b"\xff\xfe\xfd\xfc",
}


@pytest.mark.parametrize("foreign", FOREIGN.values(), ids=FOREIGN.keys())
async def test_a_link_that_carries_what_no_worker_writes_is_given_up(foreign: bytes):
    mesh, (stream, handoff) = worker_0_and_the_ends_of_worker_1()
    lost = asyncio.Event()
    mesh.on_lost = lambda peer: lost.set()
    got: list[Element] = []
    mesh.on_stanza = lambda peer, stanza: got.append(stanza)
    await mesh.start()
    try:
        stream.setblocking(False)
        await asyncio.get_running_loop().sock_sendall(
            stream, stanza_frame(message(1)) + foreign)
        await asyncio.wait_for(lost.wait(), TIMEOUT)
        assert [s.attrs["id"] for s in got] == ["1"]
        assert not mesh.is_up(1)
    finally:
        mesh.close()
        stream.close()
        handoff.close()
