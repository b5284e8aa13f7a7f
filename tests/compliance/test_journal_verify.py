"""`stockade archive verify` against a journal written by a real server, then tampered with while
the server is stopped (sqlite3 on the database file): each kind of tampering is named."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stockade.compliance.journal_verify import public_pem
from stockade.storage.journal import Block, block_digest, block_hash, decode_stored, encode_block
from stockade.testing.process import CliResult, ServerProcess, StartError, run_cli, to_toml
from stockade.testing.server import RunningServer
from stockade.testing.xmpp import client

from tests.integration.conftest import DOMAIN, USERS, jid

MESSAGES = 6


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose journal holds MESSAGES chat messages, checkpointed every 4 records
    and at shutdown. The first half is committed before the second is sent, so that the blocks
    of records 1 to 3 are never the last (how the rest falls into blocks depends on timing)."""
    data = tmp_path_factory.mktemp("journal") / "data"
    with RunningServer(domains=[DOMAIN], data_dir=data, config={"journal": {"checkpoint_every": 4}}) as srv:
        for user in ("alice", "bob"):
            srv.add_user(jid(user), USERS[user])

        async def chat() -> None:
            async with client(srv, jid("alice"), USERS["alice"]) as alice, \
                       client(srv, jid("bob"), USERS["bob"]) as bob:
                for n in range(MESSAGES):
                    if n == MESSAGES // 2:
                        await srv.acall(srv.server.journal.flush())
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


def block_holding(data: Path, record_id: int) -> Block:
    """The journal block that holds a record, decoded."""
    [row] = sql(data, f"SELECT id, last_id, body, prev_hash, hash FROM journal_blocks WHERE id <= {record_id} "
                      "ORDER BY id DESC LIMIT 1")
    return decode_stored(row)


def store_block(data: Path, block: Block) -> None:
    """Write a changed block back over the one with the same first id, as an attacker could."""
    sql(data, f"UPDATE journal_blocks SET body = x'{encode_block(block).hex()}', hash = '{block.hash}', "
              f"prev_hash = '{block.prev_hash}' WHERE id = {block.id}")


def rehashed(block: Block) -> Block:
    """The block with its hash computed again over its (changed) contents."""
    times = b"".join(struct.pack("<d", t) for t in block.times)
    heads = "\n".join(f"{h}\t{k}" for h, k in block.heads).encode()
    return block._replace(hash=block_hash(block.id, block.prev_hash, times, heads, b"".join(block.digests)))


def test_an_intact_journal_verifies(data: Path) -> None:
    [(last_id, last_hash)] = sql(data, "SELECT last_id, hash FROM journal_blocks ORDER BY id DESC LIMIT 1")
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
    block = block_holding(data, 3)
    payloads = list(block.payloads)
    payloads[3 - block.id] = payloads[3 - block.id][:-1] + b"\x00"
    store_block(data, block._replace(payloads=payloads))
    result = verify(data)
    assert result.status == 1
    assert "record 3 was changed" in result.stderr
    assert f"{block.id - 1} record(s) before it verified" in result.stderr


def test_an_edited_record_with_recomputed_digest_and_hash_is_named(data: Path) -> None:
    # Someone who knows the algorithm rewrites record 2 and its block's hash consistently: the
    # next block no longer fits, or, when the block was the last, the shutdown checkpoint.
    block = block_holding(data, 2)
    forged = b'{"stanza":"<message><body>forged</body></message>"}'
    at = 2 - block.id
    payloads, digests = list(block.payloads), list(block.digests)
    payloads[at], digests[at] = forged, block_digest(*block.parties[at], forged)
    store_block(data, rehashed(block._replace(payloads=payloads, digests=digests)))
    result = verify(data)
    assert result.status == 1
    last = block.last_id
    assert (f"record {last + 1} was inserted or re-chained" in result.stderr
            or f"records {last + 1} to" in result.stderr and "were inserted or re-chained" in result.stderr
            or f"signed record {last} with another hash" in result.stderr), result.stderr


def test_an_inserted_record_is_named(data: Path) -> None:
    # A forged block with a valid hash of its own, claiming to follow the block before the last.
    [(last_id, prev_of_last)] = sql(data, "SELECT last_id, prev_hash FROM journal_blocks ORDER BY id DESC LIMIT 1")
    new_id, ts = last_id + 1, 1_800_000_000.0
    payload = b'{"stanza":"<message><body>never said</body></message>"}'
    forged = rehashed(Block(new_id, prev_of_last, "", [ts], [None], [block_digest("a b", "a b", payload)],
                            [(DOMAIN, "chat")], [("a b", "a b")], [payload], True))
    sql(data, "INSERT INTO journal_blocks (id, last_id, ts_first, ts_last, live, body, prev_hash, hash) "
              f"VALUES ({new_id}, {new_id}, {ts}, {ts}, 1, x'{encode_block(forged).hex()}', "
              f"'{prev_of_last}', '{forged.hash}')")
    result = verify(data)
    assert result.status == 1
    assert f"record {new_id} was inserted or re-chained" in result.stderr


def test_a_deleted_record_is_named(data: Path) -> None:
    block = block_holding(data, 2)
    sql(data, f"DELETE FROM journal_blocks WHERE id = {block.id}")
    result = verify(data)
    assert result.status == 1
    missing = f"record {block.id}" if block.last_id == block.id else f"records {block.id} to {block.last_id}"
    assert f"{missing} removed" in result.stderr


def test_deleting_the_last_records_is_caught_by_the_checkpoint(data: Path) -> None:
    [(last_block,)] = sql(data, "SELECT max(id) FROM journal_blocks")
    sql(data, f"DELETE FROM journal_blocks WHERE id = {last_block}")
    kept = last_block - 1
    # The shutdown checkpoint signed record MESSAGES; one every 4 records may name an earlier one.
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
    block = block_holding(data, 2)
    at = 2 - block.id
    purged, parties, payloads = list(block.purged), list(block.parties), list(block.payloads)
    purged[at], parties[at], payloads[at] = 1_900_000_000.0, (None, None), None
    store_block(data, block._replace(purged=purged, parties=parties, payloads=payloads))
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
