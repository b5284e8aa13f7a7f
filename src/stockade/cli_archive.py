"""`stockade archive ...`: the compliance journal from the command line (docs/compliance.md).

    $ stockade archive verify
    journal intact: 18250 records, last id 18250
    last hash 9f2c...e1
    checkpoints verified: 2 (signed by the key of /var/lib/stockade/keys/journal-signing.pem)
    purged records: 120 (emptied by retention; their place in the chain verified)
    $ stockade archive verify --public-key /safe/place/journal-signing.pub.pem

Runs beside a running server, on the same database. `cli.py` dispatches here; the same exit
statuses apply (0 intact, 1 broken or refused with the reason, 2 usage).

Subcommands: `add_parser` builds them all, `archive_command` dispatches by `args.action`; a new
subcommand is one more `asub.add_parser(...)` and one more branch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from .config import ServerConfig, resolve_path


def add_parser(sub: Any) -> None:
    """Add `archive` and all its subcommands to the `stockade` parser."""
    archive = sub.add_parser("archive", help="the compliance journal: verify its integrity, search and export it (eDiscovery)")
    asub = archive.add_subparsers(dest="action", required=True)
    p = asub.add_parser("verify", help="check the journal's whole hash chain and every signed checkpoint; "
                                       "exit 1 naming the first record changed, inserted or removed")
    p.add_argument("--public-key", type=Path,
                   help="PEM Ed25519 public key the checkpoints must be signed with (default: the "
                        "public half of journal.signing_key_path); keep a copy away from this server")
    # eDiscovery: `archive search`, `archive export` (cli_ediscovery.py)
    from .cli_ediscovery import add_parsers as add_ediscovery_parsers
    add_ediscovery_parsers(asub)


def signing_key_path(config: ServerConfig) -> Path:
    """The journal signing key's file (configured, or the generated default)."""
    from .compliance.journal_verify import DEFAULT_KEY_NAME
    given = config.journal.signing_key_path
    if given:
        return resolve_path(config, given)
    return resolve_path(config, config.server.data_dir) / "keys" / DEFAULT_KEY_NAME


async def open_storage(config: ServerConfig) -> Any:
    """The server's database (no data keys: verification reads no payload)."""
    from .storage import Storage
    data_dir = resolve_path(config, config.server.data_dir)
    url = config.storage.url or f"sqlite:///{data_dir / 'stockade.db'}"
    if not config.storage.url and not (data_dir / "stockade.db").exists():
        from .storage import StorageError
        raise StorageError(f"there is no database at {data_dir / 'stockade.db'}; check server.data_dir "
                           f"in {config.source}")
    return await Storage.open(url)


async def archive_command(config: ServerConfig, args: argparse.Namespace, fail: Callable[..., int]) -> int:
    if args.action == "verify":
        return await _verify(config, args, fail)
    if args.action in ("search", "export"):          # eDiscovery (cli_ediscovery.py)
        from .cli_ediscovery import ediscovery_command
        return await ediscovery_command(config, args, fail)
    return fail(f"unknown archive command {args.action!r}", 2)


async def _verify(config: ServerConfig, args: argparse.Namespace, fail: Callable[..., int]) -> int:
    from .compliance.journal_verify import (SigningKeyError, load_public_key, public_hex,
                                            verify_journal)
    from .storage import StorageError
    key_source = ""
    public_key = None
    try:
        if args.public_key is not None:
            public_key = load_public_key(args.public_key)
            key_source = f"the key in {args.public_key}"
        else:
            path = signing_key_path(config)
            if path.exists():
                public_key = load_public_key(path)
                key_source = f"the key of {path}"
    except SigningKeyError as exc:
        return fail(str(exc))
    try:
        storage = await open_storage(config)
    except (StorageError, OSError) as exc:
        return fail(f"cannot open the database: {exc}")
    try:
        result = await verify_journal(storage.journal, public_key)
    except StorageError as exc:
        return fail(f"cannot read the journal: {exc}")
    finally:
        await storage.close()
    if not result.is_intact:
        return fail(f"journal BROKEN: {result.problem}; the {result.count} record(s) before it "
                    f"verified; do not trust anything after record {result.last_id or 0} and keep "
                    f"this database as evidence")
    print(f"journal intact: {result.count} records, last id {result.last_id or 0}")
    print(f"last hash {result.last_hash}")
    if public_key is None:
        print(f"checkpoints verified: {result.checkpoints} (against the keys they name: no signing "
              f"key at {signing_key_path(config)}; give --public-key to check who signed them)")
    else:
        print(f"checkpoints verified: {result.checkpoints} (signed by {key_source}, "
              f"{public_hex(public_key)[:16]}...)")
    print(f"purged records: {result.purged} (emptied by retention; their place in the chain verified)")
    return 0
