"""Storage: accounts and the stores modules persist their data in (key-value, map, archive).

One SQL backend, SQLite by default (a file in the data directory) or PostgreSQL by URL, with
numbered migrations. Modules never touch SQL; they get a store by name:

    storage = await Storage.open("sqlite:///var/stockade.db")
    roster = storage.map("roster")
    await roster.set("example.com", "alice", "bob@example.com", {"subscription": "both"})
    item = await storage.archive("offline").append("example.com", "alice", "<message/>")

Where things are: `engine.py` (URLs, pools, every SQLite/PostgreSQL difference), `schema.py`
(tables), `migrate.py` and `migrations/` (schema versions), `accounts.py`, `stores.py` (key-value
and map), `archive.py` (archive and its group-commit writer), `archive_files.py` (the archive
in a file per worker process on SQLite), `keys.py` (time-ordered archive keys), `service.py`
(`Storage`).
"""

from stockade.protocol.sasl.scram import ScramCredential

from .accounts import AccountStore
from .archive import ArchiveItem, ArchiveStore
from .errors import AccountExists, StorageError
from .keys import new_key, time_prefix
from .service import Storage
from .stores import KeyValueStore, MapStore, get_together

__all__ = [
    "AccountExists", "AccountStore", "ArchiveItem", "ArchiveStore", "KeyValueStore", "MapStore",
    "ScramCredential", "Storage", "StorageError", "get_together", "new_key", "time_prefix",
]
