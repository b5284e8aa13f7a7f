"""XEP-0045 sections 8-10: the moderator, admin and owner use cases (muc#admin and muc#owner IQs).

muc#admin: a get asks for one list (by role: moderators only; by affiliation: admins, owners
for the admin and owner lists, members for the member list of a members-only room); a set sends
a delta of items, each changing either a role (by nick) or an affiliation (by JID or nick), never
both (17.4.3). Every item is checked against the tables of roles.py before any is applied, so a
request is carried out entirely or not at all.

muc#owner: a get returns the configuration form; a set submits it (which also unlocks a new
room), cancels it (which destroys a room that was never configured), or destroys the room.
Only owners may do any of it: everyone else gets <forbidden/>.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...protocol import ns
from ...protocol.errors import StanzaError
from ...protocol.jid import JID, try_jid
from ...protocol.xml import Element
from .config import apply_form, config_form, privacy_codes
from .forms import read_submission
from .roles import AFFILIATIONS, ROLES, Affiliation, Role, affiliation_change, at_least, role_change
from .room import NS_ADMIN, NS_OWNER, Occupant, Room

if TYPE_CHECKING:
    from .service import MucService

MAX_ITEMS = 100          # items in one muc#admin set


def _refuse(refusal) -> StanzaError:
    return StanzaError(refusal.condition, refusal.text)


async def admin_get(room: Room, sender: JID, query: Element) -> Element:
    items = list(query.elements("item", NS_ADMIN))
    if len(items) != 1:
        raise StanzaError("bad-request", "ask for one list: one <item/> with a role or an affiliation")
    item = items[0]
    affiliation, role = item.get("affiliation"), item.get("role")
    requester = room.by_session.get(sender)
    requester_affiliation = room.affiliation(sender)
    result = Element("query", NS_ADMIN)
    if role is not None and affiliation is None:
        if role not in ROLES or role == "none":
            raise StanzaError("bad-request", f"{role!r} is not a role that can be listed")
        if requester is None or requester.role != "moderator":
            raise StanzaError("forbidden", "only moderators may see the lists of roles")
        for occupant in room.occupants.values():
            if occupant.role == role:
                result.add("item", attrs={"nick": occupant.nick, "role": role, "jid": str(occupant.jid),
                                          "affiliation": room.affiliation(occupant.bare)})
        return result
    if affiliation is not None and role is None:
        if affiliation not in AFFILIATIONS or affiliation == "none":
            raise StanzaError("bad-request", f"{affiliation!r} is not an affiliation that can be listed")
        if affiliation in ("owner", "admin"):
            allowed = requester_affiliation == "owner"
        elif affiliation == "member" and room.config.is_members_only:
            allowed = at_least(requester_affiliation, "member")
        else:
            allowed = at_least(requester_affiliation, "admin")
        if not allowed:
            raise StanzaError("forbidden", f"you may not see the list of {affiliation}s of this room")
        for bare, value in sorted(room.affiliations.items(), key=lambda kv: str(kv[0])):
            if value == affiliation:
                attrs = {"affiliation": value, "jid": str(bare)}
                nick = room.reserved_nicks.get(bare)
                if nick and value != "outcast":
                    attrs["nick"] = nick
                result.add("item", attrs=attrs)
        return result
    raise StanzaError("bad-request", "an <item/> asks for either a role or an affiliation, not both")


async def admin_set(service: MucService, room: Room, sender: JID, query: Element) -> None:
    items = list(query.elements("item", NS_ADMIN))
    if not items:
        raise StanzaError("bad-request", "the request has no <item/>")
    if len(items) > MAX_ITEMS:
        raise StanzaError("policy-violation", f"at most {MAX_ITEMS} items in one request")
    actor = room.by_session.get(sender)
    actor_role: Role = actor.role if actor is not None else "none"
    actor_affiliation = room.affiliation(sender)
    role_changes: list[tuple[Occupant, Role, str | None]] = []
    affiliation_changes: list[tuple[JID, Affiliation, str | None, str | None]] = []
    for item in items:
        role, affiliation = item.get("role"), item.get("affiliation")
        reason = item.find_text("reason", NS_ADMIN)
        if (role is None) == (affiliation is None):
            raise StanzaError("bad-request", "each <item/> changes either a role or an affiliation (17.4.3)")
        if role is not None:
            if role not in ROLES:
                raise StanzaError("bad-request", f"{role!r} is not a role")
            target = room.occupants.get(item.get("nick") or "")
            if target is None:
                raise StanzaError("item-not-found" if item.get("nick") else "bad-request",
                                  f"nobody called {item.get('nick')!r} is in the room" if item.get("nick")
                                  else "a role change names the occupant by 'nick'")
            refusal = role_change(actor_role, actor_affiliation, target.role, room.affiliation(target.bare), role)  # type: ignore[arg-type]
            if refusal is not None:
                raise _refuse(refusal)
            role_changes.append((target, role, reason))  # type: ignore[arg-type]
            continue
        if affiliation not in AFFILIATIONS:
            raise StanzaError("bad-request", f"{affiliation!r} is not an affiliation")
        target_jid = _target_jid(room, item)
        refusal = affiliation_change(actor_affiliation, room.affiliation(target_jid), affiliation,  # type: ignore[arg-type]
                                     is_self=target_jid == sender.bare, owner_count=len(room.owners()))
        if refusal is not None:
            raise _refuse(refusal)
        affiliation_changes.append((target_jid, affiliation, reason, item.get("nick")))  # type: ignore[arg-type]
    owners = set(room.owners())
    for target_jid, affiliation, _reason, _nick in affiliation_changes:
        (owners.add if affiliation == "owner" else owners.discard)(target_jid)
    if affiliation_changes and not owners:
        raise StanzaError("conflict", "the room needs at least one owner; name another owner first")
    for target_jid, affiliation, reason, nick in affiliation_changes:
        await room.set_affiliation(target_jid, affiliation, actor, reason, nick)
    for target, role, reason in role_changes:
        if target.nick in room.occupants:
            await room.set_role(target, role, actor, reason)
    if affiliation_changes:
        await service.save(room)


def _target_jid(room: Room, item: Element) -> JID:
    raw = item.get("jid")
    if raw is not None:
        jid = try_jid(raw)
        if jid is None:
            raise StanzaError("jid-malformed", f"{raw!r} is not a valid JID")
        return jid.bare
    nick = item.get("nick")
    occupant = room.occupants.get(nick or "")
    if occupant is None:
        raise StanzaError("bad-request", "an affiliation change names the user by 'jid' (or the 'nick' of an occupant)")
    return occupant.bare


async def owner_get(service: MucService, room: Room, sender: JID, query: Element) -> Element:
    if room.affiliation(sender) != "owner":
        raise StanzaError("forbidden", "only the owners of the room may configure it")
    result = Element("query", NS_OWNER)
    result.append(config_form(room.name, room.config, service.options.max_occupants))
    return result


async def owner_set(service: MucService, room: Room, sender: JID, query: Element) -> None:
    if room.affiliation(sender) != "owner":
        raise StanzaError("forbidden", "only the owners of the room may configure or destroy it")
    destroy = query.find("destroy", NS_OWNER)
    if destroy is not None:
        alternate = destroy.get("jid")
        if alternate is not None and try_jid(alternate) is None:
            raise StanzaError("jid-malformed", f"the alternate venue {alternate!r} is not a valid JID")
        await service.destroy(room, destroy.find_text("reason", NS_OWNER), alternate,
                              destroy.find_text("password", NS_OWNER))
        return
    x = query.find("x", ns.DATA_FORMS)
    if x is None:
        raise StanzaError("bad-request", "send a configuration form (jabber:x:data) or <destroy/>")
    form = read_submission(x)
    if form.type == "cancel":
        if room.is_locked:                      # 10.1.3: cancelling the first configuration
            await service.destroy(room, "the owner cancelled the creation of the room")
        return
    if form.type != "submit":
        raise StanzaError("bad-request", f"a configuration form is submitted with type 'submit', not {form.type!r}")
    new = apply_form(room.config, form, service.options.max_occupants)
    codes = [] if room.is_locked else privacy_codes(room.config, new)
    room.is_locked = False
    await room.apply_config(new, codes)
    await service.save(room)
    await service.after_leave(room)
