"""XEP-0313 user archives with XEP-0059 paging and XEP-0359 stanza ids, driven by slixmpp.

`query_archive` is the client side of one query: the <result/> messages that arrive before the
IQ result, and the IQ result with <fin/>. The other test_mam_*.py files use it too.
"""

from __future__ import annotations

import re
from typing import Any

from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from stockade.testing.clock import FakeClock
from stockade.testing.raw import RawStream
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import Client, client

from .conftest import DOMAIN, USERS, jid

NS_MAM = "urn:xmpp:mam:2"
NS_SID = "urn:xmpp:sid:0"
MAM_PLUGINS = ("xep_0030", "xep_0059", "xep_0297", "xep_0313", "xep_0359", "xep_0199")


def mam_client(server: Any, user: str, **kwargs: Any):
    return client(server, jid(user) if "@" not in user else user,
                  USERS[user.split("@")[0].split("/")[0]], plugins=MAM_PLUGINS, **kwargs)


class Results:
    """The <result/> messages a client received, by queryid."""

    def __init__(self, c: Client) -> None:
        self.by_query: dict[str, list[Any]] = {}
        # slixmpp's "message" event is only for messages with a body.
        c.register_handler(Callback("MAM results", MatchXPath(f"{{jabber:client}}message/{{{NS_MAM}}}result"),
                                    self._on_message))

    def _on_message(self, msg: Any) -> None:
        result = msg.xml.find(f"{{{NS_MAM}}}result")
        if result is not None:
            self.by_query.setdefault(result.get("queryid"), []).append(msg)


async def query_archive(c: Client, *, max: int | None = None, after: str | None = None,
                        before: str | bool | None = None, fields: dict[str, Any] | None = None,
                        to: str | None = None, flip: bool = False) -> tuple[Any, list[Any]]:
    """alice sends <iq type='set'><query xmlns='urn:xmpp:mam:2'/></iq>; returns (reply, results).
    `fields` are form fields (with, start, end, before-id, after-id, ids or anything else)."""
    collector = getattr(c, "mam_results", None)
    if collector is None:
        collector = c.mam_results = Results(c)
    iq = c.make_iq_set(ito=to)
    iq["mam"]["queryid"] = queryid = "q-" + iq["id"]
    if fields:
        form = iq["mam"]["form"]
        form["type"] = "submit"
        form.add_field(var="FORM_TYPE", ftype="hidden", value=NS_MAM)
        for var, value in fields.items():
            if var == "ids":
                form.add_field(var=var, ftype="list-multi", value=list(value))
            else:
                form.add_field(var=var, value=value)
    rsm = iq["mam"]["rsm"] if max is not None or after is not None or before is not None else None
    if max is not None:
        rsm["max"] = str(max)
    if after is not None:
        rsm["after"] = after
    if before is not None:
        rsm["before"] = before
    if flip:
        iq["mam"].xml.append(ET.Element(f"{{{NS_MAM}}}flip-page"))
    reply = await c.query(iq)
    return reply, collector.by_query.pop(queryid, [])


def body(result: Any) -> str:
    return result["mam_result"]["forwarded"]["stanza"]["body"]


def result_ids(results: list[Any]) -> list[str]:
    return [r["mam_result"]["id"] for r in results]


def fin(reply: Any) -> tuple[str, str, str, str, str]:
    """(complete, first, first index, last, count) of the <fin/>."""
    f = reply.xml.find(f"{{{NS_MAM}}}fin")
    assert f is not None, reply
    rsm = reply["mam_fin"]["rsm"]
    return f.get("complete"), rsm["first"], rsm["first_index"], rsm["last"], rsm["count"]


def stanza_ids(msg: Any) -> list[tuple[str, str]]:
    return [(e.get("by"), e.get("id")) for e in msg.xml.findall(f"{{{NS_SID}}}stanza-id")]


async def test_a_received_message_carries_its_archive_id(server):
    async with mam_client(server, "alice") as alice, mam_client(server, "bob") as bob:
        alice.send_message(mto=jid("bob"), mbody="hello bob", mtype="chat")
        got = await bob.next_message()
        [(by, archive_id)] = stanza_ids(got)
        assert by == jid("bob")
        reply, results = await query_archive(bob)
        assert reply["type"] == "result"
        assert result_ids(results) == [archive_id]
        assert body(results[0]) == "hello bob"
        assert results[0]["mam_result"]["forwarded"]["stanza"]["from"].bare == jid("alice")
        assert results[0]["mam_result"]["forwarded"]["delay"]["stamp"] is not None
        # alice keeps her sent copy; its archive id is hers, not bob's
        reply, results = await query_archive(alice)
        assert [body(r) for r in results] == ["hello bob"]
        assert result_ids(results) != [archive_id]
        assert fin(reply)[0] == "true"


async def test_a_forged_stanza_id_is_removed(server):
    async with mam_client(server, "alice") as alice, mam_client(server, "bob") as bob:
        msg = alice.make_message(mto=jid("bob"), mbody="trust me", mtype="chat")
        for by, fake in ((jid("bob"), "forged-id"), (jid("bob"), "A" * 24), ("other.org", "theirs")):
            msg.xml.append(ET.Element(f"{{{NS_SID}}}stanza-id", {"by": by, "id": fake}))
        msg.send()
        got = await bob.next_message()
        ids = stanza_ids(got)
        ours = [i for by, i in ids if by == jid("bob")]
        assert len(ours) == 1 and ours[0] not in ("forged-id", "A" * 24)
        assert ("other.org", "theirs") in ids          # not ours to judge (XEP-0359 rule 1)
        _, results = await query_archive(bob)
        assert result_ids(results) == ours


async def test_paging_forward_and_backward_over_25_messages(server):
    async with mam_client(server, "alice") as alice:
        for i in range(25):
            alice.send_message(mto=jid("bob"), mbody=f"m{i:02}", mtype="chat")
        await alice.roundtrip()
        # forward: 10, 10, 5
        pages, after = [], None
        for _ in range(3):
            reply, results = await query_archive(alice, max=10, after=after)
            complete, first, index, last, count = fin(reply)
            assert (first, last) == (result_ids(results)[0], result_ids(results)[-1])
            pages.append(([body(r) for r in results], complete, index, count))
            after = last
        assert pages == [([f"m{i:02}" for i in range(0, 10)], "false", "0", "25"),
                         ([f"m{i:02}" for i in range(10, 20)], "false", "10", "25"),
                         ([f"m{i:02}" for i in range(20, 25)], "true", "20", "25")]
        # backward from the end (empty <before/>): 10, 10, 5, each page in chronological order
        pages, before = [], True
        for _ in range(3):
            reply, results = await query_archive(alice, max=10, before=before)
            complete, first, index, last, count = fin(reply)
            pages.append(([body(r) for r in results], complete, index, count))
            before = first
        assert pages == [([f"m{i:02}" for i in range(15, 25)], "false", "15", "25"),
                         ([f"m{i:02}" for i in range(5, 15)], "false", "5", "25"),
                         ([f"m{i:02}" for i in range(0, 5)], "true", "0", "25")]
        # <max>0</max> asks for the count only
        reply, results = await query_archive(alice, max=0)
        assert results == [] and fin(reply) == ("false", "", None, "", "25")


async def test_with_start_and_end_filters():
    clock = FakeClock(1_700_000_000.0)          # 2023-11-14T22:13:20Z
    with RunningServer([DOMAIN], clock=clock) as srv:
        for user in ("alice", "bob", "carol"):
            srv.add_user(jid(user), USERS[user])
        async with mam_client(srv, "alice") as alice:
            for minute, (to, text) in enumerate([("bob", "b0"), ("carol", "c0"), ("bob", "b1"), ("carol", "c1")]):
                alice.send_message(mto=jid(to), mbody=text, mtype="chat")
                await alice.roundtrip()
                srv.run(lambda: clock.advance(60))
            _, results = await query_archive(alice, fields={"with": jid("bob")})
            assert [body(r) for r in results] == ["b0", "b1"]
            _, results = await query_archive(alice, fields={"with": jid("carol") + "/nowhere"})
            assert results == []                    # a full JID matches only that resource
            _, results = await query_archive(alice, fields={"start": "2023-11-14T22:14:20Z"})
            assert [body(r) for r in results] == ["c0", "b1", "c1"]
            _, results = await query_archive(alice, fields={"start": "2023-11-14T22:14:20Z",
                                                            "end": "2023-11-14T23:15:20+01:00"})
            assert [body(r) for r in results] == ["c0", "b1"]
            reply, results = await query_archive(alice, max=1, fields={"with": jid("carol"),
                                                                       "end": "2023-11-14T22:16:20Z"})
            assert [body(r) for r in results] == ["c0"] and fin(reply)[0] == "false" and fin(reply)[4] == "2"
            assert results[0]["mam_result"]["forwarded"]["delay"]["stamp"].isoformat().startswith(
                "2023-11-14T22:14:20")


async def test_a_user_cannot_read_another_users_archive(server):
    async with mam_client(server, "alice") as alice, mam_client(server, "bob") as bob:
        alice.send_message(mto=jid("carol"), mbody="for alice's eyes", mtype="chat")
        await alice.roundtrip()
        reply, results = await query_archive(bob, to=jid("alice"))
        assert reply["type"] == "error" and reply["error"]["condition"] == "forbidden"
        assert reply["error"]["text"]
        assert results == []
        reply, results = await query_archive(bob, to=DOMAIN)
        assert reply["type"] == "error" and reply["error"]["condition"] == "service-unavailable"
        iq = bob.make_iq_get(ito=jid("alice"))
        iq.xml.append(ET.Element(f"{{{NS_MAM}}}prefs"))
        assert (await bob.query(iq))["error"]["condition"] == "forbidden"
        # addressed to her own bare JID, alice reads it; results come from her bare JID
        reply, results = await query_archive(alice, to=jid("alice"))
        assert [body(r) for r in results] == ["for alice's eyes"]
        assert str(results[0]["from"]) == jid("alice")


async def test_bad_queries_get_an_error_with_a_reason(server):
    async with mam_client(server, "alice") as alice:
        alice.send_message(mto=jid("bob"), mbody="one", mtype="chat")
        await alice.roundtrip()
        cases = [
            ({"after": "no-such-id"}, "item-not-found"),
            ({"before": "no-such-id"}, "item-not-found"),
            ({"fields": {"after-id": "no-such-id"}}, "item-not-found"),
            ({"fields": {"ids": ["no-such-id"]}}, "item-not-found"),
            ({"fields": {"start": "yesterday"}}, "bad-request"),
            ({"fields": {"end": "2024-01-01"}}, "bad-request"),          # XEP-0082 needs a time
            ({"fields": {"{urn:example}colour": "blue"}}, "feature-not-implemented"),
            ({"fields": {"with": "not a jid@@"}}, "jid-malformed"),
            ({"max": -1}, "bad-request"),
        ]
        for kwargs, condition in cases:
            reply, results = await query_archive(alice, **kwargs)
            assert reply["type"] == "error", kwargs
            assert reply["error"]["condition"] == condition, (kwargs, reply)
            assert reply["error"]["text"], kwargs
            assert results == []


async def test_extended_queries_by_id_flipped_pages_and_metadata(server):
    async with mam_client(server, "alice") as alice:
        for i in range(6):
            alice.send_message(mto=jid("bob"), mbody=f"m{i}", mtype="chat")
        await alice.roundtrip()
        _, everything = await query_archive(alice)
        ids = result_ids(everything)
        _, results = await query_archive(alice, fields={"after-id": ids[1], "before-id": ids[4]})
        assert [body(r) for r in results] == ["m2", "m3"]
        reply, results = await query_archive(alice, fields={"ids": [ids[5], ids[0]]})
        assert [body(r) for r in results] == ["m0", "m5"] and fin(reply)[4] == "2"
        reply, results = await query_archive(alice, max=3, before=True, flip=True)
        assert [body(r) for r in results] == ["m5", "m4", "m3"]      # sent newest first
        assert fin(reply)[1:4] == (ids[3], "3", ids[5])               # the page itself is unchanged
        iq = alice.make_iq_get()
        iq.enable("mam_metadata")
        meta = (await alice.query(iq))["mam_metadata"]
        assert (meta["start"]["id"], meta["end"]["id"]) == (ids[0], ids[5])
        form = await alice.plugin["xep_0313"].get_fields()
        assert {"with", "start", "end", "before-id", "after-id", "ids"} <= set(form.get_fields())
        info = await alice.plugin["xep_0030"].get_info(jid=jid("alice"))
        assert {NS_MAM, NS_MAM + "#extended", NS_SID} <= set(info["disco_info"]["features"])


async def test_offline_messages_are_archived_with_the_id_they_are_delivered_with(server):
    async with mam_client(server, "alice") as alice:
        alice.send_message(mto=jid("bob"), mbody="while you were out", mtype="chat")
        await alice.roundtrip()
    async with mam_client(server, "bob") as bob:
        got = await bob.next_message()
        [(by, archive_id)] = stanza_ids(got)
        _, results = await query_archive(bob)
        assert result_ids(results) == [archive_id] and body(results[0]) == "while you were out"


async def test_only_messages_worth_keeping_are_archived_and_each_once(server):
    async with mam_client(server, "alice") as alice, mam_client(server, "bob") as bob:
        typing = alice.make_message(mto=jid("bob"), mtype="chat")
        typing.xml.append(ET.Element("{http://jabber.org/protocol/chatstates}composing"))
        typing.send()
        for hint in ("no-store", "no-permanent-store"):
            msg = alice.make_message(mto=jid("bob"), mbody=f"secret ({hint})", mtype="chat")
            msg.xml.append(ET.Element(f"{{urn:xmpp:hints}}{hint}"))
            msg.send()
        alice.send_message(mto=jid("bob"), mbody="news", mtype="headline")
        alice.send_message(mto=jid("bob"), mbody="normal with a body")
        alice.send_message(mto=jid("alice"), mbody="note to self", mtype="chat")
        await alice.roundtrip()
        _, results = await query_archive(alice)
        assert [body(r) for r in results] == ["normal with a body", "note to self"]
        _, results = await query_archive(bob)
        assert [body(r) for r in results] == ["normal with a body"]


async def test_the_archive_survives_a_restart(tmp_path):
    with RunningServer([DOMAIN], data_dir=tmp_path) as srv:
        srv.add_user(jid("alice"), USERS["alice"])
        srv.add_user(jid("bob"), USERS["bob"])
        async with mam_client(srv, "alice") as alice:
            alice.send_message(mto=jid("bob"), mbody="remember this", mtype="chat")
            await alice.roundtrip()
            _, before = await query_archive(alice)
    with RunningServer([DOMAIN], data_dir=tmp_path) as srv:
        async with mam_client(srv, "alice") as alice:
            _, after = await query_archive(alice)
            assert result_ids(after) == result_ids(before) and body(after[0]) == "remember this"


async def test_removing_an_account_deletes_its_archive_and_preferences(server):
    async with mam_client(server, "alice") as alice:
        alice.send_message(mto=jid("bob"), mbody="gone with the account", mtype="chat")
        await alice.roundtrip()
        prefs = alice.make_iq_set()
        ET.SubElement(prefs.xml, f"{{{NS_MAM}}}prefs", {"default": "never"})
        assert (await alice.query(prefs))["type"] == "result"
    await server.acall(server.server.accounts.remove(DOMAIN, "alice"))
    server.add_user(jid("alice"), USERS["alice"])
    async with mam_client(server, "alice") as alice:
        _, results = await query_archive(alice)
        assert results == []
        get = alice.make_iq_get()
        ET.SubElement(get.xml, f"{{{NS_MAM}}}prefs")
        assert (await alice.query(get)).xml.find(f"{{{NS_MAM}}}prefs").get("default") == "always"


async def test_a_message_routed_again_by_stream_management_is_archived_once(server):
    raw = await RawStream.open(server)
    await raw.login("bob", USERS["bob"], resource="phone")
    await raw.send("<presence/>")
    await raw.send("<enable xmlns='urn:xmpp:sm:3'/>")            # no resumption: a drop ends it
    await raw.read_until(b"<enabled")
    async with mam_client(server, "alice") as alice:
        alice.send_message(mto=jid("bob"), mbody="delivered but never acknowledged", mtype="chat")
        delivered = await raw.read_until(b"</message>")
        archive_id = re.search(rb"<stanza-id[^>]* id=\"([^\"]+)\"", delivered).group(1).decode()
        raw.writer.transport.abort()                              # bob's phone never acks it
        await alice.roundtrip()
    async with mam_client(server, "bob") as bob:                  # it waited in offline storage
        again = await bob.next_message()
        assert again["body"] == "delivered but never acknowledged"
        assert stanza_ids(again) == [(jid("bob"), archive_id)]
        _, results = await query_archive(bob)
        assert result_ids(results) == [archive_id]


async def test_both_copies_of_a_message_share_one_stored_string():
    """Encryption at rest off: the sender's and the recipient's archive rows of a message hold
    one string while they wait for their batch (decoded once; half the memory the queue holds),
    and both archives return the message."""
    with RunningServer(domains=[DOMAIN], config={"encryption": {"enabled": False}}) as srv:
        for user in ("alice", "bob"):
            srv.add_user(jid(user), USERS[user])
        writer = srv.server.storage.archive_files.writers[0]
        queued: list[tuple] = []

        def capture() -> None:
            submit = writer.submit
            writer.submit = lambda row: queued.append(row) or submit(row)
        srv.run(capture)
        async with mam_client(srv, "alice") as alice, mam_client(srv, "bob") as bob:
            alice.send_message(mto=jid("bob"), mbody="one string", mtype="chat")
            await bob.next_message()
            [sent, received] = srv.run(lambda: list(queued))
            assert sent[4] is received[4] and "one string" in sent[4]
            for c in (alice, bob):
                assert [body(r) for r in (await query_archive(c))[1]] == ["one string"]
