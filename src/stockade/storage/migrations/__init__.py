"""Numbered schema migrations, applied in order by `storage/migrate.py`.

To change the schema, add `mNNNN_what.py` here (the next number) with `VERSION = NNNN` and
`def upgrade(conn: sqlalchemy.Connection) -> None`, and update `storage/schema.py` to match.
A migration spells out its own DDL; it must not import `schema.py`, whose tables describe only
the latest version. Each migration runs in its own transaction together with the version bump.
"""
