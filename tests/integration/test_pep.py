"""XEP-0163 PEP: publish, notifications filtered by +notify and limited by the access model,
the last item on login, publish-options preconditions, retrieval, retraction, node management,
persistence across a restart, and the errors bad requests get.

The helpers here are shared by the other test_pep_*.py files.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid
from .test_presence import befriend

PUBSUB = "http://jabber.org/protocol/pubsub"
OWNER = "http://jabber.org/protocol/pubsub#owner"
EVENT = "http://jabber.org/protocol/pubsub#event"
ERRORS = "http://jabber.org/protocol/pubsub#errors"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
TUNE = "http://jabber.org/protocol/tune"
READY = "urn:stockade:test:ready"       # a private node each test client uses to know it is set up
PEP_PLUGINS = ("xep_0030", "xep_0004", "xep_0128", "xep_0115", "xep_0199")


# -- helpers (used by the other PEP test files) ---------------------------------------------------
@contextlib.asynccontextmanager
async def pep_client(server: Any, user: str, *, notify: tuple[str, ...] = (), resource: str | None = None,
                     password: str | None = None, priority: int | None = None,
                     plugins: tuple[str, ...] = ()) -> AsyncIterator[Any]:
    """A logged-in client whose capabilities (XEP-0115) announce '<node>+notify' for `notify`.
    It returns once the server has learnt them: the last item of its private READY node reaches it
    only then (XEP-0163 4.3.4), after the last items of its contacts' nodes."""
    address = jid(user) + (f"/{resource}" if resource else "")
    async with client(server, address, password or USERS[user], presence=False,
                      plugins=PEP_PLUGINS + plugins) as c:
        c.events = asyncio.Queue()
        c.register_handler(Callback("pep events", MatchXPath(f"{{jabber:client}}message/{{{EVENT}}}event"),
                                    c.events.put_nowait))
        for node in (*notify, READY):
            c["xep_0030"].add_feature(node + "+notify")
        await c["xep_0115"].update_caps(broadcast=False)
        c.send_presence(ppriority=priority) if priority is not None else c.send_presence()
        reply = await publish(c, READY, "<ready xmlns='urn:stockade:test'/>", item_id="current",
                              options={"pubsub#access_model": "whitelist"})
        assert reply["type"] == "result", reply
        await next_event(c, READY)
        yield c


def xml(text: str) -> Any:
    return ET.fromstring(text)


def options_form(options: dict[str, str], form_type: str = PUBSUB + "#publish-options") -> str:
    fields = "".join(f"<field var='{var}'><value>{value}</value></field>" for var, value in options.items())
    return (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{form_type}</value></field>{fields}</x>")


async def iq(c: Any, itype: str, payload: str, to: str | None = None) -> Any:
    """Send <iq type=itype>payload</iq> (to the own account when `to` is None); the reply, even an error."""
    stanza = c.make_iq_set(ito=to) if itype == "set" else c.make_iq_get(ito=to)
    stanza.xml.append(xml(payload))
    return await c.query(stanza)


async def publish(c: Any, node: str, payload: str, *, item_id: str | None = None,
                  options: dict[str, str] | None = None, to: str | None = None) -> Any:
    item = f"<item id='{item_id}'>{payload}</item>" if item_id else f"<item>{payload}</item>"
    extra = f"<publish-options>{options_form(options)}</publish-options>" if options else ""
    return await iq(c, "set", f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'>{item}</publish>{extra}</pubsub>", to)


async def get_items(c: Any, node: str, to: str | None = None, *, ids: tuple[str, ...] = (),
                    max_items: int | None = None) -> Any:
    wanted = "".join(f"<item id='{i}'/>" for i in ids)
    limit = f" max_items='{max_items}'" if max_items is not None else ""
    return await iq(c, "get", f"<pubsub xmlns='{PUBSUB}'><items node='{node}'{limit}>{wanted}</items></pubsub>", to)


def items_of(reply: Any) -> list[tuple[str, Any]]:
    """(item id, payload element) of an items result."""
    assert reply["type"] == "result", reply
    items = reply.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}items")
    return [(el.get("id"), el[0] if len(el) else None) for el in items.findall(f"{{{PUBSUB}}}item")]


def error_of(reply: Any) -> tuple[str, str | None, str]:
    """(condition, pubsub app condition, text) of an error reply."""
    assert reply["type"] == "error", reply
    err = reply.xml.find("{jabber:client}error")
    condition = app = None
    for child in err:
        ns_, _, name = child.tag[1:].partition("}")
        if ns_ == STANZAS and name != "text":
            condition = name
        elif ns_ == ERRORS:
            app = name
    text = err.findtext(f"{{{STANZAS}}}text") or ""
    return condition, app, text


async def next_event(c: Any, node: str, kind: str = "items", timeout: float = 20.0) -> Any:
    """The next pubsub event about `node` (kind: items, purge, delete, configuration)."""
    def match(msg: Any) -> bool:
        event = msg.xml.find(f"{{{EVENT}}}event")
        child = event[0] if event is not None and len(event) else None
        return child is not None and child.tag == f"{{{EVENT}}}{kind}" and child.get("node") == node
    return await c.next_of(c.events, match, timeout)


def event_items(msg: Any) -> list[tuple[str, str, Any]]:
    """(tag, id, payload) of the <item/> and <retract/> children of an items event."""
    items = msg.xml.find(f"{{{EVENT}}}event/{{{EVENT}}}items")
    return [(el.tag.split("}")[1], el.get("id"), el[0] if len(el) else None) for el in items]


def events_about(c: Any, node: str) -> list[Any]:
    out = []
    for msg in c.pending(c.events):
        child = msg.xml.find(f"{{{EVENT}}}event")[0]
        if child.get("node") == node:
            out.append(msg)
    return out


TUNE_ITEM = f"<tune xmlns='{TUNE}'><artist>Gerald Finzi</artist><title>Introduction</title></tune>"


# -- discovery ------------------------------------------------------------------------------------
async def test_the_account_is_a_pep_service(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        info = await alice["xep_0030"].get_info(jid("alice"))
        identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
        features = set(info["disco_info"]["features"])
        assert ("pubsub", "pep") in identities
        for feature in ("publish", "publish-options", "auto-create", "auto-subscribe", "persistent-items",
                        "access-presence", "access-open", "access-whitelist", "retrieve-items",
                        "retract-items", "delete-items", "config-node", "create-nodes", "delete-nodes",
                        "purge-nodes", "subscribe", "last-published", "filtered-notifications", "item-ids"):
            assert f"{PUBSUB}#{feature}" in features, feature
        assert {"urn:xmpp:bookmarks:1#compat", "urn:xmpp:bookmarks:1#compat-pep",
                "urn:xmpp:bookmarks-conversion:0", "urn:xmpp:pep-vcard-conversion:0",
                "jabber:iq:private"} <= features


# -- notifications --------------------------------------------------------------------------------
async def test_a_contact_with_notify_gets_the_event_others_do_not(server):
    async with pep_client(server, "alice", notify=(TUNE,)) as alice, \
               pep_client(server, "bob", notify=(TUNE,)) as bob, \
               pep_client(server, "carol", notify=(TUNE,)) as carol, \
               pep_client(server, "dave") as dave:
        await befriend(alice, bob)
        await befriend(alice, dave)
        # alice publishes what she listens to (no 'to': her own account, XEP-0163 section 3)
        reply = await publish(alice, TUNE, TUNE_ITEM, item_id="t1")
        assert reply["type"] == "result"
        # bob, a contact whose client said tune+notify, is told, from alice's bare JID
        event = await next_event(bob, TUNE)
        assert event["from"] == jid("alice") and event["type"] == "headline"
        assert str(event["to"]) == str(bob.boundjid)
        [(tag, item_id, payload)] = event_items(event)
        assert (tag, item_id) == ("item", "t1") and payload.findtext(f"{{{TUNE}}}artist") == "Gerald Finzi"
        # alice's own resource hears it too
        assert event_items(await next_event(alice, TUNE))[0][1] == "t1"
        # carol has +notify but is no contact; dave is a contact without +notify: nothing
        for c in (carol, dave):
            await c.roundtrip()
            assert events_about(c, TUNE) == []


async def test_items_of_a_presence_node_are_for_contacts_only(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "bob") as bob, \
               pep_client(server, "carol") as carol:
        await befriend(alice, bob)
        await publish(alice, TUNE, TUNE_ITEM, item_id="t1")
        assert [i for i, _ in items_of(await get_items(bob, TUNE, to=jid("alice")))] == ["t1"]
        # carol, a stranger, may not read the default (presence) node
        assert error_of(await get_items(carol, TUNE, to=jid("alice")))[:2] == \
            ("not-authorized", "presence-subscription-required")


async def test_the_last_item_reaches_a_contact_who_logs_in(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "bob") as bob:
        await befriend(alice, bob)
        await publish(alice, TUNE, TUNE_ITEM, item_id="t1")
        await publish(alice, TUNE, TUNE_ITEM.replace("Introduction", "Allegro"), item_id="t2")
    # bob comes back with a client interested in tunes: he gets the last one, marked as delayed
    async with pep_client(server, "alice") as alice, pep_client(server, "bob", notify=(TUNE,)) as bob:
        event = await next_event(bob, TUNE)
        [(_, item_id, payload)] = event_items(event)
        assert item_id == "t2" and payload.findtext(f"{{{TUNE}}}title") == "Allegro"
        assert event.xml.find("{urn:xmpp:delay}delay") is not None


async def test_each_resource_is_notified_by_its_own_interests(server):
    async with pep_client(server, "alice") as alice, \
               pep_client(server, "bob", notify=(TUNE,), resource="desk") as desk, \
               pep_client(server, "bob", resource="phone") as phone, \
               pep_client(server, "bob", notify=(TUNE,), resource="away", priority=-1) as away:
        await befriend(alice, desk)
        await publish(alice, TUNE, TUNE_ITEM, item_id="t1")
        assert str((await next_event(desk, TUNE))["to"]) == str(desk.boundjid)
        # phone did not ask; a negative-priority resource gets no contact's events (XEP-0163 4.3.2)
        for c in (phone, away):
            await c.roundtrip()
            assert events_about(c, TUNE) == []


async def test_a_contact_the_owner_blocked_hears_nothing(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "bob", notify=(TUNE,)) as bob:
        await befriend(alice, bob)
        reply = await iq(alice, "set", f"<block xmlns='urn:xmpp:blocking'><item jid='{jid('bob')}'/></block>")
        assert reply["type"] == "result"
        await publish(alice, TUNE, TUNE_ITEM, item_id="t1")      # XEP-0163 4.3.5
        await alice.roundtrip()
        await bob.roundtrip()
        assert events_about(bob, TUNE) == []
        # nor the last item when he comes online again
        async with pep_client(server, "bob", notify=(TUNE,), resource="again") as again:
            await again.roundtrip()
            assert events_about(again, TUNE) == []


async def test_retraction_is_notified(server):
    async with pep_client(server, "alice", notify=(TUNE,)) as alice, \
               pep_client(server, "bob", notify=(TUNE,)) as bob:
        await befriend(alice, bob)
        await publish(alice, TUNE, TUNE_ITEM, item_id="t1")
        await next_event(bob, TUNE)
        reply = await iq(alice, "set", f"<pubsub xmlns='{PUBSUB}'><retract node='{TUNE}' notify='true'>"
                                       f"<item id='t1'/></retract></pubsub>")
        assert reply["type"] == "result"
        assert event_items(await next_event(bob, TUNE)) == [("retract", "t1", None)]
        assert items_of(await get_items(bob, TUNE, to=jid("alice"))) == []
        # retracting it again: no such item
        reply = await iq(alice, "set", f"<pubsub xmlns='{PUBSUB}'><retract node='{TUNE}'>"
                                       f"<item id='t1'/></retract></pubsub>")
        assert error_of(reply)[0] == "item-not-found"


# -- publishing rules -----------------------------------------------------------------------------
async def test_nobody_publishes_to_someone_elses_node(server):
    async with pep_client(server, "alice", notify=(TUNE,)) as alice, pep_client(server, "bob") as bob:
        await befriend(alice, bob)
        reply = await publish(bob, TUNE, TUNE_ITEM, item_id="fake", to=jid("alice"))
        assert error_of(reply)[0] == "forbidden"
        for attack in (f"<pubsub xmlns='{PUBSUB}'><retract node='{READY}'><item id='current'/></retract></pubsub>",
                       f"<pubsub xmlns='{PUBSUB}'><create node='stolen'/></pubsub>",
                       f"<pubsub xmlns='{OWNER}'><delete node='{READY}'/></pubsub>",
                       f"<pubsub xmlns='{OWNER}'><purge node='{READY}'/></pubsub>",
                       f"<pubsub xmlns='{OWNER}'><configure node='{READY}'>{options_form({'pubsub#access_model': 'open'}, PUBSUB + '#node_config')}</configure></pubsub>"):
            assert error_of(await iq(bob, "set", attack, to=jid("alice")))[0] == "forbidden", attack
        # nothing reached alice, nothing changed
        await alice.roundtrip()
        assert events_about(alice, TUNE) == []
        assert [i for i, _ in items_of(await get_items(alice, READY))] == ["current"]


async def test_publish_options_are_preconditions(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "carol") as carol:
        # the first publish creates the node with the options ...
        reply = await publish(alice, "urn:example:status", "<s xmlns='urn:example'>1</s>", item_id="a",
                              options={"pubsub#access_model": "open", "pubsub#max_items": "max"})
        assert reply["type"] == "result"
        assert [i for i, _ in items_of(await get_items(carol, "urn:example:status", to=jid("alice")))] == ["a"]
        # ... a later one with a different access model is refused and changes nothing (7.1.5)
        reply = await publish(alice, "urn:example:status", "<s xmlns='urn:example'>2</s>", item_id="b",
                              options={"pubsub#access_model": "whitelist"})
        condition, app, text = error_of(reply)
        assert (condition, app) == ("conflict", "precondition-not-met") and "access_model" in text
        # the same options again are met
        reply = await publish(alice, "urn:example:status", "<s xmlns='urn:example'>3</s>", item_id="c",
                              options={"pubsub#access_model": "open", "pubsub#max_items": "max"})
        assert reply["type"] == "result"
        assert [i for i, _ in items_of(await get_items(carol, "urn:example:status", to=jid("alice")))] == ["a", "c"]
        # an option this service does not know cannot be met
        reply = await publish(alice, "urn:example:status", "<s xmlns='urn:example'>4</s>",
                              options={"pubsub#x-unknown": "1"})
        assert error_of(reply)[:2] == ("conflict", "precondition-not-met")


async def test_max_items_keeps_the_newest(server):
    async with pep_client(server, "alice") as alice:
        for n in range(1, 5):
            reply = await publish(alice, "urn:example:log", f"<n xmlns='urn:example'>{n}</n>", item_id=f"i{n}",
                                  options={"pubsub#max_items": "3"})
            assert reply["type"] == "result"
        assert [i for i, _ in items_of(await get_items(alice, "urn:example:log"))] == ["i2", "i3", "i4"]
        assert [i for i, _ in items_of(await get_items(alice, "urn:example:log", max_items=2))] == ["i3", "i4"]
        assert [i for i, _ in items_of(await get_items(alice, "urn:example:log", ids=("i3", "gone")))] == ["i3"]
        # re-publishing an id replaces the item and makes it the newest
        await publish(alice, "urn:example:log", "<n xmlns='urn:example'>again</n>", item_id="i2")
        items = items_of(await get_items(alice, "urn:example:log"))
        assert [i for i, _ in items] == ["i3", "i4", "i2"] and items[-1][1].text == "again"
        # an item without id gets one from the server, in the result
        reply = await publish(alice, "urn:example:log", "<n xmlns='urn:example'>5</n>")
        new_id = reply.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}publish/{{{PUBSUB}}}item").get("id")
        assert new_id and [i for i, _ in items_of(await get_items(alice, "urn:example:log"))][-1] == new_id


async def test_items_survive_a_restart(tmp_path):
    with RunningServer(domains=[DOMAIN], data_dir=tmp_path) as server:
        server.add_user(jid("alice"), USERS["alice"])
        async with pep_client(server, "alice") as alice:
            await publish(alice, TUNE, TUNE_ITEM, item_id="kept")
            await publish(alice, "urn:example:log", "<n xmlns='urn:example'>1</n>", item_id="one",
                          options={"pubsub#max_items": "10", "pubsub#access_model": "open"})
    with RunningServer(domains=[DOMAIN], data_dir=tmp_path) as server:
        async with pep_client(server, "alice") as alice:
            [(item_id, payload)] = items_of(await get_items(alice, TUNE))
            assert item_id == "kept" and payload.findtext(f"{{{TUNE}}}artist") == "Gerald Finzi"
            # the node configuration came back too
            reply = await iq(alice, "get", f"<pubsub xmlns='{OWNER}'><configure node='urn:example:log'/></pubsub>")
            form = reply.xml.find(f"{{{OWNER}}}pubsub/{{{OWNER}}}configure/{{jabber:x:data}}x")
            values = {f.get("var"): f.findtext("{jabber:x:data}value") for f in form}
            assert values["pubsub#max_items"] == "10" and values["pubsub#access_model"] == "open"
