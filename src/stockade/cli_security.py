"""`stockade user unlock | lockouts | revoke`: account security from the command line.

These run beside a running server, on the same database (see docs/account-security.md):

    $ stockade user lockouts
    account alice@example.com   locked until 2025-01-31 10:15:00 UTC (840 s left)
    $ stockade user unlock alice@example.com
    unlocked alice@example.com
    $ stockade user revoke alice@example.com
    revoked every session of alice@example.com; a running server ends them within 10 s

`cli.py` dispatches here; the same exit statuses apply (0 done, 1 refused with the reason).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any, Callable

from .config import ServerConfig
from .core.clock import SystemClock
from .core.lockouts import STORE as LOCKOUT_STORE, LockoutRegistry, account_key, address_key
from .core.revocation import STORE as REVOCATION_STORE, SessionRevocation


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


async def security_command(config: ServerConfig, args: argparse.Namespace, open_accounts: Callable[..., Any],
                           split_jid: Callable[[str], tuple[str, str]], fail: Callable[..., int]) -> int:
    from .core.accounts import AccountError
    from .storage import StorageError
    host = username = key = ""
    try:
        if args.action == "unlock" and args.address:
            if args.jid:
                return fail("give either an account or --address, not both")
            try:
                key = address_key(args.address)
            except ValueError:
                return fail(f"{args.address!r} is not an IP address")
        elif args.action in ("unlock", "revoke"):
            if not args.jid:
                return fail("give the account (user@domain) or --address IP")
            host, username = split_jid(args.jid)
    except ValueError as exc:
        return fail(str(exc))
    try:
        storage, accounts = await open_accounts(config)
    except (StorageError, OSError) as exc:
        return fail(f"cannot open the database: {exc}")
    clock = SystemClock()
    try:
        if host:
            accounts.check_host(host)
            username = accounts.normalise_username(username)
            key = account_key(host, username)
        if args.action == "lockouts":
            locks = await LockoutRegistry(storage.map(LOCKOUT_STORE), clock).listed()
            if not locks:
                print("no account or address is locked")
            for lock in locks:
                left = lock.until - clock.time()
                print(f"{lock.kind:<8} {lock.subject:<32} locked until {_when(lock.until)} ({left:.0f} s left)")
        elif args.action == "unlock":
            subject = key.partition(":")[2]
            if not await LockoutRegistry(storage.map(LOCKOUT_STORE), clock).unlock(key):
                return fail(f"{subject} is not locked (see `stockade user lockouts`)")
            if accounts.audit is not None:
                await accounts.audit.record(host, "cli", "user.unlock", subject)
            print(f"unlocked {subject}")
        else:
            if not await storage.accounts.exists(host, username):
                return fail(f"{username}@{host} does not exist")
            await SessionRevocation(storage.map(REVOCATION_STORE), clock).revoke(host, username)
            if accounts.audit is not None:
                await accounts.audit.record(host, "cli", "user.revoke", f"{username}@{host}")
            print(f"revoked every session of {username}@{host}; a running server ends them within "
                  f"{config.server.account_check_interval:g} s (server.account_check_interval)")
        return 0
    except AccountError as exc:
        return fail(str(exc))
    finally:
        await storage.close()
