"""The admin API, metrics and file upload with several worker processes ([server] workers = 2).

Worker 0 serves HTTPS; the sessions of alice (worker 1) live elsewhere. The admin API must still
see, count and end them, and what it changes (groups, feature permissions, the threat policy,
accounts) must apply in every worker before it answers: no worker may keep enforcing the old
rule until its next periodic check (account_check_interval is an hour here). alice's upload slot
comes from the upload service in worker 0, and her file is put to and fetched from its listener.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from stockade.testing.process import ServerProcess, stockade_command
from stockade.testing.xmpp import client

from ..admin.conftest import AdminApi, Reply
from ..admin.test_console import Browser
from ..policy.test_dlp import refusal
from ..policy.test_policy_engine import BLUEBIRD
from .conftest import DOMAIN, USERS, jid
from .test_upload import fetch, upload
from .test_workers import home

ADMIN, ADMIN_PASSWORD = "ops", "admin-password-long-1"
AUDITOR = "aud"                         # may read the audit log of example.com, not end sessions
ERIN = ("erin", "erin-pw-4444")        # created through the API during a test (worker 1)


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> ServerProcess:
    proc = ServerProcess(tmp_path_factory.mktemp("workers-admin"), [DOMAIN], config={
        "server": {"workers": 2, "account_check_interval": 3600.0}, "c2s": {"require_tls": False}})
    for user, password in USERS.items():
        assert proc.cli("user", "add", jid(user), "--password", password).status == 0
    for name, role in ((ADMIN, "operator"), (AUDITOR, "auditor")):
        created = subprocess.run([*stockade_command(), "--config", str(proc.config_path), "admin", "create", name,
                                  "--role", role, *(["--host", DOMAIN] if role != "operator" else []),
                                  "--no-totp", "--password-stdin"],
                                 input=ADMIN_PASSWORD + "\n", capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
    with proc:
        yield proc


def token(node: ServerProcess, name: str) -> AdminApi:
    made = node.cli("admin", "token", name, "--scope", "all")
    assert made.status == 0, made.stderr
    return AdminApi(node, made.stdout.strip())


@pytest.fixture(scope="module")
def api(node) -> AdminApi:
    return token(node, ADMIN)


def call(api: AdminApi, method: str, path: str, body=None) -> "asyncio.Future[Reply]":
    return asyncio.to_thread(api, method, path, body)


def test_the_accounts_used_live_in_both_workers():
    assert home("alice") == home("carol") == home(ERIN[0]) == 1 and home("bob") == 0


async def test_the_sessions_of_every_worker_are_listed_counted_and_shown_online(node, api):
    async with client(node, jid("alice"), USERS["alice"]) as alice, \
               client(node, jid("bob"), USERS["bob"]) as bob:
        listed = await call(api, "GET", f"/hosts/{DOMAIN}/sessions")
        assert listed.status == 200, listed.body
        assert {s["jid"] for s in listed.body["sessions"]} == {str(alice.boundjid), str(bob.boundjid)}
        users = await call(api, "GET", f"/hosts/{DOMAIN}/users")
        online = {u["username"]: u["online"] for u in users.body["users"]}
        assert online["alice"] and online["bob"] and not online["carol"]
        assert await asyncio.to_thread(metric, node, "stockade_sessions") == 2
        dashboard, sessions_page = await asyncio.to_thread(console_pages, node)
        counts = re.search(rf'<td>{DOMAIN}</td><td>\d+</td><td class="online">(\d+)</td><td class="sessions">(\d+)</td>',
                           dashboard)
        assert counts and counts.groups() == ("2", "2"), dashboard
        assert str(alice.boundjid) in sessions_page and str(bob.boundjid) in sessions_page


def console_pages(node: ServerProcess) -> tuple[str, str]:
    """The console's dashboard and sessions page, as the operator (no second factor here)."""
    browser = Browser(node)
    try:
        assert browser.login(ADMIN, None).url.endswith("/admin/")
        return browser.get("/").text, browser.get(f"/sessions?host={DOMAIN}").text
    finally:
        browser.close()


async def test_an_admin_ends_a_session_and_revokes_an_account_in_its_own_worker(node, api):
    async with client(node, jid("alice"), USERS["alice"]) as alice:
        resource = alice.boundjid.resource
        ended = await call(api, "DELETE", f"/hosts/{DOMAIN}/sessions/alice/{resource}")
        assert ended.status == 200, ended.body
        error = await alice.next_of(alice.stream_errors)
        assert error["condition"] == "policy-violation" and "ended by an administrator" in error["text"]
    missing = await call(api, "DELETE", f"/hosts/{DOMAIN}/sessions/alice/{resource}")
    assert missing.status == 404 and "there is no session" in missing.body["error"]

    async with client(node, jid("alice"), USERS["alice"]) as alice:
        revoked = await call(api, "POST", f"/hosts/{DOMAIN}/users/alice/revoke")
        assert revoked.status == 200 and revoked.body["ended"] == 1, revoked.body
        error = await alice.next_of(alice.stream_errors)
        assert error["condition"] == "not-authorized" and "were revoked" in error["text"]


async def test_an_admin_without_the_right_cannot_end_a_session_in_another_worker(node):
    """The role is checked in worker 0, before any other worker is asked."""
    auditor = token(node, AUDITOR)
    async with client(node, jid("alice"), USERS["alice"]) as alice:
        refused = await call(auditor, "DELETE", f"/hosts/{DOMAIN}/sessions/alice/{alice.boundjid.resource}")
        assert refused.status == 403 and "sessions.end" in refused.error, refused.body
        await alice.roundtrip()                  # still connected
        assert alice.pending(alice.stream_errors) == []


async def test_group_and_permission_changes_apply_in_every_worker_at_once(node, api):
    """alice's archive queries are answered by worker 1, which must learn of the new group and
    the new rule as soon as the API answers."""
    created = await call(api, "POST", f"/hosts/{DOMAIN}/groups", {"id": "trading", "name": "Trading"})
    assert created.status == 201, created.body
    members = await call(api, "PUT", f"/hosts/{DOMAIN}/groups/trading/members", {"members": ["alice"]})
    assert members.status == 200, members.body
    async with client(node, jid("alice"), USERS["alice"]) as alice:
        assert (await archive_query(alice))["type"] == "result"
        denied = await call(api, "PUT", f"/hosts/{DOMAIN}/permissions/history", {"deny": ["trading"]})
        assert denied.status == 200, denied.body
        reply = await archive_query(alice)
        assert reply["type"] == "error" and reply["error"]["condition"] == "forbidden"
        reset = await call(api, "DELETE", f"/hosts/{DOMAIN}/permissions/history")
        assert reset.status == 200, reset.body
        assert (await archive_query(alice))["type"] == "result"


async def test_a_shared_group_made_through_the_api_reaches_the_rosters_in_both_workers(node, api):
    async with client(node, jid("carol"), USERS["carol"]) as carol, \
               client(node, jid("bob"), USERS["bob"]) as bob:
        created = await call(api, "POST", f"/hosts/{DOMAIN}/groups", {"id": "desk", "name": "Desk", "shared": True})
        assert created.status == 201, created.body
        members = await call(api, "PUT", f"/hosts/{DOMAIN}/groups/desk/members", {"members": ["carol", "bob"]})
        assert members.status == 200, members.body
        for member, contact in ((carol, "bob"), (bob, "carol")):     # carol's roster is worker 1's
            push = await member.next_of(member.roster_pushes, lambda p: jid(contact) in p["roster"]["items"])
            assert push["roster"]["items"][jid(contact)]["subscription"] == "both"
        deleted = await call(api, "DELETE", f"/hosts/{DOMAIN}/groups/desk")
        assert deleted.status == 200, deleted.body
        for member, contact in ((carol, "bob"), (bob, "carol")):
            push = await member.next_of(member.roster_pushes, lambda p: p["roster"]["items"].get(jid(contact), {})
                                        .get("subscription") == "remove")
            assert push is not None


async def test_a_policy_change_applies_to_the_next_message_in_every_worker(node, api):
    async with client(node, jid("alice"), USERS["alice"]) as alice, \
               client(node, jid("bob"), USERS["bob"]) as bob:
        reply = await call(api, "PUT", f"/hosts/{DOMAIN}/policy", BLUEBIRD)
        assert reply.status == 200, reply.body
        try:
            alice.send_message(mto=jid("bob"), mbody="the Bluebird launch", mtype="chat")     # from worker 1
            assert refusal(await alice.next_message()) == (
                "policy-violation", "Project Bluebird is confidential: this message was not sent.")
        finally:
            reset = await call(api, "DELETE", f"/hosts/{DOMAIN}/policy")
            assert reset.status == 200, reset.body
        alice.send_message(mto=jid("bob"), mbody="bluebird again", mtype="chat")
        assert (await bob.next_message())["body"] == "bluebird again"


async def test_an_account_created_and_removed_through_the_api_is_known_in_its_worker(node, api):
    erin, password = ERIN
    async with client(node, jid("alice"), USERS["alice"]) as alice:
        # worker 1 is asked about erin before she exists (it remembers the answer briefly)
        alice.send_message(mto=jid(erin), mbody="are you there?", mtype="chat")
        assert (await alice.next_message(with_body=False))["error"]["condition"] == "service-unavailable"
        created = await call(api, "POST", f"/hosts/{DOMAIN}/users", {"username": erin, "password": password})
        assert created.status == 201, created.body
        alice.send_message(mto=jid(erin), mbody="welcome", mtype="chat")        # kept offline, not bounced
        await alice.roundtrip()
        async with client(node, jid(erin), password) as erin_client:
            assert (await erin_client.next_message())["body"] == "welcome"
            removed = await call(api, "DELETE", f"/hosts/{DOMAIN}/users/{erin}")
            assert removed.status == 200, removed.body
            error = await erin_client.next_of(erin_client.stream_errors)
            assert error["condition"] == "not-authorized" and "removed" in error["text"]
        assert not alice.pending(alice.messages)


async def test_a_user_of_another_worker_shares_a_file(node):
    async with client(node, jid("alice"), USERS["alice"]) as alice, \
               client(node, jid("bob"), USERS["bob"]) as bob:
        url = await upload(node, alice, "minutes.txt", b"the minutes of the meeting")
        alice.send_message(mto=jid("bob"), mbody=url, mtype="chat")
        assert (await bob.next_message())["body"] == url
        got = await fetch(node, "GET", url)
        assert got.status == 200 and got.body == b"the minutes of the meeting"


def test_a_worker_that_does_not_answer_fails_the_request_instead_of_a_partial_answer(node, api):
    (worker_1,) = [int(pid) for pid in Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split()]
    os.kill(worker_1, signal.SIGSTOP)                 # hung: its sessions cannot be asked about
    try:
        reply = api("GET", f"/hosts/{DOMAIN}/sessions")
        assert reply.status == 503 and "worker process 1 did not answer" in reply.error, reply
    finally:
        os.kill(worker_1, signal.SIGCONT)
    assert api("GET", f"/hosts/{DOMAIN}/sessions").status == 200      # its late answer is ignored


async def archive_query(user) -> object:
    iq = user.make_iq_set()
    iq.xml.append(ET.Element("{urn:xmpp:mam:2}query"))
    return await user.query(iq)


def metric(node: ServerProcess, name: str) -> float:
    tls = ssl.create_default_context(cafile=str(node.cert_path))
    tls.check_hostname = False
    with urllib.request.urlopen(f"https://127.0.0.1:{node.https_port}/metrics", context=tls, timeout=30) as reply:
        text = reply.read().decode()
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert found, text
    return float(found.group(1))
