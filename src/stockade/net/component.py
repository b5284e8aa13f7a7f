"""Connections of external components (XEP-0114): the pump between socket and ComponentStream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..protocol.component import ComponentAuthenticated, ComponentStream
from ..protocol.errors import StreamError
from ..protocol.stream import StanzaReceived, StreamClosed
from ..protocol.xml import Element
from ..storage.backlog import WriteBacklog

if TYPE_CHECKING:
    from ..core.router import Router

log = logging.getLogger(__name__)


class ComponentContext:
    def __init__(self, *, router: Router, secrets: dict[str, str], negotiation_timeout: float,
                 max_stanza_size: int) -> None:
        self.router = router
        self.secrets = secrets
        self.negotiation_timeout = negotiation_timeout
        self.max_stanza_size = max_stanza_size
        self.connections: set[ComponentConnection] = set()
        # The compliance journal (compliance/journal.py) when it is on, and the tenant a
        # component's stanza belongs to: set by app.py.
        self.journal: Any = None
        self.tenant_of: Callable[[str, str | None], str] = lambda domain, to: domain
        # Backpressure from the storage writers (storage/backlog.py), as for client connections:
        # app.py sets the Storage's.
        self.writes = WriteBacklog()


class ComponentConnection(asyncio.Protocol):
    """One component; once authenticated it is the route for its domain."""

    def __init__(self, ctx: ComponentContext) -> None:
        self.ctx = ctx
        self.stream = ComponentStream(ctx.secrets.get, ctx.max_stanza_size)
        self.transport: asyncio.Transport | None = None
        self.domain: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._held_back = False         # reading paused while the storage writers catch up

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ctx.connections.add(self)
        self._timer = asyncio.get_running_loop().call_later(self.ctx.negotiation_timeout, self._timeout)

    def data_received(self, data: bytes) -> None:
        for event in self.stream.receive_data(data):
            if isinstance(event, ComponentAuthenticated):
                self._authenticated(event.domain)
            elif isinstance(event, StanzaReceived):
                journal = self.ctx.journal
                if journal is not None and self.domain is not None:
                    refusal = journal.record_from_service(
                        self.ctx.tenant_of(self.domain, event.stanza.attrs.get("to")), event.stanza)
                    if refusal is not None:
                        self.ctx.router.bounce(event.stanza, refusal)
                        continue
                pending = self.ctx.router.route(event.stanza)
                if pending is not None:
                    asyncio.ensure_future(pending).add_done_callback(self._routed)
            elif isinstance(event, StreamClosed):
                if event.error:
                    log.info("component stream %s closed: %s", self.domain or "?", event.error)
                self._finish()
                return
        self._flush()
        writes = self.ctx.writes
        if writes.congested and not self._held_back and self.transport is not None:
            # The archive or the journal is behind with what was queued (storage/backlog.py):
            # read no more until it caught up; the component's TCP window holds the rest.
            self._held_back = True
            self.transport.pause_reading()
            writes.when_clear(self._release_input)

    def _release_input(self) -> None:
        self._held_back = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _routed(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("routing a stanza from component %s failed", self.domain, exc_info=task.exception())

    def _authenticated(self, domain: str) -> None:
        router = self.ctx.router
        old = router.components.get(domain)
        if isinstance(old, ComponentConnection) and old is not self:
            old.close(StreamError("conflict", "another connection authenticated for this component"))
        self.domain = domain
        router.components[domain] = self
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        log.info("component %s connected", domain)

    def send(self, stanza: Element) -> None:
        self.stream.send(stanza)
        self._flush()

    def close(self, error: StreamError | None = None) -> None:
        self.stream.close(error)
        self._finish()

    def _flush(self) -> None:
        data = self.stream.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(data))

    def _timeout(self) -> None:
        self.close(StreamError("connection-timeout", "the component did not authenticate in time"))

    def _finish(self) -> None:
        if self._closing:
            return
        self._closing = True
        # Unroute now, not at connection_lost: a closed stream drops what it is given, and a
        # component that reads slowly may keep its socket for a while. The router bounces instead.
        self._unroute()
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        self._unroute()

    def _unroute(self) -> None:
        router = self.ctx.router
        if self.domain and router.components.get(self.domain) is self:
            del router.components[self.domain]
            log.info("component %s disconnected", self.domain)
