"""`stockade archive verify` against a journal written by a real server, then tampered with while
the server is stopped (sqlite3 on the database file): each kind of tampering is named."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stockade.compliance.journal_verify import public_pem
from stockade.storage.journal import record_digest, record_hash
from stockade.testing.process import CliResult, ServerProcess, StartError, run_cli, to_toml
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from tests.integration.conftest import DOMAIN, USERS, jid

MESSAGES = 6


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose journal holds MESSAGES chat messages, checkpointed every 4 records
    and at shutdown."""
    data = tmp_path_factory.mktemp("journal") / "data"
    with RunningServer(domains=[DOMAIN], data_dir=data, config={"journal": {"checkpoint_every": 4}}) as srv:
        for user in ("alice", "bob"):
            srv.add_user(jid(user), USERS[user])

        async def chat() -> None:
            async with client(srv, jid("alice"), USERS["alice"]) as alice, \
                       client(srv, jid("bob"), USERS["bob"]) as bob:
                for n in range(MESSAGES):
                    alice.send_message(mto=jid("bob"), mbody=f"message {n}", mtype="chat")
                    await bob.next_message()
        asyncio.run(chat())
    return data


@pytest.fixture
def data(pristine: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the pristine data folder for one test to tamper with."""
    copy = tmp_path / "data"
    shutil.copytree(pristine, copy)
    yield copy


def verify(data: Path, *args: str) -> CliResult:
    config = data.parent / "stockade.toml"
    config.write_text(to_toml({"server": {"data_dir": str(data)}, "hosts": [{"domain": DOMAIN}]}),
                      encoding="utf-8")
    return run_cli("archive", "verify", *args, config=config)


def sql(data: Path, *statements: str) -> list:
    db = sqlite3.connect(data / "stockade.db")
    try:
        rows = []
        for statement in statements:
            rows = db.execute(statement).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


def test_an_intact_journal_verifies(data: Path) -> None:
    [(last_id, last_hash)] = sql(data, "SELECT id, hash FROM journal ORDER BY id DESC LIMIT 1")
    result = verify(data)
    assert result.status == 0, result.stderr
    assert f"journal intact: {MESSAGES} records, last id {last_id}" in result.stdout
    assert f"last hash {last_hash}" in result.stdout
    # Every 4 records (at the end of the batch that crosses 4) and at shutdown, unless signed then.
    [(checkpoints,)] = sql(data, "SELECT count(*) FROM journal_checkpoints")
    assert checkpoints >= 1
    assert f"checkpoints verified: {checkpoints} (signed by the key of" in result.stdout
    assert "purged records: 0" in result.stdout


def test_an_edited_record_is_named(data: Path) -> None:
    [(payload,)] = sql(data, "SELECT payload FROM journal WHERE id = 3")
    sql(data, "UPDATE journal SET payload = ? WHERE id = 3".replace("?", f"x'{bytes(payload)[:-1].hex()}00'"))
    result = verify(data)
    assert result.status == 1
    assert "record 3 was changed" in result.stderr and "2 record(s) before it verified" in result.stderr


def test_an_edited_record_with_recomputed_digest_and_hash_is_named(data: Path) -> None:
    # Someone who knows the algorithm rewrites record 2 consistently: its successor no longer fits.
    [(ts, host, kind, conversation, participants, prev)] = sql(
        data, "SELECT ts, host, kind, conversation, participants, prev_hash FROM journal WHERE id = 2")
    forged = b'{"stanza":"<message><body>forged</body></message>"}'
    digest = record_digest(conversation, participants, forged)
    hash_ = record_hash(2, ts, host, kind, digest, prev)
    sql(data, f"UPDATE journal SET payload = x'{forged.hex()}', digest = '{digest}', hash = '{hash_}' "
              "WHERE id = 2")
    result = verify(data)
    assert result.status == 1
    assert "record 3 was inserted or re-chained" in result.stderr


def test_an_inserted_record_is_named(data: Path) -> None:
    # A forged record with a valid hash of its own, claiming to follow the second-to-last record.
    [(last_id, prev_of_last)] = sql(data, "SELECT id, prev_hash FROM journal ORDER BY id DESC LIMIT 1")
    new_id, ts = last_id + 1, 1_800_000_000.0
    payload = b'{"stanza":"<message><body>never said</body></message>"}'
    digest = record_digest("a b", "a b", payload)
    hash_ = record_hash(new_id, ts, DOMAIN, "chat", digest, prev_of_last)
    sql(data, "INSERT INTO journal (id, ts, host, kind, conversation, participants, payload, digest, "
              f"prev_hash, hash) VALUES ({new_id}, {ts}, '{DOMAIN}', 'chat', 'a b', 'a b', "
              f"x'{payload.hex()}', '{digest}', '{prev_of_last}', '{hash_}')")
    result = verify(data)
    assert result.status == 1
    assert f"record {new_id} was inserted or re-chained" in result.stderr


def test_a_deleted_record_is_named(data: Path) -> None:
    sql(data, "DELETE FROM journal WHERE id = 2")
    result = verify(data)
    assert result.status == 1
    assert "record 2 removed" in result.stderr


def test_deleting_the_last_records_is_caught_by_the_checkpoint(data: Path) -> None:
    kept = MESSAGES - 2
    sql(data, f"DELETE FROM journal WHERE id > {kept}")
    # The shutdown checkpoint signed record MESSAGES; one every 4 records may name record 5.
    [(first_lost,)] = sql(data, f"SELECT min(last_id) FROM journal_checkpoints WHERE last_id > {kept}")
    result = verify(data)
    assert result.status == 1
    assert f"names record {first_lost}, which is no longer in the journal (it ends at record {kept})" \
        in result.stderr


def test_a_tampered_checkpoint_signature_is_named(data: Path) -> None:
    [(cp_id, last_id, signature)] = sql(data, "SELECT id, last_id, signature FROM journal_checkpoints "
                                              "ORDER BY id LIMIT 1")
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    sql(data, f"UPDATE journal_checkpoints SET signature = '{flipped}' WHERE id = {cp_id}")
    result = verify(data)
    assert result.status == 1
    assert f"checkpoint {cp_id} (record {last_id}) has a signature that does not verify" in result.stderr


def test_checkpoints_signed_by_another_key_fail_with_the_given_public_key(data: Path) -> None:
    other = data.parent / "other.pub.pem"
    other.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    result = verify(data, "--public-key", str(other))
    assert result.status == 1 and "does not verify with the given public key" in result.stderr
    own = data / "keys" / "journal-signing.pub.pem"
    result = verify(data, "--public-key", str(own))
    assert result.status == 0, result.stderr


def test_a_purged_record_still_verifies(data: Path) -> None:
    sql(data, "UPDATE journal SET conversation = NULL, participants = NULL, payload = NULL, "
              "purged = 1900000000.0 WHERE id = 2")
    result = verify(data)
    assert result.status == 0, result.stderr
    assert "purged records: 1" in result.stdout


def test_the_generated_signing_key_is_private_to_the_server(data: Path) -> None:
    assert (data / "keys" / "journal-signing.pem").stat().st_mode & 0o777 == 0o600


def test_a_corrupted_signing_key_stops_startup_with_a_clear_message(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, [DOMAIN])
    key = proc.data_dir / "keys" / "journal-signing.pem"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    with pytest.raises(StartError) as refused:
        proc.start()
    assert "journal.signing_key_path" in refused.value.stderr
    assert f"the journal signing key {key} is not a readable unencrypted PEM private key" in refused.value.stderr
    assert "Traceback" not in refused.value.stderr
