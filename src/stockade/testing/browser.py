"""A real browser for tests: Playwright driving Debian's Chromium (no browser download).

    async with browser_page(server) as page:
        await page.goto(f"https://127.0.0.1:{server.https_port}/")
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from typing import Any, AsyncIterator

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.asynccontextmanager
async def browser_page(*, ignore_https_errors: bool = True) -> AsyncIterator[Any]:
    """A fresh Chromium profile and page; every request to a non-loopback host is aborted, so a
    test can never depend on (or leak to) the internet."""
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError("Chromium is not installed: apt-get install chromium (make test does it as root)")
    from playwright.async_api import async_playwright
    profile = tempfile.mkdtemp(prefix="stockade-chromium-")
    try:
        async with async_playwright() as pw:
            ctx = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                ignore_https_errors=ignore_https_errors, viewport={"width": 1280, "height": 800})
            try:
                await ctx.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]|localhost[:/])"), lambda r: r.abort())
                page = await ctx.new_page()
                page.errors = []
                page.on("pageerror", lambda e: page.errors.append(str(e)))
                yield page
            finally:
                await ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
