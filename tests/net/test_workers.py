"""The stream between two worker processes (net/workers.py), on a real Unix socket pair."""

from __future__ import annotations

import asyncio

from stockade.net.workers import Mesh, WorkerSpec, make_links
from stockade.protocol import ns
from stockade.protocol.xml import Element
from stockade.storage.backlog import WriteBacklog

TIMEOUT = 30.0


def worker_0_and_the_ends_of_worker_1() -> tuple[Mesh, tuple]:
    ends = make_links(2)
    mine = {peer: (s.detach(), h.detach()) for peer, (s, h) in ends[0].items()}
    return Mesh(WorkerSpec(0, 2, {}, mine)), ends[1][0]


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
