"""The XEP-0065 SOCKS5 handshake, fed byte by byte and all at once (sans-IO)."""

from __future__ import annotations

import pytest

from stockade.modules.proxy65.socks5 import Connect, Refused, Socks5Handshake, reply

ADDRESS = "0123456789abcdef0123456789abcdef01234567"
GREETING = b"\x05\x02\x02\x00"                       # offers username/password and no-auth
REQUEST = b"\x05\x01\x00\x03\x28" + ADDRESS.encode() + b"\x00\x00"


def test_a_greeting_and_a_connect_in_one_piece_with_early_data():
    out, outcome = Socks5Handshake().feed(GREETING + REQUEST + b"too early")
    assert out == b"\x05\x00"                         # no-auth chosen; the reply waits for pairing
    assert outcome == Connect(ADDRESS, b"too early")


def test_byte_by_byte():
    hs = Socks5Handshake()
    sent = b""
    for i, byte in enumerate(GREETING + REQUEST):
        out, outcome = hs.feed(bytes([byte]))
        sent += out
        if i < len(GREETING + REQUEST) - 1:
            assert outcome is None
    assert sent == b"\x05\x00" and outcome == Connect(ADDRESS, b"")


def test_an_upper_case_hash_is_the_same_address():
    _, outcome = Socks5Handshake().feed(GREETING + REQUEST.replace(b"abcdef", b"ABCDEF"))
    assert outcome == Connect(ADDRESS, b"")


@pytest.mark.parametrize("data, answer, reason", [
    (b"\x04\x01", b"", "version 5"),
    (b"\x05\x01\x02", b"\x05\xff", "without authentication"),
    (GREETING + b"\x05\x03\x00\x03\x28", reply(0x07), "only CONNECT"),
    (GREETING + b"\x05\x01\x00\x04\x00", reply(0x08), "DOMAINNAME"),
    (GREETING + b"\x05\x01\x00\x03\x05hello\x00\x00", reply(0x02), "hex SHA-1"),
    (GREETING + b"\x05\x01\x00\x03\x28" + b"g" * 40 + b"\x00\x00", reply(0x02), "hex SHA-1"),
    (GREETING + REQUEST[:-2] + b"\x1f\x90", reply(0x02), "port 0"),
])
def test_what_xep_0065_does_not_use_is_refused(data, answer, reason):
    out, outcome = Socks5Handshake().feed(data)
    assert out.endswith(answer) and isinstance(outcome, Refused) and reason in outcome.reason


def test_the_success_reply_names_the_requested_address():
    assert reply(0x00, ADDRESS.encode()) == b"\x05\x00\x00\x03\x28" + ADDRESS.encode() + b"\x00\x00"
