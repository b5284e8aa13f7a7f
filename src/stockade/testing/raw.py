"""A raw XMPP connection for adversarial tests: write exact bytes, read what the server answers.

    raw = await RawStream.open(server)
    await raw.send(b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]>")
    text = await raw.read_until(b"</stream:stream>")
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import ssl
from pathlib import Path
from typing import Any

from ..protocol.sasl.scram import normalise_password

TIMEOUT = 20.0


def header(domain: str, ns: str = "jabber:client") -> bytes:
    return (f"<?xml version='1.0'?><stream:stream xmlns='{ns}' xmlns:stream='http://etherx.jabber.org/streams' "
            f"to='{domain}' version='1.0'>").encode()


class RawStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cert: Path, domain: str) -> None:
        self.reader = reader
        self.writer = writer
        self.cert = cert
        self.domain = domain
        self.received = b""

    @classmethod
    async def open(cls, server: Any, domain: str | None = None, port: int | None = None,
                   direct_tls: bool = False) -> RawStream:
        port = port or (server.direct_tls_port if direct_tls else server.c2s_port)
        ctx = cls._tls(server.cert_path) if direct_tls else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None), TIMEOUT)
        return cls(reader, writer, server.cert_path, domain or server.config.domains[0])

    @staticmethod
    def _tls(cert: Path) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        return ctx

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def read_until(self, marker: bytes | str, timeout: float = TIMEOUT) -> bytes:
        """Read until `marker` (bytes or regex source) appears in what was received since the last
        call; returns that part and keeps the rest."""
        pattern = re.compile(re.escape(marker) if isinstance(marker, bytes) else marker.encode(), re.S)

        async def _read() -> bytes:
            while True:
                m = pattern.search(self.received)
                if m:
                    out, self.received = self.received[:m.end()], self.received[m.end():]
                    return out
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise ConnectionError(f"closed before {marker!r}; got {self.received[-500:]!r}")
                self.received += chunk
        return await asyncio.wait_for(_read(), timeout)

    async def read_to_close(self, timeout: float = TIMEOUT) -> bytes:
        """Everything until the server closes the connection."""
        async def _read() -> bytes:
            while True:
                chunk = await self.reader.read(65536)
                if not chunk:
                    out, self.received = self.received, b""
                    return out
                self.received += chunk
        return await asyncio.wait_for(_read(), timeout)

    async def is_closed_by_server(self, timeout: float = TIMEOUT) -> bool:
        try:
            await self.read_to_close(timeout)
            return True
        except (ConnectionError, ssl.SSLError):
            return True

    async def starttls(self) -> None:
        await self.send(header(self.domain))
        await self.read_until(b"</stream:features>")
        await self.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.read_until(b"<proceed")
        await self.writer.start_tls(self._tls(self.cert), server_hostname="localhost")
        self.received = b""

    async def authenticate(self, username: str, password: str, mechanism: str = "SCRAM-SHA-256") -> bytes:
        """Run SASL; returns the server's last answer (<success/> or <failure/>)."""
        await self.send(header(self.domain))
        await self.read_until(b"</stream:features>")
        if mechanism == "PLAIN":
            data = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            await self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{data}</auth>")
            return await self.read_until(r"<success[^>]*/>|</success>|</failure>")
        hash_name = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}[mechanism]
        cnonce = secrets.token_urlsafe(12)
        first_bare = f"n={username},r={cnonce}"
        await self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>"
                        f"{base64.b64encode(('n,,' + first_bare).encode()).decode()}</auth>")
        answer = await self.read_until(r"</challenge>|</failure>")
        if b"</failure>" in answer:
            return answer
        server_first = base64.b64decode(re.search(rb">([^<]+)</challenge>", answer).group(1)).decode()
        attrs = dict(p.split("=", 1) for p in server_first.split(","))
        salted = hashlib.pbkdf2_hmac(hash_name, normalise_password(password), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", hash_name)
        stored = hashlib.new(hash_name, client_key).digest()
        final_wo_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{first_bare},{server_first},{final_wo_proof}".encode()
        sig = hmac.digest(stored, auth_message, hash_name)
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
        final = base64.b64encode(f"{final_wo_proof},p={proof}".encode()).decode()
        await self.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final}</response>")
        return await self.read_until(r"</success>|<success[^>]*/>|</failure>")

    async def bind(self, resource: str | None = None) -> bytes:
        await self.send(header(self.domain))
        await self.read_until(b"</stream:features>")
        res = f"<resource>{resource}</resource>" if resource else ""
        await self.send(f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{res}</bind></iq>")
        return await self.read_until(b"</iq>")

    async def login(self, username: str, password: str, resource: str | None = None) -> bytes:
        """STARTTLS, SCRAM, bind: a ready stream. Returns the bind result."""
        await self.starttls()
        answer = await self.authenticate(username, password)
        assert b"success" in answer, answer
        return await self.bind(resource)

    async def close(self) -> None:
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
            pass
