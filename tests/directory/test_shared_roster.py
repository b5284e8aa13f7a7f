"""Shared rosters: members of a shared group find each other in their rosters, kept in step."""

from __future__ import annotations

import asyncio

from slixmpp.xmlstream import ET

from stockade.cli import main
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import DOMAIN, PEOPLE, jid

NS = "jabber:iq:roster"


def login(srv, user: str, **kwargs):
    return client(srv, jid(user), PEOPLE[user], mechanism="PLAIN", **kwargs)


async def roster_items(c) -> dict[str, ET.Element]:
    iq = c.Iq(stype="get")
    ET.SubElement(iq.xml, f"{{{NS}}}query")
    reply = await c.query(iq)
    return {i.get("jid"): i for i in reply.xml.find(f"{{{NS}}}query").findall(f"{{{NS}}}item")}


def pushed(push, contact: str) -> bool:
    return contact in push["roster"]["items"]


async def test_shared_group_members_are_in_each_others_rosters(server):
    async with login(server, "alice") as alice:
        items = await roster_items(alice)
        assert list(items) == [jid("bob")]                 # staff is shared; admins is not
        bob_item = items[jid("bob")]
        assert bob_item.get("subscription") == "both"
        assert [g.text for g in bob_item.findall(f"{{{NS}}}group")] == ["staff"]
        assert bob_item.get("name") == "Bob Example"       # the directory's display name (cn)
        # and presence flows like for any mutual subscription
        async with login(server, "bob") as bob:
            seen = await alice.next_presence(jid("bob"))
            assert seen["type"] == "available"
            assert (await bob.next_presence(jid("alice")))["type"] == "available"
        gone = await alice.next_presence(jid("bob"), match=lambda p: p["type"] == "unavailable")
        assert gone is not None


async def test_adding_a_member_in_ldap_pushes_the_new_colleague(server, ldap):
    async with login(server, "alice") as alice:
        ldap.add_member("staff", "carol")
        await server.acall(server.server.directory.sync(DOMAIN))
        push = await alice.next_of(alice.roster_pushes, lambda p: pushed(p, jid("carol")))
        item = push["roster"]["items"][jid("carol")]
        assert item["subscription"] == "both" and list(item["groups"]) == ["staff"]
        # carol is offline: her stored roster already holds her new colleagues
        stored = await server.acall(server.server.storage.map("roster").get_all(DOMAIN, "carol"))
        assert {k: (v["subscription"], v["groups"]) for k, v in stored.items()} == {
            jid("alice"): ("both", ["staff"]), jid("bob"): ("both", ["staff"])}
        async with login(server, "carol") as carol:
            assert set(await roster_items(carol)) == {jid("alice"), jid("bob")}
            assert (await alice.next_presence(jid("carol")))["type"] == "available"
            # leaving the group takes the contact away again, with unavailable presence
            ldap.remove_member("staff", "carol")
            await server.acall(server.server.directory.sync(DOMAIN))
            push = await alice.next_of(alice.roster_pushes, lambda p: pushed(p, jid("carol"))
                                       and p["roster"]["items"][jid("carol")]["subscription"] == "remove")
            assert push is not None
            await alice.next_presence(jid("carol"), match=lambda p: p["type"] == "unavailable")
            assert set(await roster_items(carol)) == set()


async def test_a_shared_contact_cannot_be_removed_or_unsubscribed(server):
    async with login(server, "alice") as alice:
        iq = alice.Iq(stype="set")
        query = ET.SubElement(iq.xml, f"{{{NS}}}query")
        query.append(ET.fromstring(f"<item xmlns='{NS}' jid='{jid('bob')}' subscription='remove'/>"))
        reply = await alice.query(iq)
        assert reply["type"] == "error" and reply["error"]["condition"] == "not-allowed"
        assert "shared group 'staff'" in reply["error"]["text"]
        alice.send_presence(pto=jid("bob"), ptype="unsubscribe")
        await alice.roundtrip()
        assert (await roster_items(alice))[jid("bob")].get("subscription") == "both"


async def test_leaving_the_group_restores_the_users_own_item(server, ldap):
    async with login(server, "carol") as carol:
        # carol had dave in her roster before the group brought them together
        iq = carol.Iq(stype="set")
        ET.SubElement(iq.xml, f"{{{NS}}}query").append(ET.fromstring(
            f"<item xmlns='{NS}' jid='{jid('dave')}' name='D'><group>Friends</group></item>"))
        assert (await carol.query(iq))["type"] == "result"
        ldap.add_member("staff", "carol")
        ldap.add_member("staff", "dave")
        await server.acall(server.server.directory.sync(DOMAIN))
        push = await carol.next_of(carol.roster_pushes, lambda p: pushed(p, jid("dave"))
                                   and p["roster"]["items"][jid("dave")]["subscription"] == "both")
        assert sorted(push["roster"]["items"][jid("dave")]["groups"]) == ["Friends", "staff"]
        ldap.remove_member("staff", "dave")
        await server.acall(server.server.directory.sync(DOMAIN))
        await carol.next_of(carol.roster_pushes, lambda p: pushed(p, jid("dave"))
                            and p["roster"]["items"][jid("dave")]["subscription"] == "none")
        item = (await roster_items(carol))[jid("dave")]
        assert item.get("name") == "D" and [g.text for g in item.findall(f"{{{NS}}}group")] == ["Friends"]


def _config(tmp_path) -> str:
    path = tmp_path / "stockade.toml"
    path.write_text(f'[server]\ndata_dir = "{tmp_path}"\n[[hosts]]\ndomain = "{DOMAIN}"\n')
    return str(path)


async def test_groups_made_with_the_command_line_are_shared_with_a_running_server(tmp_path, capsys):
    config = _config(tmp_path)
    with RunningServer([DOMAIN], data_dir=tmp_path, config={"server": {"account_check_interval": 1.0}}) as srv:
        for user in ("erin", "frank", "gina"):
            srv.add_user(jid(user), f"{user}-password")
        cli = lambda *argv: asyncio.to_thread(main, ["--config", config, "group", *argv])  # noqa: E731
        assert await cli("create", "sales", "--display-name", "Sales team", "--shared") == 0
        assert await cli("add", "sales", "erin", jid("frank")) == 0
        assert await cli("add", "sales", "nobody") == 1
        assert "no such account(s) on example.com: nobody" in capsys.readouterr().err
        await srv.acall(srv.server.groups.refresh())        # what the server does every second
        async with client(srv, jid("erin"), "erin-password") as erin:
            items = await roster_items(erin)
            assert list(items) == [jid("frank")]
            assert [g.text for g in items[jid("frank")].findall(f"{{{NS}}}group")] == ["Sales team"]
            assert await cli("add", "sales", jid("gina")) == 0
            # the server picks the change up (account_check_interval) and pushes it
            await erin.next_of(erin.roster_pushes, lambda p: pushed(p, jid("gina")))
        assert await cli("list") == 0
        assert "sales (Sales team; shared, local): erin, frank, gina" in capsys.readouterr().out


def test_group_commands_refuse_bad_input(tmp_path, capsys):
    config = _config(tmp_path)
    assert main(["--config", config, "group", "add", "nosuch", "erin"]) == 1
    assert "there is no group 'nosuch' on example.com" in capsys.readouterr().err
    assert main(["--config", config, "group", "add", "x", "erin@other.org"]) == 1
    assert "is not on example.com" in capsys.readouterr().err
    assert main(["--config", config, "group", "create", "x"]) == 0
    assert main(["--config", config, "group", "create", "x"]) == 1
    assert "already exists" in capsys.readouterr().err


async def test_directory_groups_can_only_be_changed_in_the_directory(tmp_path):
    from stockade.directory.groups import Group, GroupError, GroupService
    from stockade.storage import Storage
    storage = await Storage.open(f"sqlite:///{tmp_path / 'groups.db'}")
    try:
        groups = GroupService(storage, {DOMAIN})
        await groups.put(DOMAIN, Group("staff", "Staff", "directory", True, frozenset({"alice"})))
        for change in (groups.set_members(DOMAIN, "staff", add=["bob"]), groups.delete(DOMAIN, "staff")):
            try:
                await change
                raise AssertionError("a directory group was changed by hand")
            except GroupError as exc:
                assert "comes from the company directory; change it there" in str(exc)
        again = GroupService(storage, {DOMAIN})
        await again.load()
        assert again.get(DOMAIN, "staff") == groups.get(DOMAIN, "staff")
        assert again.shares_group(DOMAIN, "alice", "alice") == "Staff"
    finally:
        await storage.close()
