"""The XEP-0045 role and affiliation tables of modules/muc/roles.py, checked against the XEP.

The expectations are typed in again from the XEP's own tables (5.1.1, 5.1.2, 5.2.1, 5.2.2, 7.2)
and use-case texts (8.2-8.5, 9.1, 9.6-9.8, 10.5), so that a slip in roles.py shows up as a
disagreement rather than being copied into the test.
"""

from __future__ import annotations

import itertools

import pytest

from stockade.modules.muc.roles import (AFFILIATIONS, ROLES, Privilege, affiliation_change, affiliation_may,
                                        default_role, may, role_after_affiliation_change, role_change)

P = Privilege

# 5.1.1 "Privileges Associated With Roles": privilege -> (none, visitor, participant, moderator)
ROLE_TABLE = {
    P.PRESENT:             (False, True, True, True),
    P.RECEIVE:             (False, True, True, True),
    P.CHANGE_AVAILABILITY: (False, True, True, True),
    P.CHANGE_NICK:         (False, True, True, True),
    P.SEND_PRIVATE:        (False, True, True, True),
    P.INVITE:              (False, True, True, True),
    P.SEND_TO_ALL:         (False, False, True, True),
    P.CHANGE_SUBJECT:      (False, False, True, True),    # "Yes*": see the configuration tests
    P.KICK:                (False, False, False, True),
    P.GRANT_VOICE:         (False, False, False, True),
    P.REVOKE_VOICE:        (False, False, False, True),
}

# 5.2.1 "Privileges Associated With Affiliations": privilege -> (outcast, none, member, admin, owner)
AFFILIATION_TABLE = {
    P.ENTER_OPEN:         (False, True, True, True, True),
    P.ENTER_MEMBERS_ONLY: (False, False, True, True, True),
    P.BAN:                (False, False, False, True, True),
    P.EDIT_MEMBERS:       (False, False, False, True, True),
    P.EDIT_MODERATORS:    (False, False, False, True, True),
    P.EDIT_ADMINS:        (False, False, False, False, True),
    P.EDIT_OWNERS:        (False, False, False, False, True),
    P.CONFIGURE:          (False, False, False, False, True),
    P.DESTROY:            (False, False, False, False, True),
}

# 5.2.2 "Affiliation State Chart": (from, to) -> who may make the change
AFFILIATION_CHART = {
    ("outcast", "none"): "admin", ("outcast", "member"): "admin",
    ("outcast", "admin"): "owner", ("outcast", "owner"): "owner",
    ("none", "outcast"): "admin", ("none", "member"): "admin", ("none", "admin"): "owner", ("none", "owner"): "owner",
    ("member", "outcast"): "admin", ("member", "none"): "admin",
    ("member", "admin"): "owner", ("member", "owner"): "owner",
    ("admin", "outcast"): "owner", ("admin", "none"): "owner", ("admin", "member"): "owner", ("admin", "owner"): "owner",
    ("owner", "outcast"): "owner", ("owner", "none"): "owner", ("owner", "member"): "owner", ("owner", "admin"): "owner",
}


@pytest.mark.parametrize("privilege", list(ROLE_TABLE))
def test_role_privileges_follow_table_5_1_1(privilege):
    got = tuple(may(role, privilege, allow_subject_change=True) for role in ("none", "visitor", "participant", "moderator"))
    assert got == ROLE_TABLE[privilege]


@pytest.mark.parametrize("privilege", list(AFFILIATION_TABLE))
def test_affiliation_privileges_follow_table_5_2_1(privilege):
    got = tuple(affiliation_may(a, privilege) for a in ("outcast", "none", "member", "admin", "owner"))
    assert got == AFFILIATION_TABLE[privilege]


def test_starred_role_privileges_follow_the_room_configuration():
    assert not may("participant", P.CHANGE_SUBJECT, allow_subject_change=False)
    assert may("moderator", P.CHANGE_SUBJECT, allow_subject_change=False)
    assert not may("visitor", P.CHANGE_SUBJECT, allow_subject_change=True)
    assert not may("participant", P.INVITE, allow_invites=False) and may("moderator", P.INVITE, allow_invites=False)
    assert [may(r, P.SEND_PRIVATE, allow_private="participants") for r in ROLES] == [False, False, True, True]
    assert [may(r, P.SEND_PRIVATE, allow_private="moderators") for r in ROLES] == [False, False, False, True]
    assert not any(may(r, P.SEND_PRIVATE, allow_private="none") for r in ROLES)


def test_initial_roles_follow_section_7_2():
    # (moderated?, affiliation) -> role, "Initial Role Based on Affiliation"
    expected = {(False, "none"): "participant", (True, "none"): "visitor", (False, "member"): "participant",
                (True, "member"): "participant", (False, "admin"): "moderator", (True, "admin"): "moderator",
                (False, "owner"): "moderator", (True, "owner"): "moderator",
                (False, "outcast"): "none", (True, "outcast"): "none"}
    for (moderated, affiliation), role in expected.items():
        assert default_role(affiliation, moderated) == role, (moderated, affiliation)


@pytest.mark.parametrize("change", list(AFFILIATION_CHART))
def test_affiliation_changes_need_the_authority_of_the_state_chart(change):
    old, new = change
    needed = AFFILIATION_CHART[change]
    for actor in AFFILIATIONS:
        refusal = affiliation_change(actor, old, new, is_self=False, owner_count=2)
        allowed = AFFILIATIONS.index(actor) >= AFFILIATIONS.index(needed)
        assert (refusal is None) == allowed, (actor, old, new, refusal)
        if refusal is not None:
            assert refusal.condition in ("forbidden", "not-allowed")


def test_who_gets_forbidden_and_who_not_allowed():
    # no admin rights at all: forbidden; an admin reaching for owner territory: 9.1 / 10.5
    assert affiliation_change("member", "none", "outcast", is_self=False, owner_count=1).condition == "forbidden"
    assert affiliation_change("admin", "none", "admin", is_self=False, owner_count=1).condition == "forbidden"
    assert affiliation_change("admin", "owner", "outcast", is_self=False, owner_count=2).condition == "not-allowed"


def test_nobody_bans_themselves_and_the_last_owner_stays():
    assert affiliation_change("admin", "admin", "outcast", is_self=True, owner_count=1) is not None
    assert affiliation_change("owner", "owner", "outcast", is_self=True, owner_count=2).condition == "conflict"
    assert affiliation_change("owner", "owner", "admin", is_self=True, owner_count=1).condition == "conflict"
    assert affiliation_change("owner", "owner", "admin", is_self=True, owner_count=2) is None


# (actor role, actor affiliation, target role, target affiliation, new role) -> expected condition or None
ROLE_CASES = [
    # 8.2 kick: moderators kick participants and visitors, never someone of a higher affiliation
    ("moderator", "none", "participant", "none", "none", None),
    ("moderator", "none", "visitor", "member", "none", "not-allowed"),
    ("moderator", "member", "moderator", "admin", "none", "not-allowed"),
    ("moderator", "admin", "moderator", "owner", "none", "not-allowed"),
    ("moderator", "admin", "moderator", "admin", "none", None),
    ("participant", "member", "visitor", "none", "none", "forbidden"),
    # 8.3 / 8.4 voice: any moderator grants; revoking needs a lower target, never an admin or owner
    ("moderator", "none", "visitor", "none", "participant", None),
    ("participant", "none", "visitor", "none", "participant", "forbidden"),
    ("moderator", "admin", "participant", "member", "visitor", None),
    ("moderator", "member", "participant", "member", "visitor", "not-allowed"),
    ("moderator", "owner", "participant", "admin", "visitor", "not-allowed"),
    # 9.6 / 9.7 moderator role: admins and owners grant and revoke it, not from admins or owners
    ("moderator", "admin", "participant", "none", "moderator", None),
    ("moderator", "member", "participant", "none", "moderator", "forbidden"),
    ("moderator", "owner", "moderator", "member", "participant", None),
    ("moderator", "owner", "moderator", "admin", "participant", "not-allowed"),
    ("moderator", "admin", "moderator", "owner", "visitor", "not-allowed"),
    # no change is no refusal
    ("visitor", "none", "participant", "none", "participant", None),
]


@pytest.mark.parametrize("actor_role,actor_aff,target_role,target_aff,new_role,expected", ROLE_CASES)
def test_role_changes_follow_the_moderator_and_admin_use_cases(actor_role, actor_aff, target_role, target_aff,
                                                               new_role, expected):
    refusal = role_change(actor_role, actor_aff, target_role, target_aff, new_role)
    assert (refusal.condition if refusal else None) == expected


def test_every_role_pair_is_either_a_change_or_refused_as_such():
    for current, new in itertools.product(ROLES[1:], ROLES):
        refusal = role_change("moderator", "owner", current, "none", new)
        assert refusal is None or refusal.condition != "bad-request", (current, new)


def test_roles_after_an_affiliation_change():
    # gaining: at least the new affiliation's role (5.1.2 note)
    assert role_after_affiliation_change("participant", "none", "admin", False, False) == "moderator"
    assert role_after_affiliation_change("visitor", "none", "member", True, False) == "participant"
    # losing: at most the new affiliation's default
    assert role_after_affiliation_change("moderator", "admin", "member", False, False) == "participant"
    assert role_after_affiliation_change("participant", "member", "none", True, False) == "visitor"
    # removal: banned, or no longer a member of a members-only room
    assert role_after_affiliation_change("participant", "none", "outcast", False, False) == "none"
    assert role_after_affiliation_change("participant", "member", "none", False, True) == "none"
