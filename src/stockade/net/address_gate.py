"""Limits per client address across worker processes: one worker counts each address.

With several workers the kernel spreads new connections over them (SO_REUSEPORT), so the
connections of one address land in all of them. Counted per worker, [c2s]
max_connections_per_address and new_connections_per_minute would allow N times their value.
Instead each address has one counting worker (CRC-32 of the address modulo the number of
workers), and that worker's `AddressLimits` (net/connection.py) decide for every connection from
the address, wherever it landed:

    worker 1                                     worker 0 (counts 192.0.2.7)
    accept from 192.0.2.7
    <admit id='5' address='192.0.2.7'/>   --->   AddressLimits.admit: counted, or a refusal
    the stream header is answered; what
    the client sends next waits
                                          <---   <admitted id='5'/>  (or condition=, text=)
    what waited is processed (or the stream error ends the connection)
    ... the connection ends, here or in the worker it moved to after SASL (net/handoff.py):
    <release address='192.0.2.7'/>        --->   AddressLimits.release

A connection stays counted by the worker that admitted it when it moves (the handoff record
says which), so the count follows the connection, not the process holding it. The messages
cross the links between workers (net/workers.py, control elements); a worker that is gone
stops the node (worker_node.py), and a connection waiting for its answer meanwhile ends at its
negotiation timeout.

Waiting only after the stream header hides the round trip behind the client's own: a client
sends its first SASL or STARTTLS request after it read the features. Waiting before the header
cost the login storm with two workers about a fifth of its logins per second (1,947 against
2,749 without the question; docs/benchmarks.md).
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any, Callable

from ..protocol.errors import StreamError

if TYPE_CHECKING:
    from .connection import AddressLimits
    from .workers import Mesh

# answer(counts, refusal): the connection is counted in `counts`, or refused with `refusal`.
Answer = Callable[[Any, StreamError | None], Any]


class _CountedElsewhere:
    """Another worker's counts, as a connection here sees them: releasing tells that worker."""

    __slots__ = ("mesh", "worker")

    def __init__(self, mesh: Mesh, worker: int) -> None:
        self.mesh = mesh
        self.worker = worker

    def release(self, address: str) -> None:
        self.mesh.control(self.worker, "release", {"address": address})


class AddressGate:
    """This worker's side: asking the counting worker, and counting for the others."""

    def __init__(self, index: int, count: int, mesh: Mesh, limits: AddressLimits) -> None:
        self.index = index
        self.count = count
        self.mesh = mesh
        self.limits = limits                  # this worker's counts (the C2SContext's)
        limits.worker = index
        self._elsewhere = {w: _CountedElsewhere(mesh, w) for w in range(count) if w != index}
        self._asked: dict[int, tuple[Answer, int]] = {}     # id -> (answer, counting worker)
        self._last_id = 0

    def counter(self, address: str) -> int:
        """The worker that counts `address`'s connections: the same in every worker."""
        return zlib.crc32(address.encode()) % self.count

    def counts_here(self, address: str) -> bool:
        return self.counter(address) == self.index

    def counts_of(self, worker: int) -> Any:
        """The counts of `worker` (a connection moved here that it admitted)."""
        return self.limits if worker == self.index else self._elsewhere[worker]

    def ask(self, address: str, answer: Answer) -> None:
        """Ask the worker that counts `address` whether one more connection may open."""
        worker = self.counter(address)
        if not self.mesh.is_up(worker):
            answer(None, StreamError("internal-server-error", "the server is restarting; connect again"))
            return
        self._last_id += 1
        self._asked[self._last_id] = (answer, worker)
        self.mesh.control(worker, "admit", {"id": str(self._last_id), "address": address})

    # -- control elements from the other workers (worker_node.py dispatches) -------------------
    def on_admit(self, peer: int, attrs: dict[str, str]) -> None:
        refusal = self.limits.admit(attrs.get("address", ""))
        answer = {"id": attrs.get("id", "")}
        if refusal is not None:
            answer.update(condition=refusal.condition, text=refusal.text)
        self.mesh.control(peer, "admitted", answer)

    def on_admitted(self, peer: int, attrs: dict[str, str]) -> None:
        try:
            answer, worker = self._asked.pop(int(attrs.get("id", "")))
        except (KeyError, ValueError):
            return
        refusal = None
        if "condition" in attrs:
            try:
                refusal = StreamError(attrs["condition"], attrs.get("text", ""))
            except ValueError:
                refusal = StreamError("policy-violation", attrs.get("text", ""))
        answer(self._elsewhere[worker], refusal)

    def on_release(self, peer: int, attrs: dict[str, str]) -> None:
        self.limits.release(attrs.get("address", ""))
