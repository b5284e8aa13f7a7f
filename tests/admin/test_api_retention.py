"""Legal holds and retention in the admin API: the compliance officer and the operator may; the
helpdesk, the auditor and the tenant admin get 403 with the reason and nothing changes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stockade.testing.server import RunningServer

from .conftest import A, B, ROLES, AdminApi, make_admins, token_for

RETENTION = {"default_days": 90, "mam_days": 30, "groups": [{"group": "trading", "days": 2555}]}


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with RunningServer(domains=[A, B], config={"hosts": [{"domain": A, "retention": RETENTION},
                                                         {"domain": B}]}) as srv:
        make_admins(srv)
        srv.add_user(f"alice@{A}", "alice-pw-1234")
        srv.call(srv.server.groups.create(A, "trading"))
        yield srv


@pytest.fixture(scope="module")
def api(server: RunningServer) -> dict[str, AdminApi]:
    return {name: AdminApi(server, token_for(server, name)) for name in ROLES}


def last_audit(server: RunningServer, host: str = A) -> dict:
    return server.call(server.server.audit.entries(host, limit=1))[0]


@pytest.mark.parametrize("who", ["comp", "ops"])
def test_the_compliance_officer_and_the_operator_manage_holds_and_run_purges(server, api, who):
    call = api[who]
    reply = call("POST", f"/hosts/{A}/holds", {"kind": "user", "subject": "alice", "reason": "matter 9"})
    assert reply.status == 201, reply
    hold = reply.body
    assert (hold["kind"], hold["subject"], hold["actor"]) == ("user", "alice", f"admin:{who}")
    entry = last_audit(server)
    assert (entry["action"], entry["actor"], entry["target"]) == ("hold.create", f"admin:{who}", "user:alice")

    assert call("POST", f"/hosts/{A}/holds", {"kind": "user", "subject": "alice", "reason": "again"}).status == 409
    assert [h["id"] for h in call("GET", f"/hosts/{A}/holds").body["holds"]] == [hold["id"]]

    policy = call("GET", f"/hosts/{A}/retention").body
    assert policy["days"] == {"journal": 90, "mam": 30, "offline": 90, "files": 90}
    assert policy["groups"] == {"trading": 2555} and policy["holds"] == 1

    report = call("POST", f"/hosts/{A}/retention?dry_run=true")
    assert report.status == 200, report
    assert report.body["dry_run"] is True and report.body["held"] == ["alice"]
    entry = last_audit(server)
    assert (entry["action"], entry["actor"]) == ("retention.purge", f"admin:{who}")

    reply = call("DELETE", f"/hosts/{A}/holds/{hold['id']}")
    assert reply.status == 200 and reply.body["hold"]["id"] == hold["id"]
    assert last_audit(server)["action"] == "hold.release"
    assert call("GET", f"/hosts/{A}/holds").body["holds"] == []
    assert call("DELETE", f"/hosts/{A}/holds/{hold['id']}").status == 404


@pytest.mark.parametrize("who", ["desk", "aud", "tadmin"])
def test_other_roles_are_refused_and_nothing_changes(server, api, who):
    holder = api["comp"]
    hold = holder("POST", f"/hosts/{A}/holds", {"kind": "group", "subject": "trading", "reason": "case 4"}).body
    try:
        before = server.call(server.server.audit.entries(A, limit=1))[0]["id"]
        for method, path, body in (("GET", f"/hosts/{A}/holds", None),
                                   ("POST", f"/hosts/{A}/holds", {"kind": "user", "subject": "alice",
                                                                  "reason": "x"}),
                                   ("DELETE", f"/hosts/{A}/holds/{hold['id']}", None),
                                   ("GET", f"/hosts/{A}/retention", None),
                                   ("POST", f"/hosts/{A}/retention", None)):
            reply = api[who](method, path, body)
            assert reply.status == 403, (method, path, reply)
            assert "retention" in reply.error
        assert [h["id"] for h in holder("GET", f"/hosts/{A}/holds").body["holds"]] == [hold["id"]]
        assert server.call(server.server.audit.entries(A, limit=1))[0]["id"] == before
    finally:
        holder("DELETE", f"/hosts/{A}/holds/{hold['id']}")


def test_a_compliance_officer_of_one_tenant_cannot_reach_another(api):
    reply = api["comp"]("GET", f"/hosts/{B}/holds")
    assert reply.status == 403 and B in reply.error
    reply = api["comp"]("POST", f"/hosts/{B}/retention")
    assert reply.status == 403


def test_bad_holds_are_refused_with_what_to_fix(api):
    call = api["comp"]
    reply = call("POST", f"/hosts/{A}/holds", {"kind": "group", "subject": "nosuchgroup", "reason": "r"})
    assert reply.status == 422 and "nosuchgroup" in reply.error
    reply = call("POST", f"/hosts/{A}/holds", {"kind": "user", "subject": "bad user@", "reason": "r"})
    assert reply.status == 422 and reply.body["field"] == "subject"
    reply = call("POST", f"/hosts/{A}/holds", {"kind": "user", "subject": "alice", "reason": "r", "extra": 1})
    assert reply.status == 422 and "extra" in reply.error
