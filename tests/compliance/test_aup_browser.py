"""The acceptable-use policy accepted from the served web client: Converse.js lists the server's
ad-hoc commands (settings, Commands), shows the accept-aup form with the policy, and completing
it with the box ticked records the acceptance."""

from __future__ import annotations

from stockade.modules.aup import AcceptableUse
from stockade.testing.browser import browser_page
from stockade.testing.server import RunningServer

DOMAIN = "example.com"
POLICY = "Use this service for company business only."


async def test_a_browser_user_accepts_the_policy_with_the_ad_hoc_command(tmp_path):
    compliance = {"aup_text": POLICY, "aup_required": True, "aup_version": "7"}
    with RunningServer(domains=[DOMAIN], data_dir=tmp_path,
                       config={"hosts": [{"domain": DOMAIN, "compliance": compliance}]}) as srv:
        srv.add_user(f"alice@{DOMAIN}", "alice-pw-1")
        aup = srv.server.ctx.services[AcceptableUse]
        async with browser_page() as page:
            await page.goto(f"https://127.0.0.1:{srv.https_port}/")
            await page.fill("#converse-login-jid", f"alice@{DOMAIN}")
            await page.fill("#converse-login-password", "alice-pw-1")
            await page.click("#converse-login button[type=submit]")
            await page.wait_for_selector("converse-roster", timeout=30000)
            assert not srv.run(lambda: aup.has_accepted(DOMAIN, "alice"))

            await page.click("a.show-client-info", timeout=30000)
            await page.click("#commands-tab", timeout=30000)
            await page.click('input[value="List available commands"]', timeout=30000)
            await page.click('a[data-command-node="accept-aup"]', timeout=30000)
            await page.locator(".form-instructions", has_text=POLICY).wait_for(timeout=30000)
            await page.check('converse-adhoc-commands input[name="accept"]', timeout=30000)
            await page.click('converse-adhoc-commands input[data-action="complete"]', timeout=30000)
            await page.locator("converse-adhoc-commands .form-help", has_text="you accepted version 7").wait_for(
                timeout=30000)
        assert srv.run(lambda: aup.has_accepted(DOMAIN, "alice"))
        entries = srv.call(srv.server.audit.entries(DOMAIN, action="aup.accept", limit=5))
        assert [(e["actor"], e["detail"]["version"]) for e in entries] == [(f"alice@{DOMAIN}", "7")]
