"""Tamper evidence of the compliance journal: the signing key, checkpoints, and `verify`.

The chain (storage/journal.py) shows that no record was changed, inserted or removed in the
middle; it cannot show that the whole chain was not recomputed by someone who can write the
database. Checkpoints close that gap: every `journal.checkpoint_every` records, and at shutdown,
the writer signs (last id, last hash, time) with an Ed25519 key that lives outside the database
(`journal.signing_key_path`; by default data_dir/keys/journal-signing.pem, mode 0600, made on
first start, with its public half beside it as journal-signing.pub.pem). A recomputed chain no
longer matches the signed hashes, and a new signature needs the key. Keep a copy of the public key
elsewhere and verify with `stockade archive verify --public-key FILE`: then even someone who took
the private key from this machine cannot make a checkpoint that passes.

`verify_journal` walks the chain in id order: the legacy rows (one record each, written before
schema version 10), then the blocks (storage/journal.py). It checks
- each record's digest, recomputed from conversation, participants and payload (not for purged
  records, whose content retention removed: their stored digest is still covered by the hash);
- each legacy row's hash, recomputed from (id, ts, host, kind, digest, prev_hash), and each
  block's, from its first id, record count, prev_hash and its records' times, hosts, kinds and
  digests; and that a block decodes and holds the records its row says;
- ids: one more than the previous record's (ids are never reused, so a gap is a removed record);
- prev_hash: the hash of the row or block before (a mismatch is an inserted or re-chained one);
and every checkpoint: its signature (by the configured or given public key), and that the
record it names exists with the hash it signed (a missing one: records at the end were removed).
It reports the FIRST problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..storage.journal import (GENESIS_HASH, BlockError, JournalStore, Signer, block_digest, checkpoint_message,
                               decode_block, record_digest, record_hash)

VERIFY_BATCH = 2000            # legacy rows read per query while verifying
VERIFY_BLOCKS = 50             # blocks read per query while verifying
DEFAULT_KEY_NAME = "journal-signing.pem"


class SigningKeyError(Exception):
    """The journal signing key cannot be read or made: startup stops with this message."""


def load_signing_key(path: Path, *, create: bool) -> Ed25519PrivateKey:
    """The Ed25519 private key in `path` (PEM, PKCS#8, unencrypted). With `create`, a missing
    file is generated (mode 0600, folder 0700) with the public key beside it. Raises
    SigningKeyError saying what is wrong and what to do."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise SigningKeyError(f"the journal signing key {path} does not exist; create it (an Ed25519 "
                                  f"private key, PEM PKCS#8) or leave journal.signing_key_path empty to "
                                  f"have one generated") from None
        return _generate(path)
    except OSError as exc:
        raise SigningKeyError(f"cannot read the journal signing key {path}: {exc.strerror}; check "
                              f"its permissions") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(
            f"the journal signing key {path} is not a readable unencrypted PEM private key ({exc}); "
            f"restore it from your backup (checkpoints signed with it can only be verified with its "
            f"public key), or move it away to have a new one generated") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"the journal signing key {path} is a {type(key).__name__}, not an "
                              f"Ed25519 key; generate one with `openssl genpkey -algorithm ed25519`")
    return key


def _generate(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        public_path(path).write_bytes(public_pem(key.public_key()))
    except OSError as exc:
        raise SigningKeyError(f"cannot create the journal signing key {path}: {exc.strerror}; check "
                              f"that the data folder is writable") from None
    return key


def public_path(private_path: Path) -> Path:
    """Where the public half of a generated key is written: journal-signing.pub.pem."""
    return private_path.with_name(private_path.name.removesuffix(".pem") + ".pub.pem")


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (public or private key). Raises SigningKeyError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read the public key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise SigningKeyError(f"{path} holds no PEM Ed25519 public key") from None
        key = private.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def make_signer(key: Ed25519PrivateKey) -> Signer:
    """sign(last_id, last_hash, ts) -> (public key hex, signature hex), for the journal writer."""
    public = public_hex(key.public_key())

    def sign(last_id: int, last_hash: str, ts: float) -> tuple[str, str]:
        return public, key.sign(checkpoint_message(last_id, last_hash, ts)).hex()
    return sign


@dataclass(frozen=True, slots=True)
class JournalVerifyResult:
    """Intact: `count` records, the last id and hash, checkpoints verified, purged rows.
    Broken: `problem` names the first record or checkpoint that does not fit."""
    is_intact: bool
    count: int
    last_id: int | None
    last_hash: str
    checkpoints: int
    purged: int
    problem: str = ""
    bad_id: int | None = None


async def verify_journal(store: JournalStore, public_key: Ed25519PublicKey | None,
                         batch_size: int = VERIFY_BATCH) -> JournalVerifyResult:
    """Walk the chain and the checkpoints (see the module docstring); the first problem wins.
    `public_key` None: checkpoint signatures are checked against the key each one names (which
    shows they were not altered, but not who made them)."""
    checkpoints = await store.checkpoints()
    wanted: dict[int, list] = {}
    for cp in checkpoints:
        wanted.setdefault(cp.last_id, []).append(cp)
    count = purged = 0
    last_id, expected_prev = 0, GENESIS_HASH

    def broken(problem: str, bad_id: int | None) -> JournalVerifyResult:
        return JournalVerifyResult(False, count, last_id or None, expected_prev, 0, purged, problem, bad_id)

    while True:
        rows = await store.legacy_rows(last_id, batch_size)
        for row in rows:
            if row.purged is None:
                if record_digest(row.conversation, row.participants, row.payload) != row.digest:
                    return broken(f"record {row.id} was changed: its content does not match its "
                                  f"digest", row.id)
            elif row.conversation is not None or row.participants is not None or row.payload is not None:
                if record_digest(row.conversation, row.participants, row.payload) != row.digest:
                    return broken(f"record {row.id} was changed: it is marked purged but holds "
                                  f"content that does not match its digest", row.id)
            if record_hash(row.id, row.ts, row.host, row.kind, row.digest, row.prev_hash) != row.hash:
                return broken(f"record {row.id} was changed: its hash does not match its fields", row.id)
            if row.id != last_id + 1:
                return broken(_gap(last_id, row.id), last_id + 1)
            if row.prev_hash != expected_prev:
                return broken(f"record {row.id} was inserted or re-chained: its prev_hash is not "
                              f"the hash of record {last_id or '(start)'}", row.id)
            for cp in wanted.pop(row.id, ()):
                if cp.last_hash != row.hash:
                    return broken(f"checkpoint {cp.id} signed record {row.id} with another hash: "
                                  f"the chain up to record {row.id} was rewritten", row.id)
            count += 1
            purged += row.purged is not None
            last_id, expected_prev = row.id, row.hash
        if len(rows) < batch_size:
            break
    after_block = 0
    while True:
        stored = await store.blocks(after_block, VERIFY_BLOCKS)
        for first, stored_last, body, prev_hash, hash_ in stored:
            where, were = (f"records {first} to {stored_last}", "were") if stored_last > first else (f"record {first}", "was")
            if first <= last_id:
                return broken(f"{where} {were} inserted: record {first} comes again after record {last_id}", first)
            if first != last_id + 1:
                return broken(_gap(last_id, first), last_id + 1)
            try:
                block = decode_block(first, body, prev_hash, hash_)
            except BlockError as exc:
                return broken(f"{where} {were} changed: {exc}", first)
            if block.last_id != stored_last:
                return broken(f"{where} {were} changed: the block holds {len(block.times)} record(s), "
                              f"its row says {stored_last - first + 1}", first)
            for i, (digest, (conversation, participants), payload, when) in enumerate(
                    zip(block.digests, block.parties, block.payloads, block.purged)):
                emptied = when is not None and conversation is None and participants is None and payload is None
                if not emptied and block_digest(conversation, participants, payload) != digest:
                    state = "it is marked purged but holds content that" if when is not None else "its content"
                    return broken(f"record {first + i} was changed: {state} does not match its digest",
                                  first + i)
            if not block.chained:
                return broken(f"{where} {were} changed: the block's hash does not match its records' "
                              f"times, hosts, kinds and digests", first)
            if prev_hash != expected_prev:
                return broken(f"{where} {were} inserted or re-chained: the block's prev_hash is not "
                              f"the hash of record {last_id or '(start)'}", first)
            for record_id in range(first, block.last_id):
                if record_id in wanted:
                    cp = wanted[record_id][0]
                    return broken(f"checkpoint {cp.id} names record {record_id}, inside the block of "
                                  f"{where}: the server signs the last record of a block, so the "
                                  f"checkpoint or the block was altered", record_id)
            for cp in wanted.pop(block.last_id, ()):
                if cp.last_hash != hash_:
                    return broken(f"checkpoint {cp.id} signed record {block.last_id} with another "
                                  f"hash: the chain up to record {block.last_id} was rewritten", block.last_id)
            count += len(block.times)
            purged += sum(when is not None for when in block.purged)
            last_id, expected_prev = block.last_id, hash_
            after_block = first
        if len(stored) < VERIFY_BLOCKS:
            break
    for cps in wanted.values():
        cp = cps[0]
        return broken(f"checkpoint {cp.id} names record {cp.last_id}, which is no longer in the "
                      f"journal (it ends at record {last_id or '(empty)'}): records were removed",
                      cp.last_id)
    for cp in checkpoints:
        problem = _check_signature(cp, public_key)
        if problem:
            return broken(problem, None)
    return JournalVerifyResult(True, count, last_id or None, expected_prev, len(checkpoints), purged)


def _gap(last_id: int, next_id: int) -> str:
    missing = f"record {last_id + 1}" if next_id == last_id + 2 else f"records {last_id + 1} to {next_id - 1}"
    return f"{missing} removed: the journal goes from record {last_id or '(start)'} to record {next_id}"


def _check_signature(cp, public_key: Ed25519PublicKey | None) -> str:
    try:
        key = public_key or Ed25519PublicKey.from_public_bytes(bytes.fromhex(cp.public_key))
        key.verify(bytes.fromhex(cp.signature), checkpoint_message(cp.last_id, cp.last_hash, cp.ts))
    except InvalidSignature:
        whose = "the given public key" if public_key is not None else "the key it names"
        return (f"checkpoint {cp.id} (record {cp.last_id}) has a signature that does not verify "
                f"with {whose}: the checkpoint was altered or signed by another key")
    except ValueError:
        return f"checkpoint {cp.id} (record {cp.last_id}) has a malformed signature or key"
    return ""
