"""XEP-0045 sections 7.4-7.8 and 8.1: messages in a room, private messages, subject, invitations.

To the room's bare JID:
- type groupchat from an occupant with voice: reflected to every occupant from the sender's
  occupant JID (7.4), kept in the discussion history and, when the room is logged, archived with
  a XEP-0359 stanza id that every copy carries; a message with a <subject/> and no body changes
  the subject (8.1), when the sender may. From a non-occupant: <not-acceptable/>; from a
  visitor in a moderated room: <forbidden/> (7.4).
- a mediated invitation or a decline (7.8.2): the room sends it on, from itself.
- a voice request (7.13) from a visitor: forwarded as an approval form to the moderators, once
  per visit; a moderator's submitted approval (8.6) grants voice like a muc#admin request.
To an occupant JID (7.5): a private message, delivered from the sender's occupant JID to every
session of the addressee; never of type groupchat (<bad-request/>), only from occupants
(<not-acceptable/>), to nicknames in the room (<item-not-found/>).

Whatever MUC extension or room stanza id a client writes into a message is removed before the
room passes it on: only the room says who sent what (XEP-0313 8.5, XEP-0359 5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...storage import new_key
from ...protocol import ns
from ...protocol.errors import StanzaError
from ...protocol.jid import JID, try_jid
from ...protocol.xml import Element
from .forms import add_field, new_form, read_submission
from .mam_query import NS_SID
from .roles import Privilege, at_least, may, role_change
from .room import NS_USER, Room, sanitised

if TYPE_CHECKING:
    from .service import MucService

MAX_INVITES = 20                 # invitations in one message
MAX_PENDING_INVITES = 200        # remembered per room, for declines
NS_REQUEST = "http://jabber.org/protocol/muc#request"


def _strip_room_ids(stanza: Element, room: str) -> None:
    """Drop stanza ids that claim to come from this room (XEP-0359: MUST NOT pass them on)."""
    for sid in list(stanza.elements("stanza-id", NS_SID)):
        if sid.get("by") == room:
            stanza.remove(sid)


async def groupchat(service: MucService, room: Room, sender: JID, stanza: Element) -> None:
    occupant = room.by_session.get(sender)
    if occupant is None:
        raise StanzaError("not-acceptable", "you are not in this room; join it before sending messages")
    body = stanza.find("body", ns.CLIENT)
    subject = stanza.find("subject", ns.CLIENT)
    is_subject_change = subject is not None and body is None
    if is_subject_change:
        if not may(occupant.role, Privilege.CHANGE_SUBJECT, allow_subject_change=room.config.allow_subject_change):
            raise StanzaError("forbidden", "only moderators may change the subject of this room")
    elif not may(occupant.role, Privilege.SEND_TO_ALL):
        raise StanzaError("forbidden", "you have no voice in this moderated room; ask a moderator for it")
    out = sanitised(stanza)
    out.attrs["from"] = str(room.occupant_jid(occupant.nick))
    out.attrs["type"] = "groupchat"
    _strip_room_ids(out, str(room.jid))
    now = service.clock.time()
    if is_subject_change:
        room.subject.text = subject.text  # type: ignore[union-attr]
        room.subject.nick = occupant.nick
        room.subject.when = now
        await service.save(room)
    if body is not None or is_subject_change:
        if room.config.is_logged:
            key = new_key()           # time-ordered: cheap to index
            room.has_archive = True
            out.add("stanza-id", NS_SID, {"id": key, "by": str(room.jid)})
            service.archive.append(room, out, occupant, key, now)
        if body is not None:
            room.history.add(out, now)
    await room.broadcast_message(out)


async def private_message(service: MucService, room: Room, sender: JID, nick: str, stanza: Element) -> None:
    occupant = room.by_session.get(sender)
    if occupant is None:
        raise StanzaError("not-acceptable", "you are not in this room; only occupants may send private messages")
    if stanza.get("type") == "groupchat":
        raise StanzaError("bad-request", "a private message cannot be of type groupchat")
    if not may(occupant.role, Privilege.SEND_PRIVATE, allow_private=room.config.allow_private):
        raise StanzaError("forbidden", "private messages are not allowed for you in this room")
    target = room.occupants.get(nick)
    if target is None:
        raise StanzaError("item-not-found", f"nobody called {nick!r} is in this room")
    out = sanitised(stanza)
    out.attrs["from"] = str(room.occupant_jid(occupant.nick))
    _strip_room_ids(out, str(room.jid))
    out.add("x", NS_USER)          # marks it as a private message from a room (7.5)
    await room.send_to(target, out)


async def invitations(service: MucService, room: Room, sender: JID, x: Element) -> None:
    """7.8.2 mediated invitations: check all, then send each from the room."""
    invites = list(x.elements("invite", NS_USER))
    if len(invites) > MAX_INVITES:
        raise StanzaError("policy-violation", f"at most {MAX_INVITES} invitations per message")
    occupant = room.by_session.get(sender)
    affiliation = room.affiliation(sender)
    if occupant is None and not at_least(affiliation, "admin"):
        raise StanzaError("not-acceptable", "only occupants of the room may invite others")
    may_edit_members = at_least(affiliation, "admin")
    if room.config.is_members_only and not may_edit_members and not room.config.allow_invites:
        raise StanzaError("forbidden", "in this members-only room only admins may invite")
    if occupant is not None and not may(occupant.role, Privilege.INVITE, allow_invites=True):
        raise StanzaError("forbidden", "you may not invite anyone to this room")
    invitees = []
    for invite in invites:
        to = try_jid(invite.get("to"))
        if to is None:
            raise StanzaError("jid-malformed", f"cannot invite {invite.get('to')!r}: not a valid JID")
        if room.affiliation(to) == "outcast":
            raise StanzaError("not-allowed", f"{to.bare} is banned from this room")
        invitees.append((to, invite.find_text("reason", NS_USER)))
    for to, reason in invitees:
        if room.config.is_members_only and not at_least(room.affiliation(to), "member"):
            await room.set_affiliation(to.bare, "member", occupant, reason)
            await service.save(room)
        if to.bare in room.invitations or len(room.invitations) < MAX_PENDING_INVITES:
            room.invitations.setdefault(to.bare, set()).add(sender.bare)
        msg = Element("message", ns.CLIENT, {"from": str(room.jid), "to": str(to)})
        ux = msg.add("x", NS_USER)
        inv = ux.add("invite", attrs={"from": str(sender.bare)})
        if reason:
            inv.add("reason", text=reason)
        if room.config.is_password_protected:
            ux.add("password", text=room.config.password)
        text = f"{sender.bare} invites you to the room {room.jid}"
        msg.add("body", text=f"{text}: {reason}" if reason else text)
        await service.deliver(msg)


async def decline(service: MucService, room: Room, sender: JID, x: Element) -> None:
    """7.8.2: the invitee declines; only an inviter who did invite them hears about it."""
    element = x.find("decline", NS_USER)
    assert element is not None
    to = try_jid(element.get("to"))
    if to is None:
        raise StanzaError("jid-malformed", "a decline needs the JID of the inviter in 'to'")
    inviters = room.invitations.get(sender.bare, set())
    if to.bare not in inviters:
        raise StanzaError("not-acceptable", f"{to.bare} did not invite you to this room")
    inviters.discard(to.bare)
    if not inviters:
        room.invitations.pop(sender.bare, None)
    msg = Element("message", ns.CLIENT, {"from": str(room.jid), "to": str(to)})
    dx = msg.add("x", NS_USER).add("decline", attrs={"from": str(sender.bare)})
    reason = element.find_text("reason", NS_USER)
    if reason:
        dx.add("reason", text=reason)
    await service.deliver(msg)


async def voice_request(service: MucService, room: Room, sender: JID, x: Element) -> None:
    """7.13 a visitor asks for voice; 8.6 a moderator answers the approval form."""
    occupant = room.by_session.get(sender)
    if occupant is None:
        raise StanzaError("not-acceptable", "you are not in this room")
    form = read_submission(x)
    allow = form.boolean("muc#request_allow")
    if allow is not None:                                    # a moderator's answer
        target = room.occupants.get(form.single("muc#roomnick") or "")
        if target is None:
            raise StanzaError("item-not-found", "the occupant who asked for voice is no longer in the room")
        if allow:
            refusal = role_change(occupant.role, room.affiliation(sender), target.role,
                                  room.affiliation(target.bare), "participant")
            if refusal is not None:
                raise StanzaError(refusal.condition, refusal.text)
            await room.set_role(target, "participant", occupant, None)
        return
    if form.single("muc#role") != "participant":
        raise StanzaError("bad-request", "a voice request asks for the role participant (muc#role)")
    if occupant.role != "visitor":
        raise StanzaError("not-acceptable", "you already have voice in this room")
    if occupant.asked_for_voice:
        raise StanzaError("not-acceptable", "your request for voice is already with the moderators")
    occupant.asked_for_voice = True
    approval = new_form(NS_REQUEST, title="Voice request",
                        instructions=f"{occupant.nick} asks for voice. Submit with approval to grant it.")
    add_field(approval, "muc#role", "list-single", ["participant"], "Requested role")
    add_field(approval, "muc#jid", "jid-single", [str(occupant.jid)], "User ID")
    add_field(approval, "muc#roomnick", "text-single", [occupant.nick], "Room nickname")
    add_field(approval, "muc#request_allow", "boolean", ["0"], "Grant voice to this person?")
    msg = Element("message", ns.CLIENT, {"from": str(room.jid)})
    msg.append(approval)
    for moderator in [o for o in room.occupants.values() if o.role == "moderator"]:
        await room.send_to(moderator, msg)
