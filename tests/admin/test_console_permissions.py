"""The console's Permissions page (set the denied groups of a feature, reset it, CSRF like every
form) and the dashboard's stanzas per minute, over plain HTTPS requests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from stockade.admin.actions import StanzaRate
from stockade.testing.clock import FakeClock
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import A, B, make_admins
from .test_console import Browser

ALICE_PASSWORD = "alice-pw-1234"


@pytest.fixture(scope="module")
def console_server() -> Iterator[tuple[RunningServer, dict]]:
    with RunningServer(domains=[A, B]) as srv:
        admins = make_admins(srv, totp=True)
        srv.add_user(f"alice@{A}", ALICE_PASSWORD)
        for host in (A, B):
            srv.call(srv.server.groups.create(host, "contractors"))
        yield srv, {name: account.totp_secret for name, (account, _uri) in admins.items()}


@pytest.fixture
def browser(console_server) -> Iterator[Browser]:
    b = Browser(console_server[0])
    yield b
    b.close()


def test_the_denied_groups_of_a_feature_are_set_and_reset_in_the_console(console_server, browser):
    srv, secrets = console_server
    browser.login("tadmin", secrets["tadmin"])
    page = browser.get(f"/permissions?host={A}")
    assert page.status_code == 200 and 'id="feature-upload"' in page.text and 'id="nav-permissions"' in page.text
    form = {"op": "deny", "host": A, "feature": "upload", "deny": "contractors"}
    response = browser.post("/permissions", form, csrf=False)
    assert response.status_code == 403 and "security token is missing or wrong" in response.text
    assert srv.server.permissions.get(A)["upload"].is_open
    response = browser.post("/permissions", form)
    assert response.status_code == 200 and "upload: denied to contractors" in response.text
    assert srv.server.permissions.get(A)["upload"].deny == {"contractors"}
    entry = srv.call(srv.server.audit.entries(A, action="permission.change", limit=1))[0]
    assert (entry["actor"], entry["detail"]["after"]["deny"]) == ("admin:tadmin", ["contractors"])
    response = browser.post("/permissions", {"op": "deny", "host": A, "feature": "upload", "deny": "ghosts"})
    assert response.status_code == 422 and "no such group on example.com: ghosts" in response.text
    response = browser.post("/permissions", {"op": "reset", "host": A, "feature": "upload"})
    assert "upload: back to the configured rule" in response.text
    assert srv.server.permissions.overrides(A) == {}


def test_a_tenant_admin_cannot_set_another_tenants_permissions_in_the_console(console_server, browser):
    srv, secrets = console_server
    browser.login("tadmin", secrets["tadmin"])
    browser.get(f"/permissions?host={A}")
    response = browser.post("/permissions", {"op": "deny", "host": B, "feature": "upload", "deny": "contractors"})
    assert response.status_code == 403 and f"does not manage the host {B}" in response.text
    assert srv.server.permissions.get(B)["upload"].is_open


def test_a_helpdesk_admin_has_no_permissions_page(console_server, browser):
    _, secrets = console_server
    browser.login("desk", secrets["desk"])
    assert 'id="nav-permissions"' not in browser.get("/").text
    response = browser.get(f"/permissions?host={A}")
    assert response.status_code == 403 and "permissions.read" in response.text


async def test_the_dashboard_shows_stanzas_per_minute_to_an_admin_of_every_host(console_server, browser):
    srv, secrets = console_server
    clock = FakeClock()
    rate = srv.server.admin.stanza_rate = StanzaRate(srv.server.stanzas_received, clock)

    def reading() -> int:        # on the server's loop: the total and the rate's reading agree
        rate.sample()
        return srv.server.stanzas_received()

    first = srv.run(reading)
    async with client(srv, f"alice@{A}/dash", ALICE_PASSWORD) as alice:
        for n in range(5):
            alice.send_message(mto=f"alice@{A}", mbody=f"note {n}")
        await alice.roundtrip()                           # handled: the messages are in the total
        clock.advance(60)
        received = srv.run(reading) - first
    assert received >= 5
    await asyncio.to_thread(browser.login, "ops", secrets["ops"])
    page = await asyncio.to_thread(browser.get, "/")
    assert f'<span class="rate">{received}</span> per minute' in page.text
    other = Browser(srv)                                  # a tenant admin does not see server-wide traffic
    try:
        await asyncio.to_thread(other.login, "tadmin", secrets["tadmin"])
        assert 'id="stanza-rate"' not in (await asyncio.to_thread(other.get, "/")).text
    finally:
        other.close()
