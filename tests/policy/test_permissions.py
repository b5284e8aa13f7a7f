"""The Permissions service: configuration, the rule of a feature (deny, allow_only), changes at
runtime that persist, the audit trail, and no hooks on the message path without rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from slixmpp.xmlstream import ET

from stockade.config import ConfigError, config_from_dict
from stockade.config.schema import FeatureGroupsSection
from stockade.policy.permissions import FEATURES, PermissionsError, Rule
from stockade.testing.server import RunningServer

from .conftest import DOMAIN, GROUPS, OTHER, USERS, jid, login, make_groups

NS_UPLOAD = "urn:xmpp:http:upload:0"


def host_config(permissions: dict) -> dict:
    return {"hosts": [{"domain": DOMAIN, "permissions": permissions}, {"domain": OTHER}]}


def started(permissions: dict | None = None, **kwargs) -> RunningServer:
    srv = RunningServer(config=host_config(permissions) if permissions is not None else
                        {"hosts": [{"domain": DOMAIN}, {"domain": OTHER}]}, **kwargs).start()
    return srv


def setup_accounts(srv: RunningServer) -> None:
    for user, password in USERS.items():
        srv.add_user(jid(user), password)
    make_groups(srv, GROUPS)


async def slot_condition(c) -> str:
    iq = c.make_iq_get(ito=f"upload.{DOMAIN}")
    ET.SubElement(iq.xml, f"{{{NS_UPLOAD}}}request", {"filename": "a.txt", "size": "5", "content-type": "text/plain"})
    reply = await c.query(iq)
    return "result" if reply["type"] == "result" else reply["error"]["condition"]


# -- configuration --------------------------------------------------------------------------------
def test_the_features_of_the_configuration_are_those_of_the_service():
    assert [f.name for f in dataclasses.fields(FeatureGroupsSection)] == list(FEATURES)


@pytest.mark.parametrize("permissions, key, reason", [
    ({"deny": {"uplod": ["contractors"]}}, "hosts[0].permissions.deny.uplod",
     "unknown option (known here: federation, history, muc_create, presence_outside_group, upload, web_client)"),
    ({"allow_only": {"voice": []}}, "hosts[0].permissions.allow_only.voice", "unknown option (known here: federation"),
    ({"denied": {"upload": ["x"]}}, "hosts[0].permissions.denied", "unknown option (known here: allow_only, deny)"),
    ({"deny": {"upload": "contractors"}}, "hosts[0].permissions.deny.upload", "expected a list, got str"),
    ({"deny": {"upload": [" "]}}, "hosts[0].permissions.deny.upload", "a group name cannot be empty"),
])
def test_a_bad_permissions_table_names_the_key_and_the_reason(permissions, key, reason):
    with pytest.raises(ConfigError) as raised:
        config_from_dict(host_config(permissions), "stockade.toml", Path("."))
    assert raised.value.where == "stockade.toml" and raised.value.key == key
    assert raised.value.reason.startswith(reason)


# -- the rule of a feature ------------------------------------------------------------------------
def test_deny_wins_and_allow_only_keeps_everyone_else_out():
    srv = started({"deny": {"upload": ["contractors"]},
                   "allow_only": {"upload": ["projectx", "staff"], "web_client": []}})
    try:
        setup_accounts(srv)
        perms = srv.server.permissions

        def check(user: str, feature: str) -> str | None:
            denial = srv.run(lambda: perms.check(DOMAIN, user, feature))
            return None if denial is None else f"{denial.condition}: {denial.text}"

        # alice is in contractors (denied) and projectx (allowed): deny wins
        assert check("alice", "upload") == ("forbidden: file upload is not allowed for members of group "
                                            "contractors; ask your administrator")
        assert check("carol", "upload") is None and check("bob", "upload") is None
        assert check("dave", "upload") == ("forbidden: file upload is allowed only for members of group "
                                           "projectx or staff; ask your administrator")
        # allow_only = []: nobody
        assert check("bob", "web_client") == ("policy-violation: signing in with the web client is not "
                                              "allowed on example.com; ask your administrator")
        # other features, and the other tenant, have no rules
        assert check("alice", "history") is None
        assert srv.run(lambda: perms.may(OTHER, "alice", "upload")) is True
        # membership is read when asked: dave joins staff and may upload
        srv.call(srv.server.groups.set_members(DOMAIN, "staff", add=["dave"]))
        assert check("dave", "upload") is None
    finally:
        srv.stop()


# -- no cost without rules ------------------------------------------------------------------------
async def test_hooks_are_registered_only_while_a_host_has_a_rule_for_them():
    srv = started()
    try:
        setup_accounts(srv)
        perms = srv.server.permissions
        assert perms.hooked == frozenset()
        await srv.acall(perms.set(DOMAIN, "federation", ["contractors"]))
        assert perms.hooked == {"federation"}
        async with login(srv, "alice") as alice:
            alice.send_message(mto="partner@elsewhere.net", mbody="x", mtype="chat")
            error = await alice.next_message()
            assert error.xml.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}policy-violation") \
                is not None
            await srv.acall(perms.reset(DOMAIN, "federation"))
            assert perms.hooked == frozenset()
            alice.send_message(mto="partner@elsewhere.net", mbody="x", mtype="chat")
            assert (await alice.next_message())["error"]["condition"] == "remote-server-not-found"
    finally:
        srv.stop()


# -- changes at runtime ---------------------------------------------------------------------------
async def test_a_runtime_rule_replaces_the_configured_one_survives_a_restart_and_can_be_reset(tmp_path):
    configured = {"deny": {"upload": ["contractors"]}}
    srv = started(configured, data_dir=tmp_path)
    try:
        setup_accounts(srv)
        perms = srv.server.permissions
        rule = await srv.acall(perms.set(DOMAIN, "upload", ["staff"], actor="admin:root"))
        assert rule == Rule(frozenset({"staff"})) and perms.get(DOMAIN)["upload"] == rule
        assert perms.overrides(DOMAIN) == {"upload": rule}
        async with login(srv, "alice") as alice, login(srv, "bob") as bob:
            assert await slot_condition(bob) == "forbidden"
            assert await slot_condition(alice) == "result"
        [entry] = await srv.acall(srv.server.audit.entries(DOMAIN, action="permission.change"))
        assert entry["actor"] == "admin:root"
        assert entry["detail"]["before"] == {"deny": ["contractors"], "allow_only": None}
        assert entry["detail"]["after"] == {"deny": ["staff"], "allow_only": None}
    finally:
        srv.stop()
    srv = started(configured, data_dir=tmp_path)
    try:
        perms = srv.server.permissions
        assert perms.get(DOMAIN)["upload"] == Rule(frozenset({"staff"}))
        assert await srv.acall(perms.reset(DOMAIN, "upload")) == Rule(frozenset({"contractors"}))
        async with login(srv, "alice") as alice, login(srv, "bob") as bob:
            assert await slot_condition(alice) == "forbidden"
            assert await slot_condition(bob) == "result"
    finally:
        srv.stop()


def test_a_change_naming_an_unknown_feature_group_or_host_is_refused(server):
    perms = server.server.permissions
    cases = [
        (perms.set(DOMAIN, "voice", ["staff"]), "'voice' is not a feature with permissions (features: upload, "
                                                "muc_create, federation, web_client, history, presence_outside_group)"),
        (perms.set(DOMAIN, "upload", ["contrators"]), "there is no group 'contrators' on example.com (groups: "
                                                      "contractors, projectx, staff); create it first"),
        (perms.set(DOMAIN, "upload", "staff"), "give a list of group names, not the single string 'staff'"),
        (perms.set("elsewhere.net", "upload", []), "'elsewhere.net' is not a domain this server serves"),
    ]
    for change, message in cases:
        with pytest.raises(PermissionsError) as raised:
            server.call(change)
        assert str(raised.value).startswith(message)
    assert perms.overrides(DOMAIN) == {}


async def test_a_refused_action_is_in_the_audit_log(server):
    async with login(server, "alice") as alice:
        assert await slot_condition(alice) == "forbidden"
    await server.acall(server.server.audit.flush())
    [entry] = await server.acall(server.server.audit.entries(DOMAIN, action="permission.deny"))
    assert entry["actor"] == entry["target"] == jid("alice")
    assert entry["detail"] == {"feature": "upload", "reason": "file upload is not allowed for members of group "
                                                               "contractors; ask your administrator"}
