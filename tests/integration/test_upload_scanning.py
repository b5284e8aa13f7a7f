"""Uploaded files are checked before anyone can download them: real type, size, ClamAV.

    alice -> <iq type='get' to='upload.example.com'><request filename='eicar.txt' .../></iq>
    alice -> PUT the EICAR test file     <- 403 "held for review ... Test.EICAR.NDB.UNOFFICIAL"
    bob   -> GET the URL                 <- 403, never the file
    alice -> PUT a small PDF             <- 201; bob GETs the same bytes

A real clamd (Debian's clamav-daemon, started by stockade.testing.clamav with test signatures
only) scans every file over INSTREAM; slixmpp clients ask for the slots, http.client PUTs and GETs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from stockade.core.hooks import VerdictGiven
from stockade.testing.clamav import EICAR, SIGNATURE, ThrowawayClamd
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from .conftest import DOMAIN, USERS, jid
from .test_upload import fetch, put, request_slot, stored_files

PDF_TYPE = "application/pdf"
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 200
MZ = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200


def tiny_pdf(text: str = "Quarterly report") -> bytes:
    """A valid one-page PDF (header, catalogue, page, content stream, cross-reference table)."""
    stream = f"BT /F1 12 Tf 20 50 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 100] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


@contextlib.contextmanager
def scanning_server(daemon: ThrowawayClamd, files: dict[str, Any] | None = None, **malware: Any
                    ) -> Iterator[RunningServer]:
    """example.com with [malware] pointing at the throwaway clamd's unix socket (unless `malware`
    says otherwise) and, if given, [hosts.policy.files]."""
    host: dict[str, Any] = {"domain": DOMAIN}
    if files is not None:
        host["policy"] = {"files": files}
    config = {"hosts": [host], "malware": {"enabled": True, "clamd": daemon.socket_path, "timeout": 30.0, **malware}}
    with RunningServer(config=config) as srv:
        for user, password in USERS.items():
            srv.add_user(jid(user), password)
        yield srv


def record_verdicts(server: RunningServer) -> list[VerdictGiven]:
    seen: list[VerdictGiven] = []
    server.run(lambda: server.server.bus.on(VerdictGiven, seen.append))
    return seen


class RecordedAlerts:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, str, str, dict[str, Any]]] = []

    def alert(self, host: str, kind: str, text: str, **detail: Any) -> None:
        self.alerts.append((host, kind, text, detail))


def record_alerts(server: RunningServer) -> RecordedAlerts:
    """Stand in for the server's AdminAlerts, to see what an administrator would be told."""
    from stockade.policy.alerts import AdminAlerts
    recorded = RecordedAlerts()
    server.run(lambda: server.server.ctx.services.__setitem__(AdminAlerts, recorded))
    return recorded


async def try_upload(server: RunningServer, c: Any, name: str, data: bytes, content_type: str) -> tuple[Any, str]:
    put_url, get_url = await request_slot(c, name, len(data), content_type)
    return await put(server, put_url, data, content_type), get_url


# -- malware ------------------------------------------------------------------------------------
async def test_eicar_is_quarantined_never_downloadable_and_reported(clamd):
    with scanning_server(clamd) as server:
        verdicts, alerts = record_verdicts(server), record_alerts(server)
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            reply, get_url = await try_upload(server, alice, "eicar.txt", EICAR, "text/plain")
            assert reply.status == 403, reply
            assert b"held for review" in reply.body and SIGNATURE.encode() in reply.body
            download = await fetch(server, "GET", get_url)
            assert download.status in (403, 404) and EICAR not in download.body
            assert (await fetch(server, "HEAD", get_url)).status in (403, 404)
        assert len(stored_files(server)) == 1              # kept for review
        [verdict] = verdicts
        assert verdict.actor == jid("alice") and verdict.stanza is None
        assert verdict.verdict.rule == "malware" and verdict.detail["signature"] == SIGNATURE
        assert verdict.detail["file"] == "eicar.txt" and verdict.detail["size"] == len(EICAR)
        [(host, kind, text, detail)] = alerts.alerts
        assert (host, kind) == (DOMAIN, "malware") and SIGNATURE in text and "eicar.txt" in text
        assert detail["user"] == jid("alice")
        await server.acall(server.server.audit.flush())
        [entry] = await server.acall(server.server.audit.entries(DOMAIN, action="policy.quarantine"))
        assert entry["actor"] == jid("alice") and SIGNATURE in str(entry) and "eicar.txt" in str(entry)


async def test_eicar_inside_a_larger_file_is_found(clamd):
    with scanning_server(clamd) as server:
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            data = b"minutes of the meeting\n" * 5000 + EICAR + b"\nend\n"
            reply, get_url = await try_upload(server, alice, "minutes.txt", data, "text/plain")
            assert reply.status == 403 and SIGNATURE.encode() in reply.body
            assert (await fetch(server, "GET", get_url)).status in (403, 404)


async def test_a_clean_pdf_passes_and_downloads_intact(clamd):
    pdf = tiny_pdf()
    with scanning_server(clamd, files={}) as server:
        verdicts = record_verdicts(server)
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            reply, get_url = await try_upload(server, alice, "report.pdf", pdf, PDF_TYPE)
            assert reply.status == 201, reply
            download = await fetch(server, "GET", get_url)
            assert download.status == 200 and download.body == pdf
            assert download.headers["content-type"] == PDF_TYPE
        assert verdicts == []
        assert server.server.malware.scanned == 1


# -- the scanner is down --------------------------------------------------------------------------
async def test_uploads_are_refused_while_clamd_is_down_and_accepted_when_it_is_back(clamd):
    with scanning_server(clamd) as server:
        verdicts = record_verdicts(server)
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            clamd.stop()
            try:
                reply, get_url = await try_upload(server, alice, "notes.txt", b"hello, world\n", "text/plain")
                assert reply.status in (403, 503), reply
                assert b"the malware scanner is unavailable; try again later" in reply.body
                assert (await fetch(server, "GET", get_url)).status == 404
                assert stored_files(server) == []
                assert verdicts[0].verdict.rule == "malware" and "clamd" in verdicts[0].detail["scanner"]
            finally:
                clamd.start()
            reply, get_url = await try_upload(server, alice, "notes.txt", b"hello, world\n", "text/plain")
            assert reply.status == 201, reply
            assert (await fetch(server, "GET", get_url)).body == b"hello, world\n"


async def test_fail_open_accepts_unscanned_files_and_audits_them(clamd, tmp_path):
    with scanning_server(clamd, fail_closed=False, clamd=str(tmp_path / "no-clamd.sock")) as server:
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            reply, get_url = await try_upload(server, alice, "notes.txt", b"hello\n", "text/plain")
            assert reply.status == 201, reply
            assert (await fetch(server, "GET", get_url)).body == b"hello\n"
        await server.acall(server.server.audit.flush())
        entries = await server.acall(server.server.audit.entries(DOMAIN, action="upload.unscanned"))
        assert len(entries) == 1 and "no-clamd.sock" in str(entries[0])


# -- real type and size -----------------------------------------------------------------------------
@pytest.mark.parametrize("program", [ELF, MZ], ids=["elf", "mz"])
async def test_a_program_claiming_to_be_a_pdf_is_refused_on_every_host(clamd, program):
    with scanning_server(clamd) as server:                # no [hosts.policy.files]: still refused
        verdicts = record_verdicts(server)
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            reply, get_url = await try_upload(server, alice, "invoice.pdf", program, PDF_TYPE)
            assert reply.status == 403 and b"program disguised" in reply.body, reply
            assert (await fetch(server, "GET", get_url)).status == 404
        assert verdicts[0].verdict.rule == "files.disguised_program"
        assert verdicts[0].detail["real_type"] == "application/x-executable"


async def test_an_oversized_file_is_refused(clamd):
    with scanning_server(clamd, files={"max_size": 1000}) as server:
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            reply, _ = await try_upload(server, alice, "big.txt", b"x" * 1001, "text/plain")
            assert reply.status == 403 and b"more than the 1000 bytes" in reply.body
            reply, _ = await try_upload(server, alice, "fits.txt", b"x" * 1000, "text/plain")
            assert reply.status == 201


async def test_types_outside_the_allow_list_and_blocked_extensions_are_refused(clamd):
    with scanning_server(clamd, files={}) as server:
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
            assert (await try_upload(server, alice, "chart.png", png, "image/png"))[0].status == 201
            refused, _ = await try_upload(server, alice, "run.js", b"WScript.Echo('hi')", "text/plain")
            assert refused.status == 403 and b".js are not accepted here" in refused.body
            refused, _ = await try_upload(server, alice, "page.html", b"<p>hi</p>", "text/html")
            assert refused.status == 403 and b"sent as text/html" in refused.body
            refused, _ = await try_upload(server, alice, "chart.pdf", png, PDF_TYPE)
            assert refused.status == 403 and b"disagrees with its type" in refused.body


async def test_members_of_an_exempt_group_may_upload_other_types(clamd):
    with scanning_server(clamd, files={"exempt_groups": ["it"]}) as server:
        await server.acall(server.server.groups.create(DOMAIN, "it"))
        await server.acall(server.server.groups.set_members(DOMAIN, "it", add=["bob"]))
        async with client(server, jid("alice"), USERS["alice"]) as alice, \
                client(server, jid("bob"), USERS["bob"]) as bob:
            script = b"#!/bin/sh\necho deploy\n"
            assert (await try_upload(server, alice, "deploy.sh", script, "text/plain"))[0].status == 403
            assert (await try_upload(server, bob, "deploy.sh", script, "text/plain"))[0].status == 201
            # still scanned, and a disguised program is still refused
            assert (await try_upload(server, bob, "e.txt", EICAR, "text/plain"))[0].status == 403
            assert (await try_upload(server, bob, "invoice.pdf", MZ, PDF_TYPE))[0].status == 403


async def test_a_files_policy_set_at_runtime_applies_to_the_next_upload(clamd):
    with scanning_server(clamd) as server:
        async with client(server, jid("alice"), USERS["alice"]) as alice:
            assert (await try_upload(server, alice, "a.txt", b"x" * 20, "text/plain"))[0].status == 201
            await server.acall(server.server.policy_engine.set(DOMAIN, {"files": {"max_size": 10}}, actor="test"))
            refused, _ = await try_upload(server, alice, "b.txt", b"x" * 20, "text/plain")
            assert refused.status == 403 and b"more than the 10 bytes" in refused.body
            await server.acall(server.server.policy_engine.reset(DOMAIN, actor="test"))
            assert (await try_upload(server, alice, "c.txt", b"x" * 20, "text/plain"))[0].status == 201
