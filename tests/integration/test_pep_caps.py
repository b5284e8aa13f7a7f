"""XEP-0115 as PEP uses it: the server asks a client what its caps 'ver' stands for, trusts the
answer for everyone only when it hashes to that 'ver', and never lets one client's claims decide
what another client receives."""

from __future__ import annotations

import base64
import hashlib
import re

from stockade.testing.raw import RawStream

from .conftest import USERS
from .test_pep import TUNE, TUNE_ITEM, pep_client, publish
from .test_presence import befriend

DISCO = "http://jabber.org/protocol/disco#info"
CAPS_NODE = "urn:stockade:raw-client"


def caps_ver(features: list[str]) -> str:
    """XEP-0115 5.1 for one identity client/pc and no forms, computed here independently."""
    s = "client/pc//<" + "".join(f + "<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


async def raw_session(server, resource: str, ver: str) -> RawStream:
    raw = await RawStream.open(server)
    await raw.login("bob", USERS["bob"], resource)
    await raw.send(f"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{CAPS_NODE}' "
                   f"ver='{ver}'/></presence>")
    return raw


async def answer_caps_query(raw: RawStream, features: list[str]) -> None:
    pattern = r"<iq[^>]*pep-caps-[0-9a-f]+[^>]*>.*?</iq>"
    query = re.search(pattern, (await raw.read_until(pattern)).decode(), re.S).group(0)
    iq_id = re.search(r'id="(pep-caps-[0-9a-f]+)"', query).group(1)
    node = re.search(r'node="([^"]+)"', query).group(1)
    assert node.startswith(CAPS_NODE + "#")
    found = "".join(f"<feature var='{f}'/>" for f in features)
    await raw.send(f"<iq type='result' id='{iq_id}' to='example.com'><query xmlns='{DISCO}' node='{node}'>"
                   f"<identity category='client' type='pc'/>{found}</query></iq>")


async def ping(raw: RawStream, iq_id: str) -> bytes:
    """Everything the server sent before answering this ping."""
    await raw.send(f"<iq type='get' id='{iq_id}' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
    return await raw.read_until(f"id=\"{iq_id}\"[^>]*/?>")


async def test_a_verified_ver_is_trusted_for_every_client_that_announces_it(server):
    features = [DISCO, TUNE + "+notify"]
    ver = caps_ver(features)
    async with pep_client(server, "alice") as alice:
        async with pep_client(server, "bob") as bob:
            await befriend(alice, bob)
        await publish(alice, TUNE, TUNE_ITEM, item_id="t1")
        first = await raw_session(server, "first", ver)
        await answer_caps_query(first, features)
        # the answer verified: the last tune arrives at once
        assert b"t1" in await first.read_until(b"</message>")
        # a second client with the same 'ver' is not asked again, and gets it too
        second = await raw_session(server, "second", ver)
        received = await second.read_until(b"</message>")
        assert TUNE.encode() in received and b"pep-caps-" not in received
        for raw in (first, second):
            await raw.close()


async def test_a_lying_client_cannot_decide_what_others_receive(server):
    claimed = "notarealhashatallbutitlookslikeone="
    async with pep_client(server, "alice") as alice:
        async with pep_client(server, "bob") as bob:
            await befriend(alice, bob)
        await publish(alice, TUNE, TUNE_ITEM, item_id="t1")
        # a client announces a 'ver' and answers with features that do not hash to it ...
        liar = await raw_session(server, "liar", claimed)
        await answer_caps_query(liar, [DISCO, TUNE + "+notify"])
        # ... which it gets for itself (its own business) ...
        assert b"t1" in await liar.read_until(b"</message>")
        # ... but another client announcing the same 'ver' is asked again, not given the lie
        other = await raw_session(server, "other", claimed)
        await other.read_until(r"<iq[^>]*pep-caps-")           # asked, and never answers
        await publish(alice, TUNE, TUNE_ITEM, item_id="t2")
        assert b"t2" in await liar.read_until(b"</message>")
        assert TUNE.encode() not in await ping(other, "sync1")
        for raw in (liar, other):
            await raw.close()


async def test_a_client_without_caps_gets_no_notifications(server):
    async with pep_client(server, "alice") as alice:
        async with pep_client(server, "bob") as bob:
            await befriend(alice, bob)
        raw = await RawStream.open(server)
        await raw.login("bob", USERS["bob"], "plain")
        await raw.send("<presence/>")
        await ping(raw, "sync1")
        await publish(alice, TUNE, TUNE_ITEM, item_id="t1")
        await alice.roundtrip()
        assert TUNE.encode() not in await ping(raw, "sync2")
        await raw.close()
