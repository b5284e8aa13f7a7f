"""XEP-0191: Blocking Command.

A user blocks JIDs; the server then delivers nothing from them (3.4) and routes nothing from the
user to them (3.5), so that each side sees the other as offline:

    from a blocked JID          message: <service-unavailable/> (exactly what an unknown account
                                gets, so the sender learns nothing); presence of any kind:
                                dropped silently; IQ get/set: <service-unavailable/>; IQ
                                result/error, message error/headline: dropped
    from the user to a blocked  <not-acceptable/> with <blocked xmlns='urn:xmpp:blocking:errors'/>
    JID                         (presence the server sends on the user's behalf, such as
                                broadcasts, is dropped silently)

Matching (XEP-0191 section 3.2, the order of XEP-0016): a listed full JID matches that resource
only; a bare JID any of its resources; domain/resource that resource at the domain; a domain the
domain itself, everything at it and every subdomain. The user's own server (its domain JID)
is never blocked, so that a user who blocks their own domain can still use their server.

When a user blocks a contact, the contact gets unavailable presence from each of the user's
available resources, if it was allowed to see that presence (a 'from' or 'both' subscription,
or directed presence); on unblock, the user's current presence (subscribers only). Resources
that retrieved the blocklist get a push (IQ set) for every change.

Where the lists live: every user's blocklist is in memory, loaded when the server starts. The
checks run on the delivery path, which is synchronous, also for recipients that are offline
(a blocked sender's message must not reach offline storage), so a list cannot be loaded on
demand. The lists are stored in one map per host, keyed by username (one row per user with a
non-empty list), so that start-up reads one row set per host; a list is bounded by
`max_items`. Until the start-up load finished, stanzas from non-client senders to local users are
refused with a <resource-constraint/> (wait) error; clients cannot act before it finished (their
session is bound only after it).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Iterable

from ..config.options import option
from ..core.hooks import (HANDLED, AccountRemoved, ServerStopping, SessionBound, SessionClosed, StanzaFromClient,
                          StanzaToLocal)
from ..core.iq import ACCOUNT, HOST, IqRequest
from ..core.module_api import ModuleAPI
from ..core.sessions import ClientSession
from ..core.verdict import Deny
from ..protocol import ns
from ..protocol.errors import StanzaError
from ..protocol.jid import JID, try_jid
from ..protocol.xml import Element
from .roster import RosterService

NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"


@dataclass(frozen=True)
class Options:
    max_items: int = option(1000, min=1, max=100_000,
                            help="Most JIDs one user can block (XEP-0191); all lists are kept in memory.")


# The error for a blocked sender carries no text: it must read like the one for an unknown account.
INBOUND_DENY = Deny("service-unavailable", "", rule="blocking")
NOT_READY = Deny("resource-constraint", "the server is starting; try again in a moment", rule="blocking")


class Blocklist:
    """The JIDs one user blocks, indexed for matching (immutable: a change makes a new list)."""

    __slots__ = ("jids", "_users", "_domains", "_domain_resources")

    def __init__(self, jids: Iterable[JID]) -> None:
        self.jids = frozenset(jids)
        self._users = frozenset(j for j in self.jids if j.local is not None)       # full and bare
        self._domains = frozenset(j.domain for j in self.jids if j.local is None and j.resource is None)
        self._domain_resources = frozenset(j for j in self.jids if j.local is None and j.resource is not None)

    def blocks(self, jid: JID) -> bool:
        if jid.local is not None and (jid in self._users or (jid.resource is not None and jid.bare in self._users)):
            return True
        if self._domain_resources and jid.resource is not None \
                and JID(None, jid.domain, jid.resource) in self._domain_resources:
            return True
        if self._domains:
            domain = jid.domain
            while True:
                if domain in self._domains:
                    return True
                dot = domain.find(".")
                if dot < 0:
                    return False
                domain = domain[dot + 1:]
        return False

    def __len__(self) -> int:
        return len(self.jids)


def _item_jids(payload: Element) -> list[JID]:
    jids = []
    for item in payload.elements("item", NS_BLOCKING):
        text = item.get("jid")
        jid = try_jid(text) if text else None
        if jid is None:
            raise StanzaError("jid-malformed", f"every <item/> needs a valid 'jid', not {text!r}")
        jids.append(jid)
    return jids


def _items(name: str, jids: Iterable[JID]) -> Element:
    el = Element(name, NS_BLOCKING)
    for jid in sorted(jids, key=str):
        el.add("item", attrs={"jid": str(jid)})
    return el


class Blocking:
    """Every user's blocklist, its IQ handlers, and the checks on the delivery path."""

    def __init__(self, module: ModuleAPI, options: Options) -> None:
        self.module = module
        self.max_items = options.max_items
        self.store = module.open_store("blocking", "map")       # (host, "", username) -> [jid]
        self.sessions = module.sessions
        self.roster = module.service(RosterService)
        self._lists: dict[JID, Blocklist] = {}
        self._locks: dict[JID, asyncio.Lock] = {}
        self._is_ready = False
        self._ready = asyncio.Event()
        self._loader: asyncio.Task[None] | None = None

    # -- start-up -------------------------------------------------------------------------------
    def start(self) -> None:
        self._loader = asyncio.get_running_loop().create_task(self._load(), name="stockade-blocking-load")

    async def _load(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._load_lists()
                break
            except Exception:
                # Enforcement cannot start without the lists; logins wait rather than go unprotected.
                self.module.log.exception("could not load the blocklists; logins wait, retrying in %.0f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        self._is_ready = True
        self._ready.set()

    async def _load_lists(self) -> None:
        accounts = self.module.accounts
        for host in sorted(self.module.ctx.domains):
            for username, jids in (await self.store.get_all(host, "")).items():
                if not accounts.exists_cached(host, username):
                    # Removed while the server was down: a new account of that name starts clean.
                    await self.store.set(host, "", username, None)
                    continue
                blocklist = Blocklist(j for j in map(try_jid, jids) if j is not None)
                if len(blocklist):
                    self._lists[JID(username, host, None)] = blocklist

    async def stopping(self, event: ServerStopping) -> None:
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()

    async def session_bound(self, event: SessionBound) -> None:
        await self._ready.wait()

    async def session_closed(self, event: SessionClosed) -> None:
        owner = event.session.bare
        lock = self._locks.get(owner)
        if lock is not None and not lock.locked() and not self.sessions.is_online(owner):
            del self._locks[owner]

    async def account_removed(self, event: AccountRemoved) -> None:
        self._lists.pop(JID(event.username, event.host, None), None)
        await self.store.set(event.host, "", event.username, None)

    # -- enforcement (sync, on the delivery path) -------------------------------------------------
    def inbound(self, event: StanzaToLocal) -> object:
        if not self._is_ready:
            return HANDLED if event.stanza.name == "presence" else NOT_READY
        lists = self._lists
        if not lists:
            return None
        sender, to = event.sender, event.to
        blocklist = lists.get(to.bare)
        if blocklist is not None and blocklist.blocks(sender) and not _is_server_of(sender, to):
            return _refuse_from_blocked(event.stanza)
        if sender.local is not None and event.stanza.name == "presence":
            # Presence the server sends on the user's behalf (broadcasts, probe answers) is not
            # checked at StanzaFromClient (3.5). Other stanzas from the user's clients were;
            # what remains is the server's own errors (bounces), which must reach the sender.
            own = lists.get(sender.bare)
            if own is not None and own.blocks(to):
                return HANDLED
        return None

    def outbound(self, event: StanzaFromClient) -> object:
        session = event.session
        blocklist = self._lists.get(session.bare)
        if blocklist is None:
            return None
        to = try_jid(event.stanza.attrs.get("to")) if "to" in event.stanza.attrs else None
        if to is None or to.bare == session.bare or _is_server_of(to, session.bare):
            return None            # own account, own server: unblock requests and the like pass
        if not blocklist.blocks(to):
            return None
        return Deny("not-acceptable", f"you have blocked {to}; unblock it to communicate",
                    rule="blocking", app_condition=Element("blocked", NS_BLOCKING_ERRORS), error_type="cancel")

    # -- IQ handlers ----------------------------------------------------------------------------
    @staticmethod
    def _own(request: IqRequest) -> JID:
        if not request.is_own_account:
            raise StanzaError("forbidden", "you can only manage your own blocklist")
        return request.target

    def _lock(self, owner: JID) -> asyncio.Lock:
        lock = self._locks.get(owner)
        if lock is None:
            lock = self._locks[owner] = asyncio.Lock()
        return lock

    async def get_blocklist(self, request: IqRequest) -> Element:
        owner = self._own(request)
        if request.session is not None:
            request.session.extra["blocking"] = True       # gets pushes from now on (3.3)
        current = self._lists.get(owner)
        return request.result(_items("blocklist", current.jids if current else ()))

    async def block(self, request: IqRequest) -> None:
        owner = self._own(request)
        jids = _item_jids(request.payload)
        if not jids:
            raise StanzaError("bad-request", "<block/> needs at least one <item jid='...'/>")
        if any(j.bare == owner for j in jids):
            raise StanzaError("not-acceptable", "you cannot block your own account")
        async with self._lock(owner):
            current = self._lists.get(owner)
            old = current.jids if current else frozenset()
            added = frozenset(jids) - old
            if len(old) + len(added) > self.max_items:
                raise StanzaError("not-acceptable", f"a blocklist holds at most {self.max_items} JIDs; "
                                                    f"yours has {len(old)}")
            if added:
                await self._save(owner, old | added)
                # Before the block takes effect, or the outbound rule would drop it (3.3).
                await self._send_presence(owner, Blocklist(added), available=False)
                self._lists[owner] = Blocklist(old | added)
        self.module.send(request.result())
        if added:
            self._push(owner, _items("block", added))
        return None

    async def unblock(self, request: IqRequest) -> None:
        owner = self._own(request)
        jids = _item_jids(request.payload)
        async with self._lock(owner):
            current = self._lists.get(owner)
            old = current.jids if current else frozenset()
            removed = old & frozenset(jids) if jids else old
            if removed:
                await self._save(owner, old - removed)
                if old - removed:
                    self._lists[owner] = Blocklist(old - removed)
                else:
                    self._lists.pop(owner, None)
                await self._send_presence(owner, Blocklist(removed), available=True)
        self.module.send(request.result())
        if removed:
            # "Unblock all" is pushed as an empty <unblock/> (3.4), like the request.
            self._push(owner, _items("unblock", removed if jids else ()))
        return None

    # -- helpers --------------------------------------------------------------------------------
    async def _save(self, owner: JID, jids: frozenset[JID]) -> None:
        value = sorted(map(str, jids)) if jids else None
        await self.store.set(owner.domain, "", owner.local or "", value)

    def _push(self, owner: JID, payload: Element) -> None:
        for session in self.sessions.of_user(owner):
            if session.extra.get("blocking"):
                iq = Element("iq", ns.CLIENT, {"type": "set", "id": "push" + secrets.token_hex(6),
                                               "to": str(session.jid)})
                iq.append(payload.copy())
                session.send(iq)

    async def _send_presence(self, owner: JID, matched: Blocklist, available: bool) -> None:
        """Tell the contacts that `matched` covers about the user's presence: unavailable on
        block, current presence on unblock; only those allowed to see it (RFC 6121 4)."""
        sessions = self.sessions.available(owner)
        if not sessions:
            return
        roster = self.roster.cached(owner) or await self.roster.get(owner)
        subscribers = [jid for jid, item in roster.items.items() if item.subscription in ("from", "both")]
        for session in sessions:
            targets = {jid for jid in subscribers if matched.blocks(jid)}
            # A blocked full JID covers one resource of a subscriber.
            targets |= {j for j in matched.jids if j.resource is not None and j.bare in subscribers}
            if not available:
                targets |= {j for j in session.directed if matched.blocks(j)}
            for target in targets:
                await self._route_presence(session, target, available)

    async def _route_presence(self, session: ClientSession, target: JID, available: bool) -> None:
        if available:
            if session.presence is None:
                return
            stanza = session.presence.copy()
            stanza.attrs["to"] = str(target)
        else:
            stanza = Element("presence", ns.CLIENT, {"from": str(session.jid), "to": str(target),
                                                     "type": "unavailable"})
        pending = self.module.router.route_presence(stanza, target)
        if pending is not None:
            await pending


def _is_server_of(jid: JID, user: JID) -> bool:
    """`jid` is the domain JID of the user's own server."""
    return jid.local is None and jid.resource is None and jid.domain == user.domain


def _refuse_from_blocked(stanza: Element) -> object:
    name, type_ = stanza.name, stanza.attrs.get("type")
    if name == "presence":
        return HANDLED
    if name == "iq":
        return INBOUND_DENY if type_ in ("get", "set") else HANDLED
    if type_ in ("error", "headline"):
        return HANDLED
    return INBOUND_DENY


def setup(module: ModuleAPI) -> None:
    blocking = Blocking(module, module.options or Options())
    module.provide(blocking)
    module.add_feature(NS_BLOCKING, target=HOST)
    module.add_feature(NS_BLOCKING, target=ACCOUNT)
    module.on(StanzaToLocal, blocking.inbound)
    module.on(StanzaFromClient, blocking.outbound)
    module.on(SessionBound, blocking.session_bound)
    module.on(SessionClosed, blocking.session_closed)
    module.on(AccountRemoved, blocking.account_removed)
    module.on_iq("get", NS_BLOCKING, "blocklist", blocking.get_blocklist, target=ACCOUNT)
    module.on_iq("set", NS_BLOCKING, "block", blocking.block, target=ACCOUNT)
    module.on_iq("set", NS_BLOCKING, "unblock", blocking.unblock, target=ACCOUNT)
    module.on(ServerStopping, blocking.stopping)
    blocking.start()
