"""`Storage`: opens the database, brings its schema up to date and hands out the stores."""

from __future__ import annotations

import time
from collections.abc import Callable

from .accounts import AccountStore
from .archive import ArchiveStore
from .archive_files import ArchiveFiles, SplitArchiveStore, open_archive_files
from .audit import AuditStore
from .backlog import WriteBacklog
from .crypto import Cipher, Keyring, KeyFileError
from .datakeys import DataKeyStore
from .engine import Database
from .journal import JournalStore
from .migrate import upgrade
from .stores import KeyValueStore, MapStore
from .retention import RetentionStore


class Storage:
    """Everything Stockade persists, behind one object per database.

    Open with `await Storage.open(url)`; close with `await storage.close()`, which first commits
    the queued archive appends. A Storage belongs to the event loop that opened it.
    """

    def __init__(self, db: Database, clock: Callable[[], float], cipher: Cipher | None = None,
                 archive_dbs: list[Database] | None = None) -> None:
        """Use `Storage.open()`; this only wires already-built parts. `archive_dbs`: the archive's
        files, `db` first (archive_files.py); None: the archive is in `db` alone."""
        self._db = db
        self._clock = clock
        # Encryption at rest (crypto.py); None: off. Archive values are sealed with it here,
        # other users (uploads, the journal, admin secrets) take it from this attribute.
        self.cipher = cipher
        self.data_keys = DataKeyStore(db, clock)
        # Backpressure from the group-commit writers (archive, journal) to client input.
        self.backlog = WriteBacklog()
        self.archive_files = ArchiveFiles(archive_dbs or [db], self.backlog)
        self.dialect: str = db.dialect                 # "sqlite" | "postgresql"
        self.accounts = AccountStore(db, self.archive_files, clock)
        self.audit = AuditStore(db)
        self.journal = JournalStore(db)           # the compliance journal (storage/journal.py)
        # Store objects are cheap but each builds its dialect's upsert once: keep them.
        self._keyval: dict[str, KeyValueStore] = {}
        self._map: dict[str, MapStore] = {}
        self._archive: dict[str, ArchiveStore | SplitArchiveStore] = {}
        self._is_closed = False

    @classmethod
    async def open(cls, url: str, *, clock: Callable[[], float] = time.time,
                   keyring: Keyring | None = None, archive_files: int | None = None) -> Storage:
        """Connect to `url`, apply pending migrations and, with a `keyring`, load the data keys
        of encryption at rest (storage/crypto.py; None: encryption off).

        `url` is `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:`
        or `postgresql://user:password@host:port/database`. `clock` stamps account creation and
        archive items that come without a time. Raises StorageError (with what to do) if the
        database cannot be opened or its schema is newer than this code, KeyFileError if the
        keyring cannot unwrap its data keys or is a new one while the database has data keys.

        `archive_files`: in how many files a SQLite file database keeps the archive (the server
        asks for one per worker process; archive_files.py). Archives are moved between files
        first when the database has another number; None: as many as it has.
        """
        db = Database.from_url(url)
        archive_dbs = [db]
        try:
            await upgrade(db)
            cipher = await _open_cipher(db, clock, keyring) if keyring is not None else None
            archive_dbs = await open_archive_files(db, archive_files)
        except BaseException:
            for opened in (*archive_dbs[1:], db):
                await opened.dispose()
            raise
        return cls(db, clock, cipher, archive_dbs)

    async def close(self) -> None:
        """Commit the queued archive appends, then close every connection. Safe to call twice."""
        if self._is_closed:
            return
        self._is_closed = True
        try:
            await self.archive_files.close()
        finally:
            await self._db.dispose()

    async def flush(self) -> None:
        """Wait until every archive append queued so far is committed (or has failed)."""
        await self.archive_files.flush()

    @property
    def archive_batches_committed(self) -> int:
        """How many group-commit transactions have committed so far (for metrics and tests)."""
        return self.archive_files.batches_committed

    def keyval(self, store: str) -> KeyValueStore:
        """The key-value store named `store` (one JSON value per user)."""
        if store not in self._keyval:
            self._keyval[store] = KeyValueStore(self._db, _store_name(store))
        return self._keyval[store]

    def map(self, store: str) -> MapStore:
        """The map store named `store` (JSON values per user, by key)."""
        if store not in self._map:
            self._map[store] = MapStore(self._db, _store_name(store))
        return self._map[store]

    def retention(self) -> RetentionStore:
        """The purges of retention (storage/retention.py): archive items, journal records."""
        return RetentionStore(self._db, self.archive_files.dbs)

    def archive(self, store: str) -> ArchiveStore | SplitArchiveStore:
        """The archive store named `store` (ordered items per user, group-committed appends)."""
        if store not in self._archive:
            self._archive[store] = self.archive_files.store(_store_name(store), self._clock, self.cipher)
        return self._archive[store]


async def _open_cipher(db: Database, clock: Callable[[], float], keyring: Keyring) -> Cipher:
    store = DataKeyStore(db, clock)
    if keyring.is_new:
        # A key just generated because the key file is missing: fine for a new database, fatal
        # for one with encrypted data (it would never open again, and new data would be
        # sealed with a key that cannot open the old).
        existing = await store.all()
        if existing:
            masters = sorted({master for _id, _wrapped, master, _created in existing})
            raise KeyFileError(f"{keyring.source} is missing, but the database holds data encrypted "
                               f"under master key {', '.join(masters)}; restore the key file from your "
                               "backup (Stockade neither makes a new key for encrypted data nor goes on "
                               "without encryption)")
        from .keyfile import save_new_keyring
        keyring = save_new_keyring(keyring)
    return await Cipher.load(keyring, store)


def _store_name(store: str) -> str:
    if not isinstance(store, str) or not store:
        raise ValueError(f"a store needs a non-empty name, got {store!r}")
    return store
