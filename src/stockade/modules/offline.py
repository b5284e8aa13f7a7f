"""XEP-0160: Best Practices for Handling Offline Messages.

A chat or normal message for an account with no available resource is stored with a XEP-0203
delay stamp and delivered when the account next sends available presence with a non-negative
priority. Stanzas a client marked <no-store/> (XEP-0334) and bare chat-state notifications are
not kept. A full store answers the sender with <service-unavailable/>, never drops silently.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone

from ..config.options import option
from ..core.hooks import HANDLED, FALLBACK, AccountRemoved, MessageUndeliverable, SessionAvailable, ServerStopping
from ..core.module_api import ModuleAPI
from ..protocol import ns
from ..protocol.jid import JID
from ..protocol.xml import Element, parse

NS_HINTS = "urn:xmpp:hints"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"


@dataclass(frozen=True)
class Options:
    max_messages: int = option(1000, help="Offline messages kept per account; more are refused with an error to the sender.", min=1, max=1_000_000)


def delay_stamp(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def is_worth_storing(stanza: Element) -> bool:
    if stanza.find("no-store", NS_HINTS) is not None:
        return False
    has_content = False
    for child in stanza.children:
        if isinstance(child, Element):
            if child.xmlns == NS_CHATSTATES:
                continue
            has_content = True
            break
    return has_content


class OfflineStore:
    """Stored messages per account, with the pending (not yet committed) appends tracked so that
    delivery never races a write in flight."""

    def __init__(self, module: ModuleAPI) -> None:
        self.module = module
        self.archive = module.open_store("offline", "archive")
        self.max_messages = module.options.max_messages
        self._counts: dict[JID, int] = {}
        self._pending: dict[JID, list[asyncio.Future]] = {}

    def store(self, event: MessageUndeliverable) -> object:
        stanza = event.stanza
        if stanza.attrs.get("type", "normal") not in ("normal", "chat"):
            return None
        if not is_worth_storing(stanza):
            return HANDLED          # nothing a person would miss: a typing notification
        bare = event.to.bare
        count = self._counts.get(bare)
        if count is not None and count >= self.max_messages:
            self.module.log.warning("offline store of %s is full (%d messages)", bare, count)
            return None             # the router answers <service-unavailable/>
        clock = self.module.clock
        stored = stanza.copy()
        stored.add("delay", ns.DELAY, {"from": bare.domain, "stamp": delay_stamp(clock.time())},
                   text="Offline storage")
        sender = stanza.attrs.get("from", "")
        fut = self.archive.append_nowait(bare.domain, bare.local, stored.serialize("").decode(),
                                         with_jid=sender.split("/", 1)[0], when=clock.time())
        pending = self._pending.setdefault(bare, [])
        pending.append(fut)
        fut.add_done_callback(lambda f, b=bare: self._written(b, f))
        if count is not None:
            self._counts[bare] = count + 1
        else:
            # First message for this account since start: learn the stored count in the background
            # (the limit may be exceeded by the few messages that arrive meanwhile).
            asyncio.ensure_future(self.count_for(bare))
        return HANDLED

    def _written(self, bare: JID, fut: asyncio.Future) -> None:
        pending = self._pending.get(bare)
        if pending is not None:
            try:
                pending.remove(fut)
            except ValueError:
                pass
            if not pending:
                del self._pending[bare]
        if not fut.cancelled() and fut.exception() is not None:
            self.module.log.error("could not store an offline message for %s: %s", bare, fut.exception())

    async def deliver(self, event: SessionAvailable) -> None:
        session = event.session
        if session.priority < 0:
            return
        bare = session.bare
        pending = list(self._pending.get(bare, ()))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        items = await self.archive.pop_all(bare.domain, bare.local)
        self._counts[bare] = 0
        for item in items:
            session.send(parse(item.value))

    async def count_for(self, bare: JID) -> int:
        count = self._counts.get(bare)
        if count is None:
            pending = list(self._pending.get(bare, ()))
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            count = await self.archive.count(bare.domain, bare.local)
            self._counts[bare] = count
        return count

    async def removed(self, event: AccountRemoved) -> None:
        self._counts.pop(JID(event.username, event.host, None), None)
        await self.archive.delete(event.host, event.username)

    async def flush(self, event: ServerStopping) -> None:
        pending = [f for futs in self._pending.values() for f in futs]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def setup(module: ModuleAPI) -> None:
    offline = OfflineStore(module)
    module.provide(offline)
    module.add_feature(ns.OFFLINE)
    module.on(MessageUndeliverable, offline.store, FALLBACK)
    module.on(SessionAvailable, offline.deliver)
    module.on(AccountRemoved, offline.removed)
    module.on(ServerStopping, offline.flush)
