"""The tables as the code uses them today: the schema after the latest migration.

Migrations (`migrations/m0001_initial.py`, ...) create and change the real tables; each one spells
out its own DDL so that it keeps meaning the same thing when this file moves on. A test checks that
the migrated database matches the tables described here.

Stores are separated by a `store` column ("roster", "offline", "vcard", ...) in shared tables.
Every per-user table starts its primary key or index with (host, username), except the archive,
which is on the message path and names its owner by a small integer (`archive_owners`): deleting
an account wipes the user's rows in every store with one indexed DELETE per table.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Column, Double, ForeignKeyConstraint, Index, Integer,
                        LargeBinary, MetaData, Table, Text)
from sqlalchemy.dialects.postgresql import TSVECTOR

metadata = MetaData()

# SQLite only gives INTEGER PRIMARY KEY (exactly that spelling) the rowid and AUTOINCREMENT
# behaviour; PostgreSQL wants a 64-bit serial.
ArchiveId = BigInteger().with_variant(Integer(), "sqlite")

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, nullable=False),        # one row: the last migration applied
)

accounts = Table(
    "accounts", metadata,
    Column("host", Text, primary_key=True),
    Column("username", Text, primary_key=True),
    Column("created", Double, nullable=False),         # unix time
)

# Counters another process reads to notice a change without reading the data. "accounts" grows
# in every transaction that creates or removes accounts (storage/accounts.py), so a server that
# looks for accounts created or removed by the CLI reads the list only when it moved.
change_counters = Table(
    "change_counters", metadata,
    Column("name", Text, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# How the database is laid out over files (storage/archive_files.py): "archive_files" is how many
# files hold the archive (1: only the database itself); "archive_files_next", present only while
# archives move between files, how many there will be.
storage_layout = Table(
    "storage_layout", metadata,
    Column("name", Text, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

credentials = Table(
    "credentials", metadata,
    Column("host", Text, primary_key=True),
    Column("username", Text, primary_key=True),
    Column("hash_name", Text, primary_key=True),       # "sha1" | "sha256"
    Column("salt", LargeBinary, nullable=False),
    Column("iterations", Integer, nullable=False),
    Column("stored_key", LargeBinary, nullable=False),
    Column("server_key", LargeBinary, nullable=False),
    ForeignKeyConstraint(["host", "username"], ["accounts.host", "accounts.username"],
                         ondelete="CASCADE", name="fk_credentials_account"),
)

kv = Table(
    "kv", metadata,
    Column("host", Text, primary_key=True),
    Column("username", Text, primary_key=True),        # "" for host-wide data
    Column("store", Text, primary_key=True),
    Column("value", Text, nullable=False),             # JSON
)

map_ = Table(
    "map", metadata,
    Column("host", Text, primary_key=True),
    Column("username", Text, primary_key=True),
    Column("store", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),             # JSON
)

# Who an archive belongs to: (host, user, store) once, as a small integer that the archive rows
# carry instead of the three strings. Rows are never deleted (removing an account deletes its
# archive items, not this row): the archive writer keeps the ids in memory for the life of the
# process, and another process (the CLI) may use them at the same time.
archive_owners = Table(
    "archive_owners", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", Text, nullable=False),
    Column("username", Text, nullable=False),
    Column("store", Text, nullable=False),
)
Index("ix_archive_owners_user", archive_owners.c.host, archive_owners.c.username,
      archive_owners.c.store, unique=True)

# Keys sort by the time they were made (storage/keys.py). On PostgreSQL the column compares
# bytes ("C"): the index order is then the generator's order whatever the database collation.
ArchiveKey = Text().with_variant(Text(collation="C"), "postgresql")

# Archive order is (ts, id): by time, appends at the same time in append order. Writers keep ts
# non-decreasing per archive, so it is also append order; when a caller gives an earlier time
# (PEP re-storing items), the item takes its place in time.
archive = Table(
    "archive", metadata,
    Column("id", ArchiveId, primary_key=True, autoincrement=True),
    Column("owner", Integer, nullable=False),           # archive_owners.id (no foreign key: see above)
    Column("key", ArchiveKey, nullable=False),          # caller's unique id (XEP-0359 stanza id)
    Column("ts", Double, nullable=False),               # unix time of the item
    Column("with_jid", Text, nullable=True),            # conversation partner, bare JID
    Column("value", Text, nullable=False),              # serialised stanza
    # Never reuse the id of a deleted row: it is the tie-breaker of archive order.
    sqlite_autoincrement=True,
)
# The only index per archive, because every secondary index whose insertion point differs per
# owner costs a B-tree page write per append: paging in archive order, MAM "start"/"end",
# retention ("delete before"). with_jid comes last, only carried: a "with" filter reads the
# owner's range of this index and not the table (see archive.py).
Index("ix_archive_owner", archive.c.owner, archive.c.ts, archive.c.id, archive.c.with_jid)
# Look-up by stanza id. Key first: new keys are appended at the index's end (storage/keys.py);
# the owner second tells apart equal keys of different owners (PEP item ids are "node\nitem").
Index("ix_archive_key", archive.c.key, archive.c.owner)

# The audit log (storage/audit.py): append-only, each entry chained to the one before it by
# SHA-256. `id` is the chain order and is never reused (AUTOINCREMENT, a sequence), so a deleted
# entry leaves a gap. Not per-user data: removing an account keeps what was recorded about it.
audit = Table(
    "audit", metadata,
    Column("id", ArchiveId, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),               # unix time
    Column("host", Text, nullable=False),               # tenant; "" for server-wide
    Column("actor", Text, nullable=False),              # "alice@example.com", "admin:root", "system", "cli"
    Column("action", Text, nullable=False),             # "auth.failure", "user.create", ...
    Column("target", Text, nullable=False),
    Column("detail", Text, nullable=False),             # JSON object
    Column("prev_hash", Text, nullable=False),          # hex SHA-256 of the previous entry
    Column("hash", Text, nullable=False),               # hex SHA-256 of this entry
    sqlite_autoincrement=True,
)
Index("ix_audit_host", audit.c.host, audit.c.id)
Index("ix_audit_action", audit.c.action, audit.c.id)

# Data keys of encryption at rest (storage/crypto.py, storage/datakeys.py), each wrapped
# (AES-256-GCM) by the master key `master_key_id` that lives outside the database. Ids are never
# reused: a sealed value names its data key by id.
data_keys = Table(
    "data_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("wrapped", LargeBinary, nullable=False),     # nonce + encrypted key + tag
    Column("master_key_id", Text, nullable=False),      # crypto.master_key_id of the wrapping key
    Column("created", Double, nullable=False),          # unix time
    sqlite_autoincrement=True,
)

# Tables holding a user's data, by (host, username), that AccountStore.remove() wipes; the
# user's archive items go through archive_owners (credentials go by the account).
USER_DATA_TABLES = (kv, map_)

# -- the compliance journal (storage/journal.py, compliance/journal.py) -------------------------
# Every message, upload, subscription change and policy verdict, chained by SHA-256 like the
# audit log. Retention NULLs conversation, participants and payload and sets `purged`; `digest`
# stays, so the chain still verifies. Users never change it (their MAM is separate).
journal = Table(
    "journal", metadata,
    Column("id", ArchiveId, primary_key=True, autoincrement=True),   # chain order, never reused
    Column("ts", Double, nullable=False),               # unix time it was routed
    Column("host", Text, nullable=False),               # tenant domain
    Column("kind", Text, nullable=False),               # chat normal groupchat headline upload subscription verdict purge
    Column("conversation", Text, nullable=True),        # sorted bare pair, room, or uploader
    Column("participants", Text, nullable=True),        # bare JIDs, sender first, space-separated
    Column("payload", LargeBinary, nullable=True),      # the stanza's XML, or JSON (uploads, verdicts, purges); sealed with encryption at rest
    Column("digest", Text, nullable=False),             # hex SHA-256 of conversation, participants, payload
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),               # hex SHA-256 of id, ts, host, kind, digest, prev_hash
    Column("purged", Double, nullable=True),            # when retention emptied the row
    sqlite_autoincrement=True,
)
Index("ix_journal_host_ts", journal.c.host, journal.c.ts)

# Since version 10 the journal's records are written in blocks, one row per group-commit batch
# (storage/journal.py describes the body); `journal` keeps the records written before, read-only.
journal_blocks = Table(
    "journal_blocks", metadata,
    Column("id", ArchiveId, primary_key=True, autoincrement=True),   # its first record's id (given, not generated)
    Column("last_id", BigInteger, nullable=False),      # its last record's id
    Column("ts_first", Double, nullable=False),         # the earliest of its records' times
    Column("ts_last", Double, nullable=False),          # the latest
    Column("live", Integer, nullable=False),            # records not purged
    Column("body", LargeBinary, nullable=False),        # the records (payloads sealed with encryption at rest)
    Column("prev_hash", Text, nullable=False),          # the previous block's hash (or last legacy row's)
    Column("hash", Text, nullable=False),               # hex SHA-256 of first id, count, prev_hash, times, heads, digests
    sqlite_autoincrement=True,                          # keeps the id high-water mark (storage/journal.py)
)

# Signed checkpoints of the journal chain: (last id, last hash, time), Ed25519.
journal_checkpoints = Table(
    "journal_checkpoints", metadata,
    Column("id", ArchiveId, primary_key=True, autoincrement=True),
    Column("ts", Double, nullable=False),
    Column("last_id", BigInteger, nullable=False),      # journal.id the checkpoint covers up to
    Column("last_hash", Text, nullable=False),          # that row's hash
    Column("public_key", Text, nullable=False),         # hex raw Ed25519 public key that signed
    Column("signature", Text, nullable=False),          # hex Ed25519 signature (journal_verify.py)
    sqlite_autoincrement=True,
)

# -- the eDiscovery search index (storage/search.py, compliance/search_index.py) ----------------
# Blind tokens (keyed hashes of words, never the words) per journal record, and who took part.
# On SQLite a contentless FTS5 table `search_fts` (made by the migration, not described here:
# SQLAlchemy has no virtual tables) indexes `tokens`; on PostgreSQL the GIN index over `tsv` does.
search_docs = Table(
    "search_docs", metadata,
    Column("id", ArchiveId, primary_key=True, autoincrement=False),   # journal.id
    Column("host", Text, nullable=False),               # tenant, as in the journal
    Column("tokens", Text, nullable=False),             # blind tokens, space-separated
    Column("tsv", TSVECTOR().with_variant(Text(), "sqlite"), nullable=True),   # PostgreSQL only; NULL on SQLite
)
Index("ix_search_docs_tsv", search_docs.c.tsv, postgresql_using="gin")

# One row per indexed record (not purged): what a search filters by besides words and people.
search_records = Table(
    "search_records", metadata,
    Column("id", ArchiveId, primary_key=True, autoincrement=False),   # journal record id
    Column("host", Text, nullable=False),
    Column("ts", Double, nullable=False),
    Column("kind", Text, nullable=False),
)
Index("ix_search_records_host_ts", search_records.c.host, search_records.c.ts)

search_participants = Table(
    "search_participants", metadata,
    Column("jid", Text, primary_key=True),              # bare JID taking part in the record
    Column("journal_id", BigInteger, primary_key=True),
)
Index("ix_search_participants_journal", search_participants.c.journal_id)

# name -> value: "last_indexed" (journal id), "index_key" (the blind-token key, sealed)
search_state = Table(
    "search_state", metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
