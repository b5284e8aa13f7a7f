"""The SOCKS5 handshake of XEP-0065 (RFC 1928, only what XEP-0065 uses), sans-IO.

    client -> VER=5 NMETHODS METHODS...           must offer 0x00 (no authentication)
    proxy  -> VER=5 METHOD=0x00                   (0xFF and close when it is not offered)
    client -> VER=5 CMD=1 (CONNECT) RSV=0 ATYP=3 (DOMAINNAME) LEN ADDR PORT=0
              ADDR = hex SHA1(SID + requester JID + target JID): 40 hexadecimal characters
    proxy  -> VER=5 REP=0 RSV=0 ATYP=3 LEN ADDR PORT=0    (XEP-0065: BND = the requested address)

`Socks5Handshake.feed(bytes)` returns what to send back and, once the request is complete, the
outcome: `Connect(address, rest)` (rest: bytes the client sent after its request) or
`Refused(reason)` (the connection is closed after the reply, if any, is written). Anything else
a SOCKS5 client may ask (other methods, BIND, UDP ASSOCIATE, IP addresses, a port) is refused:
the proxy never opens a connection anywhere, it only pairs connections made to it.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION = 5
NO_AUTH = 0x00
NO_ACCEPTABLE_METHOD = 0xFF
CONNECT = 0x01
DOMAINNAME = 0x03
# RFC 1928 section 6 reply codes
SUCCEEDED = 0x00
NOT_ALLOWED = 0x02
COMMAND_NOT_SUPPORTED = 0x07
ADDRESS_TYPE_NOT_SUPPORTED = 0x08

_HEX = frozenset("0123456789abcdef")
MAX_GREETING = 2 + 255
MAX_REQUEST = 5 + 255 + 2


@dataclass(frozen=True, slots=True)
class Connect:
    """A valid XEP-0065 CONNECT: `address` is the lower-case hex hash the pair is found by."""
    address: str
    rest: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


Outcome = Connect | Refused


def reply(code: int, address: bytes = b"") -> bytes:
    """A reply to the CONNECT request: success names the requested address (XEP-0065 5.3.2)."""
    if code == SUCCEEDED:
        return bytes((VERSION, code, 0, DOMAINNAME, len(address))) + address + b"\x00\x00"
    return bytes((VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0))          # BND 0.0.0.0:0


def is_stream_address(text: str) -> bool:
    """Is `text` a hex SHA-1 (what XEP-0065 requires as DST.ADDR)?"""
    return len(text) == 40 and set(text) <= _HEX


class Socks5Handshake:
    """The server side of one connection's handshake."""

    def __init__(self) -> None:
        self._buf = b""
        self._greeted = False
        self.outcome: Outcome | None = None

    def feed(self, data: bytes) -> tuple[bytes, Outcome | None]:
        if self.outcome is not None:
            raise RuntimeError("the handshake is over")
        self._buf += data
        out = b""
        if not self._greeted:
            answer, done = self._greeting()
            out += answer
            if not done:
                return out, self.outcome
        if self.outcome is None:
            answer = self._request()
            out += answer
        return out, self.outcome

    def _refuse(self, reason: str) -> None:
        self.outcome = Refused(reason)

    def _greeting(self) -> tuple[bytes, bool]:
        buf = self._buf
        if not buf:
            return b"", False
        if buf[0] != VERSION:
            self._refuse(f"not SOCKS version 5 (first byte {buf[0]})")
            return b"", False
        if len(buf) < 2 or len(buf) < 2 + buf[1]:
            return b"", False
        methods = buf[2:2 + buf[1]]
        self._buf = buf[2 + buf[1]:]
        if NO_AUTH not in methods:
            self._refuse("the client does not offer SOCKS5 without authentication")
            return bytes((VERSION, NO_ACCEPTABLE_METHOD)), False
        self._greeted = True
        return bytes((VERSION, NO_AUTH)), True

    def _request(self) -> bytes:
        buf = self._buf
        if len(buf) < 5:
            return b""
        if buf[0] != VERSION:
            self._refuse(f"not SOCKS version 5 (request byte {buf[0]})")
            return b""
        if buf[1] != CONNECT:
            self._refuse(f"only CONNECT is supported, not command {buf[1]}")
            return reply(COMMAND_NOT_SUPPORTED)
        if buf[3] != DOMAINNAME:
            self._refuse(f"XEP-0065 addresses are DOMAINNAME (3), not address type {buf[3]}")
            return reply(ADDRESS_TYPE_NOT_SUPPORTED)
        length = buf[4]
        end = 5 + length + 2
        if len(buf) < end:
            return b""
        raw = buf[5:5 + length]
        port = int.from_bytes(buf[5 + length:end], "big")
        address = raw.decode("ascii", "replace").lower()
        if not is_stream_address(address):
            self._refuse("the address is not a hex SHA-1 of (SID + requester JID + target JID)")
            return reply(NOT_ALLOWED)
        if port != 0:
            self._refuse(f"XEP-0065 requires port 0, not {port}")
            return reply(NOT_ALLOWED)
        self.outcome = Connect(address, buf[end:])
        self._buf = b""
        return b""          # the success reply is sent once the connection is paired

    @property
    def buffered(self) -> int:
        """Bytes received and not yet understood (bounded by the caller)."""
        return len(self._buf)
