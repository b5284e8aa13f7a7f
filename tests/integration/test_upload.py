"""XEP-0363 HTTP File Upload: slixmpp clients ask upload.example.com for slots; the file goes up
and comes down over HTTPS (http.client in a worker thread, trusting the server's certificate).

    alice -> <iq type='get' to='upload.example.com'><request filename='notes.txt' size='11' .../></iq>
    upload.example.com -> <slot><put url='https://127.0.0.1:PORT/upload/SECRET/notes.txt'/><get .../></slot>
    alice -> PUT the bytes            <- 201
    bob   -> GET the URL alice sent   <- the same bytes

slixmpp's own xep_0363 plugin needs aiohttp, which the test environment does not have, so the
slot request is built as a raw IQ (exactly what the plugin sends). The last tests use a real
browser: a page of another origin goes through CORS, and Converse.js uploads a file itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import pytest
import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from stockade.core.hooks import UploadReceived
from stockade.core.verdict import Deny, Quarantine
from stockade.modules.upload.catalog import Catalog
from stockade.testing.browser import browser_page
from stockade.testing.clock import FakeClock
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import TIMEOUT, client

from .conftest import DOMAIN, USERS, jid

NS = "urn:xmpp:http:upload:0"
SERVICE = f"upload.{DOMAIN}"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


# -- helpers ------------------------------------------------------------------------------------
@contextlib.contextmanager
def upload_server(clock: FakeClock | None = None, data_dir: Any = None, config: dict | None = None,
                  is_new: bool = True, **options: Any) -> Iterator[RunningServer]:
    """A server like the `server` fixture, with these [modules.upload] options (is_new=False: the
    data folder is that of an earlier run, its accounts exist already)."""
    with RunningServer(domains=[DOMAIN, "other.org"], config={"modules": {"upload": options}, **(config or {})},
                       clock=clock, data_dir=data_dir) as srv:
        if is_new:
            for user, password in USERS.items():
                srv.add_user(jid(user), password)
        yield srv


def slot_iq(c: Any, filename: str | None, size: Any, content_type: str | None = None, to: str = SERVICE,
            sender: str | None = None) -> Any:
    iq = c.make_iq_get(ito=to, ifrom=sender)
    attrs = {"size": str(size)}
    if filename is not None:
        attrs["filename"] = filename
    if content_type is not None:
        attrs["content-type"] = content_type
    ET.SubElement(iq.xml, f"{{{NS}}}request", attrs)
    return iq


async def request_slot(c: Any, filename: str, size: int, content_type: str | None = "text/plain",
                       to: str = SERVICE) -> tuple[str, str]:
    reply = await c.query(slot_iq(c, filename, size, content_type, to))
    assert reply["type"] == "result", reply
    slot = reply.xml.find(f"{{{NS}}}slot")
    return slot.find(f"{{{NS}}}put").get("url"), slot.find(f"{{{NS}}}get").get("url")


async def slot_refused(c: Any, filename: str | None, size: Any, content_type: str | None = None,
                       to: str = SERVICE) -> tuple[str, str, Any]:
    """The condition, text and <error/> element of a refused slot request."""
    reply = await c.query(slot_iq(c, filename, size, content_type, to))
    assert reply["type"] == "error", reply
    return reply["error"]["condition"], reply["error"]["text"], reply.xml.find("{jabber:client}error")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def _tls(server: RunningServer) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.cert_path))
    ctx.check_hostname = False          # the URL names 127.0.0.1, the certificate the domains
    return ctx


def _request(server: RunningServer, method: str, url: str, body: Any, headers: dict[str, str]) -> Reply:
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=_tls(server), timeout=TIMEOUT)
    try:
        conn.request(method, parts.path, body=body, headers=headers)
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


async def fetch(server: RunningServer, method: str, url: str, body: Any = None, **headers: str) -> Reply:
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    return await asyncio.to_thread(_request, server, method, url, body, headers)


async def put(server: RunningServer, url: str, data: bytes, content_type: str = "text/plain") -> Reply:
    return await fetch(server, "PUT", url, data, Content_Type=content_type)


async def upload(server: RunningServer, c: Any, filename: str, data: bytes, content_type: str = "text/plain") -> str:
    put_url, get_url = await request_slot(c, filename, len(data), content_type)
    reply = await put(server, put_url, data, content_type)
    assert reply.status == 201, reply
    return get_url


def on_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


def stored_files(server: RunningServer) -> list[str]:
    folder = server.data_dir / "uploads"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


async def eventually(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.05)


# -- discovery and the service itself -----------------------------------------------------------
async def test_the_service_is_listed_on_each_domain_and_announces_its_limit(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        disco = alice.plugin["xep_0030"]
        assert (SERVICE, None, "HTTP File Upload") in (await disco.get_items(jid=DOMAIN))["disco_items"]["items"]
        other = (await disco.get_items(jid="other.org"))["disco_items"]["items"]
        assert ("upload.other.org", None, "HTTP File Upload") in other
        info = await disco.get_info(jid=SERVICE)
        assert ("store", "file", None, "HTTP File Upload") in info["disco_info"]["identities"]
        assert NS in info["disco_info"]["features"]
        form = info.xml.find("{http://jabber.org/protocol/disco#info}query/{jabber:x:data}x")
        assert form.get("type") == "result"
        fields = {f.get("var"): f for f in form.findall("{jabber:x:data}field")}
        assert fields["FORM_TYPE"].get("type") == "hidden"
        assert fields["FORM_TYPE"].find("{jabber:x:data}value").text == NS
        assert fields["max-file-size"].find("{jabber:x:data}value").text == str(100 * 1024 * 1024)
        assert not (await disco.get_items(jid=SERVICE))["disco_items"]["items"]


async def test_the_service_refuses_other_requests_bounces_messages_and_ignores_presence(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        version = alice.make_iq_get(ito=SERVICE)
        ET.SubElement(version.xml, "{jabber:iq:version}query")
        assert (await alice.query(version))["error"]["condition"] == "service-unavailable"
        alice.send_presence(pto=SERVICE)                       # ignored: no error comes back
        alice.send_message(mto=SERVICE, mbody="hello?", mtype="chat")
        bounced = await alice.next_message()
        assert bounced["type"] == "error" and bounced["from"] == SERVICE
        assert bounced["error"]["condition"] == "service-unavailable"
        await alice.plugin["xep_0030"].get_info(jid=SERVICE)   # the service still answers
        errors = [p for p in alice.pending(alice.all_presence) if p["type"] == "error"]
        assert errors == []


# -- the whole journey ----------------------------------------------------------------------------
async def test_alice_uploads_a_file_and_bob_downloads_the_same_bytes(server):
    data = os.urandom(3 * 1024 * 1024 + 17)                    # several chunks on the way
    async with client(server, jid("alice"), USERS["alice"]) as alice, \
               client(server, jid("bob"), USERS["bob"]) as bob:
        put_url, get_url = await request_slot(alice, "holiday photos.tar", len(data), "application/x-tar")
        assert put_url.startswith(f"https://127.0.0.1:{server.https_port}/upload/")
        assert put_url.endswith("/holiday%20photos.tar")
        secret = urlsplit(put_url).path.split("/")[2]
        assert len(secret) >= 43                               # 32 random bytes, URL-safe
        assert (await put(server, put_url, data, "application/x-tar")).status == 201
        alice.send_message(mto=jid("bob"), mbody=get_url, mtype="chat")
        url = (await bob.next_message())["body"]
        download = await fetch(server, "GET", url)
        assert download.status == 200 and download.body == data
        assert download.headers["content-type"] == "application/x-tar"
        assert download.headers["content-length"] == str(len(data))
        head = await fetch(server, "HEAD", url)
        assert head.status == 200 and head.body == b"" and head.headers["content-length"] == str(len(data))


# -- slot requests that are refused ---------------------------------------------------------------
async def test_a_file_over_the_size_limit_is_refused_at_the_slot_request():
    with upload_server(max_file_size=1000) as srv:
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            condition, text, error = await slot_refused(alice, "big.bin", 1001, "application/octet-stream")
            assert condition == "not-acceptable" and "1000 bytes" in text
            too_large = error.find(f"{{{NS}}}file-too-large")
            assert too_large.find(f"{{{NS}}}max-file-size").text == "1000"
            await request_slot(alice, "fits.bin", 1000, "application/octet-stream")


@pytest.mark.parametrize("filename, size, content_type, condition, says", [
    ("../../etc/passwd", 10, None, "not-acceptable", "may not contain /"),
    ("dir\\file.txt", 10, None, "not-acceptable", "may not contain /"),
    ("invoice\u202efdp.exe", 10, None, "not-acceptable", "U+202E"),        # hides the real extension
    ("x" * 256, 10, None, "not-acceptable", "longer than 255 bytes"),
    ("..", 10, None, "not-acceptable", "not a file name"),
    (None, 10, None, "bad-request", "filename and size"),
    ("a.txt", 0, None, "bad-request", "empty"),
    ("a.txt", -5, None, "bad-request", "whole number"),
    ("a.txt", "12kB", None, "bad-request", "whole number"),
    ("a.txt", 10, "text/plain\r\nSet-Cookie: x=1", "bad-request", "not a media type"),
])
async def test_bad_slot_requests_are_refused_with_a_reason(server, filename, size, content_type, condition, says):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        got, text, _ = await slot_refused(alice, filename, size, content_type)
        assert got == condition and says in text


async def test_only_the_accepted_content_types_get_a_slot():
    with upload_server(allowed_content_types=["image/*", "application/pdf"]) as srv:
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            await request_slot(alice, "cat.png", 10, "image/png")
            await request_slot(alice, "report.pdf", 10, "application/pdf")
            condition, text, _ = await slot_refused(alice, "page.html", 10, "text/html")
            assert condition == "not-acceptable" and "text/html" in text and "image/*" in text
            condition, _, _ = await slot_refused(alice, "blob", 10)        # no type: octet-stream
            assert condition == "not-acceptable"


async def test_users_of_another_domain_and_components_get_forbidden():
    bot = "bot.example.com"
    config = {"components": [{"domain": bot, "secret": "bot-secret-1"}],
              "component_listener": {"enabled": True, "port": 0}}
    with upload_server(config=config) as srv:
        srv.add_user("erin@other.org", "erin-pw-55")
        async with client(srv, "erin@other.org", "erin-pw-55") as erin:
            condition, text, _ = await slot_refused(erin, "a.txt", 5, "text/plain")
            assert condition == "forbidden" and "upload.other.org" in text
            await request_slot(erin, "a.txt", 5, "text/plain", to="upload.other.org")
        component = slixmpp.ComponentXMPP(bot, "bot-secret-1", host="127.0.0.1", port=srv.server.ports["component"])
        started = asyncio.get_running_loop().create_future()
        component.add_event_handler("session_start", lambda _: started.set_result(True))
        component.connect()
        try:
            await asyncio.wait_for(started, TIMEOUT)
            with pytest.raises(IqError) as refused:
                await slot_iq(component, "a.txt", 5, "text/plain", sender=bot).send(timeout=TIMEOUT)
            # slixmpp's component stream does not map <error/> into its stanza interface: read the XML.
            errors = [e for e in refused.value.iq.xml if e.tag.endswith("}error")]
            assert errors and errors[0].find(f"{{{STANZAS}}}forbidden") is not None
        finally:
            component.disconnect()


async def test_the_quota_counts_stored_files_and_open_slots():
    with upload_server(quota=1000) as srv:
        async with client(srv, jid("alice"), USERS["alice"]) as alice, \
                   client(srv, jid("bob"), USERS["bob"]) as bob:
            await upload(srv, alice, "one.txt", b"1" * 400)
            await request_slot(alice, "two.txt", 400)               # reserved, not yet sent
            condition, text, _ = await slot_refused(alice, "three.txt", 400, "text/plain")
            assert condition == "resource-constraint" and "800 of 1000 bytes" in text
            await request_slot(bob, "three.txt", 400)               # bob has his own quota


# -- PUTs that are refused ------------------------------------------------------------------------
async def test_a_put_that_differs_from_the_slot_is_refused_and_the_slot_stays_usable(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        put_url, get_url = await request_slot(alice, "notes.txt", 11, "text/plain")
        longer = await put(server, put_url, b"hello world, and more")
        assert longer.status == 413 and b"11 bytes" in longer.body
        shorter = await put(server, put_url, b"hello")
        assert shorter.status == 400 and b"11 bytes" in shorter.body
        html = await put(server, put_url, b"hello world", "text/html")
        assert html.status == 415 and b"text/plain" in html.body
        chunked = await fetch(server, "PUT", put_url, iter([b"hello world"]), Content_Type="text/plain")
        assert chunked.status == 411
        assert (await fetch(server, "GET", get_url)).status == 404
        assert (await put(server, put_url, b"hello world")).status == 201
        assert (await fetch(server, "GET", get_url)).body == b"hello world"


async def test_a_put_to_an_unknown_slot_or_another_name_is_refused(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        put_url, _ = await request_slot(alice, "notes.txt", 5)
        base = put_url.rsplit("/", 2)[0]
        unknown = await put(server, f"{base}/{'A' * 43}/notes.txt", b"hello")
        assert unknown.status == 404 and b"Request a slot" in unknown.body
        renamed = await put(server, put_url.replace("notes.txt", "evil.html"), b"hello")
        assert renamed.status == 404
        assert stored_files(server) == []


async def test_an_expired_slot_is_refused():
    clock = FakeClock()
    with upload_server(clock=clock, slot_lifetime=300) as srv:
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            put_url, _ = await request_slot(alice, "late.txt", 5)
            clock.advance(301)
            late = await put(srv, put_url, b"hello")
            assert late.status == 403 and b"expired" in late.body
            assert stored_files(srv) == []


async def test_a_slot_takes_one_file_only(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        put_url, get_url = await request_slot(alice, "notes.txt", 5)
        assert (await put(server, put_url, b"first")).status == 201
        again = await put(server, put_url, b"other")
        assert again.status == 409 and b"already been used" in again.body
        assert (await fetch(server, "GET", get_url)).body == b"first"


async def test_an_upload_broken_off_midway_is_not_stored(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        put_url, get_url = await request_slot(alice, "notes.txt", 1000)
        parts = urlsplit(put_url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port, ssl=_tls(server))
        writer.write(f"PUT {parts.path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                     f"Content-Length: 1000\r\n\r\n".encode() + b"x" * 400)
        await writer.drain()
        writer.close()                                         # gone after 400 of 1000 bytes
        catalog = server.run(lambda: server.server.ctx.services[Catalog])
        slot_id = parts.path.split("/")[2]
        await eventually(lambda: server.run(lambda: not catalog.slots[slot_id].is_uploading))
        assert (await fetch(server, "GET", get_url)).status == 404
        assert stored_files(server) == []
        assert (await put(server, put_url, b"y" * 1000)).status == 201    # the slot is still good


# -- what a browser gets --------------------------------------------------------------------------
async def test_cors_lets_web_clients_upload_and_download(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        put_url, get_url = await request_slot(alice, "notes.txt", 5)
        preflight = await fetch(server, "OPTIONS", put_url, Origin="https://chat.example.net",
                                Access_Control_Request_Method="PUT", Access_Control_Request_Headers="content-type")
        assert preflight.status in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "PUT" in preflight.headers["access-control-allow-methods"]
        assert "Content-Type" in preflight.headers["access-control-allow-headers"]
        uploaded = await put(server, put_url, b"hello")
        assert uploaded.status == 201 and uploaded.headers["access-control-allow-origin"] == "*"
        downloaded = await fetch(server, "GET", get_url, Origin="https://chat.example.net")
        assert downloaded.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("filename, content_type, is_inline", [
    ("page.html", "text/html", False),
    ("logo.svg", "image/svg+xml", False),                      # an SVG can carry script
    ("report.pdf", "application/pdf", False),
    ("tool.js", "application/javascript", False),
    ("cat.png", "image/png", True),
    ("song.ogg", "audio/ogg", True),
    ("readme.txt", "text/plain; charset=utf-8", True),
])
async def test_downloads_a_browser_could_run_are_attachments_and_all_are_locked_down(
        server, filename, content_type, is_inline):
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        url = await upload(server, alice, filename, b"<script>alert(document.cookie)</script>", content_type)
        got = await fetch(server, "GET", url)
        assert got.status == 200 and got.headers["content-type"] == content_type
        disposition = got.headers["content-disposition"]
        assert disposition.startswith("inline" if is_inline else "attachment")
        assert f'filename="{filename}"' in disposition
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'none'" in got.headers["content-security-policy"]
        assert "sandbox" in got.headers["content-security-policy"]
        assert "max-age=" in got.headers["cache-control"] and "private" in got.headers["cache-control"]
        assert got.headers["etag"]
        again = await fetch(server, "GET", url, If_None_Match=got.headers["etag"])
        assert again.status == 304 and again.body == b""


async def test_an_unknown_download_is_404(server):
    missing = await fetch(server, "GET", f"https://127.0.0.1:{server.https_port}/upload/{'B' * 43}/x.txt")
    assert missing.status == 404 and b"no file" in missing.body


# -- lifetime: restart, expiry, account removal ---------------------------------------------------
async def test_a_file_uploaded_before_a_restart_is_still_there_after_it(tmp_path):
    with upload_server(data_dir=tmp_path, quota=1000) as srv:
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            url = await upload(srv, alice, "keep.txt", b"k" * 600)
    with upload_server(data_dir=tmp_path, is_new=False, quota=1000) as srv:
        got = await fetch(srv, "GET", on_port(url, srv.https_port))
        assert got.status == 200 and got.body == b"k" * 600
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            condition, text, _ = await slot_refused(alice, "more.txt", 600, "text/plain")
            assert condition == "resource-constraint" and "600 of 1000" in text   # the quota remembers


async def test_expired_files_are_purged_and_free_the_quota():
    clock = FakeClock()
    with upload_server(clock=clock, file_expiry_days=1, purge_interval=1, quota=1000) as srv:
        async with client(srv, jid("alice"), USERS["alice"]) as alice:
            old = await upload(srv, alice, "old.txt", b"o" * 600)
            clock.advance(12 * 3600)
            young = await upload(srv, alice, "young.txt", b"y" * 300)
            clock.advance(13 * 3600)                           # old is 25 h old, young 13 h
            assert (await fetch(srv, "GET", old)).status == 404
            await eventually(lambda: len(stored_files(srv)) == 1)
            assert (await fetch(srv, "GET", young)).body == b"y" * 300
            await request_slot(alice, "new.txt", 600)           # 300 + 600 fit in 1000 again


async def test_removing_an_account_deletes_its_files(server):
    async with client(server, jid("bob"), USERS["bob"]) as bob:
        bobs = await upload(server, bob, "bob.txt", b"bob's")
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        alices = await upload(server, alice, "alice.txt", b"alice's")
    server.call(server.server.accounts.remove(DOMAIN, "bob"))
    assert (await fetch(server, "GET", bobs)).status == 404
    assert (await fetch(server, "GET", alices)).body == b"alice's"
    assert len(stored_files(server)) == 1


# -- the UploadReceived hook decides --------------------------------------------------------------
async def test_an_upload_a_policy_denies_is_deleted_and_never_served(server):
    seen: list[UploadReceived] = []

    async def scanner(event: UploadReceived) -> Deny | None:
        seen.append(event)
        # The whole file, before anyone sees it: decrypted by read(); at `path` it is ciphertext.
        assert b"".join([chunk async for chunk in event.read()]) == b"X5O!P%@AP"
        assert b"X5O!P%@AP" not in event.path.read_bytes()
        return Deny("not-acceptable", "the file contains a virus", rule="malware")
    server.run(lambda: server.server.bus.on(UploadReceived, scanner))
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        put_url, get_url = await request_slot(alice, "eicar.com", 9, "application/octet-stream")
        refused = await put(server, put_url, b"X5O!P%@AP", "application/octet-stream")
        assert refused.status == 403 and b"the file contains a virus" in refused.body
        assert [(e.host, e.username, e.filename, e.size) for e in seen] == [(DOMAIN, "alice", "eicar.com", 9)]
        assert (await fetch(server, "GET", get_url)).status == 404
        assert (await put(server, put_url, b"X5O!P%@AP", "application/octet-stream")).status == 409
        assert stored_files(server) == []


async def test_a_quarantined_upload_is_kept_but_never_served(server):
    server.run(lambda: server.server.bus.on(UploadReceived, lambda event: Quarantine("needs review", rule="dlp")))
    async with client(server, jid("alice"), USERS["alice"]) as alice:
        put_url, get_url = await request_slot(alice, "plans.txt", 6)
        held = await put(server, put_url, b"secret")
        assert held.status == 403 and b"held for review" in held.body
        assert (await fetch(server, "GET", get_url)).status == 403
        assert len(stored_files(server)) == 1


# -- real web clients -----------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def another_origin() -> Any:
    """http://127.0.0.1:<another port>/: a bare page on another origin (another scheme and port)
    than the HTTPS listener, with no Content-Security-Policy of its own."""
    page = b"<!doctype html><title>some web client</title>"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(page), page))
        await writer.drain()
        writer.close()
    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/"
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_page_of_another_origin_uploads_and_downloads_through_cors(server):
    async with client(server, jid("alice"), USERS["alice"]) as alice, browser_page() as page, \
               another_origin() as origin:
        put_url, get_url = await request_slot(alice, "from the browser.txt", 5)
        await page.goto(origin)
        # Chromium preflights the PUT (OPTIONS) and reads nothing unless every answer allows the origin.
        result = await page.evaluate("""async ([putUrl, getUrl]) => {
            const put = await fetch(putUrl, {method: 'PUT', body: 'hello', headers: {'Content-Type': 'text/plain'}});
            const got = await fetch(getUrl);
            return [put.status, await put.text(), got.status, await got.text()];
        }""", [put_url, get_url])
        assert result[0] == 201 and result[2:] == [200, "hello"], result


async def test_converse_in_a_browser_uploads_a_file_that_bob_downloads(server):
    data = b"%PDF-1.4 quarterly figures " + os.urandom(2000)
    async with client(server, jid("bob"), USERS["bob"]) as bob, browser_page() as page:
        await page.goto(f"https://127.0.0.1:{server.https_port}/")
        await page.fill("#converse-login-jid", jid("alice"))
        await page.fill("#converse-login-password", USERS["alice"])
        await page.click("#converse-login button[type=submit]")
        await page.wait_for_selector("converse-roster", timeout=30000)
        bob.send_message(mto=jid("alice"), mbody="send me the figures, please", mtype="chat")
        await page.locator("converse-roster").get_by_text(jid("bob")).first.click(timeout=30000)
        chat = page.locator(f'converse-chat[jid="{jid("bob")}"]')
        await chat.locator("converse-chat-message", has_text="send me the figures").wait_for(timeout=30000)
        # the paperclip button is shown once Converse has found upload.example.com by disco
        picker = chat.locator("input.fileupload")
        await picker.wait_for(state="attached", timeout=30000)
        await picker.set_input_files({"name": "figures.pdf", "mimeType": "application/pdf", "buffer": data})
        link = await bob.next_message()
        assert link["body"].startswith(f"https://127.0.0.1:{server.https_port}/upload/")
        assert link["body"].endswith("/figures.pdf")
        download = await fetch(server, "GET", link["body"])
        assert download.status == 200 and download.body == data
        assert download.headers["content-disposition"].startswith("attachment")
