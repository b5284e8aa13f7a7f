"""TLS: 1.2 at least, modern AEAD ciphers, on the STARTTLS and the direct TLS port (XEP-0368)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from stockade.testing.raw import RawStream, header

from .conftest import DOMAIN


def client_context(cert, *, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(cert))
    ctx.check_hostname = False
    if max_version is not None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = max_version
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


async def test_direct_tls_negotiates_tls12_or_newer_with_an_aead_cipher_and_alpn(server):
    ctx = client_context(server.cert_path)
    ctx.set_alpn_protocols(["xmpp-client"])
    reader, writer = await asyncio.open_connection("127.0.0.1", server.direct_tls_port, ssl=ctx,
                                                   server_hostname="localhost")
    sslobj = writer.get_extra_info("ssl_object")
    assert sslobj.version() in ("TLSv1.2", "TLSv1.3")
    assert any(a in sslobj.cipher()[0] for a in ("GCM", "CHACHA20"))
    assert sslobj.selected_alpn_protocol() == "xmpp-client"
    writer.write(header(DOMAIN))
    data = await asyncio.wait_for(reader.readuntil(b"</stream:features>"), 20)
    assert b"<mechanism>PLAIN</mechanism>" in data and b"starttls" not in data
    writer.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
async def test_old_tls_versions_are_refused(server, version):
    ctx = client_context(server.cert_path, max_version=version)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.direct_tls_port, ssl=ctx,
                                                       server_hostname="localhost"), 20)


async def test_starttls_upgrade_refuses_old_versions_too(server):
    raw = await RawStream.open(server)
    await raw.send(header(DOMAIN))
    await raw.read_until(b"</stream:features>")
    await raw.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    await raw.read_until(b"<proceed")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await raw.writer.start_tls(client_context(server.cert_path, max_version=ssl.TLSVersion.TLSv1_1),
                                   server_hostname="localhost")
