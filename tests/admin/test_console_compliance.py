"""The compliance page of the console in a real browser (Playwright + Debian Chromium): the
compliance officer searches the journal and sees a slixmpp test message; a helpdesk admin has no
link to the page and is refused it; a search posted without the session's CSRF token is refused;
the export button downloads the records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockade.testing.browser import browser_page
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import A, ADMIN_PASSWORD

ALICE, BOB = f"alice@{A}", f"bob@{A}"
MESSAGE = "the <b>harbour</b> shipment leaves at dawn"


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with RunningServer(domains=[A, "other.org"]) as srv:
        srv.add_user(ALICE, "alice-pw-1234")
        srv.add_user(BOB, "bob-pw-12345")
        directory = srv.server.admin.directory
        srv.call(directory.create("comp", "compliance", [A], ADMIN_PASSWORD, with_totp=False))
        srv.call(directory.create("desk", "helpdesk", [A], ADMIN_PASSWORD, with_totp=False))
        yield srv


async def _log_in(page, base: str, name: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("#username", name)
    await page.fill("#password", ADMIN_PASSWORD)
    await page.click("#login button[type=submit]")
    await page.wait_for_selector("h1:text('Dashboard')")


async def test_the_compliance_officer_searches_in_the_console_and_helpdesk_is_refused(server) -> None:
    async with client(server, ALICE, "alice-pw-1234") as alice, client(server, BOB, "bob-pw-12345") as bob:
        alice.send_message(mto=BOB, mbody=MESSAGE, mtype="chat")
        assert (await bob.next_message())["body"] == MESSAGE
    base = f"https://127.0.0.1:{server.https_port}/admin"
    async with browser_page() as page:
        await _log_in(page, base, "comp")
        await page.click("#nav-compliance")
        await page.wait_for_selector("h1:text('Compliance archive of example.com')")
        await page.fill("#with", ALICE)
        await page.fill("#words", "Harbour shipment")
        await page.click("#search button[value=search]")
        await page.wait_for_selector("#results")
        rows = page.locator("#results tr.record")
        assert await rows.count() == 1
        text = await rows.first.inner_text()
        assert MESSAGE in text and BOB in text            # shown as text: the markup is escaped
        assert await page.locator("#results b").count() == 0
        # the export button downloads the records as JSONL
        async with page.expect_download() as download_info:
            await page.click("#export-jsonl")
        download = await download_info.value
        assert download.suggested_filename == f"ediscovery-{A}.jsonl"
        [line] = Path(await download.path()).read_text(encoding="utf-8").splitlines()
        assert json.loads(line)["body"] == MESSAGE
        # nothing for words nobody wrote
        await page.fill("#words", "submarine")
        await page.click("#search button[value=search]")
        await page.wait_for_selector("#no-results")
        assert page.errors == []
        # the same search posted without the session's CSRF token: refused, nothing searched
        forged = await page.request.post(f"{base}/compliance", form={"host": A, "words": "harbour"})
        assert forged.status == 403 and "security token" in await forged.text()
        await page.click("form.logout button[type=submit]")
        await page.wait_for_selector("#username")

        await _log_in(page, base, "desk")
        assert await page.locator("#nav-compliance").count() == 0
        response = await page.goto(f"{base}/compliance")
        assert response.status == 403
        assert "archive.search" in await page.inner_text("main")
    entries = server.call(server.server.audit.entries(A, action="ediscovery.search"))
    assert [(e["actor"], e["detail"]["count"], e["detail"]["via"]) for e in entries] == [
        ("admin:comp", 0, "console"), ("admin:comp", 1, "console")]
    [export] = server.call(server.server.audit.entries(A, action="ediscovery.export"))
    assert (export["actor"], export["detail"]["count"], export["detail"]["formats"]) == ("admin:comp", 1, ["jsonl"])

