"""XEP-0045 sections 5.1 and 5.2: roles and affiliations, as tables.

Theory of operation
-------------------
An affiliation (owner, admin, member, outcast, none) is long-lived and belongs to a bare JID; a
role (moderator, participant, visitor, none) lasts one visit and belongs to an occupant. This
module holds the XEP's rules as data and answers questions about them; it knows nothing about
stanzas, rooms or storage.

- `ROLE_PRIVILEGES` is the table "Privileges Associated With Roles" (5.1.1). Privileges the XEP
  marks "configuration settings MAY modify" (invite, change subject, private messages) are
  decided by `may()` from the room configuration.
- `AFFILIATION_PRIVILEGES` is the table "Privileges Associated With Affiliations" (5.2.1).
- `DEFAULT_ROLE` is the table "Initial Role Based on Affiliation" (7.2.x): the role an occupant
  gets on entering.
- `ROLE_CHANGES` is the role state chart (5.1.2) seen from the actor: for each (current role,
  new role) the rule a moderator or admin must satisfy. A pair missing from the table is not a
  change anyone may request (leaving the room is the occupant's own presence, not a request).
- `AFFILIATION_AUTHORITY` is the affiliation state chart (5.2.2) reduced to its one rule: every
  transition names "admin or owner" except those that touch the admin and owner lists, which
  need an owner. `affiliation_change()` applies it and the two exceptions the XEP adds (nobody
  bans themselves, the last owner stays).
- `role_after_affiliation_change()` picks the role that follows an affiliation change (5.1.2
  note: gained roles are stable, lost ones are up to the implementation; here they fall to the
  default of the new affiliation).

Refusals are returned as `Refusal(condition, text)` values so that callers turn them into stanza
errors with the XEP's condition: `forbidden` when the actor lacks the privilege altogether,
`not-allowed` when the actor has it but the target outranks them, `conflict` for the self-ban and
the last owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

Affiliation = Literal["owner", "admin", "member", "none", "outcast"]
Role = Literal["moderator", "participant", "visitor", "none"]

# Lowest to highest; the rank is the position.
AFFILIATIONS: tuple[Affiliation, ...] = ("outcast", "none", "member", "admin", "owner")
ROLES: tuple[Role, ...] = ("none", "visitor", "participant", "moderator")
AFFILIATION_RANK = {a: i for i, a in enumerate(AFFILIATIONS)}
ROLE_RANK = {r: i for i, r in enumerate(ROLES)}


class Privilege(Enum):
    # roles (5.1.1)
    PRESENT = "present in room"
    RECEIVE = "receive messages"
    CHANGE_AVAILABILITY = "change availability status"
    CHANGE_NICK = "change room nickname"
    SEND_PRIVATE = "send private messages"
    INVITE = "invite other users"
    SEND_TO_ALL = "send messages to all"
    CHANGE_SUBJECT = "modify subject"
    KICK = "kick participants and visitors"
    GRANT_VOICE = "grant voice"
    REVOKE_VOICE = "revoke voice"
    # affiliations (5.2.1)
    ENTER_OPEN = "enter open room"
    ENTER_MEMBERS_ONLY = "enter members-only room"
    BAN = "ban members and unaffiliated users"
    EDIT_MEMBERS = "edit member list"
    EDIT_MODERATORS = "edit moderator list"
    EDIT_ADMINS = "edit admin list"
    EDIT_OWNERS = "edit owner list"
    CONFIGURE = "change room definition"
    DESTROY = "destroy room"


P = Privilege
_VISITOR = frozenset({P.PRESENT, P.RECEIVE, P.CHANGE_AVAILABILITY, P.CHANGE_NICK, P.SEND_PRIVATE, P.INVITE})
_PARTICIPANT = _VISITOR | {P.SEND_TO_ALL, P.CHANGE_SUBJECT}
_MODERATOR = _PARTICIPANT | {P.KICK, P.GRANT_VOICE, P.REVOKE_VOICE}

# 5.1.1, with the starred ("configuration MAY modify") entries at their defaults; `may()` applies
# the room configuration on top.
ROLE_PRIVILEGES: dict[Role, frozenset[Privilege]] = {
    "none": frozenset(),
    "visitor": _VISITOR,
    "participant": _PARTICIPANT,
    "moderator": _MODERATOR,
}

_MEMBER = frozenset({P.ENTER_OPEN, P.ENTER_MEMBERS_ONLY})
_ADMIN = _MEMBER | {P.BAN, P.EDIT_MEMBERS, P.EDIT_MODERATORS}
AFFILIATION_PRIVILEGES: dict[Affiliation, frozenset[Privilege]] = {
    "outcast": frozenset(),
    "none": frozenset({P.ENTER_OPEN}),
    "member": _MEMBER,
    "admin": _ADMIN,
    "owner": _ADMIN | {P.EDIT_ADMINS, P.EDIT_OWNERS, P.CONFIGURE, P.DESTROY},
}

# 7.2 "Initial Role Based on Affiliation": (is the room moderated?, affiliation) -> role.
# Outcasts never enter, so they have no row.
DEFAULT_ROLE: dict[tuple[bool, Affiliation], Role] = {
    (False, "none"): "participant", (True, "none"): "visitor",
    (False, "member"): "participant", (True, "member"): "participant",
    (False, "admin"): "moderator", (True, "admin"): "moderator",
    (False, "owner"): "moderator", (True, "owner"): "moderator",
}


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the stanza error condition and a text for the person."""
    condition: str
    text: str


@dataclass(frozen=True)
class RoleRule:
    """Who may move an occupant between two roles (5.1.2 and the moderator/admin use cases 8, 9).

    `actor_role`/`actor_affiliation`: the least the actor needs (either suffices when both given).
    `target_below_actor`: the target's affiliation must rank strictly below the actor's.
    `target_not_above_actor`: the target's affiliation must not rank above the actor's.
    `protected`: affiliations whose occupants never get this change from anyone.
    """
    name: str
    actor_role: Role | None = None
    actor_affiliation: Affiliation | None = None
    target_below_actor: bool = False
    target_not_above_actor: bool = False
    protected: frozenset[str] = frozenset()


_KICK = RoleRule("kick", actor_role="moderator", target_not_above_actor=True)             # 8.2
_GRANT_VOICE = RoleRule("grant voice", actor_role="moderator")                           # 8.3
_REVOKE_VOICE = RoleRule("revoke voice", actor_role="moderator", target_below_actor=True,  # 8.4
                         protected=frozenset({"admin", "owner"}))
_GRANT_MODERATOR = RoleRule("grant moderator", actor_affiliation="admin")                  # 9.6
_REVOKE_MODERATOR = RoleRule("revoke moderator", actor_affiliation="admin",                # 9.7
                             protected=frozenset({"admin", "owner"}))

# (current role, requested role) -> rule. The role state chart (5.1.2) without the occupant's
# own transitions (entering and exiting).
ROLE_CHANGES: dict[tuple[Role, Role], RoleRule] = {
    ("visitor", "none"): _KICK,
    ("participant", "none"): _KICK,
    ("moderator", "none"): _KICK,
    ("visitor", "participant"): _GRANT_VOICE,
    ("participant", "visitor"): _REVOKE_VOICE,
    ("visitor", "moderator"): _GRANT_MODERATOR,
    ("participant", "moderator"): _GRANT_MODERATOR,
    ("moderator", "participant"): _REVOKE_MODERATOR,
    ("moderator", "visitor"): _REVOKE_MODERATOR,
}

# 5.2.2: the least affiliation an actor needs to move someone into or out of each affiliation.
AFFILIATION_AUTHORITY: dict[Affiliation, Affiliation] = {
    "outcast": "admin", "none": "admin", "member": "admin", "admin": "owner", "owner": "owner",
}


def outranks(a: str, b: str) -> bool:
    """Affiliation `a` ranks strictly above `b`."""
    return AFFILIATION_RANK[a] > AFFILIATION_RANK[b]  # type: ignore[index]


def at_least(affiliation: str, floor: str) -> bool:
    return AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK[floor]  # type: ignore[index]


def default_role(affiliation: Affiliation, is_moderated: bool) -> Role:
    """The role an occupant with this affiliation gets on entering (outcasts get "none")."""
    return DEFAULT_ROLE.get((is_moderated, affiliation), "none")


def role_change(actor_role: Role, actor_affiliation: Affiliation, target_role: Role,
                target_affiliation: Affiliation, new_role: Role) -> Refusal | None:
    """None when the actor may move the target from `target_role` to `new_role`."""
    if target_role == new_role:
        return None                                       # nothing changes: nothing to refuse
    rule = ROLE_CHANGES.get((target_role, new_role))
    if rule is None:
        return Refusal("bad-request", f"an occupant cannot be moved from {target_role} to {new_role}")
    has_authority = ((rule.actor_role is not None and ROLE_RANK[actor_role] >= ROLE_RANK[rule.actor_role])
                     or (rule.actor_affiliation is not None and at_least(actor_affiliation, rule.actor_affiliation)))
    if not has_authority:
        needed = rule.actor_role or f"{rule.actor_affiliation} affiliation"
        return Refusal("forbidden", f"only a {needed} may {rule.name}")
    if target_affiliation in rule.protected:
        return Refusal("not-allowed", f"nobody may {rule.name} of a room {target_affiliation}")
    if rule.target_below_actor and not outranks(actor_affiliation, target_affiliation):
        return Refusal("not-allowed", f"you may not {rule.name} of someone whose affiliation is not below yours")
    if rule.target_not_above_actor and outranks(target_affiliation, actor_affiliation):
        return Refusal("not-allowed", f"you may not {rule.name} someone whose affiliation is above yours")
    return None


def affiliation_change(actor_affiliation: Affiliation, target_affiliation: Affiliation,
                       new_affiliation: Affiliation, *, is_self: bool, owner_count: int) -> Refusal | None:
    """None when the actor may move the target from `target_affiliation` to `new_affiliation`."""
    if not at_least(actor_affiliation, "admin"):
        return Refusal("forbidden", "only room admins and owners may change affiliations")
    if not at_least(actor_affiliation, AFFILIATION_AUTHORITY[new_affiliation]):
        return Refusal("forbidden", f"only a room owner may make someone {new_affiliation}")
    if not at_least(actor_affiliation, AFFILIATION_AUTHORITY[target_affiliation]):
        return Refusal("not-allowed", f"only a room owner may change the affiliation of a room {target_affiliation}")
    if target_affiliation == new_affiliation:
        return None
    if is_self and new_affiliation == "outcast":
        return Refusal("conflict", "you cannot ban yourself")                         # 9.1
    if target_affiliation == "owner" and owner_count <= 1:
        return Refusal("conflict", "the room needs at least one owner; name another owner first")  # 10.5
    return None


def role_after_affiliation_change(current_role: Role, old: Affiliation, new: Affiliation,
                                  is_moderated: bool, is_members_only: bool) -> Role:
    """The occupant's role once its affiliation changed from `old` to `new`; "none" removes it."""
    if new == "outcast" or (is_members_only and not at_least(new, "member")):
        return "none"
    default = default_role(new, is_moderated)
    if outranks(new, old):
        return max(current_role, default, key=ROLE_RANK.__getitem__)
    return min(current_role, default, key=ROLE_RANK.__getitem__)


def may(role: Role, privilege: Privilege, *, allow_invites: bool = True, allow_subject_change: bool = False,
        allow_private: str = "anyone") -> bool:
    """May an occupant with `role` use this role privilege, given the room configuration?

    `allow_subject_change`: participants may change the subject (muc#roomconfig_changesubject).
    `allow_invites`: occupants other than moderators may invite (muc#roomconfig_allowinvites).
    `allow_private`: who may send private messages (muc#roomconfig_allowpm): anyone, participants,
    moderators or none.
    """
    if privilege not in ROLE_PRIVILEGES[role]:
        return False
    if privilege is P.CHANGE_SUBJECT and role != "moderator":
        return allow_subject_change
    if privilege is P.INVITE and role != "moderator":
        return allow_invites
    if privilege is P.SEND_PRIVATE:
        floor = {"anyone": "visitor", "participants": "participant", "moderators": "moderator"}.get(allow_private)
        return floor is not None and ROLE_RANK[role] >= ROLE_RANK[floor]  # type: ignore[index]
    return True


def affiliation_may(affiliation: Affiliation, privilege: Privilege) -> bool:
    return privilege in AFFILIATION_PRIVILEGES[affiliation]
