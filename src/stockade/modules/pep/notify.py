"""Event notifications (XEP-0163 section 4, XEP-0060 sections 7.1.2, 7.2.2, 8.4, 8.5).

Who gets a notification about a node of `owner`, each entity once:
1. the owner's own available resources that advertise '<node>+notify';
2. local contacts the owner shares presence with and who may read the node: each of their
   available resources with a non-negative priority that advertises '<node>+notify'
   (auto-subscription with filtered notifications, XEP-0163 4.1 to 4.3);
3. explicit subscribers (XEP-0060 6.1) who may still read the node, at the JID they subscribed
   with (unless that bare JID already got it at its resources).

With several worker processes (core/partition.py), a contact in another worker is sent the
notification at its bare JID; that worker, which knows its sessions' interests, delivers it by
the same rule (`to_account`).

Notifications come from the owner's bare JID as <message type='headline'/> (pubsub#notification_type),
so nothing of this reaches offline storage. Access is checked again for every notification: a
contact who lost the presence subscription, or was removed from the whitelist, gets nothing more.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Iterable

from ...core.hooks import HANDLED, MessageToLocal, StanzaToLocal
from ...core.module_api import ModuleAPI
from ...core.sessions import ClientSession
from ...protocol import ns
from ...protocol.jid import JID, try_jid
from ...protocol.xml import Element
from ..roster import RosterService
from .access import AccessControl
from .caps import CapsTracker
from .config import NS_EVENT, config_form
from .store import Item, Node, NodeStore


def delay_stamp(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event_item(node: Node, item: Item) -> Element:
    """<items node='...'><item id='...'>payload</item></items> in the event namespace."""
    items = Element("items", NS_EVENT, {"node": node.name})
    el = items.add("item", attrs={"id": item.id})
    if node.config.deliver_payloads:
        el.append(item.payload.copy())
    return items


class Notifier:
    def __init__(self, module: ModuleAPI, store: NodeStore, access: AccessControl, roster: RosterService,
                 caps: CapsTracker) -> None:
        self.module = module
        self.store = store
        self.access = access
        self.roster = roster
        self.caps = caps

    # -- who ------------------------------------------------------------------------------------
    def is_cut_off(self, owner: JID, recipient: JID) -> bool:
        """Whether one of the two blocked the other (XEP-0163 4.3.5: no notifications to an entity
        the owner blocked). blocking.py drops what the server sends on a user's behalf for presence
        only, so the question is put to the StanzaToLocal handlers as presence from the owner; once
        it covers headline messages too, the router's own check is enough."""
        bus = self.module.ctx.bus
        if not bus.has(StanzaToLocal):
            return False
        probe = Element("presence", ns.CLIENT, {"from": str(owner), "to": str(recipient), "type": "unavailable"})
        return bus.fire(StanzaToLocal(probe, recipient, owner)) is not None

    async def recipients(self, owner: JID, node: Node) -> list[JID]:
        """Everyone who should hear about a change of the node now (see the module docstring)."""
        if not node.config.deliver_notifications:
            return []
        targets: dict[JID, None] = {}
        caps, sessions = self.caps, self.module.sessions
        for session in sessions.available(owner):
            if caps.interested(session, node.name):
                targets[session.jid] = None
        local = self.module.ctx.domains
        roster = await self.roster.get(owner)
        for contact, item in list(roster.items.items()):
            if item.subscription not in ("from", "both") or contact == owner or contact.domain not in local:
                continue
            if not self.module.router.is_here(contact):
                # The contact lives in another worker process, which knows its sessions' interests
                # (caps): the notification goes to the account, and `to_account` there picks them.
                if not self.is_cut_off(owner, contact) and await self.access.allows(owner, node, contact):
                    targets[contact] = None
                continue
            interested = [s for s in sessions.available(contact)
                          if s.priority >= 0 and caps.interested(s, node.name)]
            if interested and not self.is_cut_off(owner, contact) and await self.access.allows(owner, node, contact):
                for session in interested:
                    targets[session.jid] = None
        for subscribed in list(node.subscribers):
            jid = try_jid(subscribed)
            if jid is None or jid in targets:
                continue
            if jid.resource is None and any(t.bare == jid for t in targets):
                continue
            if not self.is_cut_off(owner, jid) and await self.access.allows(owner, node, jid):
                targets[jid] = None
        return list(targets)

    def to_account(self, event: MessageToLocal) -> object:
        """A notification another worker sent to a contact's bare JID (see `recipients`): to each
        of its available resources with a non-negative priority that advertises '<node>+notify',
        nobody else (registered with several workers only)."""
        stanza, to = event.stanza, event.to
        if to.resource is not None or stanza.attrs.get("type") != "headline":
            return None
        owner = try_jid(stanza.attrs.get("from"))
        if owner is None or owner.resource is not None or owner.domain not in self.module.ctx.domains:
            return None                       # a client's message always has its full JID
        event_el = stanza.find("event", NS_EVENT)
        child = event_el.first_element() if event_el is not None else None
        node = child.attrs.get("node") if child is not None else None
        if node is None:
            return None
        for session in self.module.sessions.available(to):
            if session.priority >= 0 and self.caps.interested(session, node):
                copy = stanza.copy()
                copy.attrs["to"] = session.full
                session.send(copy)
        return HANDLED

    # -- what -----------------------------------------------------------------------------------
    def message(self, owner: JID, to: JID, node: Node, child: Element, when: float | None = None) -> Element:
        msg = Element("message", ns.CLIENT, {"from": str(owner), "to": str(to),
                                             "type": node.config.notification_type,
                                             "id": "pep-" + secrets.token_hex(8)})
        msg.add("event", NS_EVENT).append(child.copy())
        if when is not None:        # the last published item, sent later (XEP-0060 6.1.7)
            msg.add("delay", ns.DELAY, {"from": str(owner), "stamp": delay_stamp(when)})
        return msg

    async def send(self, stanza: Element) -> None:
        pending = self.module.send(stanza)
        if pending is not None:
            await pending

    async def broadcast(self, owner: JID, node: Node, child: Element, to: Iterable[JID] | None = None) -> None:
        targets = await self.recipients(owner, node) if to is None else list(to)
        for target in targets:
            await self.send(self.message(owner, target, node, child))

    async def published(self, owner: JID, node: Node, item: Item) -> None:
        await self.broadcast(owner, node, event_item(node, item))

    async def retracted(self, owner: JID, node: Node, item_ids: list[str]) -> None:
        items = Element("items", NS_EVENT, {"node": node.name})
        for item_id in item_ids:
            items.add("retract", attrs={"id": item_id})
        await self.broadcast(owner, node, items)

    async def purged(self, owner: JID, node: Node) -> None:
        await self.broadcast(owner, node, Element("purge", NS_EVENT, {"node": node.name}))

    async def deleted(self, owner: JID, node: Node, recipients: list[JID]) -> None:
        await self.broadcast(owner, node, Element("delete", NS_EVENT, {"node": node.name}), recipients)

    async def configured(self, owner: JID, node: Node) -> None:
        child = Element("configuration", NS_EVENT, {"node": node.name})
        if node.config.deliver_payloads:
            child.append(config_form(node.config, "result"))
        await self.broadcast(owner, node, child)

    async def subscription_changed(self, owner: JID, node: Node, jid: JID, state: str) -> None:
        """XEP-0060 12.6: tell a (former) subscriber about its subscription."""
        child = Element("subscription", NS_EVENT, {"node": node.name, "jid": str(jid), "subscription": state})
        await self.send(self.message(owner, jid, node, child))

    # -- the last published item ----------------------------------------------------------------
    async def send_last(self, owner: JID, node: Node, to: JID) -> None:
        item = await self.store.last_item(owner, node)
        if item is not None:
            await self.send(self.message(owner, to, node, event_item(node, item), item.when))

    async def newly_interested(self, session: ClientSession, nodes: set[str]) -> None:
        """A session became available or announced new interests: send it the last item of each
        such node of its own account and of every contact whose presence it receives and whose
        node it may read (XEP-0163 4.3.3 and 4.3.4)."""
        owners = []
        local = self.module.ctx.domains
        roster = await self.roster.get(session.bare)
        if session.priority >= 0:       # contacts notify non-negative resources only (4.3.2)
            for contact, item in list(roster.items.items()):
                if item.subscription in ("to", "both") and contact != session.bare and contact.domain in local:
                    owners.append(contact)
        owners.append(session.bare)     # last: the own items close the batch (tests wait for them)
        for owner in owners:
            if owner != session.bare and (self.is_cut_off(owner, session.jid)
                                          or not await self.module.accounts.exists(owner.domain, owner.local or "")):
                continue
            owner_nodes = await self.store.nodes(owner)
            for name in sorted(nodes):
                node = owner_nodes.get(name)
                if node is None or node.config.send_last_published_item != "on_sub_and_presence" \
                        or not node.config.deliver_notifications:
                    continue
                if owner != session.bare and not await self.roster.shares_presence_with(owner, session.bare):
                    continue        # an implicit subscription needs the owner's presence subscription
                if not await self.access.allows(owner, node, session.jid):
                    continue
                if session.is_closed:
                    return
                await self.send_last(owner, node, session.jid)
