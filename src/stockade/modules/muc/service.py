"""The chat service on conference.<domain>: routing into rooms, disco, creation, persistence.

The router hands this service every stanza addressed to its domain or to a JID on it, with a
trusted 'from' (`send`, synchronous). Stanzas are queued per room and each room's queue is worked
by one task at a time, so a room handles one stanza after the other in arrival order (RFC 6120
10.1 for each sender) while other rooms go on in parallel. A handler that refuses a stanza raises
`StanzaError`; the worker answers with the error, stamped by the room (`by`), and goes on. A bug
is logged and answered with <internal-server-error/>, never with a traceback.

Addresses:
    conference.example.com            the service: disco#info, disco#items (public rooms), ping
    room@conference.example.com       the room: groupchat, invitations, muc#admin, muc#owner,
                                      disco, XEP-0313 queries, ping
    room@conference.example.com/nick  an occupant: presence (enter, change, exit), private
                                      messages, XEP-0410 self-ping
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from ...core.hooks import ServerStopping
from ...protocol import ns
from ...protocol.errors import StanzaError, error_reply
from ...protocol.jid import JID, try_jid
from ...protocol.xml import Element
from . import admin, messages
from .archive import RoomArchive
from .config import RoomConfig, room_features, room_info_form
from .mam_query import NS_MAM, NS_SID
from .roles import Privilege, may
from .room import NS_ADMIN, NS_MUC, NS_OWNER, NS_USER, Room
from .store import RoomStore, restore

if TYPE_CHECKING:
    from ...core.module_api import ModuleAPI
    from . import Options

log = logging.getLogger(__name__)

NS_SELF_PING = "http://jabber.org/protocol/muc#self-ping-optimization"
MAX_QUEUED = 5000       # stanzas waiting for one room; more are refused (<resource-constraint/>)
# Errors from an occupant's address that mean its session is gone (XEP-0045 16.1 item 10).
DELIVERY_FAILURES = frozenset({"service-unavailable", "recipient-unavailable", "remote-server-not-found",
                               "remote-server-timeout", "item-not-found", "gone"})


class MucService:
    def __init__(self, module: ModuleAPI, domain: str, host: str, options: Options,
                 rooms: RoomStore, archive: RoomArchive) -> None:
        self.module = module
        self.domain = domain
        self.host = host                        # the served domain this service belongs to
        self.options = options
        self.clock = module.clock
        self.store = rooms
        self.archive = archive
        self.rooms: dict[str, Room] = {}
        self._loaded = False
        self._load_lock = asyncio.Lock()
        self._queues: dict[str, deque[Element]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    # -- entry from the router ------------------------------------------------------------------
    def send(self, stanza: Element) -> None:
        """Take a stanza addressed to this service (called by the router, must not block)."""
        to = try_jid(stanza.get("to"))
        key = to.local if to is not None and to.local is not None else ""
        queue = self._queues.setdefault(key, deque())
        if len(queue) >= MAX_QUEUED:
            # A flood must not grow memory without bound: refuse now rather than queue.
            if stanza.get("type") != "error" and stanza.get("from"):
                refusal = error_reply(stanza, StanzaError("resource-constraint", "this room is busy; try again later"))
                pending = self.module.router.route(refusal)
                if pending is not None:
                    asyncio.ensure_future(pending)
            return
        queue.append(stanza)
        if key not in self._workers:
            self._workers[key] = asyncio.get_running_loop().create_task(self._work(key), name=f"muc {key}@{self.domain}")

    async def _work(self, key: str) -> None:
        queue = self._queues[key]
        try:
            while queue:
                stanza = queue.popleft()
                try:
                    await self._handle(stanza)
                except StanzaError as exc:
                    await self._refuse(stanza, exc)
                except Exception:
                    log.exception("the chat service failed on %r", stanza)
                    await self._refuse(stanza, StanzaError("internal-server-error",
                                                           "the chat service failed to handle this stanza"))
        finally:
            # The loop only ends with an empty queue (nothing can be queued between its last check
            # and here), or when the task is cancelled at shutdown.
            del self._workers[key]
            if not queue:
                self._queues.pop(key, None)

    async def _refuse(self, stanza: Element, error: StanzaError) -> None:
        if stanza.get("type") == "error" or not stanza.get("from"):
            return
        to = try_jid(stanza.get("to"))
        reply = error_reply(stanza, error, by=str(to.bare) if to is not None and to.local else None)
        if stanza.name == "presence":
            # Errors to a join carry the MUC element (clients match on it), never the password.
            reply.children = [c for c in reply.children if not (isinstance(c, Element) and c.xmlns == NS_MUC)]
            reply.children.insert(0, Element("x", NS_MUC))
        await self.deliver(reply)

    async def deliver(self, stanza: Element) -> None:
        """Route a stanza from the service or a room, waiting for presence to be handed over."""
        pending = self.module.router.route(stanza)
        if pending is not None:
            await pending

    async def _handle(self, stanza: Element) -> None:
        await self._ensure_loaded()
        sender = try_jid(stanza.get("from"))
        to = try_jid(stanza.get("to"))
        if sender is None or to is None:
            return
        if to.local is None:
            await self._to_service(stanza, sender)
        elif stanza.name == "presence":
            await self._presence(stanza, sender, to)
        elif stanza.name == "message":
            await self._message(stanza, sender, to)
        elif stanza.name == "iq":
            await self._iq(stanza, sender, to)

    # -- rooms: life and persistence ------------------------------------------------------------
    async def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        async with self._load_lock:
            if self._loaded:
                return
            for name, doc in (await self.store.load_all(self.domain)).items():
                if name not in self.rooms:
                    room = self.rooms[name] = restore(Room(self, name, RoomConfig()), doc)
                    room.is_stored = room.has_archive = True
            self._loaded = True

    def _create(self, name: str, owner: JID, is_locked: bool) -> Room:
        if owner.domain != self.host:
            # Each tenant's rooms are its own: users of another host (or server) may enter the
            # rooms they are let into, not create rooms here.
            raise StanzaError("not-allowed", f"only users of {self.host} may create rooms on {self.domain}")
        permissions = self.module.ctx.permissions         # policy/permissions.py: "muc_create"
        denial = permissions.refuse(owner.domain, owner.local or "", "muc_create") if permissions is not None else None
        if denial is not None:
            raise denial.error()
        if len(self.rooms) >= self.options.max_rooms:
            raise StanzaError("not-allowed", f"this service has reached its limit of {self.options.max_rooms} rooms")
        room = Room(self, name, RoomConfig(is_logged=self.options.log_by_default))
        room.affiliations[owner.bare] = "owner"
        room.is_locked = is_locked
        self.rooms[name] = room
        return room

    async def save(self, room: Room) -> None:
        """Write a persistent room's state (or forget a room that is no longer persistent)."""
        if room.is_destroyed:
            return
        if room.config.is_persistent:
            await self.store.save(room)
            room.is_stored = True
        elif room.is_stored:
            await self.store.delete(self.domain, room.name)
            room.is_stored = False

    async def after_leave(self, room: Room) -> None:
        """An empty temporary room, or a room left before its first configuration, ends (10.1.3, 7.14)."""
        if room.is_destroyed or not room.is_empty():
            return
        if room.is_locked or not room.config.is_persistent:
            await self.destroy(room)

    async def destroy(self, room: Room, reason: str | None = None, alternate: str | None = None,
                      password: str | None = None) -> None:
        await room.destroy(reason, alternate, password)
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]
        if room.is_stored:
            await self.store.delete(self.domain, room.name)
        if room.has_archive or room.config.is_logged:
            # The history of a destroyed room must not reach whoever creates a room of that name next.
            await self.archive.delete(self.domain, room.name)

    # -- presence -------------------------------------------------------------------------------
    async def _presence(self, stanza: Element, sender: JID, to: JID) -> None:
        ptype = stanza.get("type")
        room = self.rooms.get(to.local or "")
        if ptype == "error":
            await self._delivery_failed(room, sender, stanza)
            return
        if ptype == "unavailable":
            if room is not None:
                await room.leave(sender, stanza)
            return
        if ptype is not None:                     # probes and subscriptions: rooms have no roster
            if ptype == "subscribe":
                raise StanzaError("not-acceptable", "chat rooms do not take presence subscriptions")
            return
        if to.resource is None:
            raise StanzaError("jid-malformed", "add your nickname: send presence to room@service/nickname")
        # Spaces around a nickname are invisible in a roster: the room takes them off (210 on entry).
        nick = to.resource.strip()
        if not nick:
            raise StanzaError("jid-malformed", "a nickname cannot be only spaces")
        if len(nick) > self.options.max_nick_length:
            raise StanzaError("not-acceptable", f"nicknames are limited to {self.options.max_nick_length} characters")
        occupant = room.by_session.get(sender) if room is not None else None
        if occupant is not None and room is not None:
            if nick == occupant.nick:
                await room.change_status(occupant, stanza)
            elif not may(occupant.role, Privilege.CHANGE_NICK):
                raise StanzaError("not-allowed", "you may not change your nickname in this room")
            else:
                await room.change_nick(occupant, sender, nick, stanza)
            return
        created = False
        if room is None:
            room = self._create(to.local or "", sender, is_locked=stanza.find("x", NS_MUC) is not None)
            created = True
            # Left over if the server stopped before an earlier room of this name was destroyed.
            await self.archive.delete(self.domain, room.name)
        try:
            room.check_entry(sender, nick, stanza.find("x", NS_MUC))
            await room.enter(sender, nick, stanza, created=created, rewritten=nick != to.resource)
        finally:
            await self.after_leave(room)

    async def _delivery_failed(self, room: Room | None, sender: JID, stanza: Element) -> None:
        """An occupant's address answered with a delivery error: its session is gone (16.1 item 10)."""
        if room is None or sender not in room.by_session:
            return
        error = stanza.find("error", ns.CLIENT)
        condition = next((c.name for c in error.elements(xmlns=ns.STANZA_ERRORS)), "") if error is not None else ""
        is_local = sender.domain in self.module.ctx.domains
        if condition in DELIVERY_FAILURES and not (is_local and self.module.sessions.get(sender) is not None):
            await room.leave(sender, None)

    # -- messages -------------------------------------------------------------------------------
    async def _message(self, stanza: Element, sender: JID, to: JID) -> None:
        mtype = stanza.get("type", "normal")
        room = self.rooms.get(to.local or "")
        if mtype == "error":
            await self._delivery_failed(room, sender, stanza)
            return
        if room is None or (room.is_locked and sender not in room.by_session):
            raise StanzaError("item-not-found", f"there is no room {to.bare}")
        if to.resource is not None:
            await messages.private_message(self, room, sender, to.resource, stanza)
        elif mtype == "groupchat":
            await messages.groupchat(self, room, sender, stanza)
        else:
            x = stanza.find("x", NS_USER)
            if x is not None and x.find("invite", NS_USER) is not None:
                await messages.invitations(self, room, sender, x)
            elif x is not None and x.find("decline", NS_USER) is not None:
                await messages.decline(self, room, sender, x)
            elif _form_type(stanza) == messages.NS_REQUEST:
                await messages.voice_request(self, room, sender, stanza.find("x", ns.DATA_FORMS))  # type: ignore[arg-type]
            else:
                raise StanzaError("bad-request", "messages for everyone in the room are of type groupchat")

    # -- IQ -------------------------------------------------------------------------------------
    async def _iq(self, stanza: Element, sender: JID, to: JID) -> None:
        itype = stanza.get("type")
        if itype not in ("get", "set"):
            return                                # the service sends no requests of its own
        children = list(stanza.elements())
        if len(children) != 1:
            raise StanzaError("bad-request", "an IQ get or set carries exactly one child element")
        payload = children[0]
        room = self.rooms.get(to.local or "")
        if to.resource is not None:
            await self._iq_to_occupant(stanza, payload, room, sender, to)
            return
        if room is None or (room.is_locked and room.affiliation(sender) != "owner"):
            raise StanzaError("item-not-found", f"there is no room {to.bare}")
        key = (itype, payload.xmlns, payload.name)
        result: Element | None = None
        if key == ("get", ns.DISCO_INFO, "query"):
            result = self._room_info(room, sender, payload)
        elif key == ("get", ns.DISCO_ITEMS, "query"):
            result = self._room_items(room, sender)
        elif key == ("get", NS_ADMIN, "query"):
            result = await admin.admin_get(room, sender, payload)
        elif key == ("set", NS_ADMIN, "query"):
            await admin.admin_set(self, room, sender, payload)
        elif key == ("get", NS_OWNER, "query"):
            result = await admin.owner_get(self, room, sender, payload)
        elif key == ("set", NS_OWNER, "query"):
            await admin.owner_set(self, room, sender, payload)
        elif payload.xmlns == NS_MAM and payload.name == "query":
            if itype == "set":
                self._may_read_history(sender)
            result = await self.archive.query(self, room, sender, stanza, payload)
        elif key == ("get", ns.PING, "ping"):
            pass
        else:
            raise StanzaError("service-unavailable", "rooms do not answer this request")
        await self.deliver(iq_result(stanza, result))

    def _may_read_history(self, sender: JID) -> None:
        permissions = self.module.ctx.permissions         # policy/permissions.py: "history"
        if permissions is not None and sender.local is not None:
            denial = permissions.refuse(sender.domain, sender.local, "history")
            if denial is not None:
                raise denial.error()

    async def _iq_to_occupant(self, stanza: Element, payload: Element, room: Room | None, sender: JID,
                              to: JID) -> None:
        occupant = room.by_session.get(sender) if room is not None else None
        if occupant is None:
            # XEP-0410: the self-ping answer for someone who is not (any more) in the room.
            raise StanzaError("not-acceptable", "you are not an occupant of this room")
        if occupant.nick == to.resource and (payload.xmlns, payload.name) == (ns.PING, "ping"):
            await self.deliver(iq_result(stanza))           # XEP-0410 self-ping: still joined
            return
        raise StanzaError("service-unavailable", "this service does not pass requests between occupants")

    def _room_info(self, room: Room, sender: JID, payload: Element) -> Element:
        node = payload.get("node")
        query = Element("query", ns.DISCO_INFO, {"node": node} if node else {})
        if node == "x-roomuser-item":              # 7.13: the requester's reserved nickname
            nick = room.reserved_nicks.get(sender.bare)
            if nick:
                query.add("identity", attrs={"category": "conference", "type": "text", "name": nick})
            return query
        if node:
            raise StanzaError("item-not-found", f"the room has no disco node {node!r}")
        query.add("identity", attrs={"category": "conference", "type": "text", "name": room.config.name or room.name})
        features = [NS_MUC, ns.DISCO_INFO, ns.DISCO_ITEMS, NS_SELF_PING, ns.PING, *room_features(room.config)]
        if room.config.is_logged:
            features += [NS_MAM, NS_SID]
        for var in features:
            query.add("feature", attrs={"var": var})
        owners = [str(j) for j in room.owners()]
        query.append(room_info_form(room.config, room.subject.text, len(room.occupants), owners))
        return query

    def _room_items(self, room: Room, sender: JID) -> Element:
        query = Element("query", ns.DISCO_ITEMS)
        if sender in room.by_session:             # the occupant list only for those inside (6.5)
            for nick in room.occupants:
                query.add("item", attrs={"jid": str(room.occupant_jid(nick))})
        return query

    # -- the service itself ---------------------------------------------------------------------
    async def _to_service(self, stanza: Element, sender: JID) -> None:
        if stanza.name == "message":
            if stanza.get("type") not in ("error", "groupchat", "headline"):
                raise StanzaError("service-unavailable", "the chat service does not take messages itself; "
                                                         "write to a room (room@" + self.domain + ")")
            return
        if stanza.name != "iq" or stanza.get("type") not in ("get", "set"):
            return
        children = list(stanza.elements())
        payload = children[0] if len(children) == 1 else None
        key = (stanza.get("type"), payload.xmlns, payload.name) if payload is not None else None
        if key == ("get", ns.DISCO_INFO, "query") and not payload.get("node"):  # type: ignore[union-attr]
            result = Element("query", ns.DISCO_INFO)
            result.add("identity", attrs={"category": "conference", "type": "text", "name": "Chatrooms"})
            for var in (NS_MUC, ns.DISCO_INFO, ns.DISCO_ITEMS, ns.PING, NS_SID):
                result.add("feature", attrs={"var": var})
            await self.deliver(iq_result(stanza, result))
        elif key == ("get", ns.DISCO_ITEMS, "query") and not payload.get("node"):  # type: ignore[union-attr]
            result = Element("query", ns.DISCO_ITEMS)
            for name, room in sorted(self.rooms.items()):
                if room.config.is_public and not room.is_locked:
                    result.add("item", attrs={"jid": str(room.jid), "name": room.config.name or name})
            await self.deliver(iq_result(stanza, result))
        elif key == ("get", ns.PING, "ping"):
            await self.deliver(iq_result(stanza))
        else:
            raise StanzaError("service-unavailable", "the chat service does not answer this request")

    # -- shutdown -------------------------------------------------------------------------------
    async def stopping(self, event: ServerStopping) -> None:
        """Finish queued work; anyone still inside is told the service is going away (332)."""
        workers = list(self._workers.values())
        if workers:
            await asyncio.wait(workers, timeout=5)
        for room in list(self.rooms.values()):
            for occupant in list(room.occupants.values()):
                await room.remove(occupant, "332")
        for name in list(self.rooms):
            await self.archive.flush(self.domain, name)


def iq_result(request: Element, payload: Element | None = None) -> Element:
    attrs = {"type": "result", "from": request.get("to") or "", "to": request.get("from") or ""}
    if "id" in request.attrs:
        attrs["id"] = request.attrs["id"]
    out = Element("iq", ns.CLIENT, attrs)
    if payload is not None:
        out.append(payload)
    return out


def _form_type(stanza: Element) -> str | None:
    x = stanza.find("x", ns.DATA_FORMS)
    if x is None:
        return None
    for f in x.elements("field", ns.DATA_FORMS):
        if f.get("var") == "FORM_TYPE":
            return f.find_text("value", ns.DATA_FORMS)
    return None
