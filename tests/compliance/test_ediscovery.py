"""eDiscovery against a real server: real slixmpp clients chat 1:1, in a room and upload a file;
the compliance officer of example.com finds it all through the admin API and the CLI (keywords,
participants, dates), exports it as JSONL and as HTML transcripts with the file, and every
search and export is in the audit log. Other roles and the officer of another tenant are refused,
and the database file never shows the message text or the search words."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from stockade.compliance.ediscovery import WORDS_AAD
from stockade.testing.process import run_cli, to_toml
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from tests.admin.conftest import AdminApi, token_for
from tests.integration.conftest import DOMAIN, USERS, jid
from tests.integration.test_muc_support import create, enter, groupchat_from, muc_client, room
from tests.integration.test_upload import put, request_slot

A, B = DOMAIN, "other.org"
PASSWORD = "admin-password-long-1"
ADMINS = {"comp": ("compliance", [A]), "compb": ("compliance", [B]), "desk": ("helpdesk", [A]),
          "ops": ("operator", [])}
SECRET_WORD = "zanzibarquokka"            # appears in one message only, never in an address
SCRIPT = "<script>alert('pwned')</script> see zanzibarquokka"
FILE_BYTES = b"budget lines: marmalade-7731 for the offsite"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One server with a 1:1 conversation, a room conversation, an upload on example.com and a
    message on other.org, admins of each role and a configuration file for the CLI."""
    with RunningServer(domains=[A, B]) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        srv.add_user(f"eve@{B}", "eve-pw-5555")
        srv.add_user(f"mallory@{B}", "mallory-pw-66")
        directory = srv.server.admin.directory
        for name, (role, hosts) in ADMINS.items():
            srv.call(directory.create(name, role, hosts, PASSWORD, with_totp=False))
        srv.call(_converse(srv))
        folder = tmp_path_factory.mktemp("cli")
        config = folder / "stockade.toml"
        config.write_text(to_toml({"server": {"data_dir": str(srv.data_dir)},
                                   "hosts": [{"domain": A}, {"domain": B}]}), encoding="utf-8")
        yield {"server": srv, "config": config, "folder": folder,
               "api": {name: AdminApi(srv, token_for(srv, name)) for name in ADMINS}}


async def _converse(srv: RunningServer) -> None:
    async with client(srv, jid("alice"), USERS["alice"]) as alice, \
               client(srv, jid("bob"), USERS["bob"]) as bob:
        alice.send_message(mto=jid("bob"), mbody="the quarterly figures are in the vault", mtype="chat")
        assert (await bob.next_message())["body"] == "the quarterly figures are in the vault"
        bob.send_message(mto=alice.boundjid, mbody=SCRIPT, mtype="chat")
        assert (await alice.next_message())["body"] == SCRIPT
        put_url, _ = await request_slot(alice, "budget-plan.txt", len(FILE_BYTES), "text/plain")
        assert (await put(srv, put_url, FILE_BYTES)).status == 201
    lounge = room("lounge")
    async with muc_client(srv, "carol") as carol, muc_client(srv, "dave") as dave:
        await create(carol, lounge, "Carol")
        await enter(dave, lounge, "Dave")
        carol.send_message(mto=lounge, mbody="standup moved to the quarterly review slot", mtype="groupchat")
        assert (await groupchat_from(dave, f"{lounge}/Carol"))["body"].startswith("standup moved")
    async with client(srv, f"eve@{B}", "eve-pw-5555") as eve, client(srv, f"mallory@{B}", "mallory-pw-66") as mal:
        eve.send_message(mto=f"mallory@{B}", mbody="quarterly figures of the other tenant", mtype="chat")
        await mal.next_message()


def call(api: AdminApi, method: str, path: str, body: Any = None):
    return asyncio.to_thread(api, method, path, body)


def bodies(reply: Any) -> list[str]:
    return [r["body"] or (r["file"] or {}).get("name", "") for r in reply.body["records"]]


async def test_the_compliance_officer_finds_chat_room_and_upload_through_the_api(env) -> None:
    comp = env["api"]["comp"]
    found = await call(comp, "GET", f"/hosts/{A}/archive/search?words=Quarterly")
    assert found.status == 200, found.body
    assert bodies(found) == ["the quarterly figures are in the vault", "standup moved to the quarterly review slot"]
    first = found.body["records"][0]
    assert (first["kind"], first["to"], first["conversation"]) == ("chat", jid("bob"), f"{jid('alice')} {jid('bob')}")
    assert first["from"].startswith(jid("alice") + "/")
    # all words must match
    assert bodies(await call(comp, "GET", f"/hosts/{A}/archive/search?words=quarterly+vault")) == [
        "the quarterly figures are in the vault"]
    # participants: any of / all of; the room is a participant of its messages
    by_carol = await call(comp, "GET", f"/hosts/{A}/archive/search?with={jid('carol')}")
    assert [r["kind"] for r in by_carol.body["records"]] == ["groupchat"]
    assert [r["kind"] for r in (await call(comp, "GET", f"/hosts/{A}/archive/search?with={room('lounge')}"))
            .body["records"]] == ["groupchat"]
    pair = await call(comp, "GET", f"/hosts/{A}/archive/search?with_all={jid('alice')}&with_all={jid('bob')}")
    assert bodies(pair) == ["the quarterly figures are in the vault", SCRIPT]
    # the upload, by its file name and by kind
    upload = await call(comp, "GET", f"/hosts/{A}/archive/search?words=budget&kind=upload")
    [record] = upload.body["records"]
    assert record["file"]["name"] == "budget-plan.txt" and record["file"]["size"] == len(FILE_BYTES)
    # dates: today is in, yesterday is out
    today = datetime.now(timezone.utc).date()
    assert len((await call(comp, "GET", f"/hosts/{A}/archive/search?from={today}&to={today}")).body["records"]) >= 4
    yesterday = today - timedelta(days=1)
    assert (await call(comp, "GET", f"/hosts/{A}/archive/search?to={yesterday}")).body["records"] == []
    # paging
    page = await call(comp, "GET", f"/hosts/{A}/archive/search?limit=1")
    assert len(page.body["records"]) == 1 and page.body["next_after"] == page.body["records"][0]["id"]


async def test_other_roles_and_other_tenants_are_refused(env) -> None:
    apis = env["api"]
    mine = await call(apis["comp"], "GET", f"/hosts/{B}/archive/search?words=quarterly")
    assert mine.status == 403 and f"does not manage the host {B}" in mine.error
    for name in ("desk", "ops"):
        refused = await call(apis[name], "GET", f"/hosts/{A}/archive/search?words=quarterly")
        assert refused.status == 403 and "archive.search" in refused.error, (name, refused.body)
        refused = await call(apis[name], "POST", f"/hosts/{A}/archive/export", {"format": "jsonl"})
        assert refused.status == 403, refused.body
    # the officer of other.org sees only other.org
    theirs = await call(apis["compb"], "GET", f"/hosts/{B}/archive/search?words=quarterly")
    assert bodies(theirs) == ["quarterly figures of the other tenant"]
    bad = await call(apis["comp"], "GET", f"/hosts/{A}/archive/search?from=last+tuesday")
    assert bad.status == 422 and "not a date" in bad.error


async def test_exports_hold_the_messages_escaped_and_the_file(env) -> None:
    comp = env["api"]["comp"]
    jsonl = await call(comp, "POST", f"/hosts/{A}/archive/export", {"with": [jid("alice")], "format": "jsonl"})
    assert jsonl.status == 200
    lines = [json.loads(line) for line in jsonl.body.decode().splitlines()]
    assert [r["kind"] for r in lines] == ["chat", "chat", "upload"]
    assert lines[1]["body"] == SCRIPT and all(r["verified"] and len(r["hash"]) == 64 for r in lines)

    zipped = await call(comp, "POST", f"/hosts/{A}/archive/export", {"words": "", "format": "zip"})
    assert zipped.status == 200
    archive = zipfile.ZipFile(io.BytesIO(zipped.body))
    names = archive.namelist()
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["exported_by"] == "admin:comp" and manifest["query"]["host"] == A
    assert manifest["counts"]["files"] == 1 and manifest["counts"]["records"] >= 4
    for name, digest in manifest["files"].items():
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest
    [stored] = [n for n in names if n.startswith("files/")]
    assert stored.endswith("budget-plan.txt") and archive.read(stored) == FILE_BYTES      # decrypted
    pair = archive.read(f"transcripts/{jid('alice')}+{jid('bob')}.html").decode()
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in pair and "<script>" not in pair
    assert "the quarterly figures are in the vault" in pair
    assert "standup moved" in archive.read(f"transcripts/{room('lounge')}.html").decode()
    uploads = archive.read(f"transcripts/{jid('alice')}.html").decode()
    assert "budget-plan.txt" in uploads and f'href="../{stored}"' in uploads


def test_the_cli_searches_and_exports(env) -> None:
    config, folder = env["config"], env["folder"]
    found = run_cli("archive", "search", "--host", A, "--with", jid("bob"), "--words", "quarterly", config=config)
    assert found.status == 0, found.stderr
    assert found.lines[-1] == "1 record(s)" and "the quarterly figures are in the vault" in found.lines[0]
    upload = run_cli("archive", "search", "--host", A, "--kind", "upload", "--from",
                     datetime.now(timezone.utc).date().isoformat(), config=config)
    assert upload.status == 0 and "file budget-plan.txt" in upload.stdout, upload.stderr
    room_found = run_cli("archive", "search", "--host", A, "--words", "standup", config=config)
    assert "standup moved" in room_found.stdout and room_found.lines[-1] == "1 record(s)"
    wrong = run_cli("archive", "search", "--host", "nowhere.example", config=config)
    assert wrong.status == 1 and "not a domain this server serves" in wrong.stderr

    out = folder / "case-1"
    exported = run_cli("archive", "export", "--host", A, "--with", jid("alice"), "--out", str(out), config=config)
    assert exported.status == 0, exported.stderr
    assert "exported 3 record(s) of 2 conversation(s), 1 file(s)" in exported.stdout
    assert [json.loads(line)["kind"] for line in (out / "records.jsonl").read_text().splitlines()] == [
        "chat", "chat", "upload"]
    transcript = (out / "transcripts" / f"{jid('alice')}+{jid('bob')}.html").read_text()
    assert "&lt;script&gt;" in transcript and "<script>" not in transcript
    [copied] = list((out / "files").iterdir())
    assert copied.read_bytes() == FILE_BYTES
    again = run_cli("archive", "export", "--host", A, "--out", str(out), config=config)
    assert again.status == 1 and "is not empty" in again.stderr


def _audit(srv: RunningServer, action: str) -> list[dict]:
    return srv.call(srv.server.audit.entries(A, action=action, limit=100))


def test_every_search_and_export_is_audited(env) -> None:
    srv = env["server"]
    before = len(_audit(srv, "ediscovery.search"))
    reply = env["api"]["comp"]("GET", f"/hosts/{A}/archive/search?words={SECRET_WORD}")
    assert len(reply.body["records"]) == 1
    searches = _audit(srv, "ediscovery.search")
    assert len(searches) == before + 1
    newest = searches[0]
    assert newest["actor"] == "admin:comp" and newest["detail"]["count"] == 1
    assert newest["detail"]["via"] == "api"
    # the words are in the entry, sealed like the messages they search for
    cipher = srv.server.storage.cipher
    assert cipher.open_text(newest["detail"]["query"]["words"], WORDS_AAD) == SECRET_WORD
    run_cli("archive", "search", "--host", A, "--words", "vault", config=env["config"])
    assert _audit(srv, "ediscovery.search")[0]["actor"] == "cli"
    env["api"]["comp"]("POST", f"/hosts/{A}/archive/export", {"words": "vault"})
    newest = _audit(srv, "ediscovery.export")[0]
    assert newest["actor"] == "admin:comp" and newest["detail"]["count"] == 1
    assert newest["detail"]["formats"] == ["jsonl"]
    assert cipher.open_text(newest["detail"]["query"]["words"], WORDS_AAD) == "vault"


def test_the_database_holds_neither_message_text_nor_search_words(env) -> None:
    srv = env["server"]
    assert len(env["api"]["comp"]("GET", f"/hosts/{A}/archive/search?words={SECRET_WORD}").body["records"]) == 1
    srv.call(srv.server.search_index.catch_up())
    raw = b""
    for suffix in ("", "-wal"):
        path = Path(srv.data_dir) / f"stockade.db{suffix}"
        if path.exists():
            raw += path.read_bytes()
    assert raw
    for text in (SECRET_WORD, "quarterly", "vault", "standup", "pwned"):
        assert text.encode() not in raw, text
