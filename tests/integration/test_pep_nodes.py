"""XEP-0060 node management on a PEP service: create, configure, delete, purge, explicit
subscriptions, whitelist and outcast affiliations, the roster access model, the limits, and the
errors bad requests get."""

from __future__ import annotations

from stockade.testing.server import RunningServer

from .conftest import DOMAIN, USERS, jid
from .test_pep import (OWNER, PUBSUB, TUNE, TUNE_ITEM, error_of, event_items, events_about, get_items, iq,
                       items_of, next_event, options_form, pep_client, publish)
from .test_presence import befriend

NODE_CONFIG = PUBSUB + "#node_config"


def config_values(reply) -> dict[str, list[str]]:
    form = reply.xml.find(f"{{{OWNER}}}pubsub/{{{OWNER}}}configure/{{jabber:x:data}}x")
    return {f.get("var"): [v.text or "" for v in f.findall("{jabber:x:data}value")] for f in form}


async def configure(c, node: str, options: dict[str, str]):
    return await iq(c, "set", f"<pubsub xmlns='{OWNER}'><configure node='{node}'>"
                              f"{options_form(options, NODE_CONFIG)}</configure></pubsub>")


async def test_create_configure_and_delete_a_node(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "bob", notify=("urn:example:news",)) as bob:
        await befriend(alice, bob)
        reply = await iq(alice, "set", f"<pubsub xmlns='{PUBSUB}'><create node='urn:example:news'/><configure>"
                                       f"{options_form({'pubsub#max_items': '5', 'pubsub#title': 'News'}, NODE_CONFIG)}"
                                       f"</configure></pubsub>")
        assert reply["type"] == "result"
        # creating it twice is a conflict
        reply = await iq(alice, "set", f"<pubsub xmlns='{PUBSUB}'><create node='urn:example:news'/></pubsub>")
        assert error_of(reply)[0] == "conflict"
        values = config_values(await iq(alice, "get", f"<pubsub xmlns='{OWNER}'><configure node='urn:example:news'/></pubsub>"))
        assert values["pubsub#max_items"] == ["5"] and values["pubsub#title"] == ["News"]
        assert values["pubsub#access_model"] == ["presence"]            # the PEP default
        assert values["pubsub#send_last_published_item"] == ["on_sub_and_presence"]
        assert (await configure(alice, "urn:example:news", {"pubsub#max_items": "2"}))["type"] == "result"
        for n in range(3):
            await publish(alice, "urn:example:news", f"<n xmlns='urn:example'>{n}</n>", item_id=f"n{n}")
        assert [i for i, _ in items_of(await get_items(bob, "urn:example:news", to=jid("alice")))] == ["n1", "n2"]
        # the owner purges: one <purge/> event, no items left
        assert (await iq(alice, "set", f"<pubsub xmlns='{OWNER}'><purge node='urn:example:news'/></pubsub>"))["type"] == "result"
        await next_event(bob, "urn:example:news", "purge")
        assert items_of(await get_items(bob, "urn:example:news", to=jid("alice"))) == []
        # ... and deletes the node: bob is told, the node is gone
        assert (await iq(alice, "set", f"<pubsub xmlns='{OWNER}'><delete node='urn:example:news'/></pubsub>"))["type"] == "result"
        await next_event(bob, "urn:example:news", "delete")
        assert error_of(await get_items(bob, "urn:example:news", to=jid("alice")))[0] == "item-not-found"
        assert error_of(await iq(alice, "set", f"<pubsub xmlns='{OWNER}'><delete node='urn:example:news'/></pubsub>"))[0] \
            == "item-not-found"


async def test_a_stranger_subscribes_to_an_open_node(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "carol") as carol:
        await publish(alice, "urn:example:open", "<v xmlns='urn:example'>1</v>", item_id="v1",
                      options={"pubsub#access_model": "open"})
        reply = await iq(carol, "set", f"<pubsub xmlns='{PUBSUB}'><subscribe node='urn:example:open' "
                                       f"jid='{carol.boundjid.bare}'/></pubsub>", to=jid("alice"))
        sub = reply.xml.find(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}subscription")
        assert sub.get("subscription") == "subscribed" and sub.get("jid") == jid("carol")
        # the last item comes at once (send_last_published_item), then each new one
        assert event_items(await next_event(carol, "urn:example:open"))[0][1] == "v1"
        await publish(alice, "urn:example:open", "<v xmlns='urn:example'>2</v>", item_id="v2")
        assert event_items(await next_event(carol, "urn:example:open"))[0][1] == "v2"
        reply = await iq(carol, "get", f"<pubsub xmlns='{PUBSUB}'><subscriptions/></pubsub>", to=jid("alice"))
        subs = reply.xml.findall(f"{{{PUBSUB}}}pubsub/{{{PUBSUB}}}subscriptions/{{{PUBSUB}}}subscription")
        assert [(s.get("node"), s.get("jid")) for s in subs] == [("urn:example:open", jid("carol"))]
        # nobody subscribes someone else
        reply = await iq(carol, "set", f"<pubsub xmlns='{PUBSUB}'><subscribe node='urn:example:open' "
                                       f"jid='{jid('dave')}'/></pubsub>", to=jid("alice"))
        assert error_of(reply)[:2] == ("bad-request", "invalid-jid")
        reply = await iq(carol, "set", f"<pubsub xmlns='{PUBSUB}'><unsubscribe node='urn:example:open' "
                                       f"jid='{jid('carol')}'/></pubsub>", to=jid("alice"))
        assert reply["type"] == "result"
        await publish(alice, "urn:example:open", "<v xmlns='urn:example'>3</v>", item_id="v3")
        await alice.roundtrip()
        await carol.roundtrip()
        assert events_about(carol, "urn:example:open") == []
        reply = await iq(carol, "set", f"<pubsub xmlns='{PUBSUB}'><unsubscribe node='urn:example:open' "
                                       f"jid='{jid('carol')}'/></pubsub>", to=jid("alice"))
        assert error_of(reply)[:2] == ("unexpected-request", "not-subscribed")


async def test_a_stranger_cannot_subscribe_to_a_presence_node(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "carol") as carol:
        await publish(alice, TUNE, TUNE_ITEM, item_id="t1")
        reply = await iq(carol, "set", f"<pubsub xmlns='{PUBSUB}'><subscribe node='{TUNE}' "
                                       f"jid='{jid('carol')}'/></pubsub>", to=jid("alice"))
        assert error_of(reply)[:2] == ("not-authorized", "presence-subscription-required")
        await carol.roundtrip()
        assert events_about(carol, TUNE) == []


async def test_a_whitelist_node_is_for_its_members(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "bob", notify=("urn:example:team",)) as bob:
        await befriend(alice, bob)
        await publish(alice, "urn:example:team", "<t xmlns='urn:example'>plan</t>", item_id="p",
                      options={"pubsub#access_model": "whitelist"})
        # a contact, but not on the whitelist: no items, no event
        assert error_of(await get_items(bob, "urn:example:team", to=jid("alice")))[:2] == ("not-allowed", "closed-node")
        await bob.roundtrip()
        assert events_about(bob, "urn:example:team") == []
        # alice makes bob a member
        reply = await iq(alice, "set", f"<pubsub xmlns='{OWNER}'><affiliations node='urn:example:team'>"
                                       f"<affiliation jid='{jid('bob')}' affiliation='member'/></affiliations></pubsub>")
        assert reply["type"] == "result"
        assert [i for i, _ in items_of(await get_items(bob, "urn:example:team", to=jid("alice")))] == ["p"]
        await publish(alice, "urn:example:team", "<t xmlns='urn:example'>plan 2</t>", item_id="p2")
        assert event_items(await next_event(bob, "urn:example:team"))[0][1] == "p2"
        reply = await iq(alice, "get", f"<pubsub xmlns='{OWNER}'><affiliations node='urn:example:team'/></pubsub>")
        affs = reply.xml.findall(f"{{{OWNER}}}pubsub/{{{OWNER}}}affiliations/{{{OWNER}}}affiliation")
        assert {(a.get("jid"), a.get("affiliation")) for a in affs} == {(jid("alice"), "owner"), (jid("bob"), "member")}
        # and an outcast is refused even on an open node
        await configure(alice, "urn:example:team", {"pubsub#access_model": "open"})
        await iq(alice, "set", f"<pubsub xmlns='{OWNER}'><affiliations node='urn:example:team'>"
                               f"<affiliation jid='{jid('bob')}' affiliation='outcast'/></affiliations></pubsub>")
        assert error_of(await get_items(bob, "urn:example:team", to=jid("alice")))[0] == "forbidden"
        # the owner cannot give away publishing or her own ownership
        for jid_, aff in ((jid("bob"), "publisher"), (jid("alice"), "none")):
            reply = await iq(alice, "set", f"<pubsub xmlns='{OWNER}'><affiliations node='urn:example:team'>"
                                           f"<affiliation jid='{jid_}' affiliation='{aff}'/></affiliations></pubsub>")
            assert error_of(reply)[0] == "not-acceptable"


async def test_the_roster_access_model_follows_groups(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "bob") as bob, \
               pep_client(server, "dave") as dave:
        await befriend(alice, bob)
        await befriend(alice, dave)
        alice.update_roster(jid("bob"), groups=["Friends"])
        await alice.next_of(alice.roster_pushes)
        await publish(alice, "urn:example:friends", "<f xmlns='urn:example'/>", item_id="f",
                      options={"pubsub#access_model": "roster"})
        assert (await configure(alice, "urn:example:friends", {"pubsub#access_model": "roster",
                                                                "pubsub#roster_groups_allowed": "Friends"}))["type"] == "result"
        assert [i for i, _ in items_of(await get_items(bob, "urn:example:friends", to=jid("alice")))] == ["f"]
        assert error_of(await get_items(dave, "urn:example:friends", to=jid("alice")))[:2] == \
            ("not-authorized", "not-in-roster-group")


async def test_bad_requests_get_errors_with_reasons(server):
    async with pep_client(server, "alice") as alice:
        cases = [
            (f"<pubsub xmlns='{PUBSUB}'><publish><item><x xmlns='urn:x'/></item></publish></pubsub>",
             ("bad-request", "nodeid-required")),
            (f"<pubsub xmlns='{PUBSUB}'><publish node='urn:x'/></pubsub>", ("bad-request", "item-required")),
            (f"<pubsub xmlns='{PUBSUB}'><publish node='urn:x'><item/></publish></pubsub>",
             ("bad-request", "payload-required")),
            (f"<pubsub xmlns='{PUBSUB}'><publish node='urn:x'><item><a xmlns='urn:x'/><b xmlns='urn:x'/></item>"
             f"</publish></pubsub>", ("bad-request", "invalid-payload")),
            (f"<pubsub xmlns='{PUBSUB}'><retract node='urn:x'><item/></retract></pubsub>",
             ("bad-request", "item-required")),
            (f"<pubsub xmlns='{PUBSUB}'><create/></pubsub>", ("not-acceptable", "nodeid-required")),
            (f"<pubsub xmlns='{PUBSUB}'><publish node='urn:x'><item><x xmlns='urn:x'/></item></publish>"
             f"<publish-options>{options_form({'pubsub#access_model': 'authorize'})}</publish-options></pubsub>",
             ("conflict", "precondition-not-met")),
            (f"<pubsub xmlns='{PUBSUB}'><create node='urn:y'/><configure>"
             f"{options_form({'pubsub#access_model': 'authorize'}, NODE_CONFIG)}</configure></pubsub>",
             ("not-acceptable", "unsupported-access-model")),
            (f"<pubsub xmlns='{PUBSUB}'><create node='urn:y'/><configure>"
             f"{options_form({'pubsub#max_items': 'lots'}, NODE_CONFIG)}</configure></pubsub>",
             ("not-acceptable", None)),
            (f"<pubsub xmlns='{PUBSUB}'><frobnicate node='urn:x'/></pubsub>", ("bad-request", None)),
        ]
        for payload, expected in cases:
            condition, app, text = error_of(await iq(alice, "set", payload))
            assert (condition, app) == expected, payload
            assert text, payload              # every refusal says why
        for payload, expected in [
            (f"<pubsub xmlns='{PUBSUB}'><items node='urn:nothing'/></pubsub>", ("item-not-found", None)),
            (f"<pubsub xmlns='{PUBSUB}'><items node='urn:x' max_items='-3'/></pubsub>", ("bad-request", None)),
            (f"<pubsub xmlns='{PUBSUB}'><items/></pubsub>", ("bad-request", "nodeid-required")),
            (f"<pubsub xmlns='{OWNER}'><configure node='urn:nothing'/></pubsub>", ("item-not-found", None)),
        ]:
            assert error_of(await iq(alice, "get", payload))[:2] == expected, payload


async def test_limits_are_enforced(tmp_path):
    config = {"modules": {"pep": {"max_nodes": 3, "max_item_size": 1024, "max_items": 4}}}
    with RunningServer(domains=[DOMAIN], config=config, data_dir=tmp_path) as server:
        server.add_user(jid("alice"), USERS["alice"])
        async with pep_client(server, "alice") as alice:          # its READY node is the first
            big = "<big xmlns='urn:x'>" + "x" * 2000 + "</big>"
            assert error_of(await publish(alice, "urn:x:1", big))[:2] == ("not-acceptable", "payload-too-big")
            assert (await publish(alice, "urn:x:1", "<a xmlns='urn:x'/>"))["type"] == "result"
            assert (await publish(alice, "urn:x:2", "<a xmlns='urn:x'/>",
                                  options={"pubsub#max_items": "max"}))["type"] == "result"
            condition, _app, text = error_of(await publish(alice, "urn:x:3", "<a xmlns='urn:x'/>"))
            assert condition == "not-allowed" and "3" in text
            # 'max' and anything above the limit mean the service maximum: the same precondition
            for n in range(6):
                reply = await publish(alice, "urn:x:2", f"<a xmlns='urn:x'>{n}</a>", item_id=str(n),
                                      options={"pubsub#max_items": "max" if n % 2 else "1000"})
                assert reply["type"] == "result", reply
            assert len(items_of(await get_items(alice, "urn:x:2"))) == 4


async def test_a_removed_account_loses_its_nodes(server):
    async with pep_client(server, "alice") as alice:
        await publish(alice, TUNE, TUNE_ITEM, item_id="t1")
    await server.acall(server.server.accounts.remove(DOMAIN, "alice"))
    server.add_user(jid("alice"), USERS["alice"])
    async with pep_client(server, "alice") as alice:
        assert error_of(await get_items(alice, TUNE))[0] == "item-not-found"


async def test_persist_items_decides_what_a_restart_keeps(tmp_path):
    node = "urn:example:now-playing"
    with RunningServer(domains=[DOMAIN], data_dir=tmp_path) as server:
        server.add_user(jid("alice"), USERS["alice"])
        async with pep_client(server, "alice") as alice:
            await publish(alice, node, "<v xmlns='urn:example'>1</v>", item_id="v1",
                          options={"pubsub#persist_items": "false"})
            assert [i for i, _ in items_of(await get_items(alice, node))] == ["v1"]     # kept in memory
    with RunningServer(domains=[DOMAIN], data_dir=tmp_path) as server:
        async with pep_client(server, "alice") as alice:
            assert items_of(await get_items(alice, node)) == []                         # gone, as asked
            await publish(alice, node, "<v xmlns='urn:example'>2</v>", item_id="v2")
            assert (await configure(alice, node, {"pubsub#persist_items": "true"}))["type"] == "result"
    with RunningServer(domains=[DOMAIN], data_dir=tmp_path) as server:
        async with pep_client(server, "alice") as alice:
            assert [i for i, _ in items_of(await get_items(alice, node))] == ["v2"]


async def test_losing_access_ends_a_subscription(server):
    async with pep_client(server, "alice") as alice, pep_client(server, "bob") as bob:
        await publish(alice, "urn:example:team", "<t xmlns='urn:example'/>", item_id="p",
                      options={"pubsub#access_model": "whitelist"})
        await iq(alice, "set", f"<pubsub xmlns='{OWNER}'><affiliations node='urn:example:team'>"
                               f"<affiliation jid='{jid('bob')}' affiliation='member'/></affiliations></pubsub>")
        reply = await iq(bob, "set", f"<pubsub xmlns='{PUBSUB}'><subscribe node='urn:example:team' "
                                     f"jid='{bob.boundjid.bare}'/></pubsub>", to=jid("alice"))
        assert reply["type"] == "result"
        await next_event(bob, "urn:example:team")                     # the last item
        await iq(alice, "set", f"<pubsub xmlns='{OWNER}'><affiliations node='urn:example:team'>"
                               f"<affiliation jid='{jid('bob')}' affiliation='none'/></affiliations></pubsub>")
        event = await next_event(bob, "urn:example:team", "subscription")
        sub = event.xml.find("{http://jabber.org/protocol/pubsub#event}event/{http://jabber.org/protocol/pubsub#event}subscription")
        assert (sub.get("jid"), sub.get("subscription")) == (jid("bob"), "none")
        await publish(alice, "urn:example:team", "<t xmlns='urn:example'>2</t>", item_id="p2")
        await alice.roundtrip()
        await bob.roundtrip()
        assert events_about(bob, "urn:example:team") == []
