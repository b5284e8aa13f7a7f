"""The archive notice and the acceptable-use policy, with real slixmpp clients (xep_0050).

    alice logs in            <- <message type='headline' from='example.com'>Archive notice ...
    alice -> bob <message/>  <- <error><policy-violation/><text>... accept-aup ...</text></error>
    alice runs accept-aup on example.com: the form shows the policy; complete with accept=1
    alice -> bob <message/>; bob receives it
    the policy gets version 2: alice's messages are refused again until she accepts it
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from slixmpp.exceptions import IqError

from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

DOMAIN = "example.com"
USERS = {"alice": "alice-pw-1", "bob": "bob-pw-22"}
NOTICE = "Messages on example.com are archived for compliance and may be reviewed."
POLICY = "Use this service for company business only. Never share client data outside the firm."
PLUGINS = ("xep_0030", "xep_0199", "xep_0004", "xep_0050")
COMMANDS = "http://jabber.org/protocol/commands"


def jid(user: str) -> str:
    return f"{user}@{DOMAIN}"


def compliance_server(data_dir: Path, **compliance: Any) -> RunningServer:
    return RunningServer(domains=[DOMAIN], data_dir=data_dir,
                         config={"hosts": [{"domain": DOMAIN, "compliance": compliance}]})


def headlines(c: Any) -> list[Any]:
    return [m for m in c.pending(c.messages) if m["type"] == "headline" and str(m["from"]) == DOMAIN]


async def accept_policy(c: Any, accept: bool = True) -> Any:
    """Run accept-aup: returns the form shown and the completion reply (or the IqError)."""
    started = await c.plugin["xep_0050"].send_command(DOMAIN, "accept-aup")
    assert started["command"]["status"] == "executing"
    form = started["command"]["form"]
    answer = c.plugin["xep_0004"].make_form(ftype="submit")
    answer.add_field(var="accept", ftype="boolean", value=accept)
    answer.add_field(var="version", ftype="hidden", value=form.get_values()["version"])
    try:
        done = await c.plugin["xep_0050"].send_command(DOMAIN, "accept-aup", action="complete", payload=answer,
                                                sessionid=started["command"]["sessionid"])
    except IqError as exc:
        done = exc.iq
    return form, done


STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


async def refused(sender: Any, to: str, body: str) -> tuple[str, str]:
    """Send a message that must come back as an error: its condition and text (read from the
    XML: slixmpp does not know the RFC 6120 condition <policy-violation/>)."""
    sender.send_message(mto=to, mbody=body, mtype="chat")
    error = (await sender.next_of(sender.messages, lambda m: m["type"] == "error")).xml.find("{jabber:client}error")
    condition = next(child.tag.split("}")[1] for child in error if child.tag.startswith(f"{{{STANZAS}}}")
                     and not child.tag.endswith("}text"))
    return condition, error.findtext(f"{{{STANZAS}}}text") or ""


def test_the_archive_notice_is_sent_once_at_login(tmp_path):
    with compliance_server(tmp_path, notice=NOTICE) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)

        async def scenario() -> None:
            async with client(srv, jid("alice"), USERS["alice"], plugins=PLUGINS) as alice:
                notice = await alice.next_of(alice.messages, lambda m: m["type"] == "headline")
                assert str(notice["from"]) == DOMAIN and notice["body"] == NOTICE
                assert notice["subject"] == "Archive notice"
                # No policy: nothing to accept, no command offered.
                items = await alice.plugin["xep_0030"].get_items(jid=DOMAIN, node=COMMANDS)
                assert not items["disco_items"]["items"]
                try:
                    await alice.plugin["xep_0050"].send_command(DOMAIN, "accept-aup")
                    raise AssertionError("accept-aup ran without a policy")
                except IqError as exc:
                    assert exc.iq["error"]["condition"] == "item-not-found"
                alice.send_presence(pstatus="busy")          # available again: no second notice
                await alice.roundtrip()
                assert headlines(alice) == []
                async with client(srv, jid("bob"), USERS["bob"]) as bob:    # no policy: messages flow
                    assert (await bob.next_message())["body"] == NOTICE       # bob's own login notice
                    alice.send_message(mto=jid("bob"), mbody="hello", mtype="chat")
                    assert (await bob.next_message())["body"] == "hello"
        asyncio.run(scenario())


def test_messages_are_refused_until_the_policy_is_accepted_and_again_for_a_new_version(tmp_path):
    with compliance_server(tmp_path, aup_text=POLICY, aup_required=True, aup_version="1") as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)

        async def first_version() -> None:
            async with client(srv, jid("alice"), USERS["alice"], plugins=PLUGINS) as alice, \
                    client(srv, jid("bob"), USERS["bob"]) as bob:
                prompt = await alice.next_of(alice.messages, lambda m: m["type"] == "headline")
                assert POLICY in prompt["body"] and "accept-aup" in prompt["body"]

                condition, text = await refused(alice, jid("bob"), "before accepting")
                assert condition == "policy-violation"
                assert "accept-aup" in text and "version 1" in text

                # The command is advertised in disco.
                info = await alice.plugin["xep_0030"].get_info(jid=DOMAIN)
                assert COMMANDS in info["disco_info"]["features"]
                items = await alice.plugin["xep_0030"].get_items(jid=DOMAIN, node=COMMANDS)
                assert ("accept-aup" in [node for _, node, _ in items["disco_items"]["items"]])
                node = await alice.plugin["xep_0030"].get_info(jid=DOMAIN, node="accept-aup")
                assert ("automation", "command-node") in [(c, t) for c, t, _, _ in node["disco_info"]["identities"]]

                # Completing without ticking accept records nothing.
                form, done = await accept_policy(alice, accept=False)
                assert POLICY in form["instructions"]
                assert done["type"] == "error" and done["error"]["condition"] == "not-acceptable"
                assert (await refused(alice, jid("bob"), "still no"))[0] == "policy-violation"

                _, done = await accept_policy(alice)
                assert done["command"]["status"] == "completed", done
                assert "version 1" in done["command"]["notes"][0][1]
                alice.send_message(mto=jid("bob"), mbody="after accepting", mtype="chat")
                assert (await bob.next_of(bob.messages, lambda m: m["type"] == "chat"))["body"] == "after accepting"
                # bob never got the refused messages
                assert [m["body"] for m in bob.pending(bob.messages) if m["type"] == "chat"] == []
        asyncio.run(first_version())
        entries = srv.call(srv.server.audit.entries(DOMAIN, action="aup.accept", limit=10))
        assert [(e["actor"], e["detail"]["version"]) for e in entries] == [(jid("alice"), "1")]

    with compliance_server(tmp_path, aup_text=POLICY + " (revised)", aup_required=True, aup_version="2") as srv:
        async def second_version() -> None:
            async with client(srv, jid("alice"), USERS["alice"], plugins=PLUGINS) as alice, \
                    client(srv, jid("bob"), USERS["bob"]) as bob:
                condition, text = await refused(alice, jid("bob"), "old acceptance")
                assert condition == "policy-violation" and "version 2" in text
                _, done = await accept_policy(alice)
                assert done["command"]["status"] == "completed"
                alice.send_message(mto=jid("bob"), mbody="accepted again", mtype="chat")
                assert (await bob.next_of(bob.messages, lambda m: m["type"] == "chat"))["body"] == "accepted again"
        asyncio.run(second_version())


def test_another_users_command_session_cannot_be_completed(tmp_path):
    with compliance_server(tmp_path, aup_text=POLICY, aup_required=True) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)

        async def scenario() -> None:
            async with client(srv, jid("alice"), USERS["alice"], plugins=PLUGINS) as alice, \
                    client(srv, jid("bob"), USERS["bob"], plugins=PLUGINS) as bob:
                started = await alice.plugin["xep_0050"].send_command(DOMAIN, "accept-aup")
                answer = bob.plugin["xep_0004"].make_form(ftype="submit")
                answer.add_field(var="accept", ftype="boolean", value=True)
                try:
                    await bob.plugin["xep_0050"].send_command(DOMAIN, "accept-aup", action="complete", payload=answer,
                                                       sessionid=started["command"]["sessionid"])
                    raise AssertionError("bob completed alice's command session")
                except IqError as exc:
                    assert exc.iq["error"]["condition"] == "not-allowed"
                assert (await refused(bob, jid("alice"), "hi"))[0] == "policy-violation"
        asyncio.run(scenario())
