"""Directory sync: LDAP users become accounts, groups follow, disabled and removed users lose access."""

from __future__ import annotations

import asyncio

import pytest

from stockade.cli import main
from stockade.directory.ldap import DirectoryUnavailable

from .conftest import DOMAIN, PEOPLE, directory_server, jid, sync


def accounts(srv) -> list[str]:
    return [u for _, u in srv.call(srv.server.accounts.list(DOMAIN))]


def test_sync_creates_accounts_without_passwords_and_groups(server):
    assert accounts(server) == sorted(PEOPLE)
    record = server.server.directory.record(DOMAIN, "alice")
    assert record == {"dn": "uid=alice,ou=people,dc=example,dc=com", "name": "Alice Example",
                      "mail": "alice@example.com", "enabled": True}
    # no SCRAM keys: only the directory can check their passwords
    assert server.call(server.server.storage.accounts.get_credentials(DOMAIN, "alice")) == {}
    groups = {g.id: g for g in server.server.groups.list(DOMAIN)}
    assert set(groups) == {"staff", "admins"}
    assert groups["staff"].members == {"alice", "bob"} and groups["staff"].shared
    assert groups["admins"].members == {"alice"} and not groups["admins"].shared
    assert groups["staff"].source == "directory"


def test_a_second_sync_changes_only_what_changed(server, ldap):
    ldap.set_attribute(ldap.user_dn("bob"), "cn", ["Robert Example"])
    ldap.add_user("erin", "erin-ldap-pw")
    ldap.add_member("admins", "erin")
    report = sync(server)
    assert report.created == ["erin"] and report.updated == ["bob"] and report.removed == []
    assert report.groups_changed == ["admins"]
    assert server.server.directory.record(DOMAIN, "bob")["name"] == "Robert Example"
    assert server.server.groups.get(DOMAIN, "admins").members == {"alice", "erin"}
    again = sync(server)
    assert (again.created, again.updated, again.groups_changed) == ([], [], [])


def test_removed_users_and_groups_are_removed(server, ldap):
    ldap.remove_member("staff", "bob")
    ldap.delete(ldap.user_dn("bob"))
    ldap.delete(ldap.group_dn("admins"))
    report = sync(server)
    assert report.removed == ["bob"] and report.groups_removed == ["admins"]
    assert "bob" not in accounts(server)
    assert server.server.directory.record(DOMAIN, "bob") is None
    assert [g.id for g in server.server.groups.list(DOMAIN)] == ["staff"]


def test_an_unreachable_directory_changes_nothing(server, ldap):
    url = ldap.url
    ldap.stop()
    with pytest.raises(DirectoryUnavailable) as failure:
        sync(server)
    assert url in str(failure.value) and "cannot reach the directory" in str(failure.value)
    assert accounts(server) == sorted(PEOPLE)                 # nobody removed
    assert server.server.groups.get(DOMAIN, "staff").members == {"alice", "bob"}


def test_a_wrong_service_password_is_reported_and_changes_nothing(ldap):
    with directory_server(ldap, bind_password="not-the-password") as srv:
        with pytest.raises(DirectoryUnavailable) as failure:
            sync(srv)
        assert "the service account cn=admin,dc=example,dc=com was refused" in str(failure.value)
        assert "invalidCredentials" in str(failure.value)
        assert accounts(srv) == []


def test_an_empty_answer_removes_nobody(server):
    settings = server.server.directory.ldap[DOMAIN].settings
    from dataclasses import replace
    server.server.directory.ldap[DOMAIN].settings = replace(settings, user_filter="(objectClass=nobodyHasThis)")
    report = sync(server)
    assert report.removed == [] and "returned no users" in report.warnings[0]
    assert accounts(server) == sorted(PEOPLE)


def test_a_local_account_with_the_same_name_is_left_alone(ldap):
    with directory_server(ldap) as srv:
        srv.add_user(jid("carol"), "carol-local-pw")
        report = sync(srv)
        assert "carol" not in report.created
        assert any("carol@example.com is a local account" in c for c in report.conflicts)
        assert srv.server.directory.record(DOMAIN, "carol") is None
        assert set(srv.call(srv.server.storage.accounts.get_credentials(DOMAIN, "carol"))) == {"sha1", "sha256"}


def _config(tmp_path, ldap, **extra) -> str:
    lines = [f'[server]\ndata_dir = "{tmp_path}"\n', f'[[hosts]]\ndomain = "{DOMAIN}"\n', "[hosts.directory]\n"]
    settings = {"url": ldap.url, "base_dn": ldap.suffix, "bind_dn": ldap.admin_dn,
                "bind_password": ldap.admin_password, **extra}
    lines += [f'{k} = "{v}"\n' for k, v in settings.items()]
    path = tmp_path / "stockade.toml"
    path.write_text("".join(lines))
    return str(path)


async def test_cli_sync_reports_what_it_did_and_an_unreachable_server(tmp_path, ldap, capsys):
    config = _config(tmp_path, ldap)
    assert await asyncio.to_thread(main, ["--config", config, "directory", "sync"]) == 0
    out = capsys.readouterr().out
    assert "example.com: 4 created" in out and "2 group(s) created or changed" in out
    url = ldap.url
    ldap.stop()
    assert await asyncio.to_thread(main, ["--config", config, "directory", "sync", "--host", DOMAIN]) == 1
    err = capsys.readouterr().err
    assert f"directory sync of {DOMAIN} failed, nothing was changed: {url}: cannot reach the directory" in err
    assert await asyncio.to_thread(main, ["--config", config, "user", "list"]) == 0
    assert capsys.readouterr().out.split() == [jid(u) for u in sorted(PEOPLE)]


def test_cli_sync_needs_a_directory(tmp_path, capsys):
    path = tmp_path / "stockade.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path}"\n[[hosts]]\ndomain = "{DOMAIN}"\n')
    assert main(["--config", str(path), "directory", "sync"]) == 1
    assert "no domain has a directory" in capsys.readouterr().err


def test_ldap_logins_over_the_network_need_tls(tmp_path, capsys):
    path = tmp_path / "stockade.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path}"\n[[hosts]]\ndomain = "{DOMAIN}"\n[hosts.directory]\n'
                    f'url = "ldap://ldap.example.net"\nbase_dn = "dc=example,dc=com"\n')
    assert main(["--config", str(path), "directory", "sync"]) == 2
    err = capsys.readouterr().err
    assert "hosts[0].directory.url" in err and "passwords in clear" in err
