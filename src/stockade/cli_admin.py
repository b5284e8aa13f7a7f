"""`stockade admin ...`: administrator identities and API tokens (docs/admin.md).

    $ stockade admin create ops --role operator            # asks for the password twice
    created admin ops (operator, every host)
    scan this in an authenticator app, then log in to /admin with its 6-digit codes:
    otpauth://totp/Stockade:ops?secret=...&issuer=Stockade
    $ stockade admin create desk --role helpdesk --host example.com --password-stdin < pw.txt
    $ stockade admin list
    $ stockade admin token ops --scope users.read --scope sessions.read --expires 30
    stk_...          (shown once: store it now)

Runs beside a running server, on the same database. `cli.py` dispatches here; the same exit
statuses apply (0 done, 1 refused with the reason, 2 usage).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import datetime, timezone
from typing import Any, Callable

from .admin.roles import ALL_PERMISSIONS, ROLES
from .config import ServerConfig, resolve_path


def add_parser(sub: Any) -> None:
    admin = sub.add_parser("admin", help="administrators of the admin API and console")
    asub = admin.add_subparsers(dest="action", required=True)
    p = asub.add_parser("create", help="create an administrator")
    p.add_argument("name", help="the admin's login name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--host", action="append", default=[], help="a host it manages (repeat; not for operators)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--no-totp", action="store_true", help="no second factor (not recommended)")
    asub.add_parser("list", help="list administrators")
    p = asub.add_parser("remove", help="remove an administrator and its tokens")
    p.add_argument("name")
    p = asub.add_parser("passwd", help="set a new console password for an administrator (a forgotten one)")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p = asub.add_parser("reset-totp", help="give an administrator a new authenticator secret (a lost phone)")
    p.add_argument("name")
    p.add_argument("--no-totp", action="store_true", help="remove the second factor instead (not recommended)")
    p = asub.add_parser("token", help="create an API token for an administrator (printed once)")
    p.add_argument("name", help="the admin the token acts as")
    p.add_argument("--scope", action="append", default=[], choices=(*ALL_PERMISSIONS, "all"),
                   help="a permission the token carries (repeat); 'all': every permission of the admin's role")
    p.add_argument("--expires", type=float, default=30, help="days until it expires (default 30, at most 365)")
    p.add_argument("--note", default="", help="what the token is for")
    p = asub.add_parser("revoke-token", help="revoke an API token by its id")
    p.add_argument("name", help="the admin who owns it")
    p.add_argument("token_id")


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _read_new_password(name: str, from_stdin: bool) -> str | None:
    try:
        if from_stdin or sys.stdin is None or not sys.stdin.isatty():
            line = sys.stdin.readline() if sys.stdin is not None else ""
            return line.rstrip("\r\n") or None
        first = getpass.getpass(f"password for admin {name}: ")
        if first != getpass.getpass("again: "):
            print("stockade: the two passwords differ", file=sys.stderr)
            return None
        return first or None
    except (EOFError, KeyboardInterrupt):
        return None


async def admin_command(config: ServerConfig, args: argparse.Namespace, fail: Callable[..., int]) -> int:
    from .admin.identities import AdminDirectory, AdminError, principal_of
    from .core.clock import SystemClock
    from .compliance.audit import AuditLog
    from .storage import Storage, StorageError
    if args.action in ("create", "passwd"):
        password = _read_new_password(args.name, args.password_stdin)
        if password is None:
            return fail("no password given: type it when asked, or pipe it with --password-stdin")
    data_dir = resolve_path(config, config.server.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        from .storage.keyfile import load_keyring
        storage = await Storage.open(config.storage.url or f"sqlite:///{data_dir / 'stockade.db'}",
                                     keyring=load_keyring(config, data_dir))
    except (StorageError, OSError) as exc:
        return fail(f"cannot open the database: {exc}")
    clock = SystemClock()
    directory = AdminDirectory(storage, clock, config.domains)
    audit = AuditLog(storage.audit, clock)
    try:
        if args.action == "create":
            account, uri = await directory.create(args.name, args.role, args.host, password,
                                                  with_totp=not args.no_totp)
            scope = "every host" if args.role == "operator" else ", ".join(account.hosts)
            await audit.record("", "cli", "admin.create", account.name, after={"role": account.role,
                                                                                "hosts": list(account.hosts)})
            print(f"created admin {account.name} ({account.role}, {scope})")
            if uri:
                print("scan this in an authenticator app, then log in to /admin with its 6-digit codes:")
                print(uri)
            else:
                print("no second factor: console logins need only the password")
        elif args.action == "list":
            for account in await directory.list():
                hosts = "every host" if "*" in account.hosts else ", ".join(account.hosts)
                mfa = "TOTP" if account.has_mfa else "no MFA"
                print(f"{account.name:<20} {account.role:<13} {mfa:<7} {hosts}")
        elif args.action == "passwd":
            await directory.set_password(args.name, password)
            await audit.record("", "cli", "admin.password", args.name)
            print(f"password changed for admin {args.name}")
        elif args.action == "reset-totp":
            uri = await directory.reset_totp(args.name, with_totp=not args.no_totp)
            await audit.record("", "cli", "admin.totp.reset", args.name, after={"mfa": uri is not None})
            if uri:
                print(f"new authenticator secret for admin {args.name}; the old codes no longer work. Scan this:")
                print(uri)
            else:
                print(f"admin {args.name} has no second factor now: console logins need only the password")
        elif args.action == "remove":
            await directory.remove(args.name)
            await audit.record("", "cli", "admin.remove", args.name)
            print(f"removed admin {args.name} and its tokens")
        elif args.action == "token":
            account = await directory.get(args.name)
            if account is None:
                return fail(f"there is no admin {args.name}; create it with `stockade admin create`")
            creator = principal_of(account)
            scopes = sorted(creator.permissions) if "all" in args.scope or not args.scope else args.scope
            token, info = await directory.create_token(creator, scopes, args.expires, args.note)
            await audit.record("", "cli", "admin.token.create", account.name,
                               after={"id": info.id, "scopes": list(info.scopes), "expires": info.expires})
            print(token)
            print(f"token {info.id} for {account.name}, scopes {', '.join(info.scopes)}, "
                  f"expires {_when(info.expires)}; shown once: store it now", file=sys.stderr)
        elif args.action == "revoke-token":
            if not await directory.revoke_token(args.name, args.token_id):
                return fail(f"{args.name} has no token {args.token_id}")
            await audit.record("", "cli", "admin.token.revoke", args.name, before={"id": args.token_id})
            print(f"revoked token {args.token_id}")
    except AdminError as exc:
        return fail(str(exc))
    finally:
        await storage.close()
    return 0
