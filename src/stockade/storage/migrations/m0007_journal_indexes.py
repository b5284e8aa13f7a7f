"""Version 7: the journal keeps one secondary index, (host, ts).

Every index of the journal is written once per message. (conversation, ts) took a page write at
a different place in the B-tree for almost every record (conversations are spread all over the
key space) and nothing queried it: eDiscovery finds records through its own participant and
word index (storage/search.py), and retention reads a tenant's records by (host, ts). (ts) alone
duplicated (host, ts) for the few cross-tenant reads. Dropping both made a journal append about
a third cheaper on SQLite (bench/journal_append.py).
"""

from __future__ import annotations

from sqlalchemy import Connection, text

VERSION = 7


def upgrade(conn: Connection) -> None:
    """Drop the two indexes (the caller records the version in the same transaction)."""
    for name in ("ix_journal_conversation_ts", "ix_journal_ts"):
        conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
