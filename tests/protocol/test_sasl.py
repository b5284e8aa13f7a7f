"""SCRAM (RFC 5802/7677) and PLAIN, server side."""

import base64
import hashlib
import hmac

import pytest

from stockade.protocol.sasl import Challenge, Failure, NeedCredential, Success
from stockade.protocol.sasl.plain import PlainServer
from stockade.protocol.sasl.scram import ScramServer, check_password, derive


def test_rfc7677_test_vector():
    cred = derive("pencil", "sha256", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
    s = ScramServer("SCRAM-SHA-256", b"k", nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    assert s.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == NeedCredential("user", None)
    challenge = s.provide(cred)
    assert challenge == Challenge(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                                  b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    result = s.step(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert result == Success("user", b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_rfc5802_sha1_test_vector():
    cred = derive("pencil", "sha1", base64.b64decode("QSXCR+Q6sek8bf92"), 4096)
    s = ScramServer("SCRAM-SHA-1", b"k", nonce="3rfcNHYJY1ZVvWVs7j")
    s.step(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
    s.provide(cred)
    result = s.step(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    assert result == Success("user", b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")


def _client_final(password: str, challenge: bytes, first_bare: str, hash_name: str = "sha256",
                  binding: str = "biws") -> bytes:
    attrs = dict(p.split("=", 1) for p in challenge.decode().split(","))
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    ck = hmac.digest(salted, b"Client Key", hash_name)
    wo = f"c={binding},r={attrs['r']}"
    sig = hmac.digest(hashlib.new(hash_name, ck).digest(), f"{first_bare},{challenge.decode()},{wo}".encode(), hash_name)
    return f"{wo},p={base64.b64encode(bytes(a ^ b for a, b in zip(ck, sig))).decode()}".encode()


def test_wrong_password_fails():
    s = ScramServer("SCRAM-SHA-256", b"k")
    s.step(b"n,,n=alice,r=abc")
    ch = s.provide(derive("right-password", "sha256"))
    result = s.step(_client_final("wrong-password", ch.data, "n=alice,r=abc"))
    assert isinstance(result, Failure) and result.condition == "not-authorized"


def test_unknown_user_runs_to_the_end_and_fails_like_a_wrong_password():
    s = ScramServer("SCRAM-SHA-256", b"secret")
    s.step(b"n,,n=nobody,r=abc")
    ch = s.provide(None)
    assert isinstance(ch, Challenge) and b",s=" in ch.data          # looks like a real account
    again = ScramServer("SCRAM-SHA-256", b"secret")
    again.step(b"n,,n=nobody,r=abc")
    salt = lambda c: c.data.split(b",")[1]
    assert salt(again.provide(None)) == salt(ch)                       # stable across probes
    result = s.step(_client_final("anything", ch.data, "n=nobody,r=abc"))
    assert isinstance(result, Failure) and result.condition == "not-authorized"


def test_tampered_channel_binding_and_nonce_fail():
    cred = derive("pw", "sha256")
    s = ScramServer("SCRAM-SHA-256", b"k")
    s.step(b"n,,n=alice,r=abc")
    ch = s.provide(cred)
    assert isinstance(s.step(_client_final("pw", ch.data, "n=alice,r=abc", binding="eSws")), Failure)


@pytest.mark.parametrize("first", [b"", b"n,,", b"p=tls-unique,,n=a,r=b", b"x,,n=a,r=b", b"n,,n=a",
                                   b"n,,r=b", b"n,,n=a=zz,r=b", b"n,,m=ext,n=a,r=b", b"\xff\xfe"])
def test_malformed_client_first_messages_fail_cleanly(first):
    result = ScramServer("SCRAM-SHA-256", b"k").step(first)
    assert isinstance(result, Failure)


def test_plain_and_check_password():
    p = PlainServer()
    assert p.step(b"\0alice\0s3cret") == NeedCredential("alice", None)
    cred = derive("s3cret", "sha256")
    assert check_password("s3cret", cred) and not check_password("other", cred)
    assert isinstance(PlainServer().step(b"no-separators"), Failure)


def test_stored_credentials_never_contain_the_password():
    cred = derive("correct horse battery staple", "sha256")
    blob = cred.salt + cred.stored_key + cred.server_key
    assert b"correct horse" not in blob
