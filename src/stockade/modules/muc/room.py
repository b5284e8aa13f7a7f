"""XEP-0045 sections 7.1-7.7: a room, its occupants, and their presence.

A room holds its configuration, affiliations (bare JID -> affiliation), reserved nicknames, the
occupants (nickname -> `Occupant`), the subject and the discussion history. One occupant may be
joined from several resources of the same account with the same nickname (7.2.6); each of those
full JIDs is a session of the occupant and gets everything the occupant gets.

Presence rules kept here (7.2.3-7.2.5, 17.3):
- every presence the room sends carries `<x xmlns='...#user'><item affiliation role/></x>`; the
  occupant's real full JID is added only for viewers allowed to see it: everyone in a
  non-anonymous room, moderators in a semi-anonymous one;
- an occupant's own presence comes last on entering and carries status 110 (plus 100 in a
  non-anonymous room, 170 when the room is logged, 201 when the room was just created);
- whatever `<x/>` in the MUC namespaces a client put in its presence is never reflected.

All methods run inside the room's worker (see service.py), one stanza at a time, so the room's
state needs no locks.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from ...protocol import ns
from ...protocol.errors import StanzaError
from ...protocol.jid import JID
from ...protocol.xml import Element
from .config import RoomConfig
from .history import History, HistoryLimits, delayed
from .roles import Affiliation, Role, at_least, default_role, role_after_affiliation_change

if TYPE_CHECKING:
    from .service import MucService

NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_ADMIN = NS_MUC + "#admin"
NS_OWNER = NS_MUC + "#owner"
MUC_NAMESPACES = frozenset({NS_MUC, NS_USER, NS_ADMIN, NS_OWNER})


def sanitised(stanza: Element) -> Element:
    """A client's presence or message without its addresses and without MUC extensions, which
    only the room may write (17.3.2; XEP-0313 8.5)."""
    out = Element(stanza.name, stanza.xmlns, {k: v for k, v in stanza.attrs.items() if k not in ("to", "from")})
    out.children = [c.copy() if isinstance(c, Element) else c for c in stanza.children
                    if not (isinstance(c, Element) and (c.xmlns in MUC_NAMESPACES or c.name == "error"))]
    return out


@dataclass
class Occupant:
    nick: str
    bare: JID
    role: Role
    presence: Element                                   # the last presence, sanitised
    sessions: list[JID] = field(default_factory=list)   # full JIDs joined under this nickname
    asked_for_voice: bool = False                       # a voice request is with the moderators

    @property
    def jid(self) -> JID:
        """The full JID shown to those allowed to see it: the first session's."""
        return self.sessions[0]


@dataclass
class Subject:
    text: str = ""
    nick: str = ""           # who set it; "" when nobody has
    when: float = 0.0


class Room:
    def __init__(self, service: MucService, name: str, config: RoomConfig) -> None:
        self.service = service
        self.name = name
        self.jid = JID(name, service.domain, None)
        self.config = config
        self.affiliations: dict[JID, Affiliation] = {}
        self.reserved_nicks: dict[JID, str] = {}
        self.occupants: dict[str, Occupant] = {}
        self.by_session: dict[JID, Occupant] = {}
        self.subject = Subject()
        self.history = History(service.options.history_max)
        self.is_locked = False               # created, waiting for its first configuration
        self.is_destroyed = False
        self.is_stored = False               # has a document in the room store
        self.has_archive = False             # may have items in the room archive
        self.invitations: dict[JID, set[JID]] = {}    # invitee (bare) -> inviters (bare), for declines

    # -- questions --------------------------------------------------------------------------------
    def affiliation(self, bare: JID) -> Affiliation:
        return self.affiliations.get(bare.bare, "none")

    def owners(self) -> list[JID]:
        return [j for j, a in self.affiliations.items() if a == "owner"]

    def occupant_jid(self, nick: str) -> JID:
        return JID(self.name, self.service.domain, nick)

    def sees_real_jids(self, viewer: Occupant | None) -> bool:
        return self.config.is_non_anonymous or (viewer is not None and viewer.role == "moderator")

    def max_users(self) -> int:
        limit = self.service.options.max_occupants
        return min(self.config.max_users, limit) if self.config.max_users else limit

    def nick_owner(self, nick: str) -> JID | None:
        """The bare JID that reserved `nick` (7.2.9 "reserved by another user on the member list")."""
        for bare, reserved in self.reserved_nicks.items():
            if reserved == nick:
                return bare
        return None

    def is_empty(self) -> bool:
        return not self.occupants

    # -- building presence ----------------------------------------------------------------------
    def presence_of(self, occupant: Occupant, viewer: Occupant | None, *, unavailable: bool = False,
                    codes: Iterable[str] = (), new_nick: str | None = None, actor: str | None = None,
                    reason: str | None = None, status: list[Element] | None = None) -> Element:
        """The presence of `occupant` as `viewer` sees it (no 'to' yet)."""
        if unavailable:
            out = Element("presence", ns.CLIENT, {"type": "unavailable"})
            for child in status or ():
                out.append(child.copy())
        else:
            out = occupant.presence.copy()
            out.attrs.pop("type", None)
        out.attrs["from"] = str(self.occupant_jid(occupant.nick))
        x = out.add("x", NS_USER)
        item = x.add("item", attrs={"affiliation": self.affiliation(occupant.bare),
                                    "role": "none" if unavailable and new_nick is None else occupant.role})
        if self.sees_real_jids(viewer):
            item.attrs["jid"] = str(occupant.jid)
        if new_nick is not None:
            item.attrs["nick"] = new_nick
        if actor is not None:
            item.add("actor", attrs={"nick": actor})
        if reason:
            item.add("reason", text=reason)
        codes = list(codes)
        if viewer is occupant:
            codes.append("110")
        for code in sorted(set(codes)):
            x.add("status", attrs={"code": code})
        return out

    async def send_to(self, occupant: Occupant, stanza: Element, sessions: Iterable[JID] | None = None) -> None:
        """Send a copy of `stanza` to every session of the occupant (or to the given ones)."""
        for full in list(sessions if sessions is not None else occupant.sessions):
            out = stanza.copy()
            out.attrs["to"] = str(full)
            await self.service.deliver(out)

    async def broadcast_presence(self, subject: Occupant, *, others_codes: Iterable[str] = (),
                                 self_codes: Iterable[str] = (), unavailable: bool = False,
                                 new_nick: str | None = None, actor: str | None = None,
                                 reason: str | None = None, status: list[Element] | None = None,
                                 self_last: bool = True) -> None:
        """Tell every occupant (the subject last) about `subject`'s presence."""
        others_codes, self_codes = list(others_codes), list(self_codes)
        for viewer in list(self.occupants.values()):
            if viewer is subject:
                continue
            await self.send_to(viewer, self.presence_of(subject, viewer, unavailable=unavailable, codes=others_codes,
                                                         new_nick=new_nick, actor=actor, reason=reason, status=status))
        if self_last:
            await self.send_to(subject, self.presence_of(subject, subject, unavailable=unavailable,
                                                         codes=others_codes + self_codes, new_nick=new_nick,
                                                         actor=actor, reason=reason, status=status))

    async def broadcast_message(self, stanza: Element) -> None:
        """Send a message (with 'from' set) to every session of every occupant."""
        for occupant in list(self.occupants.values()):
            await self.send_to(occupant, stanza)

    async def send_status_message(self, codes: list[str]) -> None:
        """A groupchat message from the room carrying only status codes (10.2.1)."""
        if not codes or not self.occupants:
            return
        msg = Element("message", ns.CLIENT, {"from": str(self.jid), "type": "groupchat"})
        x = msg.add("x", NS_USER)
        for code in codes:
            x.add("status", attrs={"code": code})
        await self.broadcast_message(msg)

    # -- entering -------------------------------------------------------------------------------
    def check_entry(self, session: JID, nick: str, x: Element | None) -> Affiliation:
        """Raise the XEP's error when `session` may not enter as `nick` (7.2.6-7.2.12)."""
        affiliation = self.affiliation(session.bare)
        if self.is_locked and affiliation != "owner":
            raise StanzaError("item-not-found", "this room is being set up by its owner and cannot be entered yet")
        if affiliation == "outcast":
            raise StanzaError("forbidden", "you are banned from this room")
        if self.config.is_members_only and not at_least(affiliation, "member"):
            raise StanzaError("registration-required", "this room is for members only; ask an admin to add you")
        if self.config.is_password_protected and affiliation != "owner":
            given = x.find_text("password", NS_MUC) if x is not None else None
            if given is None or not secrets.compare_digest(given.encode(), self.config.password.encode()):
                raise StanzaError("not-authorized", "this room needs a password" if given is None
                                  else "the room password is wrong")
        holder = self.occupants.get(nick)
        if holder is not None and holder.bare != session.bare:
            raise StanzaError("conflict", f"the nickname {nick!r} is taken in this room; choose another")
        owner = self.nick_owner(nick)
        if owner is not None and owner != session.bare:
            raise StanzaError("conflict", f"the nickname {nick!r} is reserved by a member of this room")
        if holder is None and len(self.occupants) >= self.max_users() and not at_least(affiliation, "admin"):
            raise StanzaError("service-unavailable", "this room is full")
        return affiliation

    async def enter(self, session: JID, nick: str, stanza: Element, *, created: bool, rewritten: bool = False) -> None:
        """Add `session` as `nick` (checks done), then presence, history and subject (7.2.3-7.2.16).
        `rewritten`: the room changed the nickname asked for (status 210)."""
        x = stanza.find("x", NS_MUC)
        limits = HistoryLimits.from_join(x, self.service.clock.time())
        holder = self.occupants.get(nick)
        if holder is not None:                    # another resource of the same account (7.2.6)
            holder.sessions.append(session)
            self.by_session[session] = holder
            await self._send_roster_to(holder, session)
            await self.send_to(holder, self.presence_of(holder, holder, codes=self._entry_codes(False, rewritten)),
                               [session])
        else:
            affiliation = self.affiliation(session.bare)
            occupant = Occupant(nick, session.bare, default_role(affiliation, self.config.is_moderated),
                                sanitised(stanza), [session])
            self.occupants[nick] = occupant
            self.by_session[session] = occupant
            await self._send_roster_to(occupant, session)
            await self.broadcast_presence(occupant, self_last=False)
            await self.send_to(occupant, self.presence_of(occupant, occupant,
                                                          codes=self._entry_codes(created, rewritten)))
        await self._send_history(session, limits)

    def _entry_codes(self, created: bool, rewritten: bool) -> list[str]:
        codes = ["210"] if rewritten else []
        if self.config.is_non_anonymous:
            codes.append("100")
        if self.config.is_logged:
            codes.append("170")
        if created:
            codes.append("201")
        return codes

    async def _send_roster_to(self, viewer: Occupant, session: JID) -> None:
        for other in list(self.occupants.values()):
            if other is not viewer:
                await self.send_to(viewer, self.presence_of(other, viewer), [session])

    async def _send_history(self, session: JID, limits: HistoryLimits) -> None:
        room = str(self.jid)
        permissions = self.service.module.ctx.permissions     # policy/permissions.py: "history"
        if permissions is None or session.local is None or permissions.may(session.domain, session.local, "history"):
            for entry in self.history.select(limits):
                await self.service.deliver(delayed(entry, room, str(session)))
        subject = Element("message", ns.CLIENT, {"type": "groupchat", "to": str(session),
                                                  "from": str(self.occupant_jid(self.subject.nick))
                                                  if self.subject.nick else room})
        subject.add("subject", text=self.subject.text or None)
        await self.service.deliver(subject)

    async def resend_roster(self, viewer: Occupant) -> None:
        """After `viewer` became a moderator in a semi-anonymous room: everyone again, with JIDs."""
        if self.config.is_non_anonymous:
            return
        for session in viewer.sessions:
            await self._send_roster_to(viewer, session)

    # -- while inside ---------------------------------------------------------------------------
    async def change_status(self, occupant: Occupant, stanza: Element) -> None:
        occupant.presence = sanitised(stanza)
        await self.broadcast_presence(occupant)

    async def change_nick(self, occupant: Occupant, session: JID, nick: str, stanza: Element) -> None:
        """7.6: unavailable with 303 and the new nickname, then available under the new one."""
        holder = self.occupants.get(nick)
        if holder is not None and holder.bare != occupant.bare:
            raise StanzaError("conflict", f"the nickname {nick!r} is taken in this room")
        owner = self.nick_owner(nick)
        if owner is not None and owner != occupant.bare:
            raise StanzaError("conflict", f"the nickname {nick!r} is reserved by a member of this room")
        if holder is not None:
            # The same account already uses that nickname from another resource: move this session.
            await self._leave_session(occupant, session, [])
            self.occupants[nick].sessions.append(session)
            self.by_session[session] = holder
            await self.send_to(holder, self.presence_of(holder, holder), [session])
            return
        await self.broadcast_presence(occupant, others_codes=["303"], unavailable=True, new_nick=nick)
        del self.occupants[occupant.nick]
        occupant.nick = nick
        occupant.presence = sanitised(stanza)
        self.occupants[nick] = occupant
        await self.broadcast_presence(occupant)

    async def leave(self, session: JID, stanza: Element | None) -> None:
        """The session sent unavailable presence, or its connection went (7.14)."""
        occupant = self.by_session.get(session)
        if occupant is None:
            return                                  # 17.3.1: ignore unavailable from non-occupants
        status = [c for c in stanza.elements("status", ns.CLIENT)] if stanza is not None else []
        await self._leave_session(occupant, session, status)
        await self.service.after_leave(self)

    async def _leave_session(self, occupant: Occupant, session: JID, status: list[Element]) -> None:
        del self.by_session[session]
        gone = self.presence_of(occupant, occupant, unavailable=True, status=status)
        gone.attrs["to"] = str(session)
        if len(occupant.sessions) > 1:              # other resources stay: only this one is told
            occupant.sessions.remove(session)
            await self.service.deliver(gone)
            return
        await self.broadcast_presence(occupant, unavailable=True, status=status, self_last=False)
        del self.occupants[occupant.nick]
        occupant.sessions.remove(session)
        await self.service.deliver(gone)

    async def remove(self, occupant: Occupant, code: str, actor: Occupant | None = None,
                     reason: str | None = None) -> None:
        """Take an occupant out (kick 307, ban 301, affiliation 321, members-only 322, shutdown 332)."""
        if occupant.nick not in self.occupants:
            return
        actor_nick = actor.nick if actor is not None else None
        occupant.role = "none"
        await self.send_to(occupant, self.presence_of(occupant, occupant, unavailable=True, codes=[code],
                                                      actor=actor_nick, reason=reason))
        del self.occupants[occupant.nick]
        for session in occupant.sessions:
            self.by_session.pop(session, None)
        for viewer in list(self.occupants.values()):
            await self.send_to(viewer, self.presence_of(occupant, viewer, unavailable=True, codes=[code],
                                                        actor=actor_nick, reason=reason))

    # -- roles and affiliations -----------------------------------------------------------------
    async def set_role(self, occupant: Occupant, role: Role, actor: Occupant | None, reason: str | None) -> None:
        if role == "none":
            await self.remove(occupant, "307", actor, reason)
            return
        if occupant.role == role:
            return
        was_moderator = occupant.role == "moderator"
        occupant.role = role
        occupant.asked_for_voice = False
        await self.broadcast_presence(occupant, actor=actor.nick if actor else None, reason=reason)
        if role == "moderator" and not was_moderator:
            await self.resend_roster(occupant)

    async def set_affiliation(self, bare: JID, affiliation: Affiliation, actor: Occupant | None,
                              reason: str | None, nick: str | None = None) -> None:
        """Change a bare JID's affiliation and what follows for it in the room (9.1-10.8)."""
        old = self.affiliation(bare)
        if affiliation == "none":
            self.affiliations.pop(bare, None)
        else:
            self.affiliations[bare] = affiliation
        if affiliation in ("none", "outcast"):
            self.reserved_nicks.pop(bare, None)
        elif nick:
            self.reserved_nicks[bare] = nick
        for occupant in [o for o in self.occupants.values() if o.bare == bare]:
            role = role_after_affiliation_change(occupant.role, old, affiliation, self.config.is_moderated,
                                                 self.config.is_members_only)
            if role == "none":
                await self.remove(occupant, "301" if affiliation == "outcast" else "321", actor, reason)
                continue
            gained_moderator = role == "moderator" and occupant.role != "moderator"
            occupant.role = role
            await self.broadcast_presence(occupant, actor=actor.nick if actor else None, reason=reason)
            if gained_moderator:
                await self.resend_roster(occupant)

    async def apply_config(self, new: RoomConfig, codes: list[str]) -> None:
        """Take a new configuration into use and tell the occupants (10.2, 10.2.1)."""
        old, self.config = self.config, new
        if new.is_members_only and not old.is_members_only:
            for occupant in list(self.occupants.values()):
                if not at_least(self.affiliation(occupant.bare), "member"):
                    await self.remove(occupant, "322")
        if new.whois != old.whois:
            # Who may see real JIDs changed: everyone gets the room roster again as now visible.
            for viewer in list(self.occupants.values()):
                for session in viewer.sessions:
                    await self._send_roster_to(viewer, session)
        await self.send_status_message(codes)

    async def destroy(self, reason: str | None = None, alternate: str | None = None,
                      password: str | None = None) -> None:
        """10.9: every occupant gets one unavailable presence with <destroy/>; the room is gone."""
        self.is_destroyed = True
        for occupant in list(self.occupants.values()):
            out = Element("presence", ns.CLIENT, {"type": "unavailable",
                                                  "from": str(self.occupant_jid(occupant.nick))})
            x = out.add("x", NS_USER)
            x.add("item", attrs={"affiliation": "none", "role": "none"})
            destroy = x.add("destroy", attrs={"jid": alternate} if alternate else {})
            if reason:
                destroy.add("reason", text=reason)
            if password:
                destroy.add("password", text=password)
            x.add("status", attrs={"code": "110"})
            await self.send_to(occupant, out)
        self.occupants.clear()
        self.by_session.clear()
