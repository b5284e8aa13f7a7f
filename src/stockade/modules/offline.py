"""XEP-0160: Best Practices for Handling Offline Messages.

A chat or normal message for an account with no available resource is stored with a XEP-0203
delay stamp and delivered when the account next sends available presence with a non-negative
priority. Stanzas a client marked <no-store/> (XEP-0334) and bare chat-state notifications are
not kept. A full store answers the sender with <service-unavailable/>, never drops silently.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone

from ..config.options import option
from ..core.hooks import (FALLBACK, HANDLED, AccountRemoved, MessageHeld, MessageUndeliverable, ServerStarted,
                          SessionAvailable)
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


# Seconds between two readings from the database of the count of a full store: another
# process may have emptied part of it (retention in worker 0 with several worker processes,
# `stockade retention purge`), and the cached count does not know.
FULL_RECOUNT = 30.0


class OfflineStore:
    """Stored messages per account. The count per account is cached so that the limit costs
    nothing after the first message; a store that looks full is counted again in the database
    (at most every FULL_RECOUNT seconds) before a message is refused."""

    def __init__(self, module: ModuleAPI) -> None:
        self.module = module
        self.archive = module.open_store("offline", "archive")
        self.max_messages = module.options.max_messages
        self._counts: dict[JID, int] = {}
        self._recounted: dict[JID, float] = {}      # full stores: when last counted in the database
        # Storing and delivering for one account never interleave: a message stored while the
        # account comes online is either in the delivered batch or delivered directly. A lock
        # lives as long as someone holds or waits for it.
        self._locks: weakref.WeakValueDictionary[JID, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, bare: JID) -> asyncio.Lock:
        lock = self._locks.get(bare)
        if lock is None:
            lock = self._locks[bare] = asyncio.Lock()
        return lock

    async def store(self, event: MessageUndeliverable) -> object:
        stanza = event.stanza
        if stanza.attrs.get("type", "normal") not in ("normal", "chat"):
            return None
        if not is_worth_storing(stanza):
            return HANDLED          # nothing a person would miss: a typing notification
        bare = event.to.bare
        async with self._lock(bare):
            return await self._store(stanza, bare)

    async def _store(self, stanza: Element, bare: JID) -> object:
        online = [s for s in self.module.sessions.available(bare) if s.priority >= 0]
        if online:                  # came online meanwhile
            for session in online:
                session.send(stanza)
            return HANDLED
        count = await self.count_for(bare)
        if count >= self.max_messages:
            count = await self._recount(bare, count)
        if count >= self.max_messages:
            self.module.log.warning("offline store of %s is full (%d messages)", bare, count)
            return None             # the router answers <service-unavailable/>
        self._counts[bare] = count + 1
        clock = self.module.clock
        stored = stanza.copy()
        stored.add("delay", ns.DELAY, {"from": bare.domain, "stamp": delay_stamp(clock.time())},
                   text="Offline storage")
        sender = stanza.attrs.get("from", "")
        try:
            # Stored durably before the sender's next stanza is processed (group commit).
            await self.archive.append(bare.domain, bare.local, stored.serialize("").decode(),
                                      with_jid=sender.split("/", 1)[0], when=clock.time())
        except Exception:
            self._counts.pop(bare, None)
            self.module.log.exception("could not store an offline message for %s", bare)
            return None
        self.module.ctx.bus.fire(MessageHeld(stanza, bare, "offline"))
        return HANDLED

    async def deliver(self, event: SessionAvailable) -> None:
        session = event.session
        if session.priority < 0:
            return
        bare = session.bare
        async with self._lock(bare):
            # The session is available already, so nothing stored after this point waits here.
            if await self.count_for(bare) == 0:
                return              # the usual case: a read, not a write transaction
            items = await self.archive.pop_all(bare.domain, bare.local)
            self._counts[bare] = 0
            self._recounted.pop(bare, None)
        for item in items:
            session.send(parse(item.value))

    async def _recount(self, bare: JID, count: int) -> int:
        """The count of a store that looks full, read again from the database unless it was
        within FULL_RECOUNT seconds (a sender that keeps trying costs no query per message)."""
        now = self.module.clock.monotonic()
        last = self._recounted.get(bare)
        if last is not None and now - last < FULL_RECOUNT:
            return count
        count = self._counts[bare] = await self.archive.count(bare.domain, bare.local)
        if count >= self.max_messages:
            self._recounted[bare] = now
        else:
            self._recounted.pop(bare, None)
            self.module.log.info("offline store of %s has room again (%d messages)", bare, count)
        return count

    def forget_counts(self, host: str, store: str = "offline") -> None:
        """Retention deleted offline messages of `host`: count them again when next needed."""
        if store == "offline":
            for bare in [b for b in self._counts if b.domain == host]:
                del self._counts[bare]

    async def count_for(self, bare: JID) -> int:
        count = self._counts.get(bare)
        if count is None:
            count = await self.archive.count(bare.domain, bare.local)
            self._counts[bare] = count
        return count

    async def removed(self, event: AccountRemoved) -> None:
        self._counts.pop(JID(event.username, event.host, None), None)
        self._recounted.pop(JID(event.username, event.host, None), None)
        await self.archive.delete(event.host, event.username)


def setup(module: ModuleAPI) -> None:
    offline = OfflineStore(module)
    module.provide(offline)
    module.add_feature(ns.OFFLINE)
    module.on(MessageUndeliverable, offline.store, FALLBACK)
    module.on(SessionAvailable, offline.deliver)
    module.on(AccountRemoved, offline.removed)

    async def started(_: ServerStarted) -> None:
        await offline.archive.track_owners()     # a login without offline messages reads nothing
    module.on(ServerStarted, started)
