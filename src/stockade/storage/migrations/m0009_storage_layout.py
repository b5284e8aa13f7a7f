"""Version 9: `storage_layout`, saying the archive is in one file (the database itself).

On a SQLite node with several worker processes, each worker's archives go to a file of their own
beside the database (storage/archive_files.py); this table records how many files there are, and
while the server moves archives between files, how many there will be.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Connection, MetaData, Table, Text, insert

VERSION = 9


def upgrade(conn: Connection) -> None:
    """Create the table with archive_files = 1 (the caller records the version)."""
    layout = Table("storage_layout", MetaData(),
                   Column("name", Text, primary_key=True),
                   Column("value", BigInteger, nullable=False))
    layout.create(conn)
    conn.execute(insert(layout).values(name="archive_files", value=1))
