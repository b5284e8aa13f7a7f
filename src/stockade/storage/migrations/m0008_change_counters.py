"""Version 8: `change_counters`, with the counter of account changes at 0.

A server looked for accounts created or removed by another process (the CLI) by reading every
account every `account_check_interval` seconds. It now reads the counter, which every account
creation or removal moves in its own transaction, and the list only when the counter moved.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Connection, MetaData, Table, Text, insert

VERSION = 8


def upgrade(conn: Connection) -> None:
    """Create the table and its one counter (the caller records the version)."""
    counters = Table("change_counters", MetaData(),
                     Column("name", Text, primary_key=True),
                     Column("value", BigInteger, nullable=False))
    counters.create(conn)
    conn.execute(insert(counters).values(name="accounts", value=0))
