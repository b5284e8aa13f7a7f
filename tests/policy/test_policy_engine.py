"""The policy engine through the admin API: a change takes effect for the next message without a
restart, is audited with before and after, survives a restart, and a bad document or a caller
without the right is refused with the reason."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from stockade.testing.server import RunningServer

from ..admin.conftest import AdminApi, make_admins, token_for
from .conftest import DOMAIN, OTHER, USERS, jid, login
from .test_dlp import refusal

BLUEBIRD = {"dlp": {"rules": [{"name": "bluebird", "kind": "keywords", "keywords": ["bluebird"],
                               "text": "Project Bluebird is confidential: this message was not sent."}]}}


def started(data_dir=None) -> RunningServer:
    srv = RunningServer(config={"hosts": [{"domain": DOMAIN}, {"domain": OTHER}]}, data_dir=data_dir).start()
    return srv


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with RunningServer(config={"hosts": [{"domain": DOMAIN}, {"domain": OTHER}]}) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        make_admins(srv)
        yield srv


@pytest.fixture(scope="module")
def apis(server) -> dict[str, AdminApi]:
    return {name: AdminApi(server, token_for(server, name)) for name in ("ops", "tadmin", "desk", "comp")}


async def test_a_policy_change_applies_to_the_next_message_and_is_audited(server, apis):
    api = apis["tadmin"]
    before = await asyncio.to_thread(api, "GET", f"/hosts/{DOMAIN}/policy")
    assert before.status == 200 and before.body["source"] == "default" and before.body["policy"] == {}
    async with login(server, "alice") as alice, login(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody="bluebird launch", mtype="chat")
        assert (await bob.next_message())["body"] == "bluebird launch"          # no rule yet

        reply = await asyncio.to_thread(api, "PUT", f"/hosts/{DOMAIN}/policy", BLUEBIRD)
        assert reply.status == 200, reply.body
        assert reply.body["source"] == "override" and reply.body["policy"]["dlp"]["rules"][0]["name"] == "bluebird"
        alice.send_message(mto=jid("bob"), mbody="the Bluebird launch", mtype="chat")
        assert refusal(await alice.next_message()) == (
            "policy-violation", "Project Bluebird is confidential: this message was not sent.")

        reply = await asyncio.to_thread(api, "DELETE", f"/hosts/{DOMAIN}/policy")
        assert reply.status == 200 and reply.body["source"] == "default"
        alice.send_message(mto=jid("bob"), mbody="bluebird again", mtype="chat")
        assert (await bob.next_message())["body"] == "bluebird again"

    entries = server.call(server.server.audit.entries(DOMAIN, action="policy.change", limit=10))
    set_entry, reset_entry = entries[1], entries[0]
    assert set_entry["actor"] == "admin:tadmin" and set_entry["detail"]["before"] == {}
    assert set_entry["detail"]["after"]["dlp"]["rules"][0]["keywords"] == ["bluebird"]
    assert reset_entry["detail"]["before"] == set_entry["detail"]["after"] and reset_entry["detail"]["after"] == {}
    # the other tenant was never touched
    assert server.run(lambda: server.server.policy_engine.get(OTHER)) is None


@pytest.mark.parametrize("document, field, reason", [
    ({"dlp": {"rules": [{"name": "x", "kind": "regex", "pattern": "(a"}]}}, "policy.dlp.rules", "rule 'x': the pattern"),
    ({"dlp": {"rules": [{"name": "y", "kind": "card", "action": "shred"}]}}, "policy.dlp.rules", "rule 'y': unknown action"),
    ({"dlp": {"rulez": []}}, "policy.dlp.rulez", "unknown option"),
    ({"links": {"mode": 3}}, "policy.links.mode", "expected a string"),
    ({"links": {"deny_domains": ["http://evil.test/"]}}, "policy.links.deny_domains", "'http://evil.test/' is not a domain"),
    ({"dlp": {"rules": [{"kind": "card"}]}}, "policy.dlp.rules[0].name", "this option is required"),
])
def test_a_bad_document_is_refused_with_the_field_and_changes_nothing(server, apis, document, field, reason):
    reply = apis["tadmin"]("PUT", f"/hosts/{DOMAIN}/policy", document)
    assert reply.status == 422, reply.body
    assert reply.body["field"] == field and reason in reply.body["error"], reply.body
    assert apis["tadmin"]("GET", f"/hosts/{DOMAIN}/policy").body["source"] == "default"


def test_only_admins_of_the_host_may_change_its_policy(server, apis):
    assert apis["tadmin"]("PUT", f"/hosts/{OTHER}/policy", BLUEBIRD).status == 403     # another tenant
    assert apis["tadmin"]("GET", f"/hosts/{OTHER}/policy").status == 403
    refused = apis["desk"]("PUT", f"/hosts/{DOMAIN}/policy", BLUEBIRD)
    assert refused.status == 403 and "policy.write" in refused.error
    assert apis["comp"]("GET", f"/hosts/{DOMAIN}/policy").status == 200              # compliance reads
    assert apis["comp"]("PUT", f"/hosts/{DOMAIN}/policy", BLUEBIRD).status == 403
    assert apis["ops"]("GET", "/hosts/unknown.example/policy").status == 404
    ok = apis["ops"]("PUT", f"/hosts/{OTHER}/policy", {"links": {"mode": "warn"}})
    assert ok.status == 200 and ok.body["policy"]["links"]["mode"] == "warn"
    assert apis["ops"]("DELETE", f"/hosts/{OTHER}/policy").body["source"] == "default"


def test_a_runtime_policy_survives_a_restart(tmp_path):
    srv = started(tmp_path)
    try:
        srv.call(srv.server.policy_engine.set(DOMAIN, BLUEBIRD, actor="cli"))
    finally:
        srv.stop()
    again = started(tmp_path)
    try:
        assert again.run(lambda: again.server.policy_engine.source(DOMAIN)) == "override"
        rules = again.run(lambda: again.server.dlp.rules(DOMAIN))
        assert [r.name for r in rules] == ["bluebird"]
    finally:
        again.stop()
