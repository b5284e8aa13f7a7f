"""RFC 6121 section 2: the roster (contact list), with versioning (2.6) and pushes (2.1.6).

Rosters of accounts with a live session stay in memory; every change is written through to the
store before it is pushed. Subscription state lives in the items (protocol/subscription.py says
how each state is stored); unanswered inbound subscription requests are kept apart, as the
stanzas that carried them, so they can be delivered again at the next login (3.1.3).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
import secrets
from dataclasses import dataclass, field
from typing import Any

from ..core.hooks import AccountRemoved, SessionBound, SessionClosed
from ..core.iq import ACCOUNT, IqRequest
from ..core.module_api import ModuleAPI
from ..protocol import ns
from ..protocol.errors import StanzaError
from ..protocol.jid import JID, try_jid
from ..protocol.subscription import SubState, item_fields, state_from_item
from ..protocol.xml import Element
from ..storage import get_together

MAX_GROUPS = 64
MAX_NAME = 1024


@dataclass
class RosterItem:
    jid: JID
    name: str = ""
    groups: list[str] = field(default_factory=list)
    subscription: str = "none"
    ask: str | None = None
    approved: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "groups": self.groups, "subscription": self.subscription,
                "ask": self.ask, "approved": self.approved}

    @classmethod
    def from_json(cls, jid: JID, data: dict[str, Any]) -> RosterItem:
        return cls(jid, data.get("name", ""), list(data.get("groups", [])), data.get("subscription", "none"),
                   data.get("ask"), bool(data.get("approved", False)))

    def to_element(self, remove: bool = False) -> Element:
        attrs = {"jid": str(self.jid), "subscription": "remove" if remove else self.subscription}
        if not remove:
            if self.name:
                attrs["name"] = self.name
            if self.ask:
                attrs["ask"] = self.ask
            if self.approved:
                attrs["approved"] = "true"
        item = Element("item", ns.ROSTER, attrs)
        if not remove:
            for group in self.groups:
                item.add("group", text=group)
        return item


@dataclass
class Roster:
    items: dict[JID, RosterItem]
    pending_in: set[JID]          # contacts with an unanswered inbound request
    version: int


class RosterService:
    """Rosters for the presence module, disco and the roster IQ handlers."""

    def __init__(self, module: ModuleAPI) -> None:
        self.module = module
        self.items = module.open_store("roster", "map")
        self.pending = module.open_store("roster_pending", "map")
        self.meta = module.open_store("roster_version", "keyval")
        self._cache: dict[JID, Roster] = {}
        self._loading: dict[JID, asyncio.Future[Roster]] = {}
        self._locks: dict[JID, asyncio.Lock] = {}

    # -- loading --------------------------------------------------------------------------------
    async def get(self, owner: JID) -> Roster:
        """The roster of a local account (cached while the account has sessions)."""
        roster = self._cache.get(owner)
        if roster is not None:
            return roster
        loading = self._loading.get(owner)
        if loading is not None:
            return await asyncio.shield(loading)
        fut: asyncio.Future[Roster] = asyncio.get_running_loop().create_future()
        self._loading[owner] = fut
        try:
            items, pending, version = await get_together(owner.domain, owner.local,
                                                         self.items, self.pending, self.meta)
            version = version or 0
            roster = Roster({}, set(), int(version))
            for key, data in items.items():
                jid = try_jid(key)
                if jid is not None:
                    roster.items[jid] = RosterItem.from_json(jid, data)
            roster.pending_in = {j for j in (try_jid(k) for k in pending) if j is not None}
            if self.module.sessions.is_online(owner):
                self._cache[owner] = roster
            fut.set_result(roster)
            return roster
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()
            raise
        finally:
            del self._loading[owner]

    def cached(self, owner: JID) -> Roster | None:
        return self._cache.get(owner)

    def lock(self, owner: JID) -> asyncio.Lock:
        """Serialises read-modify-write of one roster."""
        lock = self._locks.get(owner)
        if lock is None:
            lock = self._locks[owner] = asyncio.Lock()
        return lock

    # -- queries --------------------------------------------------------------------------------
    async def state(self, owner: JID, contact: JID) -> SubState:
        roster = await self.get(owner)
        item = roster.items.get(contact)
        if item is None:
            return state_from_item("none", None, False, contact in roster.pending_in)
        return state_from_item(item.subscription, item.ask, item.approved, contact in roster.pending_in)

    async def shares_presence_with(self, owner: JID, other: JID) -> bool:
        """Whether `other` is subscribed to `owner`'s presence (owner's item has from/both)."""
        if owner == other:
            return True
        roster = await self.get(owner)
        item = roster.items.get(other)
        return item is not None and item.subscription in ("from", "both")

    # -- changes --------------------------------------------------------------------------------
    async def _bump(self, owner: JID, roster: Roster) -> None:
        roster.version += 1
        await self.meta.set(owner.domain, owner.local, roster.version)

    async def apply_state(self, owner: JID, contact: JID, new: SubState, *, push: bool) -> None:
        """Store a new subscription state (creating the item when the state needs one)."""
        roster = await self.get(owner)
        fields = item_fields(new)
        if fields.pending_in:
            roster.pending_in.add(contact)
        elif contact in roster.pending_in:
            roster.pending_in.discard(contact)
            await self.pending.set(owner.domain, owner.local, str(contact), None)
        item = roster.items.get(contact)
        visible = fields.subscription != "none" or fields.ask is not None or fields.approved
        if item is None and not visible:
            return
        if item is None:
            item = roster.items[contact] = RosterItem(contact)
        changed = (item.subscription, item.ask, item.approved) != (fields.subscription, fields.ask, fields.approved)
        item.subscription, item.ask, item.approved = fields.subscription, fields.ask, fields.approved
        if changed:
            await self.items.set(owner.domain, owner.local, str(contact), item.to_json())
            await self._bump(owner, roster)
            if push:
                self.push(owner, roster, item)

    async def store_request(self, owner: JID, contact: JID, stanza: Element) -> None:
        roster = await self.get(owner)
        roster.pending_in.add(contact)
        await self.pending.set(owner.domain, owner.local, str(contact), stanza.serialize("").decode())

    async def stored_requests(self, owner: JID) -> list[str]:
        roster = await self.get(owner)
        if not roster.pending_in:
            return []           # the usual case, known from the roster: no read
        return list((await self.pending.get_all(owner.domain, owner.local)).values())

    async def set_item(self, owner: JID, contact: JID, name: str, groups: list[str]) -> None:
        roster = await self.get(owner)
        item = roster.items.get(contact)
        if item is None:
            item = roster.items[contact] = RosterItem(contact)
        item.name, item.groups = name, groups
        await self.items.set(owner.domain, owner.local, str(contact), item.to_json())
        await self._bump(owner, roster)
        self.push(owner, roster, item)

    async def store_items(self, owner: JID, roster: Roster, changes: dict[JID, RosterItem | None]) -> None:
        """Store several whole items as given (subscription included; None removes one) in one
        transaction, then push each with its own version. For services that manage items
        themselves (modules/shared_roster.py): the caller holds lock(owner) and got `roster` from
        get() under that lock."""
        if not changes:
            return
        await self.items.set_many(owner.domain, owner.local,
                                  {str(jid): item.to_json() if item else None for jid, item in changes.items()})
        pushes: list[tuple[RosterItem, bool]] = []
        for jid, item in changes.items():
            if item is None:
                old = roster.items.pop(jid, None)
                if old is not None:
                    pushes.append((old, True))
            else:
                roster.items[jid] = item
                pushes.append((item, False))
        final = roster.version + len(pushes)
        await self.meta.set(owner.domain, owner.local, final)
        for item, remove in pushes:
            roster.version += 1
            self.push(owner, roster, item, remove)

    async def remove_item(self, owner: JID, contact: JID) -> RosterItem | None:
        roster = await self.get(owner)
        item = roster.items.pop(contact, None)
        had_request = contact in roster.pending_in
        roster.pending_in.discard(contact)
        if had_request:
            await self.pending.set(owner.domain, owner.local, str(contact), None)
        if item is None:
            return None
        await self.items.set(owner.domain, owner.local, str(contact), None)
        await self._bump(owner, roster)
        self.push(owner, roster, item, remove=True)
        return item

    def push(self, owner: JID, roster: Roster, item: RosterItem, remove: bool = False) -> None:
        """RFC 6121 2.1.6: tell every interested resource about the changed item."""
        for session in self.module.sessions.of_user(owner):
            if not session.is_interested:
                continue
            iq = Element("iq", ns.CLIENT, {"type": "set", "id": "push" + secrets.token_hex(6),
                                           "to": str(session.jid)})
            query = iq.add("query", ns.ROSTER, {"ver": str(roster.version)})
            query.append(item.to_element(remove))
            session.send(iq)

    # -- session lifecycle ----------------------------------------------------------------------
    async def session_bound(self, event: SessionBound) -> None:
        owner = event.session.bare
        if owner not in self._cache:
            roster = await self.get(owner)
            if self.module.sessions.is_online(owner):
                self._cache[owner] = roster

    async def session_closed(self, event: SessionClosed) -> None:
        owner = event.session.bare
        if not self.module.sessions.is_online(owner):
            self._cache.pop(owner, None)
            self._locks.pop(owner, None)

    async def account_removed(self, event: AccountRemoved) -> None:
        owner = JID(event.username, event.host, None)
        self._cache.pop(owner, None)
        await self.items.delete_all(event.host, event.username)
        await self.pending.delete_all(event.host, event.username)
        await self.meta.set(event.host, event.username, None)


def setup(module: ModuleAPI) -> None:
    roster = RosterService(module)
    module.provide(roster)
    module.add_feature(ns.ROSTER, target=ACCOUNT)
    module.on(SessionBound, roster.session_bound)
    # Last: the other modules still read the roster on the way out (unavailable presence).
    module.on(SessionClosed, roster.session_closed, priority=-100)
    module.on(AccountRemoved, roster.account_removed)

    async def roster_get(request: IqRequest) -> Element:
        if not request.is_own_account:
            raise StanzaError("forbidden", "you can only read your own roster")
        data = await roster.get(request.target)
        if request.session is not None:
            request.session.is_interested = True
        query = Element("query", ns.ROSTER, {"ver": str(data.version)})
        ver = request.payload.get("ver")
        if ver is not None and ver == str(data.version):
            return request.result()           # 2.6.3: unchanged; nothing to send
        for item in data.items.values():
            query.append(item.to_element())
        return request.result(query)

    async def roster_set(request: IqRequest) -> Element | None:
        if not request.is_own_account:
            raise StanzaError("forbidden", "you can only change your own roster")
        items = list(request.payload.elements("item", ns.ROSTER))
        if len(items) != 1:
            raise StanzaError("bad-request", "a roster set carries exactly one item")
        el = items[0]
        contact = try_jid(el.get("jid"))
        if contact is None:
            raise StanzaError("bad-request", "the item needs a valid 'jid'")
        contact = contact.bare
        owner = request.target
        if el.get("subscription") == "remove":
            presence = module.service(PresenceHooks)
            async with roster.lock(owner):
                state = await roster.state(owner, contact)
                item = await roster.remove_item(owner, contact)
            if item is None and not state.has_pending_in:
                raise StanzaError("item-not-found", "that contact is not in your roster")
            await presence.removed_contact(owner, contact, state)
            return request.result()
        name = el.get("name", "") or ""
        if len(name) > MAX_NAME:
            raise StanzaError("not-acceptable", f"the name is longer than {MAX_NAME} characters")
        groups = [g.text for g in el.elements("group", ns.ROSTER)]
        if any(not g.strip() for g in groups):
            raise StanzaError("not-acceptable", "a group name is empty")
        if len(set(groups)) != len(groups):
            raise StanzaError("bad-request", "a group is listed twice")
        if len(groups) > MAX_GROUPS:
            raise StanzaError("not-acceptable", f"more than {MAX_GROUPS} groups")
        async with roster.lock(owner):
            await roster.set_item(owner, contact, name, groups)
        return request.result()

    module.on_iq("get", ns.ROSTER, "query", roster_get, target=ACCOUNT)
    module.on_iq("set", ns.ROSTER, "query", roster_set, target=ACCOUNT)


class PresenceHooks(ABC):
    """What the roster needs from the presence module (provided by modules/presence.py)."""

    @abstractmethod
    async def removed_contact(self, owner: JID, contact: JID, old_state: SubState) -> None:
        """A contact was removed from `owner`'s roster: withdraw presence both ways (RFC 6121 2.5.2)."""
