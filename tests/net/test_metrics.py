"""GET /metrics: Prometheus text from live figures, for loopback scrapers and token holders only.

    alice logs in, sends a message to bob (offline) and leaves; bob logs in; mallory fails to log in
    GET https://127.0.0.1:<port>/metrics  ->  stockade_sessions 1.0, stockade_auth_failures_total +1, ...
    GET https://<a non-loopback address>:<port>/metrics  ->  403 unless "Authorization: Bearer <token>"
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stockade.net.http import HttpService
from stockade.net.metrics import ServerCollector, add_figures, is_scrape_allowed, setup_metrics
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import Client, client

DOMAIN = "example.com"
TOKEN = "scrape-token-0123456789"


def _tls(server: RunningServer) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.cert_path))
    ctx.check_hostname = False          # the certificate names the domains, we connect by address
    return ctx


def _get(server: RunningServer, host: str = "127.0.0.1", token: str | None = None) -> tuple[int, str, str]:
    """GET /metrics over HTTPS: status, content type, body."""
    request = urllib.request.Request(f"https://{host}:{server.https_port}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=_tls(server), timeout=20) as reply:
            return reply.status, reply.headers["content-type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


async def scrape(server: RunningServer) -> dict[tuple[str, tuple], float]:
    """The samples of one scrape, by (name, sorted labels)."""
    status, content_type, body = await asyncio.to_thread(_get, server)
    assert status == 200, body
    assert content_type.startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} is not in the scrape: {sorted(samples)}"
    return samples[key]


async def test_the_figures_follow_logins_failures_stanzas_and_archive_commits():
    with RunningServer([DOMAIN]) as srv:
        srv.add_user("alice@example.com", "alice-pw-1")
        srv.add_user("bob@example.com", "bob-pw-222")
        before = await scrape(srv)
        assert value(before, "stockade_sessions") == 0
        assert value(before, "stockade_connections", kind="c2s") == 0
        assert value(before, "stockade_connections", kind="websocket") == 0
        assert value(before, "stockade_connections", kind="component") == 0

        async with client(srv, "alice@example.com", "alice-pw-1") as alice:
            alice.send_message(mto="bob@example.com", mbody="for when you are back", mtype="chat")
            await alice.get_roster()              # answered after the message was handled
            await srv.acall(srv.server.storage.flush())
            during = await scrape(srv)
            assert value(during, "stockade_sessions") == 1
            assert value(during, "stockade_connections", kind="c2s") == 1
        # roster get, presence, message, roster get
        assert value(during, "stockade_stanzas_received_total") >= \
            value(before, "stockade_stanzas_received_total") + 4
        assert value(during, "stockade_archive_batches_committed_total") > \
            value(before, "stockade_archive_batches_committed_total")

        # alice has left: her stanzas still count, and bob's come on top.
        async with client(srv, "bob@example.com", "bob-pw-222") as bob:
            await bob.get_roster()
            with_bob = await scrape(srv)
        assert value(with_bob, "stockade_stanzas_received_total") >= \
            value(during, "stockade_stanzas_received_total") + 3

        # mallory guesses alice's password once (one mechanism: slixmpp would try the others).
        mallory = Client("alice@example.com", "guess-pw-1", port=srv.c2s_port, cert=srv.cert_path,
                         mechanism="SCRAM-SHA-256")
        try:
            assert await mallory.login() is False
        finally:
            await mallory.close()
        after = await scrape(srv)
        assert value(after, "stockade_auth_failures_total") == value(before, "stockade_auth_failures_total") + 1
        assert value(after, "stockade_audit_write_failures_total") == 0
        assert value(after, "stockade_input_pauses_total") == 0       # a light load never pauses input
        assert value(after, "stockade_input_paused_seconds_total") == 0


async def test_policy_verdicts_alerts_and_the_journal_are_counted():
    """A DLP block and a flag: counted by kind; alerts by kind; journal records committed. The
    malware scanner is off here: its figures are left out, not reported as zero."""
    rules = [{"name": "falcon", "kind": "keywords", "keywords": ["Project Falcon"], "action": "block"},
             {"name": "heron", "kind": "keywords", "keywords": ["Project Heron"], "action": "flag"}]
    config = {"hosts": [{"domain": DOMAIN, "policy": {"dlp": {"rules": rules}}}]}
    with RunningServer(config=config) as srv:
        srv.add_user("alice@example.com", "alice-pw-1")
        srv.add_user("bob@example.com", "bob-pw-222")
        before = await scrape(srv)
        assert not any(name.startswith("stockade_files_") for name, _ in before)
        assert value(before, "stockade_journal_failing") == 0
        async with client(srv, "alice@example.com", "alice-pw-1") as alice:
            alice.send_message(mto="bob@example.com", mbody="Project Falcon numbers", mtype="chat")
            alice.send_message(mto="bob@example.com", mbody="Project Heron numbers", mtype="chat")
            alice.send_message(mto="bob@example.com", mbody="lunch?", mtype="chat")
            await alice.get_roster()              # answered after the messages were handled
        await srv.acall(srv.server.journal.flush())
        srv.run(lambda: srv.server.alerts.alert(DOMAIN, "worm", "a test alert"))
        after = await scrape(srv)
        for kind in ("deny", "flag"):
            assert value(after, "stockade_policy_verdicts_total", kind=kind) == \
                before.get(("stockade_policy_verdicts_total", (("kind", kind),)), 0) + 1
        assert value(after, "stockade_admin_alerts_total", kind="worm") == 1
        assert value(after, "stockade_journal_records_committed_total") >= \
            value(before, "stockade_journal_records_committed_total") + 3
        assert value(after, "stockade_journal_failing") == 0


async def test_two_servers_in_one_process_keep_their_own_figures():
    with RunningServer([DOMAIN]) as one, RunningServer([DOMAIN]) as two:
        one.add_user("alice@example.com", "alice-pw-1")
        bad = Client("alice@example.com", "guess-pw-1", port=one.c2s_port, cert=one.cert_path, mechanism="SCRAM-SHA-256")
        try:
            assert await bad.login() is False
        finally:
            await bad.close()
        assert value(await scrape(one), "stockade_auth_failures_total") == 1
        assert value(await scrape(two), "stockade_auth_failures_total") == 0


# -- who may scrape -----------------------------------------------------------------------------
def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_a_scrape_from_another_address_needs_the_token():
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    config = {"http": {"interfaces": ["127.0.0.1", address], "metrics_token": TOKEN}}
    with RunningServer([DOMAIN], config=config) as srv:
        status, _, body = await asyncio.to_thread(_get, srv, address)
        assert status == 403
        assert "loopback" in body and "http.metrics_token" in body
        assert (await asyncio.to_thread(_get, srv, address, "wrong-token-0123456789"))[0] == 403
        status, _, body = await asyncio.to_thread(_get, srv, address, TOKEN)
        assert status == 200 and "stockade_sessions" in body
        assert (await asyncio.to_thread(_get, srv, "127.0.0.1"))[0] == 200      # loopback: no token needed


async def test_without_a_configured_token_no_token_opens_the_door():
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    with RunningServer([DOMAIN], config={"http": {"interfaces": ["127.0.0.1", address]}}) as srv:
        assert (await asyncio.to_thread(_get, srv, address, ""))[0] == 403
        assert (await asyncio.to_thread(_get, srv, address, "anything-at-all-123"))[0] == 403


@pytest.mark.parametrize("client_host, authorization, token, allowed", [
    ("127.0.0.1", None, "", True),
    ("127.8.9.10", None, "", True),
    ("::1", None, "", True),
    ("::ffff:127.0.0.1", None, "", True),
    ("192.0.2.7", None, "", False),
    ("192.0.2.7", f"Bearer {TOKEN}", "", False),           # no token configured: loopback only
    ("192.0.2.7", f"Bearer {TOKEN}", TOKEN, True),
    ("192.0.2.7", f"bearer {TOKEN}", TOKEN, True),
    ("192.0.2.7", f"Bearer {TOKEN}x", TOKEN, False),
    ("192.0.2.7", f"Basic {TOKEN}", TOKEN, False),
    ("192.0.2.7", "Bearer ", TOKEN, False),
    ("2001:db8::1", None, TOKEN, False),
    ("::ffff:192.0.2.7", None, TOKEN, False),
    (None, None, TOKEN, False),
    ("not-an-address", None, "", False),
])
def test_the_access_rule(client_host, authorization, token, allowed):
    assert is_scrape_allowed(client_host, authorization, token) is allowed


async def test_the_endpoint_refuses_a_remote_client_at_the_asgi_level():
    http = HttpService()
    collector = ServerCollector(connections=lambda: {"c2s": 2}, sessions=lambda: 1, stanzas_received=lambda: 7,
                                auth_failures=lambda: 3, archive_batches_committed=lambda: 4,
                                audit_write_failures=lambda: 0)
    setup_metrics(http, collector, token=TOKEN)
    app = http.build_app()

    async def get(client: tuple[str, int], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "https", "path": "/metrics", "raw_path": b"/metrics", "root_path": "",
                 "query_string": b"", "headers": headers, "client": client, "server": ("127.0.0.1", 5443)}
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return sent[0]["status"], body

    status, body = await get(("198.51.100.4", 40000), [])
    assert status == 403 and b"loopback" in body
    status, body = await get(("198.51.100.4", 40000), [(b"authorization", f"Bearer {TOKEN}".encode())])
    assert status == 200
    assert b'stockade_connections{kind="c2s"} 2.0' in body
    assert b"stockade_stanzas_received_total 7.0" in body
    assert b"stockade_auth_failures_total 3.0" in body
    assert b"stockade_archive_batches_committed_total 4.0" in body


def test_the_figures_of_several_workers_add_up():
    one = {"sessions": 2, "connections": {"c2s": 2, "websocket": 1}, "journal": [10, False],
           "malware": None, "alerts": {"flood": 1}}
    two = {"sessions": 3, "connections": {"c2s": 1, "websocket": 0, "component": 1}, "journal": [5, True],
           "malware": None, "alerts": {}}
    assert add_figures([one, two]) == {"sessions": 5, "connections": {"c2s": 3, "component": 1, "websocket": 1},
                                       "journal": [15, True], "malware": None, "alerts": {"flood": 1}}
