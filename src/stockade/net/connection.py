"""The pump between a client transport and its protocol stream, whatever the transport is.

Each connection owns one `ClientStream` (protocol/stream.py). Bytes in go to the stream; the
events it returns are acted on in order. When acting needs to wait (a credential lookup, a bind,
an IQ handler, a durable write), the remaining events and any newer input wait behind it, so a
client's stanzas are processed in the order sent (RFC 6120 section 10.1). Output is batched:
whatever is queued during one event-loop turn goes out in one write (see `Flusher`).

Subclasses supply the transport: TCP with STARTTLS or direct TLS (`net/c2s.py`) and WebSocket
(`net/websocket.py`, RFC 7395: one element per message).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
import dataclasses
import logging
import ssl
from collections import deque
from types import CoroutineType
from types import coroutine as types_coroutine
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Generator, Protocol

from ..core.sessions import ClientSession
from ..protocol.errors import StanzaError, StreamError
from ..protocol.stream import (BindRequest, ClientStream, NonzaReceived, SaslStep, StanzaReceived,
                               StartTls, StreamClosed, StreamOptions)
from ..protocol.xml import Element
from ..storage.backlog import WriteBacklog

if TYPE_CHECKING:
    from ..core.auth import Authenticator
    from ..core.hub import ClientHub

log = logging.getLogger(__name__)

CLOSE_WAIT = 2.0     # seconds to wait for the peer to close after we closed the stream

NonzaHandler = Callable[["ClientConnection", Element], "Awaitable[bool] | bool"]


@types_coroutine
def _resume(coro: CoroutineType, step: Any) -> Generator[Any, Any, Any]:
    """The rest of `coro`, which ClientConnection._start ran up to its first wait and which
    yielded `step` there (a future, or None). A task running this waits on `step` just as if
    `coro` had yielded it to the task itself, then sends the outcome into `coro`, and so on: a
    `yield from` that starts at the second step."""
    while True:
        try:
            value = yield step
        except BaseException as exc:         # a failed future, or the task's cancellation
            try:
                step = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                step = coro.send(value)
            except StopIteration as stop:
                return stop.value


class Flushable(Protocol):
    def flush(self) -> None: ...


class Flusher:
    """Connections with pending output are written once per event-loop turn: one syscall and one
    TLS record for everything queued, instead of one per stanza. The links between worker
    processes (net/workers.py) are flushed the same way."""

    def __init__(self) -> None:
        self._dirty: list[Flushable] = []
        self._scheduled = False

    def mark(self, conn: Flushable) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()


class AddressLimits:
    """Client connections per IP address: how many are open ([c2s] max_connections_per_address)
    and, when `rate` is set, how many started in the last minute ([c2s]
    new_connections_per_minute; policy/flood.py ConnectionRate).

    With several worker processes, one worker counts each address, whichever worker holds its
    connections (net/address_gate.py): `worker` is the index of the worker whose counts these
    are (0 with one process)."""

    __slots__ = ("max_open", "rate", "open", "worker")

    def __init__(self, max_open: int, rate: Callable[[str], bool] | None = None, worker: int = 0) -> None:
        self.max_open = max_open
        self.rate = rate
        self.open: dict[str, int] = {}
        self.worker = worker

    def admit(self, address: str) -> StreamError | None:
        """Count a new connection from `address`; the stream error to end it with when it is
        one too many (then it is not counted)."""
        count = self.open.get(address, 0)
        if count >= self.max_open:
            log.warning("refusing connection from %s: %d connections already open", address, count)
            return StreamError("policy-violation", "too many connections from your address")
        if self.rate is not None and not self.rate(address):
            log.warning("refusing connection from %s: too many new connections in the last minute", address)
            return StreamError("policy-violation", "too many new connections from your address in the last "
                                                   "minute; wait a minute and connect again")
        self.open[address] = count + 1
        return None

    def release(self, address: str) -> None:
        """A connection `admit` counted has ended."""
        left = self.open.get(address, 1) - 1
        if left <= 0:
            self.open.pop(address, None)
        else:
            self.open[address] = left


class _Asking:
    """A connection's counts while the worker that counts its address has not answered."""

    worker = None

    @staticmethod
    def release(address: str) -> None:
        pass


ASKING = _Asking()


class C2SContext:
    """What every client connection shares: the hub, authentication, limits, extensions."""

    def __init__(self, *, hub: ClientHub, auth: Authenticator, stream_options: Callable[[bool], StreamOptions],
                 tls_context: ssl.SSLContext | None, negotiation_timeout: float,
                 max_per_address: int, max_write_buffer: int) -> None:
        self.hub = hub
        self.auth = auth
        self.stream_options = stream_options
        self._options: dict[tuple[bool, bool], StreamOptions] = {}
        self.tls_context = tls_context
        self.negotiation_timeout = negotiation_timeout
        self.limits = AddressLimits(max_per_address)
        self.max_write_buffer = max_write_buffer
        # Top-level elements that are not stanzas, by namespace (stream management, CSI).
        self.nonza_handlers: dict[str, NonzaHandler] = {}
        self.flusher = Flusher()
        self.connections: set[ClientConnection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        # Backpressure from the storage writers (storage/backlog.py); app.py sets the Storage's.
        self.writes = WriteBacklog()
        # With several worker processes: moves a client to its account's worker after SASL
        # (net/handoff.py), and asks the worker that counts an address's connections
        # (net/address_gate.py). None with one process.
        self.handoff: Any = None
        self.address_gate: Any = None

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run work for a connection in the background, tracked so that shutdown can wait for it."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def options_for(self, is_secure: bool, framed: bool) -> StreamOptions:
        """The stream options of a kind of connection, one object per kind: the connections of
        a kind share it (memory per connection, and the features it serialised once)."""
        options = self._options.get((is_secure, framed))
        if options is None:
            options = self.stream_options(is_secure)
            if framed:
                options = dataclasses.replace(options, framed=True)
            self._options[(is_secure, framed)] = options
        return options


class ClientConnection(ABC):
    """Transport-independent part of a client connection; also the session's channel."""

    kind = "tcp"                # what the client connected over (policy asks: web_client permission)

    __slots__ = ("_backlog", "_busy", "_closing", "_counted_by", "_dirty", "_held_back", "_input", "_paused", "_seen_input",
                 "_swept_input", "_timer", "address", "ctx", "is_secure", "sasl", "session", "stream",
                 "__weakref__")

    def __init__(self, ctx: C2SContext, is_secure: bool, framed: bool = False) -> None:
        self.ctx = ctx
        self.address = "?"
        self.is_secure = is_secure
        self.stream = ClientStream(ctx.options_for(is_secure, framed))
        self.session: ClientSession | None = None
        self.sasl: Any = None
        self._busy = False
        # Created when first needed: most connections never wait, and every idle connection
        # costs memory (see the benchmarks).
        self._backlog: deque[Any] | None = None  # events waiting behind an async step
        self._input: deque[bytes] | None = None  # input received while busy
        self._seen_input = 0                     # input count, for the idle sweep
        self._swept_input = -1
        self._paused = False          # input paused: events wait behind an async step
        self._held_back = False       # input paused: the storage writers are behind (storage/backlog.py)
        self._dirty = False
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        # The AddressLimits (or, with several workers, the other worker's counts) this
        # connection is counted in; released when it ends.
        self._counted_by: Any = None

    # -- transport hooks (subclasses) -----------------------------------------------------------
    @abstractmethod
    def _write(self, units: list[bytes]) -> None:
        """Hand serialised stanzas to the transport, in order."""

    def _buffered(self) -> int:
        return 0

    @abstractmethod
    def _close_transport(self, wait_for_peer: bool) -> None:
        """Close the transport once what was written is sent (after the peer's close, if asked)."""

    def _abort_transport(self) -> None:
        self._close_transport(False)

    def _pause_input(self) -> None:
        pass

    def _resume_input(self) -> None:
        pass

    async def _upgrade_tls(self) -> bool:
        return False

    # -- lifecycle ------------------------------------------------------------------------------
    def opened(self, address: str) -> bool:
        """The transport is up. Returns False when the connection was refused (address limits).

        With several workers, the worker that counts `address` decides (net/address_gate.py):
        when that is another one, the stream opens (its header is answered with the features)
        and what the client sends after the chunk with the header waits for the answer
        (`admission`), which comes back meanwhile. A connection moved here from another worker
        was counted there already (`_counted_by` is set)."""
        self.address = address
        ctx = self.ctx
        ctx.connections.add(self)
        self._timer = asyncio.get_running_loop().call_later(ctx.negotiation_timeout, self._negotiation_timeout)
        if self._counted_by is not None:
            return True
        gate = ctx.address_gate
        if gate is not None and not gate.counts_here(address):
            self._counted_by = ASKING
            self._busy = True                 # input waits for the answer (see `receive`)
            gate.ask(address, self.admission)
            return True
        return self.admission(ctx.limits, ctx.limits.admit(address))

    def admission(self, counts: Any, refusal: StreamError | None) -> bool:
        """The answer about this connection's address: counted in `counts`, or `refusal`."""
        asked = self._counted_by is ASKING
        self._counted_by = None
        if refusal is not None:
            self._end(refusal)
            return False
        if self._closing:                   # gone while the other worker decided
            counts.release(self.address)
            return False
        self._counted_by = counts
        if asked:
            self._busy = False
            self._carry_on()
        return True

    def receive(self, data: bytes) -> None:
        """Input from the transport (a chunk of bytes, or one WebSocket message)."""
        if self._closing:
            return
        self._seen_input += 1
        if self._busy:
            if self._seen_input == 1 and self._counted_by is ASKING:
                # The stream header is answered at once; what it brought besides waits, with
                # everything after it, for the worker that counts the address (`admission`).
                events = self.stream.receive_data(data)
                if events:
                    self._backlog = deque(events)
                self._mark()
                return
            if self._input is None:
                self._input = deque()
            self._input.append(data)
            if len(self._input) > 8 and not self._paused:
                self._paused = True
                self._pause_input()
            return
        self._feed(data)

    def _release_input(self) -> None:
        self._held_back = False
        if not self._paused and not self._closing:
            self._resume_input()

    def has_pending_input(self) -> bool:
        """Whether input is waiting to be processed (events, or bytes received while busy)."""
        return bool(self._backlog) or bool(self._input)

    def moved_away(self) -> None:
        """Another worker took the client over (net/handoff.py): forget it here, end nothing.
        It stays counted for its address where it was (`counted_by`); the new worker releases it.
        Its parser is freed: a relayed connection's object lives on as long as its client stays
        (the transport keeps a reference to it) and parses nothing more."""
        self._counted_by = None
        self.stream.moved_out()
        self.lost()

    @property
    def counted_by(self) -> int | None:
        """The worker whose counts of this connection's address include it."""
        counts = self._counted_by
        return None if counts is None else counts.worker

    def lost(self) -> None:
        """The transport is gone."""
        self._closing = True
        ctx = self.ctx
        ctx.connections.discard(self)
        counts, self._counted_by = self._counted_by, None
        if counts is not None:
            counts.release(self.address)
        if self._timer is not None:
            self._timer.cancel()
        session, self.session = self.session, None
        if session is not None and session.channel.connection is self:
            if self.stream.is_closed:
                session.is_closed = True
                ctx.spawn(ctx.hub.close_session(session, "disconnected"))
            else:
                # Dropped without a closed stream: it may be resumed (XEP-0198).
                ctx.spawn(ctx.hub.session_lost(session, "connection lost"))

    # -- SessionChannel (what core sees) --------------------------------------------------------
    @property
    def connection(self) -> ClientConnection:
        return self

    @property
    def authenticated(self) -> tuple[str, str] | None:
        """(host, username) once SASL succeeded."""
        stream = self.stream
        if stream.is_authenticated and stream.host and stream.username:
            return stream.host, stream.username
        return None

    def send_element(self, element: Element) -> None:
        """Write a top-level element that is not a stanza (stream management, CSI)."""
        self.stream.send(element)
        self._mark()

    def send_stanza(self, stanza: Element) -> None:
        self.stream.send(stanza)
        self._mark()

    def send_bytes(self, data: bytes) -> None:
        self.stream.send_raw(data)
        self._mark()

    def close(self, error: StreamError | None = None) -> None:
        self._end(error)

    def adopt(self, session: ClientSession) -> None:
        """Take over a resumed session (XEP-0198): it now writes to this connection."""
        self.session = session
        session.channel = self
        session.is_closed = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.stream.resumed(session.jid)

    # -- input processing -----------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        events = self.stream.receive_data(data)
        if events:
            if self._backlog is None:
                self._backlog = deque(events)
            else:
                self._backlog.extend(events)
            self._run_backlog()
        self._mark()
        writes = self.ctx.writes
        if writes.congested and not self._held_back and not self._closing:
            # The database is behind with what the input queued (storage/backlog.py): read no
            # more until it caught up; the client's TCP window holds the rest.
            self._held_back = True
            self._pause_input()
            writes.when_clear(self._release_input)

    def _run_backlog(self) -> None:
        backlog = self._backlog
        if backlog is None:
            return
        while backlog and not self._closing:
            pending = self._handle(backlog.popleft())
            if pending is not None:
                pending = self._start(pending)
                if pending is not None:
                    self._busy = True
                    self.ctx.spawn(self._wait(pending))
                    return
        if not backlog:
            self._backlog = None     # an idle connection keeps no empty deque (memory per connection)

    def _start(self, pending: Awaitable[Any]) -> Awaitable[Any] | None:
        """Run the processing of an event here and now, up to its first real wait: None if it
        finished without one, else the rest of it, for a task.

        Most steps of a login (a SASL step, a bind with its point reads, the initial presence)
        and of stanza handling never wait, and a task each (created, scheduled, run a turn
        later) costs more than the work itself. The first part runs outside any task, though:
        `asyncio.current_task()` is None there and `asyncio.timeout()` refuses to run, so code
        on this path waits with `asyncio.wait_for` instead.
        """
        if type(pending) is not CoroutineType:
            return pending
        try:
            step = pending.send(None)
        except StopIteration:
            return None
        except Exception:
            log.exception("processing a stanza from %s failed", self.session or self.address)
            return None
        return _resume(pending, step)

    async def _wait(self, pending: Awaitable[Any]) -> None:
        try:
            await pending
        except Exception:
            log.exception("processing a stanza from %s failed", self.session or self.address)
        self._busy = False
        self._carry_on()

    def _carry_on(self) -> None:
        """An async step is over: process what waited behind it, then read again."""
        self._run_backlog()
        while not self._busy and self._input and not self._closing:
            self._feed(self._input.popleft())
        if not self._busy:
            self._backlog = self._input = None
        if not self._busy and self._paused and not self._closing:
            self._paused = False
            if not self._held_back:
                self._resume_input()
        self._mark()

    def _handle(self, event: Any) -> Awaitable[Any] | None:
        if isinstance(event, StanzaReceived):
            session = self.session
            if session is None:
                return None
            pending = self.ctx.hub.handle_stanza(session, event.stanza)
            if pending is None:
                session.handled_count += 1
                return None
            return self._count_when_done(pending, session)
        if isinstance(event, SaslStep):
            return self._sasl(event)
        if isinstance(event, BindRequest):
            return self._bind(event)
        if isinstance(event, StartTls):
            return self._starttls()
        if isinstance(event, NonzaReceived):
            return self._nonza(event.element)
        if isinstance(event, StreamClosed):
            if event.error is not None:
                log.info("stream from %s closed with %s: %s", self.session or self.address,
                         event.error.condition, event.error.text)
            self._finish(wait_for_peer=not event.by_peer)
        return None

    @staticmethod
    async def _count_when_done(pending: Awaitable[Any], session: ClientSession) -> None:
        """A stanza counts as handled (XEP-0198 'h') only once its processing has finished."""
        try:
            await pending
        finally:
            session.handled_count += 1

    async def _sasl(self, event: SaslStep) -> None:
        stream = self.stream
        if self.sasl is None or event.mechanism is not None:
            self.sasl = self.ctx.auth.session(stream.host or "", self.address, self.is_secure)
        result = await self.sasl.step(event.mechanism, event.data)
        stream.sasl_reply(result)
        if stream.is_authenticated:
            self.sasl = None             # the exchange is over: nothing to keep per connection
            handoff = self.ctx.handoff
            if handoff is not None and stream.host and stream.username:
                handoff.after_auth(self, stream.host, stream.username)
        if stream.is_closed:
            self._finish()

    async def _bind(self, event: BindRequest) -> None:
        stream = self.stream
        assert stream.username is not None and stream.host is not None
        try:
            session = await self.ctx.hub.bind(stream.host, stream.username, event.resource, self)
        except StanzaError as exc:
            stream.bind_failed(exc)
            return
        if self._closing:
            await self.ctx.hub.close_session(session, "disconnected")
            return
        self.session = session
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held = stream.bound(session.jid)
        if held:
            if self._backlog is None:
                self._backlog = deque()
            self._backlog.extendleft(reversed(held))

    async def _starttls(self) -> None:
        self.flush()
        if await self._upgrade_tls():
            self.is_secure = True
            self.stream.tls_established()

    def _nonza(self, element: Element) -> Awaitable[Any] | None:
        handler = self.ctx.nonza_handlers.get(element.xmlns)
        if handler is not None:
            result = handler(self, element)
            if result is True:
                return None
            if result is not False:
                return self._await_nonza(result, element)
        self._unsupported(element)
        return None

    async def _await_nonza(self, result: Awaitable[bool], element: Element) -> None:
        if not await result:
            self._unsupported(element)

    def _unsupported(self, element: Element) -> None:
        self._end(StreamError("unsupported-stanza-type", f"<{element.name} xmlns='{element.xmlns}'/> is not supported"))

    # -- output and closing ---------------------------------------------------------------------
    def _mark(self) -> None:
        if not self._dirty:
            self._dirty = True
            self.ctx.flusher.mark(self)

    def flush(self) -> None:
        self._dirty = False
        units = self.stream.data_to_send()
        if units and not self._closing:
            self._write(units)
            if self._buffered() > self.ctx.max_write_buffer:
                log.warning("closing %s: it does not read what is sent to it", self.session or self.address)
                self._closing = True
                self._abort_transport()
                return
        if self.stream.is_closed and not self._closing:
            self._finish()

    def compact_if_idle(self) -> bool:
        """Called by the idle sweep: a connection that sent nothing since the last sweep gives
        back its XML parser (it gets a new one when it speaks again). True when it did."""
        done = False
        if self._seen_input == self._swept_input and not self._busy and not self._closing:
            done = self.stream.compact()
        self._swept_input = self._seen_input
        return done

    def _negotiation_timeout(self) -> None:
        self._timer = None
        if self.session is None:
            log.info("closing %s: no authentication within %.0f s", self.address, self.ctx.negotiation_timeout)
            self._end(StreamError("connection-timeout", "authentication and resource binding took too long"))

    def _end(self, error: StreamError | None) -> None:
        if self._closing:
            return
        self.stream.close(error)
        self._finish()

    def _finish(self, wait_for_peer: bool = True) -> None:
        """Write what is pending and close the transport."""
        if self._closing:
            return
        self._closing = True
        units = self.stream.data_to_send()
        if units:
            self._write(units)
        # RFC 6120 4.4: give the peer a moment to read our closing tag and close its side. Closing
        # at once with unread input would reset the connection and could lose the error text.
        self._close_transport(wait_for_peer)
        session, self.session = self.session, None
        if session is not None and session.channel.connection is self:
            session.is_closed = True
            self.ctx.spawn(self.ctx.hub.close_session(session, "closed"))
