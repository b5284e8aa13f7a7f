"""RFC 6121 section 2: roster get, set, remove, pushes to interested resources, versioning."""

from __future__ import annotations

from slixmpp.xmlstream import ET

from stockade.testing.xmpp import client

from .conftest import USERS, jid

NS = "jabber:iq:roster"


def roster_iq(c, type_: str, item: str | None = None, ver: str | None = None):
    iq = c.Iq(stype=type_)
    query = ET.SubElement(iq.xml, f"{{{NS}}}query")
    if ver is not None:
        query.set("ver", ver)
    if item is not None:
        query.append(ET.fromstring(item))
    return iq


def items(reply) -> dict[str, ET.Element]:
    query = reply.xml.find(f"{{{NS}}}query")
    return {i.get("jid"): i for i in query.findall(f"{{{NS}}}item")} if query is not None else {}


async def test_set_push_get_and_remove(server):
    async with client(server, jid("alice"), USERS["alice"], roster=False) as laptop, \
               client(server, jid("alice") + "/phone", USERS["alice"]) as phone:
        # alice's laptop adds bob; the phone (an interested resource) gets the push
        reply = await laptop.query(roster_iq(laptop, "set",
            f"<item xmlns='{NS}' jid='{jid('bob')}' name='Bob'><group>Work</group><group>Friends</group></item>"))
        assert reply["type"] == "result"
        push = await phone.next_of(phone.roster_pushes, lambda p: jid("bob") in items(p))
        pushed = items(push)[jid("bob")]
        assert pushed.get("name") == "Bob" and pushed.get("subscription") == "none"
        assert sorted(g.text for g in pushed) == ["Friends", "Work"]
        # the roster now holds bob, with a version
        got = await laptop.query(roster_iq(laptop, "get"))
        assert list(items(got)) == [jid("bob")]
        ver = got.xml.find(f"{{{NS}}}query").get("ver")
        # asking with the current version gets an empty result (2.6.3)
        same = await laptop.query(roster_iq(laptop, "get", ver=ver))
        assert same["type"] == "result" and same.xml.find(f"{{{NS}}}query") is None
        # removing pushes subscription='remove'
        await laptop.query(roster_iq(laptop, "set", f"<item xmlns='{NS}' jid='{jid('bob')}' subscription='remove'/>"))
        push = await phone.next_of(phone.roster_pushes, lambda p: jid("bob") in items(p)
                                   and items(p)[jid("bob")].get("subscription") == "remove")
        assert push is not None
        stale = await laptop.query(roster_iq(laptop, "get", ver=ver))
        assert items(stale) == {}
        assert stale.xml.find(f"{{{NS}}}query").get("ver") != ver


async def test_roster_survives_a_new_login(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        await alice.query(roster_iq(alice, "set", f"<item xmlns='{NS}' jid='{jid('carol')}' name='C'/>"))
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        got = await alice.query(roster_iq(alice, "get"))
        assert items(got)[jid("carol")].get("name") == "C"


async def test_bad_roster_sets_are_refused(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        two = roster_iq(alice, "set", f"<item xmlns='{NS}' jid='{jid('bob')}'/>")
        two.xml.find(f"{{{NS}}}query").append(ET.fromstring(f"<item xmlns='{NS}' jid='{jid('carol')}'/>"))
        assert (await alice.query(two))["error"]["condition"] == "bad-request"
        dup = roster_iq(alice, "set", f"<item xmlns='{NS}' jid='{jid('bob')}'><group>A</group><group>A</group></item>")
        assert (await alice.query(dup))["error"]["condition"] == "bad-request"
        empty = roster_iq(alice, "set", f"<item xmlns='{NS}' jid='{jid('bob')}'><group></group></item>")
        assert (await alice.query(empty))["error"]["condition"] == "not-acceptable"
        missing = roster_iq(alice, "set", f"<item xmlns='{NS}' jid='{jid('dave')}' subscription='remove'/>")
        assert (await alice.query(missing))["error"]["condition"] == "item-not-found"
        other = roster_iq(alice, "get")
        other["to"] = jid("bob")
        assert (await alice.query(other))["error"]["condition"] == "forbidden"
