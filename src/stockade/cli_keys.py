"""`stockade keys status | rotate`: the master keys of encryption at rest (docs/encryption.md).

    $ stockade keys status
    master key 9f8e7d6c (current)        in /var/lib/stockade/keys/master.key
    data key 1  created 2025-01-31 10:15:00 UTC  wrapped by 1a2b3c4d
    $ stockade keys rotate
    rotated: master key 9f8e7d6c replaces 1a2b3c4d; 2 data key(s) rewrapped ...

Rotation works while the server runs: the server keeps the data keys it unwrapped at start,
and loads the new data key that the rotation makes when it meets data sealed with it. The
steps, each safe to be interrupted: (1) the key file gets the new key as its last (current)
line, the old ones kept; (2) every data key is rewrapped with the new key, and a new data key
added, in one transaction; (3) the key file is rewritten with the new key alone. Both writes
of the file are atomic (temporary file, fsync, rename; mode 0600). Interrupted after (1), the
file holds both keys and everything still opens; run the rotation again.

With encryption.master_key_env the keys are in the server's environment, which a command
cannot change: rotation refuses, and docs/encryption.md says how to rotate by hand.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any, Callable

from .config import ServerConfig, resolve_path


def add_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="the master keys of encryption at rest")
    ksub = keys.add_subparsers(dest="action", required=True)
    ksub.add_parser("status", help="list the master keys of the key file and the data keys they wrap")
    ksub.add_parser("rotate", help="replace the master key: rewrap every data key (works while the server runs)")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


async def keys_command(config: ServerConfig, args: argparse.Namespace, fail: Callable[..., int]) -> int:
    from .storage import Storage, StorageError
    from .storage.crypto import KeyFileError
    from .storage.keyfile import key_file_path, load_keyring, read_key_file
    section = config.encryption
    if not section.enabled:
        return fail(f"encryption at rest is off (encryption.enabled = false in {config.source}): "
                    "there are no master keys to show or rotate")
    if args.action == "rotate" and section.master_key_env:
        return fail(f"the master key is in the environment variable {section.master_key_env} "
                    f"(encryption.master_key_env in {config.source}), which this command cannot change; "
                    "to rotate, move the key into a key file (encryption.master_key_path) and run "
                    "`stockade keys rotate` again (docs/encryption.md)")
    data_dir = resolve_path(config, config.server.data_dir)
    try:
        if section.master_key_env:
            keyring = load_keyring(config, data_dir)
        else:
            path = key_file_path(config, data_dir)
            if not path.exists():
                return fail(f"there is no master key file {path} yet: `stockade serve` makes it at its "
                            "first start (or set encryption.master_key_path to your key file)")
            keyring = read_key_file(path)
    except KeyFileError as exc:
        return fail(str(exc))
    assert keyring is not None
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # Without a keyring: this command reads and rewraps the data keys itself, and must not
        # make a data key of its own on opening.
        storage = await Storage.open(config.storage.url or f"sqlite:///{data_dir / 'stockade.db'}")
    except (StorageError, OSError) as exc:
        return fail(f"cannot open the database: {exc}")
    try:
        if args.action == "status":
            return await _status(storage, keyring)
        return await _rotate(storage, keyring, fail)
    except KeyFileError as exc:
        return fail(str(exc))
    except StorageError as exc:
        return fail(f"the database refused: {exc}")
    finally:
        await storage.close()


async def _status(storage: Any, keyring: Any) -> int:
    for key_id in keyring.ids:
        mark = " (current)" if key_id == keyring.current_id else ""
        print(f"master key {key_id}{mark}  in {keyring.source}")
    rows = await storage.data_keys.all()
    if not rows:
        print("no data keys yet: the server makes the first one at its first start")
    for key_id, _wrapped, master_id, created in rows:
        missing = "" if master_id in keyring.keys else "  MISSING from the key file: restore it from your backup"
        print(f"data key {key_id}  created {_when(created)}  wrapped by {master_id}{missing}")
    return 0


async def _rotate(storage: Any, keyring: Any, fail: Callable[..., int]) -> int:
    from .compliance.audit import AuditLog
    from .core.clock import SystemClock
    from .storage.keyfile import new_master_key, read_key_file, write_key_file
    path = keyring.path
    old_keys = list(keyring.keys.values())
    old_ids = keyring.ids
    # Check first that the file opens every data key: refuse before anything is changed.
    for key_id, wrapped, master_id, _created in await storage.data_keys.all():
        keyring.unwrap(key_id, wrapped, master_id)
    new_key = new_master_key()
    try:
        write_key_file(path, old_keys + [new_key])
    except OSError as exc:
        return fail(f"cannot write the master key file {path}: {exc.strerror}; nothing was changed")
    both = read_key_file(path)
    try:
        rewrapped = await storage.data_keys.rewrap(both)
    except BaseException:
        write_key_file(path, old_keys)          # the rewrap did not commit: back to the old file
        raise
    try:
        write_key_file(path, [new_key])
    except OSError as exc:
        return fail(f"the data keys are rewrapped with the new master key {both.current_id}, but the old "
                    f"key(s) could not be removed from {path}: {exc.strerror}; the file still works; "
                    "run the rotation again to remove them")
    new_data_key = max(row[0] for row in await storage.data_keys.all())
    await AuditLog(storage.audit, SystemClock()).record(
        "", "cli", "keys.rotate", both.current_id,
        before={"master_keys": old_ids}, after={"master_keys": [both.current_id], "data_keys": rewrapped})
    print(f"rotated: master key {both.current_id} replaces {', '.join(old_ids)} in {path}; "
          f"{len(rewrapped)} data key(s) rewrapped; data key {new_data_key} is made for new writes "
          "(a running server goes on with its current data key until it restarts). "
          "Back up the key file now.")
    return 0
