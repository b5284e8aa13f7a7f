"""Feature permissions and the approved-client policy through the admin API, seen over XMPP:
an admin denies a group the upload feature with PUT; alice, a member, asks for an upload slot
and is refused; the change is in the audit log as admin:NAME; DELETE gives back the configured
rule and alice gets her slot again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from ..policy.test_feature_permissions import refusal, slot_request
from .conftest import A, B, AdminApi, make_admins, token_for

ALICE, BOB = ("alice", "alice-pw-1234"), ("bob", "bob-pw-12345")
ALLOW = ["Gajim >= 1.8", "Slixmpp"]              # Slixmpp: the test clients answer XEP-0092 with it
NODES = ["https://gajim.org"]
UPLOAD_DENIED = "file upload is not allowed for members of group contractors; ask your administrator"


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    config = {"hosts": [{"domain": A, "permissions": {"deny": {"muc_create": ["staff"]}}}, {"domain": B}],
              "modules": {"approved_clients": {"allow": ALLOW, "allow_caps_nodes": NODES}}}
    with RunningServer(config=config) as server:
        make_admins(server)
        for name, password in (ALICE, BOB):
            server.add_user(f"{name}@{A}", password)
        for group, members in (("contractors", ["alice"]), ("staff", ["bob"])):
            server.call(server.server.groups.create(A, group))
            server.call(server.server.groups.set_members(A, group, add=members))
        server.call(server.server.groups.create(B, "contractors"))
        yield server


@pytest.fixture(scope="module")
def tadmin(srv) -> AdminApi:
    return AdminApi(srv, token_for(srv, "tadmin"))


def feature(reply, name: str) -> dict:
    return next(f for f in reply.body["features"] if f["feature"] == name)


async def upload_reply(srv: RunningServer, user: tuple[str, str]):
    async with client(srv, f"{user[0]}@{A}/up", user[1]) as c:
        return await c.query(slot_request(c))


async def test_a_denied_upload_takes_effect_over_xmpp_and_is_audited(srv, tadmin):
    # before: alice -> <iq to='upload.example.com'><request/></iq>; <- <slot/>
    assert (await upload_reply(srv, ALICE))["type"] == "result"

    reply = await asyncio.to_thread(tadmin, "PUT", f"/hosts/{A}/permissions/upload",
                                    {"deny": ["contractors"], "allow_only": None})
    assert reply.status == 200 and reply.body == {"feature": "upload", "deny": ["contractors"], "allow_only": None}
    entry = srv.call(srv.server.audit.entries(A, action="permission.change", limit=1))[0]
    assert entry["actor"] == "admin:tadmin"
    assert entry["detail"]["feature"] == "upload"
    assert entry["detail"]["before"] == {"deny": [], "allow_only": None}
    assert entry["detail"]["after"] == {"deny": ["contractors"], "allow_only": None}

    # alice (contractors) -> the same request; <- <forbidden/> naming the group. bob still gets a slot.
    assert refusal(await upload_reply(srv, ALICE)) == ("forbidden", UPLOAD_DENIED)
    assert (await upload_reply(srv, BOB))["type"] == "result"
    listed = feature(await asyncio.to_thread(tadmin, "GET", f"/hosts/{A}/permissions"), "upload")
    assert listed["source"] == "override" and listed["effective"]["deny"] == ["contractors"]

    reply = await asyncio.to_thread(tadmin, "DELETE", f"/hosts/{A}/permissions/upload")
    assert reply.status == 200 and reply.body == {"feature": "upload", "deny": [], "allow_only": None}
    assert (await upload_reply(srv, ALICE))["type"] == "result"
    entry = srv.call(srv.server.audit.entries(A, action="permission.change", limit=1))[0]
    assert (entry["actor"], entry["detail"]["source"]) == ("admin:tadmin", "configuration")


def test_the_list_shows_the_configured_rule_beside_the_override(srv, tadmin):
    listed = feature(tadmin("GET", f"/hosts/{A}/permissions"), "muc_create")
    assert listed["source"] == "configuration" and listed["override"] is None
    assert listed["configured"] == listed["effective"] == {"deny": ["staff"], "allow_only": None}
    assert tadmin("PUT", f"/hosts/{A}/permissions/muc_create", {"deny": [], "allow_only": ["staff"]}).status == 200
    listed = feature(tadmin("GET", f"/hosts/{A}/permissions"), "muc_create")
    assert listed["configured"] == {"deny": ["staff"], "allow_only": None}          # still what was configured
    assert listed["override"] == listed["effective"] == {"deny": [], "allow_only": ["staff"]}
    assert tadmin("DELETE", f"/hosts/{A}/permissions/muc_create").body["deny"] == ["staff"]
    assert feature(tadmin("GET", f"/hosts/{A}/permissions"), "muc_create")["source"] == "configuration"


def test_unknown_features_groups_and_fields_are_refused_by_name(srv, tadmin):
    before = srv.server.permissions.overrides(A)
    reply = tadmin("PUT", f"/hosts/{A}/permissions/teleport", {"deny": ["contractors"]})
    assert reply.status == 404 and "'teleport' is not a feature" in reply.error and "upload" in reply.error
    reply = tadmin("PUT", f"/hosts/{A}/permissions/upload", {"deny": ["contractors", "ghosts"]})
    assert reply.status == 422 and reply.body["field"] == "deny" and "no such group on example.com: ghosts" in reply.error
    reply = tadmin("PUT", f"/hosts/{A}/permissions/upload", {"deny": [], "allow_only": ["ghosts"]})
    assert reply.status == 422 and reply.body["field"] == "allow_only" and "ghosts" in reply.error
    reply = tadmin("PUT", f"/hosts/{A}/permissions/upload", {"deny": [], "everyone": True})
    assert reply.status == 422 and reply.body == {"error": "unknown field 'everyone': remove it", "field": "everyone"}
    assert tadmin("DELETE", f"/hosts/{A}/permissions/teleport").status == 404
    assert srv.server.permissions.overrides(A) == before


def test_a_tenant_admin_cannot_change_another_tenants_permissions(srv, tadmin):
    reply = tadmin("PUT", f"/hosts/{B}/permissions/upload", {"deny": ["contractors"]})
    assert reply.status == 403 and reply.error == f"forbidden: the admin tadmin does not manage the host {B}"
    assert srv.server.permissions.get(B)["upload"].is_open
    ops = AdminApi(srv, token_for(srv, "ops"))                  # the operator may: the host is what refused
    assert ops("PUT", f"/hosts/{B}/permissions/upload", {"deny": ["contractors"]}).status == 200
    assert srv.server.permissions.get(B)["upload"].deny == {"contractors"}
    assert ops("DELETE", f"/hosts/{B}/permissions/upload").status == 200


def test_the_approved_client_policy_in_force_is_listed(srv, tadmin):
    reply = tadmin("GET", f"/hosts/{A}/clients")
    assert reply.status == 200
    assert reply.body == {"loaded": True, "enforcing": True, "allow": ALLOW, "caps_nodes": NODES,
                          "refuse_unanswered": True, "record_software": False}
    assert tadmin("GET", f"/hosts/{B}/clients").status == 403
