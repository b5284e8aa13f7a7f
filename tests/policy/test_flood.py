"""Floods: stanza rate limits per connection and per account, persistent abuse ending the stream,
and the limit on new connections per minute from one address. The clock is fake: a bucket only
refills when the test moves time on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stockade.testing.clock import FakeClock
from stockade.testing.raw import RawStream, header
from stockade.testing.server import RunningServer

from .threats import add_users, body, bodies, condition, error_for, errors, login, send

DOMAIN = "example.com"
ALICE, BOB, CAROL = f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"carol@{DOMAIN}"


def flood_server(clock: FakeClock, **flood: object) -> RunningServer:
    return RunningServer(config={"hosts": [{"domain": DOMAIN, "policy": {"flood": flood}}]}, clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock) -> Iterator[RunningServer]:
    with flood_server(clock, session_rate=1.0, session_burst=40, user_rate=0.0, disconnect_after=1000) as srv:
        add_users(srv, ALICE, BOB, CAROL)
        yield srv


async def test_a_client_blasting_stanzas_is_told_to_slow_down_and_a_normal_client_is_not(server, clock):
    async with login(server, ALICE) as alice, login(server, BOB) as bob, login(server, CAROL) as carol:
        # alice sends 100 messages at once; her bucket holds 40 (the login used a few)
        for i in range(100):
            send(alice, BOB, f"m{i}", f"m{i}")
        last = await error_for(alice, "m99")
        assert condition(last) == "resource-constraint"
        assert "too fast" in last["error"]["text"] and "Slow down" in last["error"]["text"]
        refused = {m["id"] for m in errors(alice)} | {"m99"}
        delivered_count = 100 - len(refused)
        assert 30 <= delivered_count < 40
        # everything alice sent before her bucket ran dry reached bob, in order; nothing after
        await body(bob, f"m{delivered_count - 1}")
        await bob.roundtrip()
        assert refused == {f"m{i}" for i in range(delivered_count, 100)}
        assert bodies(bob) == [f"m{i}" for i in range(delivered_count - 1)]

        # carol chats normally: every message arrives and she gets no error
        for i in range(5):
            send(carol, BOB, f"hello {i}", f"c{i}")
        for i in range(5):
            await body(bob, f"hello {i}")
        await carol.roundtrip()
        assert errors(carol) == []

        # time passes: alice's bucket refills and she may send again
        clock.advance(30)
        send(alice, BOB, "after a pause", "later")
        await body(bob, "after a pause")


async def test_persistent_abuse_ends_the_stream_with_policy_violation(clock):
    with flood_server(clock, session_rate=1.0, session_burst=20, disconnect_after=10) as server:
        add_users(server, ALICE, BOB)
        async with login(server, ALICE) as alice, login(server, BOB) as bob:
            for i in range(60):
                send(alice, BOB, f"m{i}", f"m{i}")
            error = await alice.next_of(alice.stream_errors)
            assert error["condition"] == "policy-violation"
            assert "slow down" in error["text"]
            await alice.disconnected_event.wait()
            # bob was not affected
            await bob.roundtrip()


async def test_the_account_limit_covers_all_its_connections_together(clock):
    with flood_server(clock, session_rate=0.0, user_rate=1.0, user_burst=30, disconnect_after=1000) as server:
        add_users(server, ALICE, BOB)
        async with login(server, f"{ALICE}/one") as one, login(server, f"{ALICE}/two") as two, \
                login(server, BOB) as bob:
            for i in range(20):
                send(one, BOB, f"one {i}", f"one{i}")
            await body(bob, "one 19")              # the first 20 pass: the bucket had about 26 left
            for i in range(20):
                send(two, BOB, f"two {i}", f"two{i}")
            refused = await error_for(two, "two19")
            assert condition(refused) == "resource-constraint"
            assert "per account" in refused["error"]["text"]


async def test_websocket_connections_count_against_the_same_limit(clock):
    import websockets

    from ..integration.test_websocket import open_stream, recv, tls, ws_url
    config = {"hosts": [{"domain": DOMAIN}], "c2s": {"new_connections_per_minute": 2}}
    with RunningServer(config=config, clock=clock) as server:
        raw = await RawStream.open(server)                      # one over TCP ...
        try:
            await raw.send(header(DOMAIN))
            await raw.read_until(b"</stream:features>")
            async with websockets.connect(ws_url(server), subprotocols=["xmpp"], ssl=tls(server)) as ws:
                await open_stream(ws)                           # ... one over WebSocket ...
                async with websockets.connect(ws_url(server), subprotocols=["xmpp"], ssl=tls(server)) as third:
                    frames = await recv(third, "too many new connections")    # ... and the third is refused
                    assert "policy-violation" in "".join(frames)
        finally:
            raw.writer.close()


async def test_new_connections_per_minute_from_one_address_are_limited(clock):
    config = {"hosts": [{"domain": DOMAIN}], "c2s": {"new_connections_per_minute": 3}}
    with RunningServer(config=config, clock=clock) as server:
        streams = []
        try:
            for _ in range(3):                     # the legitimate ones: features offered
                raw = await RawStream.open(server)
                await raw.send(header(DOMAIN))
                await raw.read_until(b"</stream:features>")
                streams.append(raw)
            fourth = await RawStream.open(server)
            streams.append(fourth)
            refusal = await fourth.read_to_close()
            assert b"policy-violation" in refusal and b"too many new connections" in refusal
            clock.advance(61)                      # a minute later the address may connect again
            fifth = await RawStream.open(server)
            streams.append(fifth)
            await fifth.send(header(DOMAIN))
            await fifth.read_until(b"</stream:features>")
        finally:
            for raw in streams:
                raw.writer.close()


def test_flood_limits_are_on_the_message_path_only_while_a_host_has_them():
    """Off on every host, the limits cost a stanza nothing: their hook is not registered; a host
    turning them on (a policy change at run time) registers it again, once."""
    from stockade.config.schema import FloodSection, PolicySection
    from stockade.core.bus import HookBus
    from stockade.core.hooks import StanzaFromClient
    from stockade.policy.flood import FloodControl

    bus, flood = HookBus(), FloodControl(FakeClock(), None, None)       # type: ignore[arg-type]
    flood.subscribe(bus)
    assert not bus.has(StanzaFromClient)            # no host applied yet
    flood.apply(DOMAIN, PolicySection(flood=FloodSection(enabled=False)))
    assert not bus.has(StanzaFromClient)
    flood.apply(DOMAIN, PolicySection(flood=FloodSection()))
    flood.apply("other.example", None)              # the defaults: on
    assert bus.has(StanzaFromClient)
    flood.apply(DOMAIN, PolicySection(flood=FloodSection(enabled=False)))
    assert bus.has(StanzaFromClient)                # still on for other.example
    flood.apply("other.example", PolicySection(flood=FloodSection(enabled=False)))
    assert not bus.has(StanzaFromClient)
