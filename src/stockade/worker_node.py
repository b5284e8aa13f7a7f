"""The worker processes of one node ([server] workers > 1), as app.py wires them.

Worker 0 is the process `stockade serve` started. It opens the ports, starts the other workers
with the same command and configuration (telling each its place in STOCKADE_WORKER), waits
until each has opened the same ports, and from then on watches them: when one exits, the whole
node stops (its sessions are gone, and the accounts whose home it was could not be reached),
so that whatever supervises the service starts it again whole. See net/workers.py for the
links between the workers and core/partition.py for where each account lives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING, Any, Callable

from .core.partition import SERVICE_WORKER, Partition
from .net.address_gate import AddressGate
from .net.handoff import Handoff
from .net.workers import SPEC_ENV, Mesh, WorkerSpec, make_links
from .protocol.errors import StanzaError
from .protocol.xml import Element

if TYPE_CHECKING:
    from .core.auth import LoginThrottle
    from .core.router import Router

log = logging.getLogger("stockade.workers")

READY_TIMEOUT = 120.0        # seconds a started worker has to open its ports
# The interpreter's switch interval in a worker whose storage writers share a write lock with
# the other workers' on the message path (Python's default: 5 ms): on SQLite with the compliance
# journal on, every worker appends to the one journal in the database file. A storage writer
# thread gives up the interpreter lock around every SQLite statement and, while the event loop is
# busy, waits up to this long to get it back, holding the write lock all the while. With the
# default, the workers' event loops spent a fifth to a third of the 1:1 benchmark idle, their
# input paused until the writers caught up, and two workers delivered 1.26-1.33x one process; at
# 0.2 ms they were idle about a tenth of the time and delivered 1.55x (docs/benchmarks.md,
# "Worker processes"). Without the journal each worker's archive has a file of its own
# (storage/archive_files.py), nothing is shared, and the default's fewer switches deliver more:
# 1.064x the 1:1 messages at 0.2 ms (docs/benchmarks.md, "An archive file per worker").
SWITCH_INTERVAL = 0.0002
# Seconds a worker has to answer a question of another (`WorkerNode.ask`): an answer reads
# memory, or the database at most; a worker that takes longer is hung.
ASK_TIMEOUT = 20.0


class WorkerUnavailable(Exception):
    """Another worker could not answer (it is gone, or did not answer in time)."""


def spec_from_environment() -> WorkerSpec | None:
    text = os.environ.get(SPEC_ENV)
    return WorkerSpec.from_json(text) if text else None


class WorkerNode:
    """This process's part in a node of several workers."""

    def __init__(self, count: int, spec: WorkerSpec | None, on_failure: Callable[[str], Any]) -> None:
        self.count = count
        self.index = spec.index if spec is not None else 0
        self.is_first = spec is None
        self._ends: dict[int, dict[int, tuple[socket.socket, socket.socket]]] = {}
        if spec is None:                    # worker 0 makes every link before starting the others
            self._ends = make_links(count)
            links = {peer: (s.detach(), h.detach()) for peer, (s, h) in self._ends.pop(0).items()}
            spec = WorkerSpec(0, count, {}, links, sorted(os.sched_getaffinity(0)))
        self.mesh = Mesh(spec)
        self.cores = spec.cores             # the CPUs worker 0 started on (see _pin)
        # The services' domains (MUC, upload, proxy), filled by `attach`: every worker loads
        # the same modules, so each finds them in its own router.
        self.service_domains: set[str] = set()
        self.partition = Partition(self.index, count, self._forward, self.service_domains)
        self.handoff = Handoff(self.partition, self.mesh)
        self.router: Router | None = None
        self.on_failure = on_failure
        self.stopping = False
        self._ready: dict[int, asyncio.Future[None]] = {}
        self._children: dict[int, asyncio.subprocess.Process] = {}
        self._watchers: list[asyncio.Task[Any]] = []
        self.storage: Any = None                  # storage.Storage (attach): what "stored" waits for
        self._confirm_id = 0
        self._awaiting: dict[int, asyncio.Future[None]] = {}      # confirm id -> its future
        self._confirm_next: dict[int, str] = {}                   # peer -> id for its next stanza
        self.address_gate: AddressGate | None = None              # set with the listeners (app.py)
        # Another worker synced the company directory: read what it stored (app.py sets this).
        self.on_directory_synced: Callable[[], Any] = lambda: None
        # What the other workers may ask this one (`ask`), by name: each takes the keyword
        # arguments the asker gave and returns (or resolves to) a JSON value. Set by app.py.
        self.answers: dict[str, Callable[..., Any]] = {}
        self._question_id = 0
        self._asked: dict[int, tuple[int, asyncio.Future[Any]]] = {}    # id -> (peer, its answer)

    @property
    def runs_services(self) -> bool:
        return self.index == SERVICE_WORKER

    # -- wiring ---------------------------------------------------------------------------------
    def attach(self, router: Router, throttle: LoginThrottle, storage: Any) -> None:
        """Once the modules are set up (the router has its partition from the start, app.py):
        route what arrives from the other workers, share the login failure counts with them,
        pause client input while one of them falls behind."""
        self.router = router
        self.storage = storage
        self.service_domains.update(router.components)
        self.service_domains.update(router.configured_components)
        self.mesh.on_stanza = self._stanza_arrived
        self.mesh.on_control = lambda peer, element: self._control(peer, element, throttle)
        self.mesh.on_handoff = self.handoff.arrived
        self.mesh.on_lost = self._link_lost
        self.mesh.on_congestion = lambda peer, is_over: storage.backlog.over(f"worker process {peer}", is_over)
        throttle.shared = lambda what, key, number: self.mesh.broadcast(
            "throttle", {"what": what, "key": key, "n": repr(number)})

    async def start(self, *, shared_writes: bool, pin: bool = False) -> None:
        """Connect to the other workers. `shared_writes`: this worker's storage writers share a
        write lock with the others' on the message path (see SWITCH_INTERVAL). `pin`: run on
        one core ([server] pin_workers, see `_pin`)."""
        if shared_writes:
            sys.setswitchinterval(SWITCH_INTERVAL)
        if pin:
            self._pin()
        loop = asyncio.get_running_loop()
        self._ready = {peer: loop.create_future() for peer in self.mesh.spec.links}
        await self.mesh.start()

    def _pin(self) -> None:
        """Run every thread of this process, and those it starts later, on one of the cores
        worker 0 started on: worker N on the (N modulo their number)th. With two workers on two
        cores: 1.031x and 1.047x the 1:1 messages of unpinned workers, ahead in 4 rounds of 5
        (docs/benchmarks.md, "An archive file per worker")."""
        core = self.cores[self.index % len(self.cores)]
        for task in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(task), {core})
            except (ProcessLookupError, ValueError):        # a thread that ended meanwhile
                pass
            except OSError as exc:          # not allowed here (a container's policy): unpinned
                log.warning("worker %d cannot be pinned to core %d (%s); it runs unpinned "
                            "([server] pin_workers)", self.index, core, exc.strerror)
                return
        log.info("worker %d runs on core %d", self.index, core)

    def _forward(self, worker: int, stanza: Element, confirm: bool) -> asyncio.Future[None] | None:
        done: asyncio.Future[None] | None = None
        if confirm and self.mesh.is_up(worker):
            self._confirm_id += 1
            done = asyncio.get_running_loop().create_future()
            self._awaiting[self._confirm_id] = done
            self.mesh.control(worker, "confirm", {"id": str(self._confirm_id)})
        if not self.mesh.forward(worker, stanza) and self.router is not None:
            self.router.bounce(stanza, StanzaError("service-unavailable", "the server is restarting; try again"))
        # Never resolved when the worker is gone: the node stops, and the client resends what
        # was not acknowledged.
        return done

    def _stanza_arrived(self, peer: int, stanza: Element) -> None:
        assert self.router is not None
        pending = self.router.route(stanza)
        confirm = self._confirm_next.pop(peer, None)
        if confirm is not None:
            task = asyncio.ensure_future(self._confirm(peer, confirm, pending))
            task.add_done_callback(_log_failure)
        elif pending is not None:
            task = asyncio.ensure_future(pending)
            task.add_done_callback(_log_failure)

    async def _confirm(self, peer: int, confirm: str, pending: Any) -> None:
        """Tell `peer` that the stanza it asked about was routed and what it caused is stored."""
        try:
            if pending is not None:
                await pending
            await self.storage.flush()
        finally:
            self.mesh.control(peer, "done", {"id": confirm})

    def _control(self, peer: int, element: Element, throttle: LoginThrottle) -> None:
        if element.name == "confirm":          # the next stanza from `peer` wants a "done"
            self._confirm_next[peer] = element.attrs.get("id", "")
        elif element.name == "done":
            try:
                done = self._awaiting.pop(int(element.attrs.get("id", "")), None)
            except ValueError:
                done = None
            if done is not None and not done.done():
                done.set_result(None)
        elif element.name == "ready":
            future = self._ready.get(peer)
            if future is not None and not future.done():
                future.set_result(None)
        elif element.name in ("admit", "admitted", "release"):       # limits per client address
            if self.address_gate is not None:
                getattr(self.address_gate, f"on_{element.name}")(peer, element.attrs)
        elif element.name == "directory":
            self.on_directory_synced()
        elif element.name == "ask":
            task = asyncio.ensure_future(self._answer(peer, element.attrs))
            task.add_done_callback(_log_failure)
        elif element.name == "answer":
            self._answered(element.attrs)
        elif element.name == "throttle":
            try:
                throttle.apply(element.attrs["what"], element.attrs["key"], float(element.attrs["n"]))
            except (KeyError, ValueError):
                log.error("worker %d sent an unreadable login-limit update: %s", peer, element)

    # -- questions between workers --------------------------------------------------------------
    async def ask(self, peer: int, what: str, /, **args: Any) -> Any:
        """Ask worker `peer` one of its `answers` and wait for the answer (a JSON value).
        Raises WorkerUnavailable when that worker is gone or does not answer in time, and
        when its answer failed."""
        if not self.mesh.is_up(peer):
            raise WorkerUnavailable(f"worker process {peer} is gone")
        self._question_id += 1
        question = self._question_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._asked[question] = (peer, future)
        self.mesh.control(peer, "ask", {"id": str(question), "what": what, "args": json.dumps(args)})
        try:
            return await asyncio.wait_for(future, ASK_TIMEOUT)
        except asyncio.TimeoutError:
            raise WorkerUnavailable(f"worker process {peer} did not answer within {ASK_TIMEOUT:.0f} s") from None
        finally:
            self._asked.pop(question, None)

    async def ask_others(self, what: str, /, **args: Any) -> list[Any]:
        """Ask every other worker at once; their answers, in the order of their indexes."""
        peers = sorted(self.mesh.links)
        return list(await asyncio.gather(*(self.ask(peer, what, **args) for peer in peers)))

    async def _answer(self, peer: int, attrs: dict[str, str]) -> None:
        question, what = attrs.get("id", ""), attrs.get("what", "")
        try:
            answer = self.answers.get(what)
            if answer is None:
                raise LookupError(f"worker {self.index} has no answer to {what!r}")
            result = answer(**json.loads(attrs.get("args", "{}")))
            if asyncio.iscoroutine(result):
                result = await result
            self.mesh.control(peer, "answer", {"id": question, "value": json.dumps(result)})
        except Exception as exc:
            log.exception("answering %r for worker %d failed", what, peer)
            self.mesh.control(peer, "answer", {"id": question, "error": f"{type(exc).__name__}: {exc}"})

    def _answered(self, attrs: dict[str, str]) -> None:
        try:
            _peer, future = self._asked[int(attrs.get("id", ""))]
        except (KeyError, ValueError):
            return                                  # asked too long ago: the asker gave up
        if future.done():
            return
        if "error" in attrs:
            future.set_exception(WorkerUnavailable(f"another worker could not answer: {attrs['error']}"))
        else:
            future.set_result(json.loads(attrs.get("value", "null")))

    def _link_lost(self, peer: int) -> None:
        for asked_peer, future in list(self._asked.values()):
            if asked_peer == peer and not future.done():
                future.set_exception(WorkerUnavailable(f"worker process {peer} is gone"))
        if not self.stopping:
            self.on_failure(f"worker process {peer} is gone")

    # -- worker 0: the others -------------------------------------------------------------------
    async def start_workers(self, config_path: str, ports: dict[str, int]) -> None:
        """Start workers 1..count-1 on the same ports and wait until each serves."""
        assert self.is_first
        for index in range(1, self.count):
            ends = self._ends[index]
            spec = WorkerSpec(index, self.count, ports,
                              {peer: (s.fileno(), h.fileno()) for peer, (s, h) in ends.items()}, self.cores)
            fds = [fd for pair in spec.links.values() for fd in pair]
            env = dict(os.environ, **{SPEC_ENV: spec.to_json()})
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "stockade", "--config", os.path.abspath(config_path), "serve",
                env=env, pass_fds=fds, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL)
            self._children[index] = proc
            self._watchers.append(asyncio.ensure_future(self._watch(index, proc)))
        for index in range(1, self.count):      # their ends are theirs now
            for s, h in self._ends[index].values():
                s.close()
                h.close()
        self._ends.clear()
        try:
            await asyncio.wait_for(asyncio.gather(*self._ready.values()), READY_TIMEOUT)
        except asyncio.TimeoutError:
            raise OSError(f"a worker process did not start within {READY_TIMEOUT:.0f} s; see its log above") from None
        log.info("%d worker processes serve the same ports", self.count)

    async def _watch(self, index: int, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        future = self._ready.get(index)
        if future is not None and not future.done():
            future.set_exception(OSError(f"worker process {index} exited with status {code} while starting; "
                                         "see its log above"))
        elif not self.stopping:
            self.on_failure(f"worker process {index} exited with status {code}")

    def announce_ready(self) -> None:
        """A started worker tells worker 0 that it serves."""
        self.mesh.control(SERVICE_WORKER, "ready")

    def terminate(self) -> None:
        """Ask the other workers to stop (worker 0; SIGTERM, as for the node)."""
        self.stopping = True
        for proc in self._children.values():
            if proc.returncode is None:
                proc.terminate()

    async def stop(self, grace: float) -> None:
        """Wait for the other workers to stop (worker 0) and close the links."""
        self.terminate()
        for proc in self._children.values():
            try:
                await asyncio.wait_for(proc.wait(), grace + 5.0)
            except asyncio.TimeoutError:
                log.warning("worker process %d did not stop; killing it", proc.pid)
                proc.kill()
                await proc.wait()
        for task in self._watchers:
            task.cancel()
        self.mesh.close()


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("routing a forwarded stanza failed", exc_info=task.exception())
