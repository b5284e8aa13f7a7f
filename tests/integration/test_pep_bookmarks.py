"""Bookmarks: XEP-0402 (one PEP item per room) kept in step with XEP-0048 in private XML storage
(XEP-0049) and in the PEP node 'storage:bookmarks' (XEP-0223), as XEP-0402 section 5.3 and
XEP-0411 describe; and bookmarks never readable by anyone but their owner."""

from __future__ import annotations

from slixmpp.plugins.xep_0048.stanza import Bookmarks

from .conftest import jid
from .test_pep import (OWNER, PUBSUB, error_of, event_items, events_about, get_items, iq, items_of, next_event,
                       options_form, pep_client, publish)
from .test_presence import befriend

BOOKMARKS = "urn:xmpp:bookmarks:1"
LEGACY = "storage:bookmarks"
PRIVATE = "jabber:iq:private"
XEP_0402_OPTIONS = {"pubsub#persist_items": "true", "pubsub#max_items": "max",
                    "pubsub#send_last_published_item": "never", "pubsub#access_model": "whitelist"}
LEGACY_CLIENT = ("xep_0045", "xep_0049", "xep_0060", "xep_0163", "xep_0223", "xep_0048")


async def private_bookmarks(c) -> list[dict[str, str]]:
    reply = await iq(c, "get", f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'/></query>")
    storage = reply.xml.find(f"{{{PRIVATE}}}query/{{{LEGACY}}}storage")
    out = []
    for conf in storage.findall(f"{{{LEGACY}}}conference"):
        nick = conf.findtext(f"{{{LEGACY}}}nick")
        out.append({**conf.attrib, **({"nick": nick} if nick else {})})
    return out


async def test_a_legacy_client_writes_and_a_modern_client_reads(server):
    async with pep_client(server, "alice", resource="old", plugins=LEGACY_CLIENT) as old, \
               pep_client(server, "alice", resource="new", notify=(BOOKMARKS,)) as new:
        storage = Bookmarks()
        storage.add_conference("council@conference.example.com", "Puck", name="Council of Oberon", autojoin=True)
        storage.add_conference("orchard@conference.example.com", "JC", name="The Orchard")
        storage.add_url("https://example.com/", name="Home")
        await old["xep_0048"].set_bookmarks(storage)
        # the modern client hears about each room ...
        seen = {event_items(await next_event(new, BOOKMARKS))[0][1] for _ in range(2)}
        assert seen == {"council@conference.example.com", "orchard@conference.example.com"}
        # ... and finds one item per room, the room JID as id (XEP-0402)
        items = dict(items_of(await get_items(new, BOOKMARKS)))
        council = items["council@conference.example.com"]
        assert council.tag == f"{{{BOOKMARKS}}}conference"
        assert council.get("name") == "Council of Oberon" and council.get("autojoin") == "true"
        assert council.findtext(f"{{{BOOKMARKS}}}nick") == "Puck"
        # the XEP-0048 PEP node has the same list
        [(item_id, legacy)] = items_of(await get_items(new, LEGACY))
        assert item_id == "current"
        assert {c.get("jid") for c in legacy.findall(f"{{{LEGACY}}}conference")} == set(items)
        # the legacy client drops one room: only that one is retracted, the other is not re-sent
        storage = Bookmarks()
        storage.add_conference("council@conference.example.com", "Puck", name="Council of Oberon", autojoin=True)
        await old["xep_0048"].set_bookmarks(storage)
        assert event_items(await next_event(new, BOOKMARKS)) == [("retract", "orchard@conference.example.com", None)]
        await new.roundtrip()
        assert events_about(new, BOOKMARKS) == []
        assert list(dict(items_of(await get_items(new, BOOKMARKS)))) == ["council@conference.example.com"]


async def test_a_modern_client_writes_and_a_legacy_client_reads(server):
    async with pep_client(server, "alice", resource="new") as new, \
               pep_client(server, "alice", resource="old", notify=(LEGACY,)) as old:
        # a URL bookmark only the legacy format can hold
        await iq(old, "set", f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'>"
                             f"<url name='Home' url='https://example.com/'/></storage></query>")
        conference = (f"<conference xmlns='{BOOKMARKS}' name='The Play' autojoin='true'><nick>JC</nick>"
                      f"<extensions><state xmlns='urn:example:client'>pinned</state></extensions></conference>")
        reply = await publish(new, BOOKMARKS, conference, item_id="theplay@conference.example.com",
                              options=XEP_0402_OPTIONS)
        assert reply["type"] == "result", reply
        assert await private_bookmarks(old) == [{"jid": "theplay@conference.example.com", "name": "The Play",
                                                  "autojoin": "true", "nick": "JC"}]
        reply = await iq(old, "get", f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'/></query>")
        assert reply.xml.find(f"{{{PRIVATE}}}query/{{{LEGACY}}}storage/{{{LEGACY}}}url").get("name") == "Home"
        # XEP-0411: subscribers of the legacy PEP node are told (after the URL-only list stored first)
        while True:
            [(_, item_id, storage)] = event_items(await next_event(old, LEGACY))
            if storage.find(f"{{{LEGACY}}}conference") is not None:
                break
        assert item_id == "current"
        assert storage.find(f"{{{LEGACY}}}conference").get("jid") == "theplay@conference.example.com"
        # the legacy client renames it; the modern item keeps its extensions
        await iq(old, "set", f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'>"
                             f"<conference jid='theplay@conference.example.com' name='The Play (renamed)' "
                             f"autojoin='true'><nick>JC</nick></conference></storage></query>")
        [(_, payload)] = items_of(await get_items(new, BOOKMARKS))
        assert payload.get("name") == "The Play (renamed)"
        assert payload.find(f"{{{BOOKMARKS}}}extensions/{{urn:example:client}}state").text == "pinned"
        # the modern client removes it: gone from private storage too
        reply = await iq(new, "set", f"<pubsub xmlns='{PUBSUB}'><retract node='{BOOKMARKS}' notify='true'>"
                                     f"<item id='theplay@conference.example.com'/></retract></pubsub>")
        assert reply["type"] == "result"
        assert await private_bookmarks(old) == []


async def test_the_xep_0048_pep_node_is_converted_too(server):
    async with pep_client(server, "alice", resource="pep", plugins=LEGACY_CLIENT) as pep48, \
               pep_client(server, "alice", resource="new", notify=(BOOKMARKS,)) as new:
        # XEP-0048 section 3 over XEP-0223: the whole list as one item of 'storage:bookmarks'
        storage = Bookmarks()
        storage.add_conference("coven@chat.example.com", "Witch", name="Coven", autojoin=True)
        await pep48["xep_0048"].set_bookmarks(storage, method="xep_0223")
        assert event_items(await next_event(new, BOOKMARKS))[0][1] == "coven@chat.example.com"
        [(_, conference)] = items_of(await get_items(new, BOOKMARKS))
        assert conference.get("name") == "Coven" and conference.get("autojoin") == "true"
        # private XML gets the list as the client wrote it
        [stored] = await private_bookmarks(new)
        assert (stored["jid"], stored["name"], stored["nick"]) == ("coven@chat.example.com", "Coven", "Witch")


async def test_bookmarks_stay_private(server):
    async with pep_client(server, "alice") as alice, \
               pep_client(server, "bob", notify=(BOOKMARKS, LEGACY)) as bob:
        await befriend(alice, bob)
        # a careless client publishes without publish-options: the node is still private
        conference = f"<conference xmlns='{BOOKMARKS}' name='Secret plans'/>"
        assert (await publish(alice, BOOKMARKS, conference, item_id="plans@conference.example.com"))["type"] == "result"
        for node in (BOOKMARKS, LEGACY):
            assert error_of(await get_items(bob, node, to=jid("alice")))[:2] == ("not-allowed", "closed-node")
        await alice.roundtrip()
        await bob.roundtrip()
        assert events_about(bob, BOOKMARKS) == [] and events_about(bob, LEGACY) == []


async def test_bookmarks_are_not_copied_into_a_node_others_can_read(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "bob") as bob:
        await befriend(alice, bob)
        # alice made the XEP-0402 node readable by her contacts, on purpose
        reply = await iq(alice, "set", f"<pubsub xmlns='{PUBSUB}'><create node='{BOOKMARKS}'/><configure>"
                                       f"{options_form({'pubsub#access_model': 'presence'}, PUBSUB + '#node_config')}"
                                       f"</configure></pubsub>")
        assert reply["type"] == "result"
        await iq(alice, "set", f"<query xmlns='{PRIVATE}'><storage xmlns='{LEGACY}'><conference "
                               f"jid='secret@conference.example.com' name='Secret'/></storage></query>")
        # the private list is stored, but not leaked into the readable node
        assert await private_bookmarks(alice) == [{"jid": "secret@conference.example.com", "name": "Secret"}]
        assert items_of(await get_items(bob, BOOKMARKS, to=jid("alice"))) == []
        reply = await iq(alice, "get", f"<pubsub xmlns='{OWNER}'><configure node='{LEGACY}'/></pubsub>")
        assert reply["type"] == "result"          # the legacy PEP node was created, private
        assert error_of(await get_items(bob, LEGACY, to=jid("alice")))[:2] == ("not-allowed", "closed-node")
