"""XEP-0215 external service discovery: STUN/TURN servers and time-limited TURN credentials.

    alice  -> <iq type='get' to='example.com'><services xmlns='urn:xmpp:extdisco:2'/></iq>
    server -> <services><service type='stun' .../><service type='turn' restricted='true'
                        username='EXPIRY:alice@example.com' password='B64(HMAC-SHA1)' expires='...'/>
    bot.example.com (a component, not a user) -> <services/>   ; server -> <forbidden/>
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from stockade.config import ConfigError
from stockade.testing.clock import FakeClock
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import TIMEOUT, client

from .conftest import DOMAIN, USERS, jid
from .test_component import component

NS = "urn:xmpp:extdisco:2"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
BOT, BOT_SECRET = "bot.example.com", "bot-shared-secret-1"
SECRET = "the-turn-servers-shared-secret"
TTL = 7200
SERVICES = [
    {"type": "stun", "host": "stun.example.com", "port": 3478},
    {"type": "turn", "host": "turn.example.com", "port": 3478, "transport": "udp", "restricted": True},
    {"type": "turns", "host": "turn.example.com", "port": 5349, "transport": "tcp", "restricted": True,
     "name": "Relay over TLS"},
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_700_000_000.0)


@pytest.fixture
def server(clock) -> Iterator[RunningServer]:
    config = {"modules": {"extdisco": {"services": SERVICES, "secret": SECRET, "credential_ttl": TTL}},
              "components": [{"domain": BOT, "secret": BOT_SECRET}],
              "component_listener": {"enabled": True, "port": 0}}
    with RunningServer(domains=[DOMAIN, "other.org"], config=config, clock=clock) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        yield srv


def request(sender: Any, name: str, to: str = DOMAIN, **attrs: str) -> Any:
    iq = sender.make_iq_get(ito=to)
    iq.xml.append(ET.Element(f"{{{NS}}}{name}", attrs))
    return iq


def services_of(reply: Any, name: str = "services") -> list[dict[str, str]]:
    payload = reply.xml.find(f"{{{NS}}}{name}")
    assert payload is not None, reply
    return [dict(s.attrib) for s in payload.findall(f"{{{NS}}}service")]


def stanza_error(stanza: Any) -> tuple[str, str]:
    """(condition, text) of an error a component received (slixmpp's error plugin reads only
    jabber:client errors)."""
    error = next(c for c in stanza.xml if c.tag.endswith("}error"))
    condition = next(c.tag.split("}")[1] for c in error if c.tag.startswith(f"{{{STANZAS}}}")
                     and not c.tag.endswith("}text"))
    return condition, error.findtext(f"{{{STANZAS}}}text") or ""


def expected_credentials(user: str, now: float) -> dict[str, str]:
    expiry = int(now) + TTL
    username = f"{expiry}:{jid(user)}"
    password = base64.b64encode(hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()
    stamp = datetime.fromtimestamp(expiry, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"username": username, "password": password, "expires": stamp, "restricted": "true"}


async def test_a_user_gets_every_service_and_credentials_for_the_restricted_ones(server, clock):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        reply = await alice.query(request(alice, "services"))
        assert reply["type"] == "result"
        stun, turn, turns = services_of(reply)
        assert stun == {"type": "stun", "host": "stun.example.com", "port": "3478", "transport": "udp"}
        creds = expected_credentials("alice", clock.time())
        assert turn == {"type": "turn", "host": "turn.example.com", "port": "3478", "transport": "udp", **creds}
        assert turns == {"type": "turns", "host": "turn.example.com", "port": "5349", "transport": "tcp",
                         "name": "Relay over TLS", **creds}


async def test_credentials_are_per_user_and_expire_from_the_time_they_are_asked(server, clock):
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        alices = services_of(await alice.query(request(alice, "services", type="turn")))
        clock.advance(600)
        bobs = services_of(await bob.query(request(bob, "services", type="turn")))
        assert alices[0]["username"] == expected_credentials("alice", clock.time() - 600)["username"]
        assert bobs[0]["username"] == expected_credentials("bob", clock.time())["username"]
        assert alices[0]["password"] != bobs[0]["password"]


async def test_a_type_selects_services(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        reply = await alice.query(request(alice, "services", type="turn"))
        assert reply.xml.find(f"{{{NS}}}services").get("type") == "turn"
        assert [(s["type"], s["port"]) for s in services_of(reply)] == [("turn", "3478")]
        assert services_of(await alice.query(request(alice, "services", type="ftp"))) == []


async def test_a_user_asks_for_credentials_of_one_service(server, clock):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        iq = request(alice, "credentials")
        iq.xml.find(f"{{{NS}}}credentials").append(ET.Element(f"{{{NS}}}service",
                                                              {"type": "turns", "host": "turn.example.com"}))
        reply = await alice.query(iq)
        assert reply["type"] == "result"
        [service] = services_of(reply, "credentials")
        assert service["port"] == "5349"
        assert service["password"] == expected_credentials("alice", clock.time())["password"]


@pytest.mark.parametrize("service, condition", [
    ({"type": "turn", "host": "elsewhere.example.net"}, "item-not-found"),
    ({"type": "turn", "host": "turn.example.com", "port": "9999"}, "item-not-found"),
    ({"type": "turn", "host": "turn.example.com", "port": "port"}, "bad-request"),
    ({"type": "turn"}, "bad-request"),
    ({"host": "turn.example.com"}, "bad-request"),
    (None, "bad-request"),
])
async def test_a_bad_credentials_request_gets_an_error_with_a_text(server, service, condition):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        iq = request(alice, "credentials")
        if service is not None:
            iq.xml.find(f"{{{NS}}}credentials").append(ET.Element(f"{{{NS}}}service", service))
        reply = await alice.query(iq)
        assert reply["type"] == "error"
        assert reply["error"]["condition"] == condition and reply["error"]["text"]


async def test_a_user_of_the_other_served_domain_gets_them_too(server):
    server.add_user("erin@other.org", "erin-pw-55")
    async with client(server, "erin@other.org", "erin-pw-55") as erin:
        turn = services_of(await erin.query(request(erin, "services", to="other.org", type="turn")))
        assert turn[0]["username"].endswith(":erin@other.org")


async def test_a_component_is_not_a_user_and_is_refused(server):
    async with component(server, BOT, BOT_SECRET) as bot:
        for name in ("services", "credentials"):
            iq = bot.make_iq_get(ito=DOMAIN, ifrom=BOT)
            iq.xml.append(ET.Element(f"{{{NS}}}{name}"))
            with pytest.raises(IqError) as refused:
                await iq.send(timeout=TIMEOUT)
            assert stanza_error(refused.value.iq) == ("forbidden", "external services are listed only for "
                                                                   "users of this server")


async def test_the_server_advertises_the_feature(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        info = await alice.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=TIMEOUT)
        assert NS in info["disco_info"]["features"]


def test_a_restricted_service_without_a_secret_stops_startup():
    config = {"modules": {"extdisco": {"services": [{"type": "turn", "host": "turn.example.com",
                                                     "restricted": True}]}}}
    with pytest.raises(ConfigError) as err:
        RunningServer(domains=[DOMAIN], config=config)
    assert err.value.key == "modules.extdisco.secret" and "restricted" in err.value.reason
