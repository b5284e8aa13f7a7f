"""The served web client: Converse.js in a real browser (Playwright + Debian Chromium) talks to
slixmpp users through Stockade's WebSocket endpoint."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from stockade.testing.browser import browser_page
from stockade.testing.xmpp import client

from .conftest import USERS, jid

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def screenshot_path(tmp_path: Path, name: str) -> str:
    """docs/img when STOCKADE_SCREENSHOTS=1 (to refresh the documentation), else a temporary file."""
    folder = DOCS_IMG if os.environ.get("STOCKADE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / name)


async def login(page, server, user: str) -> None:
    await page.goto(f"https://127.0.0.1:{server.https_port}/")
    await page.fill("#converse-login-jid", jid(user))
    await page.fill("#converse-login-password", USERS[user])
    await page.click("#converse-login button[type=submit]")


async def test_a_browser_user_chats_with_a_slixmpp_user(server, tmp_path):
    async with client(server, jid("bob"), USERS["bob"]) as bob, browser_page() as page:
        await login(page, server, "alice")
        await page.wait_for_selector("converse-roster", timeout=30000)
        # bob writes first; alice sees a new message from him in her contact list and opens it
        bob.send_message(mto=jid("alice"), mbody="hello alice, this is bob", mtype="chat")
        await page.locator("converse-roster").get_by_text(jid("bob")).first.click(timeout=30000)
        message = page.locator("converse-chat-message", has_text="hello alice, this is bob")
        await message.wait_for(timeout=30000)
        textarea = page.locator(f'converse-chat[jid="{jid("bob")}"] textarea.chat-textarea')
        await textarea.wait_for(state="visible", timeout=30000)
        await textarea.fill("hi bob, from the browser")
        await textarea.press("Enter")
        reply = await bob.next_message()
        assert reply["body"] == "hi bob, from the browser"
        assert reply["from"].bare == jid("alice")
        await page.screenshot(path=screenshot_path(tmp_path, "web-client.png"))
        assert not [e for e in page.errors if "OMEMO" not in e], page.errors


async def test_a_browser_user_joins_a_room_and_talks_with_slixmpp_users(server, tmp_path):
    room = "lunch@conference.example.com"
    async with client(server, jid("bob"), USERS["bob"], plugins=("xep_0030", "xep_0045")) as bob:
        # bob creates the room (an instant room) and waits there
        muc = bob.plugin["xep_0045"]
        occupants: asyncio.Queue = asyncio.Queue()     # slixmpp reports room presence as its own event
        bob.add_event_handler("groupchat_presence", occupants.put_nowait)
        await muc.join_muc_wait(room, "bob", maxchars=0, timeout=20)
        form = await muc.get_room_config(room)
        await muc.set_room_config(room, form)
        async with browser_page() as page:
            await login(page, server, "alice")
            await page.wait_for_selector("converse-rooms-list", timeout=30000)
            await page.click("converse-rooms-list .dropdown-toggle")
            await page.click("a.show-add-muc-modal")
            await page.fill("input[name=chatroom]", room)
            await page.fill("input[name=nickname]", "alice")
            await page.click("input[name=join]")
            joined = await bob.next_of(occupants, lambda p: str(p["from"]) == f"{room}/alice")
            assert joined["muc"]["role"] in ("participant", "moderator")
            textarea = page.locator(f'converse-muc[jid="{room}"] textarea.chat-textarea')
            await textarea.wait_for(state="visible", timeout=30000)
            await textarea.fill("hello room")
            await textarea.press("Enter")
            said = await bob.next_message()
            assert said["type"] == "groupchat" and said["body"] == "hello room" and str(said["from"]) == f"{room}/alice"
            bob.send_message(mto=room, mbody="welcome alice", mtype="groupchat")
            await page.locator(f'converse-muc[jid="{room}"] converse-chat-message', has_text="welcome alice").wait_for(timeout=30000)
            await page.screenshot(path=screenshot_path(tmp_path, "web-client-room.png"))
