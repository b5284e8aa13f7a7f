"""The admin console in a real browser (Playwright + Debian Chromium): an operator logs in with
password and TOTP code, creates an account, ends a live slixmpp session (whose stream closes with
the reason) and reads the audit entry of that. STOCKADE_SCREENSHOTS=1 refreshes docs/img/console-*.png."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from stockade.testing.browser import browser_page
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import Client

from .conftest import A, ADMIN_PASSWORD, AdminApi, token_for

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
CAROL = f"carol@{A}"
CAROL_PASSWORD = "carol-pw-4455"


def screenshot_path(tmp_path: Path, name: str) -> str:
    folder = DOCS_IMG if os.environ.get("STOCKADE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / name)


@pytest.fixture
def server() -> Iterator[RunningServer]:
    config = {"modules": {"approved_clients": {"allow": ["Gajim >= 1.8"], "query_timeout": 5.0}}}
    with RunningServer(domains=[A, "other.org"], config=config) as srv:
        srv.add_user(CAROL, CAROL_PASSWORD)
        yield srv


async def test_an_operator_manages_users_and_sessions_in_the_console(server, tmp_path):
    directory = server.server.admin.directory
    account, uri = await server.acall(directory.create("ops", "operator", [], ADMIN_PASSWORD))
    assert uri.startswith("otpauth://totp/Stockade:ops?secret=")
    base = f"https://127.0.0.1:{server.https_port}/admin"
    carol = Client(f"{CAROL}/laptop", CAROL_PASSWORD, port=server.c2s_port, cert=server.cert_path)
    carol.plugin["xep_0092"].software_name = "Gajim"       # answers the server's software query
    carol.plugin["xep_0092"].version = "1.9.1"
    try:
        assert await carol.login()
        await carol.roundtrip()
        sessions = AdminApi(server, token_for(server, "ops", ["sessions.read"]))
        listed = (await asyncio.to_thread(sessions, "GET", f"/hosts/{A}/sessions")).body["sessions"]
        assert [(s["jid"], s["client"], s["version"]) for s in listed] == [(f"{CAROL}/laptop", "Gajim", "1.9.1")]
        async with browser_page() as page:
            # log in: password, then the authenticator code
            await page.goto(f"{base}/login")
            await page.screenshot(path=screenshot_path(tmp_path, "console-login.png"))
            await page.fill("#username", "ops")
            await page.fill("#password", ADMIN_PASSWORD)
            await page.click("#login button[type=submit]")
            await page.wait_for_selector("#code")
            await page.fill("#code", pyotp.TOTP(account.totp_secret).now())
            await page.click("#mfa button[type=submit]")
            await page.wait_for_selector("h1:text('Dashboard')")
            assert await page.locator(f"#hosts tr:has-text('{A}') td.sessions").inner_text() == "1"
            await page.screenshot(path=screenshot_path(tmp_path, "console-dashboard.png"))

            # create an account
            await page.click("#nav-users")
            await page.fill("#new-username", "dave")
            await page.fill("#new-password", "dave-pw-98765")
            await page.click("#create-user button[type=submit]")
            await page.wait_for_selector(f"#flash:text('created dave@{A}')")
            assert await server.acall(server.server.accounts.exists(A, "dave"))
            await page.screenshot(path=screenshot_path(tmp_path, "console-users.png"))

            # end carol's session, confirming first
            await page.click("#nav-sessions")
            row = page.locator("#session-carol-laptop")
            assert "Gajim 1.9.1" in await row.inner_text()
            await page.screenshot(path=screenshot_path(tmp_path, "console-sessions.png"))
            await row.locator("button").click()
            await page.wait_for_selector("#confirm")
            assert carol.pending(carol.stream_errors) == []                  # nothing happens before confirming
            await page.click("#confirm button[type=submit]")
            await page.wait_for_selector(f"#flash:text('ended the session {CAROL}/laptop')")
            error = await carol.next_of(carol.stream_errors)
            assert error["condition"] == "policy-violation"
            assert error["text"] == "this session was ended by an administrator"
            await carol.disconnected_event.wait()

            # the audit log shows who did it, newest first
            await page.click("#nav-audit")
            newest = page.locator("#audit tr.entry").first
            assert await newest.get_attribute("data-action") == "session.end"
            text = await newest.inner_text()
            assert "admin:ops" in text and f"{CAROL}/laptop" in text
            await page.screenshot(path=screenshot_path(tmp_path, "console-audit.png"))
            assert page.errors == []
    finally:
        await carol.close()
