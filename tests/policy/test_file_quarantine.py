"""Review of quarantined uploads through the admin API, with a real clamd.

    alice -> PUT the EICAR test file            <- 403 held for review (rule "malware")
    comp  -> GET /hosts/example.com/quarantine/files       the file, its uploader and signature
    comp  -> POST .../files/{id}/release        <- 409: a malware finding is never released
    comp  -> POST .../files/{id}/delete         <- 200: the stored bytes are gone, the URL never serves it

A hold that is not a malware finding (a type rule, here put in front of the chain by the test the
way a type hold would be) can be released: the file is scanned first (the hold came before the
scan) and then downloads intact; an infected file held that way is refused on release. Only a
compliance officer of the file's own host may do any of this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from stockade.core.hooks import UploadReceived
from stockade.core.verdict import Quarantine
from stockade.testing.clamav import EICAR, SIGNATURE
from stockade.testing.server import RunningServer

from ..admin.conftest import ADMIN_PASSWORD, AdminApi, make_admins, token_for
from ..integration.test_upload import fetch, put, request_slot, stored_files
from ..net.test_metrics import scrape, value
from .conftest import DOMAIN, OTHER, USERS, jid, login

TYPE_RULE = "files.allowed_types"
HELD_PREFIX = "typeheld-"          # files named so are held by the stand-in type rule
FILES = f"/hosts/{DOMAIN}/quarantine/files"


def hold_by_type(event: UploadReceived) -> Quarantine | None:
    """A type hold, first in the UploadReceived chain (before the size/type checks and the scan)."""
    if event.filename.startswith(HELD_PREFIX):
        return Quarantine("text/plain is not an accepted type here; held for review", rule=TYPE_RULE)
    return None


@pytest.fixture(scope="module")
def server(clamd) -> Iterator[RunningServer]:
    config = {"hosts": [{"domain": DOMAIN}, {"domain": OTHER}],
              "malware": {"enabled": True, "clamd": clamd.socket_path, "timeout": 30.0}}
    with RunningServer(config=config) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        make_admins(srv)
        srv.call(srv.server.admin.directory.create("comp_other", "compliance", [OTHER], ADMIN_PASSWORD))
        srv.run(lambda: srv.server.bus.on(UploadReceived, hold_by_type, 1020))
        yield srv


@pytest.fixture(scope="module")
def apis(server) -> dict[str, AdminApi]:
    return {name: AdminApi(server, token_for(server, name))
            for name in ("ops", "tadmin", "desk", "comp", "aud", "comp_other")}


async def call(api: AdminApi, method: str, path: str) -> Any:
    return await asyncio.to_thread(api, method, path)


async def held_upload(server: RunningServer, name: str, data: bytes) -> str:
    """alice uploads `data`; it is held. Returns the download URL."""
    async with login(server, "alice") as alice:
        put_url, get_url = await request_slot(alice, name, len(data), "text/plain")
    reply = await put(server, put_url, data, "text/plain")
    assert reply.status == 403 and b"held for review" in reply.body, reply
    return get_url


async def listed(api: AdminApi, name: str) -> dict[str, Any] | None:
    reply = await call(api, "GET", FILES)
    assert reply.status == 200, reply
    found = [f for f in reply.body["files"] if f["filename"] == name]
    assert len(found) <= 1
    return found[0] if found else None


async def last_audit(server: RunningServer, action: str) -> dict[str, Any]:
    await server.acall(server.server.audit.flush())
    entries = await server.acall(server.server.audit.entries(DOMAIN, action=action))
    assert entries, f"no {action} entry in the audit log"
    return entries[0]


async def test_eicar_is_listed_never_released_and_deleted_for_good(server, apis):
    comp = apis["comp"]
    before = await scrape(server)
    get_url = await held_upload(server, "eicar-report.txt", EICAR)
    item = await listed(comp, "eicar-report.txt")
    assert item is not None, "the quarantined file is not listed"
    assert item["uploader"] == jid("alice") and item["size"] == len(EICAR)
    assert item["content_type"] == "text/plain" and item["rule"] == "malware" and item["signature"] == SIGNATURE
    assert item["id"] in stored_files(server)

    after = await scrape(server)             # the scan is counted
    assert value(after, "stockade_files_scanned_total") == value(before, "stockade_files_scanned_total") + 1
    assert value(after, "stockade_files_infected_total") == value(before, "stockade_files_infected_total") + 1
    assert value(after, "stockade_scanner_unavailable_total") == 0
    assert value(after, "stockade_policy_verdicts_total", kind="quarantine") >= 1
    assert value(after, "stockade_admin_alerts_total", kind="malware") >= 1

    refused = await call(comp, "POST", f"{FILES}/{item['id']}/release")
    assert refused.status == 409, refused
    assert "malware" in refused.error and SIGNATURE in refused.error and "never" in refused.error
    download = await fetch(server, "GET", get_url)
    assert download.status == 403 and EICAR not in download.body
    assert await listed(comp, "eicar-report.txt") is not None

    deleted = await call(comp, "POST", f"{FILES}/{item['id']}/delete")
    assert deleted.status == 200, deleted
    assert item["id"] not in stored_files(server), "the stored bytes were not deleted"
    assert await listed(comp, "eicar-report.txt") is None
    download = await fetch(server, "GET", get_url)
    assert download.status == 404 and EICAR not in download.body
    again = await call(comp, "POST", f"{FILES}/{item['id']}/delete")
    assert again.status == 404, again
    entry = await last_audit(server, "quarantine.file.delete")
    assert entry["actor"] == "admin:comp" and entry["target"] == jid("alice")
    assert entry["detail"]["id"] == item["id"] and entry["detail"]["signature"] == SIGNATURE


async def test_a_type_hold_is_scanned_then_released_and_downloads_intact(server, apis):
    comp = apis["comp"]
    data = "Minutes of the board meeting\n".encode() * 50
    name = HELD_PREFIX + "minutes.txt"
    get_url = await held_upload(server, name, data)
    assert (await fetch(server, "GET", get_url)).status == 403
    item = await listed(comp, name)
    assert item is not None and item["rule"] == TYPE_RULE and item["signature"] == ""
    scanned = value(await scrape(server), "stockade_files_scanned_total")

    released = await call(comp, "POST", f"{FILES}/{item['id']}/release")
    assert released.status == 200, released
    assert value(await scrape(server), "stockade_files_scanned_total") == scanned + 1    # scanned on release
    download = await fetch(server, "GET", get_url)
    assert download.status == 200 and download.body == data
    assert await listed(comp, name) is None
    assert (await call(comp, "POST", f"{FILES}/{item['id']}/release")).status == 404
    entry = await last_audit(server, "quarantine.file.release")
    assert entry["actor"] == "admin:comp" and entry["detail"]["id"] == item["id"]
    assert entry["detail"]["rule"] == TYPE_RULE


async def test_an_infected_file_held_before_the_scan_is_refused_on_release(server, apis):
    comp = apis["comp"]
    name = HELD_PREFIX + "eicar.txt"
    get_url = await held_upload(server, name, EICAR)
    item = await listed(comp, name)
    assert item is not None and item["rule"] == TYPE_RULE      # never scanned: the hold came first

    refused = await call(comp, "POST", f"{FILES}/{item['id']}/release")
    assert refused.status == 409 and SIGNATURE in refused.error, refused
    download = await fetch(server, "GET", get_url)
    assert download.status == 403 and EICAR not in download.body
    now = await listed(comp, name)
    assert now is not None and now["rule"] == "malware" and now["signature"] == SIGNATURE
    assert (await call(comp, "POST", f"{FILES}/{item['id']}/release")).status == 409
    assert (await call(comp, "POST", f"{FILES}/{item['id']}/delete")).status == 200


async def test_only_the_compliance_officer_of_the_host_may_review(server, apis):
    data = b"Quarterly figures, draft\n" * 20
    name = HELD_PREFIX + "figures.txt"
    get_url = await held_upload(server, name, data)
    item = await listed(apis["comp"], name)
    assert item is not None
    for who in ("ops", "tadmin", "desk", "aud", "comp_other"):
        for method, path in (("GET", FILES), ("POST", f"{FILES}/{item['id']}/release"),
                             ("POST", f"{FILES}/{item['id']}/delete")):
            reply = await call(apis[who], method, path)
            assert reply.status == 403 and reply.error.startswith("forbidden"), (who, method, path, reply)
    # The other host's officer, on its own host, neither sees nor reaches example.com's file.
    other = f"/hosts/{OTHER}/quarantine/files"
    mine = await call(apis["comp_other"], "GET", other)
    assert mine.status == 200 and mine.body == {"files": []}, mine
    for action in ("release", "delete"):
        reply = await call(apis["comp_other"], "POST", f"{other}/{item['id']}/{action}")
        assert reply.status == 404, reply
    # example.com's officer cannot act on other.org.
    assert (await call(apis["comp"], "GET", other)).status == 403
    # Nothing changed: still held, still stored, never served.
    assert await listed(apis["comp"], name) is not None and item["id"] in stored_files(server)
    assert (await fetch(server, "GET", get_url)).status == 403


async def test_a_held_uploaders_quarantined_file_is_kept_until_the_hold_is_released(server, apis):
    comp = apis["comp"]
    holds = server.server.holds
    await held_upload(server, "eicar-evidence.txt", EICAR)
    item = await listed(comp, "eicar-evidence.txt")
    hold = await server.acall(holds.create(DOMAIN, "user", "alice", reason="matter 2026-09", actor="admin:comp"))
    try:
        refused = await call(comp, "POST", f"{FILES}/{item['id']}/delete")
        assert refused.status == 409 and "legal hold" in refused.error, refused
        assert item["id"] in stored_files(server)
    finally:
        await server.acall(holds.release(DOMAIN, hold.id, actor="admin:comp"))
    deleted = await call(comp, "POST", f"{FILES}/{item['id']}/delete")
    assert deleted.status == 200, deleted
