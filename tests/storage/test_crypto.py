"""Encryption at rest (storage/crypto.py, keyfile.py, datakeys.py): sealed values and files open
only with the right key and associated data; key files are checked; rotation rewraps."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from stockade.config import config_from_dict
from stockade.storage import Storage, StorageError
from stockade.storage.crypto import (FILE_CHUNK, FILE_HEADER_BYTES, MARKER, TAG_BYTES, Cipher, DataKey,
                                     DecryptError, Keyring, KeyFileError, UnknownDataKey, master_key_id,
                                     sealed_file_size)
from stockade.storage.keyfile import key_file_text, load_keyring, read_env, read_key_file, write_key_file

KEY = bytes(range(32))


def cipher_with(*key_ids: int) -> Cipher:
    cipher = Cipher(Keyring([KEY], "a test keyring"))
    for key_id in key_ids:
        cipher.add_data_key(DataKey(key_id, os.urandom(32), master_key_id(KEY), 0.0), is_current=True)
    return cipher


def seal_file(cipher: Cipher, data: bytes, aad: bytes = b"file-1", pieces: int = 7000) -> bytes:
    sealer = cipher.file_sealer(aad)
    out = b"".join(sealer.update(data[i:i + pieces]) for i in range(0, len(data), pieces))
    return out + sealer.finish()


def open_file(cipher: Cipher, sealed: bytes, aad: bytes = b"file-1", pieces: int = 9000) -> bytes:
    opener = cipher.file_opener(aad)
    out = b"".join(opener.update(sealed[i:i + pieces]) for i in range(0, len(sealed), pieces))
    return out + opener.finish()


# -- values ---------------------------------------------------------------------------------------
def test_a_sealed_value_opens_with_its_aad_and_shows_no_plaintext():
    cipher = cipher_with(1)
    sealed = cipher.seal(b"<message><body>launch codes</body></message>", b"owner")
    assert b"launch" not in sealed
    assert sealed[0] == 1 and int.from_bytes(sealed[1:5], "big") == 1      # version, data key id
    assert cipher.open(sealed, b"owner") == b"<message><body>launch codes</body></message>"
    assert cipher.seal(b"same", b"") != cipher.seal(b"same", b"")          # a fresh nonce each time


def test_nonces_never_repeat_and_each_process_draws_its_own_prefix():
    nonces = [cipher_with(1).seal(b"x")[5:17] for _ in range(2)]           # two "processes"
    assert nonces[0][:8] != nonces[1][:8]
    cipher = cipher_with(1)
    seen = [cipher.seal(b"x")[5:17] for _ in range(5000)]
    assert len(set(seen)) == 5000
    assert {n[:8] for n in seen} == {seen[0][:8]}                            # one prefix, counting
    assert [int.from_bytes(n[8:], "big") for n in seen[:3]] == [0, 1, 2]


@pytest.mark.parametrize("position", [0, 3, 6, 20, -1])
def test_a_changed_byte_is_detected(position):
    cipher = cipher_with(1)
    sealed = bytearray(cipher.seal(b"hello there", b"aad"))
    sealed[position] ^= 0x01
    with pytest.raises(DecryptError):
        cipher.open(bytes(sealed), b"aad")


def test_wrong_aad_short_input_and_another_key_are_refused():
    cipher = cipher_with(1)
    sealed = cipher.seal(b"hello", b"alice")
    with pytest.raises(DecryptError, match="associated data"):
        cipher.open(sealed, b"bob")
    with pytest.raises(DecryptError, match="cut short"):
        cipher.open(sealed[:20], b"alice")
    other = cipher_with(1)                       # same id, another key
    with pytest.raises(DecryptError):
        other.open(sealed, b"alice")
    with pytest.raises(UnknownDataKey, match="data key 1"):
        cipher_with(2).open(sealed, b"alice")


def test_sealed_text_has_a_marker_and_plain_text_passes_through():
    cipher = cipher_with(4)
    stored = cipher.seal_text("grüße <b/>", b"x")
    assert stored.startswith(MARKER) and "grüße" not in stored
    assert cipher.open_text(stored, b"x") == "grüße <b/>"
    assert cipher.open_text("<message>old row</message>", b"x") == "<message>old row</message>"
    with pytest.raises(DecryptError, match="base64"):
        cipher.open_text(MARKER + "!!!", b"x")


async def test_unseal_loads_a_data_key_another_process_made(storage_url, tmp_path):
    keyring = Keyring([KEY], "a test keyring")
    first = await Storage.open(storage_url, keyring=keyring)
    second = await Storage.open(storage_url, keyring=keyring)
    try:
        await second.cipher.new_data_key()               # unknown to `first`
        sealed = second.cipher.seal_text("from the other process", b"a")
        with pytest.raises(UnknownDataKey):
            first.cipher.open_text(sealed, b"a")
        assert await first.cipher.unseal_text(sealed, b"a") == "from the other process"
    finally:
        await first.close()
        await second.close()


# -- files ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, FILE_CHUNK - 1, FILE_CHUNK, FILE_CHUNK + 1, 3 * FILE_CHUNK + 5])
def test_a_sealed_file_round_trips_in_any_pieces(size):
    cipher = cipher_with(1)
    data = os.urandom(size)
    sealed = seal_file(cipher, data)
    assert len(sealed) == sealed_file_size(size)
    assert open_file(cipher, sealed) == data
    if size < 200:
        assert open_file(cipher, sealed, pieces=1) == data


def test_a_truncated_file_is_detected_at_any_chunk_boundary_and_inside():
    cipher = cipher_with(1)
    sealed = seal_file(cipher, b"x" * (2 * FILE_CHUNK + 100))
    chunk = FILE_CHUNK + TAG_BYTES
    for cut in (FILE_HEADER_BYTES + chunk, FILE_HEADER_BYTES + 2 * chunk, len(sealed) - 1, FILE_HEADER_BYTES, 5):
        with pytest.raises(DecryptError):
            open_file(cipher, sealed[:cut])


def test_reordered_chunks_and_a_file_of_another_id_are_detected():
    cipher = cipher_with(1)
    sealed = seal_file(cipher, os.urandom(3 * FILE_CHUNK))
    chunk = FILE_CHUNK + TAG_BYTES
    head, body = sealed[:FILE_HEADER_BYTES], sealed[FILE_HEADER_BYTES:]
    chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    swapped = head + chunks[1] + chunks[0] + b"".join(chunks[2:])
    with pytest.raises(DecryptError, match="chunk 0"):
        open_file(cipher, swapped)
    with pytest.raises(DecryptError):
        open_file(cipher, sealed, aad=b"file-2")
    with pytest.raises(DecryptError, match="after its last chunk"):
        opener = cipher.file_opener(b"file-1")
        opener.update(sealed)
        opener.finish()
        opener.update(b"more")


# -- key files ------------------------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, reason", [
    ("", "holds no master key"),
    ("# only a comment\n", "holds no master key"),
    ("just-one-word\n", "line 1 is not '<id> <base64 key>'"),
    (f"{master_key_id(KEY)} not*base64\n", "line 1 is not valid base64"),
    (f"abcd1234 {base64.b64encode(b'short').decode()}\n", "has 5 bytes, master keys have 32"),
    (f"abcd1234 {base64.b64encode(KEY).decode()}\n", "does not match its id abcd1234"),
])
def test_a_damaged_key_file_is_refused_naming_the_file_and_line(tmp_path, text, reason):
    path = write(tmp_path / "master.key", text)
    with pytest.raises(KeyFileError) as error:
        read_key_file(path)
    assert str(path) in str(error.value) and reason in str(error.value)
    assert "restore it from your backup" in str(error.value)


def test_a_key_file_round_trips_and_the_last_key_is_current(tmp_path):
    other = os.urandom(32)
    path = tmp_path / "keys" / "master.key"
    write_key_file(path, [KEY, other])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keyring = read_key_file(path)
    assert keyring.ids == [master_key_id(KEY), master_key_id(other)]
    assert keyring.current_id == master_key_id(other)
    assert path.read_text() == key_file_text([KEY, other])


def test_an_unreadable_or_binary_key_file_is_refused(tmp_path):
    path = tmp_path / "master.key"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(KeyFileError, match="not plain ASCII"):
        read_key_file(path)
    with pytest.raises(KeyFileError, match="is missing"):
        read_key_file(tmp_path / "nothing.key")


def test_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("STOCKADE_TEST_KEY", base64.b64encode(KEY).decode())
    assert read_env("STOCKADE_TEST_KEY").current_id == master_key_id(KEY)
    monkeypatch.setenv("STOCKADE_TEST_KEY", "###")
    with pytest.raises(KeyFileError, match="STOCKADE_TEST_KEY.*not valid base64"):
        read_env("STOCKADE_TEST_KEY")
    monkeypatch.delenv("STOCKADE_TEST_KEY")
    with pytest.raises(KeyFileError, match="STOCKADE_TEST_KEY.*is not set"):
        read_env("STOCKADE_TEST_KEY")


async def test_a_missing_key_file_is_made_for_a_new_database_only(tmp_path):
    config = config_from_dict({"server": {"data_dir": str(tmp_path)}}, "(test)", tmp_path)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    storage = await Storage.open(url, keyring=load_keyring(config, tmp_path))
    await storage.close()
    key_file = tmp_path / "keys" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(read_key_file(key_file).keys) == 1
    key_file.unlink()
    with pytest.raises(KeyFileError, match="is missing, but the database holds data encrypted"):
        await Storage.open(url, keyring=load_keyring(config, tmp_path))
    assert not key_file.exists()                         # no new key was written beside old data


async def test_a_wrong_master_key_cannot_unwrap_and_stops_the_open(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    await (await Storage.open(url, keyring=Keyring([KEY], "the key file A"))).close()
    with pytest.raises(KeyFileError, match=r"the key file B does not hold master key .* restore"):
        await Storage.open(url, keyring=Keyring([os.urandom(32)], "the key file B"))
    assert issubclass(KeyFileError, StorageError)


# -- rotation -------------------------------------------------------------------------------------
async def test_rotation_rewraps_every_data_key_and_adds_one(storage_url):
    old, new = KEY, os.urandom(32)
    storage = await Storage.open(storage_url, keyring=Keyring([old], "the old key"))
    try:
        await storage.cipher.new_data_key()
        sealed = storage.cipher.seal_text("kept across rotation", b"a")
        before = await storage.data_keys.all()
        assert {row[2] for row in before} == {master_key_id(old)}
        rewrapped = await storage.data_keys.rewrap(Keyring([old, new], "both keys"))
        assert rewrapped == [row[0] for row in before]
        after = await storage.data_keys.all()
        assert len(after) == len(before) + 1
        assert {row[2] for row in after} == {master_key_id(new)}
    finally:
        await storage.close()
    reopened = await Storage.open(storage_url, keyring=Keyring([new], "the new key"))
    try:
        assert reopened.cipher.open_text(sealed, b"a") == "kept across rotation"
        assert reopened.cipher.current_key_id == after[-1][0]        # the newest data key seals
    finally:
        await reopened.close()
    with pytest.raises(KeyFileError):
        await Storage.open(storage_url, keyring=Keyring([old], "the old key"))


# -- admin TOTP secrets ---------------------------------------------------------------------------
async def test_admin_totp_secrets_are_sealed_and_still_verify(tmp_path):
    import json

    import pyotp

    from stockade.admin.identities import ACCOUNTS_STORE, AdminDirectory
    from stockade.testing.clock import FakeClock
    storage = await Storage.open(f"sqlite:///{tmp_path / 'db.sqlite'}", keyring=Keyring([KEY], "a test keyring"))
    try:
        admins = AdminDirectory(storage, FakeClock(1_700_000_000.0), {"example.com"})
        account, _uri = await admins.create("ops", "operator", [], "a-long-admin-password")
        stored = await storage.map(ACCOUNTS_STORE).get("", "", "ops")
        assert account.totp_secret not in json.dumps(stored) and stored["totp"].startswith(MARKER)
        again = await admins.get("ops")
        assert again.totp_secret == account.totp_secret
        assert admins.check_totp(again, pyotp.TOTP(account.totp_secret).now())
        # Sealed for "ops" only: copied onto another admin's record it does not open.
        await storage.map(ACCOUNTS_STORE).set("", "", "ops2", {**stored})
        with pytest.raises(DecryptError):
            await admins.get("ops2")
    finally:
        await storage.close()


async def test_a_new_data_key_is_made_after_the_seal_limit(storage_url, monkeypatch):
    import asyncio

    from stockade.storage import crypto
    monkeypatch.setattr(crypto, "MAX_SEALS_PER_KEY", 3)
    storage = await Storage.open(storage_url, keyring=Keyring([KEY], "a test keyring"))
    try:
        first = storage.cipher.current_key_id
        sealed = [storage.cipher.seal(b"value %d" % n) for n in range(3)]
        for _ in range(100):                       # the new key is stored in the background
            if storage.cipher.current_key_id != first:
                break
            await asyncio.sleep(0.05)
        assert storage.cipher.current_key_id == first + 1
        assert [row[0] for row in await storage.data_keys.all()] == [first, first + 1]
        assert [storage.cipher.open(s) for s in sealed] == [b"value 0", b"value 1", b"value 2"]
    finally:
        await storage.close()
