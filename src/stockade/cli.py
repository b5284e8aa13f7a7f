"""The `stockade` command: serve, manage users, check the configuration.

Exit status: 0 on success; 1 when the operation was refused (the one-line reason is printed);
2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .config import ConfigError, ServerConfig, load_config, resolve_path
from .protocol.jid import InvalidJid, parse_jid

DEMO_USERS = ("alice", "bob")


def _fail(message: str, status: int = 1) -> int:
    print(f"stockade: {message}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stockade", description="Stockade secure enterprise IM server (XMPP).")
    parser.add_argument("--config", "-c", type=Path, help="configuration file (TOML); default: built-in defaults")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--demo", action="store_true",
                       help="create demo accounts (alice, bob) on the first domain and print how to connect")

    user = sub.add_parser("user", help="manage accounts")
    usub = user.add_subparsers(dest="action", required=True)
    for action, text in (("add", "create an account"), ("passwd", "set a new password")):
        p = usub.add_parser(action, help=text)
        p.add_argument("jid", help="user@domain")
        p.add_argument("--password", help="the password (asked for when missing)")
    p = usub.add_parser("remove", help="delete an account and all its data")
    p.add_argument("jid", help="user@domain")
    p = usub.add_parser("list", help="list accounts")
    p.add_argument("--host", help="only this domain")
    p = usub.add_parser("unlock", help="end the lockout of an account (or, with --address, of a client address)")
    p.add_argument("jid", nargs="?", help="user@domain")
    p.add_argument("--address", help="a client IP address locked after too many failed logins")
    usub.add_parser("lockouts", help="list the accounts and addresses locked after failed logins")
    p = usub.add_parser("revoke", help="end every session of an account, resumable ones included")
    p.add_argument("jid", help="user@domain")

    imp = sub.add_parser("import", help="bulk import accounts and rosters (JSON or CSV)")
    imp.add_argument("file", type=Path, help="the file to import")
    imp.add_argument("--format", choices=("json", "csv"), help="default: from the file extension")

    audit = sub.add_parser("audit", help="read and verify the tamper-evident audit log")
    asub = audit.add_subparsers(dest="action", required=True)
    asub.add_parser("verify", help="check the whole hash chain; exit 1 naming the first bad entry")
    p = asub.add_parser("list", help="show entries, newest first")
    p.add_argument("--host", help="only this domain ('' for server-wide entries)")
    p.add_argument("--action", help="only this action, e.g. auth.failure")
    p.add_argument("--limit", type=int, default=50, help="at most this many entries (default 50)")
    p.add_argument("--before", type=int, help="only entries with ids below this one (paging)")

    dsync = sub.add_parser("directory", help="the company directory (LDAP)")
    dsub = dsync.add_subparsers(dest="action", required=True)
    p = dsub.add_parser("sync", help="synchronise accounts and groups with LDAP now")
    p.add_argument("--host", help="only this domain (default: every domain with a [hosts.directory] table)")

    group = sub.add_parser("group", help="manage groups (shared rosters)")
    gsub = group.add_subparsers(dest="action", required=True)
    p = gsub.add_parser("create", help="create a local group")
    p.add_argument("name", help="the group's name (unique on its domain)")
    p.add_argument("--display-name", default="", help="shown as the roster group (default: the name)")
    p.add_argument("--shared", action="store_true", help="members see each other in their rosters")
    for action, text in (("add", "add members"), ("remove", "remove members")):
        p = gsub.add_parser(action, help=text)
        p.add_argument("name", help="the group")
        p.add_argument("members", nargs="+", help="user names or user@domain addresses")
    p = gsub.add_parser("share", help="show the group in its members' rosters (or stop: --off)")
    p.add_argument("name", help="the group")
    p.add_argument("--off", action="store_true", help="stop sharing")
    p = gsub.add_parser("delete", help="delete a local group")
    p.add_argument("name", help="the group")
    gsub.add_parser("list", help="list groups and their members")
    for p in gsub.choices.values():
        p.add_argument("--host", help="the domain (needed when the server serves several)")

    from .cli_admin import add_parser as add_admin_parser
    add_admin_parser(sub)
    from .cli_archive import add_parser as add_archive_parser
    add_archive_parser(sub)
    from .cli_retention import add_parser as add_retention_parser
    add_retention_parser(sub)
    from .cli_keys import add_parser as add_keys_parser
    add_keys_parser(sub)

    check = sub.add_parser("check-config", help="validate the configuration and exit")
    del check
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .app import module_options
    try:
        config = load_config(args.config, module_options())
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", 2)
    if args.command == "check-config":
        print(f"{config.source}: ok ({len(config.hosts)} domain(s))")
        return 0
    if args.command == "user":
        return asyncio.run(_user_command(config, args))
    if args.command == "import":
        return asyncio.run(_import_command(config, args))
    if args.command == "audit":
        return asyncio.run(_audit_command(config, args))
    if args.command == "directory":
        return asyncio.run(_directory_command(config, args))
    if args.command == "group":
        return asyncio.run(_group_command(config, args))
    if args.command in ("retention", "hold"):
        from .cli_retention import retention_command
        return asyncio.run(retention_command(config, args, _open_groups, _split_jid, _fail))
    if args.command == "archive":
        from .cli_archive import archive_command
        return asyncio.run(archive_command(config, args, _fail))
    if args.command == "admin":
        from .cli_admin import admin_command
        return asyncio.run(admin_command(config, args, _fail))
    if args.command == "keys":
        from .cli_keys import keys_command
        return asyncio.run(keys_command(config, args, _fail))
    return _serve(config, demo=args.demo)


# -- users ------------------------------------------------------------------------------------
def _split_jid(text: str) -> tuple[str, str]:
    try:
        jid = parse_jid(text)
    except InvalidJid as exc:
        raise ValueError(f"{text!r} is not a valid address: {exc}") from None
    if jid.local is None or jid.resource is not None:
        raise ValueError(f"{text!r} is not an account address: use user@domain")
    return jid.domain, jid.local


def _read_password(jid: str) -> str | None:
    """Ask on the terminal; without one (a script, a pipe) read one line from standard input.
    None when nothing was given (end of input, Ctrl-C)."""
    try:
        if sys.stdin is not None and sys.stdin.isatty():
            password = getpass.getpass(f"password for {jid}: ")
        else:
            line = sys.stdin.readline() if sys.stdin is not None else ""
            if not line:
                return None
            password = line.rstrip("\r\n")
    except (EOFError, KeyboardInterrupt):
        return None
    return password or None


async def _open_accounts(config: ServerConfig):
    from .core.accounts import AccountService
    from .storage import Storage
    data_dir = resolve_path(config, config.server.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    from .storage.keyfile import load_keyring
    storage = await Storage.open(config.storage.url or f"sqlite:///{data_dir / 'stockade.db'}",
                                 keyring=load_keyring(config, data_dir))
    accounts = AccountService(storage, set(config.domains), iterations=config.auth.scram_iterations,
                              min_password_length=config.auth.min_password_length,
                              audit=_audit_log(storage), policy=_password_policy(config, storage))
    accounts.removal_guards.append(_hold_refusal(config, storage))
    return storage, accounts


def _hold_refusal(config: ServerConfig, storage: Any) -> Callable[[str, str], Awaitable[str | None]]:
    """The legal-hold check of an account removal, as the server makes it (compliance/holds.py)."""
    async def refusal(host: str, username: str) -> str | None:
        from .compliance.holds import STORE, LegalHolds
        from .core.clock import SystemClock
        from .directory.groups import GroupService
        groups = GroupService(storage, set(config.domains))
        await groups.load()
        holds = LegalHolds(storage.map(STORE), groups, None, SystemClock(), set(config.domains))
        return await holds.removal_refusal(host, username)
    return refusal


def _storage_problem(config: ServerConfig, exc: Exception) -> str:
    """What went wrong opening the database or its data folder, and what to check."""
    from .storage import StorageError
    if isinstance(exc, StorageError):
        return f"cannot open the database: {exc}"
    data_dir = resolve_path(config, config.server.data_dir)
    filename = getattr(exc, "filename", None)
    return (f"cannot use the data folder {data_dir}: {getattr(exc, 'strerror', None) or exc}"
            f"{f' ({filename})' if filename else ''}; check server.data_dir in {config.source}")


def _password_policy(config: ServerConfig, storage):
    from .core.password_policy import HISTORY_STORE, PasswordPolicy
    return PasswordPolicy.from_config(config, storage.keyval(HISTORY_STORE))


def _audit_log(storage):
    from .compliance.audit import AuditLog
    from .core.clock import SystemClock
    return AuditLog(storage.audit, SystemClock())


async def _user_command(config: ServerConfig, args: argparse.Namespace) -> int:
    from .core.accounts import AccountError
    from .storage import StorageError
    if args.action in ("unlock", "lockouts", "revoke"):
        from .cli_security import security_command
        return await security_command(config, args, _open_accounts, _split_jid, _fail)
    try:
        host, username = _split_jid(args.jid) if args.action != "list" else ("", "")
    except ValueError as exc:
        return _fail(str(exc))
    if args.action in ("add", "passwd") and args.password is None:
        args.password = _read_password(args.jid)
        if args.password is None:
            return _fail("no password given: use --password PW, type it when asked, or pipe it on standard input")
    try:
        storage, accounts = await _open_accounts(config)
    except (StorageError, OSError) as exc:
        return _fail(_storage_problem(config, exc))
    try:
        if args.action == "add":
            name = await accounts.create(host, username, args.password, actor="cli")
            print(f"created {name}@{host}")
        elif args.action == "passwd":
            await accounts.set_password(host, username, args.password, actor="cli")
            print(f"password changed for {username}@{host}")
        elif args.action == "remove":
            await accounts.remove(host, username, actor="cli")
            print(f"removed {username}@{host}")
        else:
            if args.host and args.host not in config.domains:
                return _fail(f"{args.host!r} is not a domain this server serves")
            for h, u in await accounts.list(args.host):
                print(f"{u}@{h}")
        return 0
    except AccountError as exc:
        return _fail(str(exc))
    finally:
        await storage.close()


async def _import_command(config: ServerConfig, args: argparse.Namespace) -> int:
    from .directory.importer import ImportProblem, load_file, run_import
    from .storage import StorageError
    fmt = args.format or ("csv" if args.file.suffix.lower() == ".csv" else "json")
    try:
        text = args.file.read_text(encoding="utf-8")
    except OSError as exc:
        return _fail(f"cannot read {args.file}: {exc.strerror}")
    try:
        data = load_file(text, fmt)
        storage, accounts = await _open_accounts(config)
    except ImportProblem as exc:
        return _fail(f"{args.file}: {exc}")
    except StorageError as exc:
        return _fail(f"cannot open the database: {exc}")
    try:
        report = await run_import(storage, data, set(config.domains), iterations=config.auth.scram_iterations,
                                  min_password=config.auth.min_password_length,
                                  check_password=lambda host, user, password: accounts.check_password(password, host, user))
    except ImportProblem as exc:
        return _fail(f"{args.file}: {exc}; nothing was imported")
    finally:
        await storage.close()
    print(f"imported {len(report.created)} account(s), {report.roster_items} roster item(s)"
          + (f"; {len(report.existing)} account(s) already existed and were left unchanged" if report.existing else ""))
    return 0


# -- audit log --------------------------------------------------------------------------------
async def _audit_command(config: ServerConfig, args: argparse.Namespace) -> int:
    import json
    import time
    from .storage import StorageError
    if args.action == "list" and args.limit < 1:
        return _fail(f"--limit must be at least 1, got {args.limit}")
    try:
        storage, accounts = await _open_accounts(config)
    except (StorageError, OSError) as exc:
        return _fail(_storage_problem(config, exc))
    try:
        audit = _audit_log(storage)
        if args.action == "verify":
            result = await audit.verify()
            if not result.is_intact:
                return _fail(f"audit log BROKEN at entry {result.bad_id}: {result.reason} "
                             f"({result.count} entries before it are intact)")
            print(f"audit log intact: {result.count} entries, last hash {result.last_hash}")
            return 0
        for entry in await audit.entries(args.host, action=args.action, limit=args.limit,
                                         before_id=args.before):
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["ts"]))
            detail = json.dumps(entry["detail"], sort_keys=True, ensure_ascii=False)
            print(f"{entry['id']} {when} {entry['host'] or '-'} {entry['actor']} {entry['action']} "
                  f"{entry['target']} {detail}")
        return 0
    except StorageError as exc:
        return _fail(f"cannot read the audit log: {exc}")
    finally:
        await storage.close()


# -- directory and groups ---------------------------------------------------------------------
async def _open_groups(config: ServerConfig):
    """Storage, accounts and groups (groups removed with an account follow it, as in the server)."""
    from .directory.groups import GroupService
    storage, accounts = await _open_accounts(config)
    groups = GroupService(storage, set(config.domains))
    await groups.load()
    accounts.on_removed.append(groups.member_removed)
    return storage, accounts, groups


async def _directory_command(config: ServerConfig, args: argparse.Namespace) -> int:
    from .directory.sync import DirectoryService, DirectoryUnavailable
    from .storage import StorageError
    with_directory = [h.domain for h in config.hosts if h.directory is not None]
    if args.host and args.host not in config.domains:
        return _fail(f"{args.host!r} is not a domain this server serves")
    if args.host and args.host not in with_directory:
        return _fail(f"{args.host} has no directory: add a [hosts.directory] table to it in {config.source}")
    if not with_directory:
        return _fail(f"no domain has a directory: add a [hosts.directory] table to a [[hosts]] entry in {config.source}")
    try:
        storage, accounts, groups = await _open_groups(config)
    except (StorageError, OSError) as exc:
        return _fail(f"cannot open the database: {exc}")
    # Failures are printed below, with the server and reason: keep the log from repeating them.
    log = logging.getLogger("stockade.directory")
    quiet, propagate = logging.NullHandler(), log.propagate
    log.addHandler(quiet)
    log.propagate = False
    status = 0
    try:
        directory = DirectoryService(config, storage, accounts, groups)
        await directory.load()
        for host in [args.host] if args.host else with_directory:
            try:
                report = await directory.sync(host)
            except DirectoryUnavailable as exc:
                _fail(f"directory sync of {host} failed, nothing was changed: {exc}")
                status = 1
                continue
            print(report.summary())
            for text in report.conflicts + report.warnings:
                print(f"  warning: {text}")
    except ConfigError as exc:
        return _fail(f"configuration error: {exc}", 2)
    finally:
        log.removeHandler(quiet)
        log.propagate = propagate
        await storage.close()
    return status


def _group_host(config: ServerConfig, host: str | None) -> str:
    if host:
        if host not in config.domains:
            raise ValueError(f"{host!r} is not a domain this server serves")
        return host
    if len(config.domains) != 1:
        raise ValueError(f"this server serves several domains ({', '.join(config.domains)}): name one with --host")
    return config.domains[0]


def _member_names(host: str, members: list[str]) -> list[str]:
    names = []
    for text in members:
        if "@" in text:
            domain, username = _split_jid(text)
            if domain != host:
                raise ValueError(f"{text} is not on {host}: a group's members are accounts of its own domain")
            names.append(username)
        else:
            names.append(text)
    return names


async def _group_command(config: ServerConfig, args: argparse.Namespace) -> int:
    from .directory.groups import GroupError
    from .storage import StorageError
    try:
        host = _group_host(config, args.host)
        members = _member_names(host, args.members) if args.action in ("add", "remove") else []
    except ValueError as exc:
        return _fail(str(exc))
    try:
        storage, accounts, groups = await _open_groups(config)
    except (StorageError, OSError) as exc:
        return _fail(f"cannot open the database: {exc}")
    try:
        if args.action == "create":
            group = await groups.create(host, args.name, name=args.display_name, shared=args.shared)
            print(f"created group {group.id} on {host}" + (" (shared)" if group.shared else ""))
        elif args.action in ("add", "remove"):
            if groups.get(host, args.name) is None:
                return _fail(f"there is no group {args.name!r} on {host}; create it first (stockade group create)")
            names = groups.normalise_members(members)
            if args.action == "add":
                missing = [n for n in sorted(names) if not await accounts.exists(host, n)]
                if missing:
                    return _fail(f"no such account(s) on {host}: {', '.join(missing)}; nothing was changed")
                group = await groups.set_members(host, args.name, add=sorted(names))
            else:
                group = await groups.set_members(host, args.name, remove=sorted(names))
            print(f"{group.id}: {len(group.members)} member(s)")
        elif args.action == "share":
            group = await groups.set_shared(host, args.name, not args.off)
            print(f"{group.id} is {'now' if group.shared else 'no longer'} shown in its members' rosters")
        elif args.action == "delete":
            await groups.delete(host, args.name)
            print(f"deleted group {args.name} on {host}")
        else:
            for group in groups.list(host):
                flags = ", ".join(f for f in ("shared" if group.shared else "", group.source) if f)
                print(f"{group.id} ({group.name}; {flags}): {', '.join(sorted(group.members)) or '-'}")
        return 0
    except GroupError as exc:
        return _fail(str(exc))
    finally:
        await storage.close()


# -- serving ----------------------------------------------------------------------------------
GC_YOUNG_THRESHOLD = 20_000        # allocations between two young-generation collections (default 700)

def _serve(config: ServerConfig, demo: bool) -> int:
    from .worker_node import spec_from_environment
    worker = spec_from_environment()        # set when worker 0 started this process
    # Several worker processes write to the same log: each line says which one wrote it.
    where = f" [worker {worker.index if worker else 0}]" if config.server.workers > 1 else ""
    logging.basicConfig(level=config.server.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s{where} %(name)s: %(message)s", stream=sys.stderr)
    if config.server.use_uvloop:
        try:
            import uvloop
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    try:
        return asyncio.run(_run(config, demo, worker))
    except KeyboardInterrupt:
        return 0


async def _run(config: ServerConfig, demo: bool, worker: Any = None) -> int:
    """Serve until stopped. `worker`: the net.workers.WorkerSpec of a worker that worker 0
    started (it prints nothing and creates no demo accounts)."""
    from .app import Server
    from .net.listener import ListenError
    from .net.tls import TlsError
    from .storage import StorageError
    server = Server(config, worker=worker)
    try:
        await server.start()
    except ConfigError as exc:
        if server.storage is not None:
            await server.storage.close()
        return _fail(f"configuration error: {exc}", 2)
    except (ListenError, TlsError, StorageError, OSError) as exc:
        if server.storage is not None:
            await server.storage.close()
        return _fail(f"cannot start: {exc}")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
    _tune_garbage_collector()
    if worker is not None:
        await server.wait_stopped()
        return 1 if server.failure else 0
    if demo:
        await _demo_accounts(server)
    print(f"Stockade is running: c2s port {server.ports['c2s']} (STARTTLS)"
          + (f", {server.ports['c2s_direct_tls']} (direct TLS)" if "c2s_direct_tls" in server.ports else "")
          + (f", {config.server.workers} worker processes" if config.server.workers > 1 else ""), flush=True)
    await server.wait_stopped()
    if server.failure:
        return _fail(f"stopped: {server.failure}")
    return 0


def _tune_garbage_collector() -> None:
    """Everything built at start (configuration, modules, account caches, compiled patterns) lives
    as long as the server: move it out of the collector's sight (gc.freeze), and collect the
    young generation less often. A busy server allocates a few objects per stanza, most freed at
    once by reference counting; with the default thresholds the cyclic collector ran every few
    hundred stanzas, and its older generations walked the whole heap."""
    import gc
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


async def _demo_accounts(server) -> None:
    """Create the demo accounts once; their passwords are kept (mode 0600) in the data folder."""
    domain = server.config.domains[0]
    path = server.data_dir / "demo-accounts.txt"
    known: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            user, _, password = line.partition(" ")
            known[user] = password
    for user in DEMO_USERS:
        if user not in known or not server.accounts.exists_cached(domain, user):
            password = known.get(user) or secrets.token_urlsafe(9)
            if server.accounts.exists_cached(domain, user):
                await server.accounts.set_password(domain, user, password)
            else:
                await server.accounts.create(domain, user, password)
            known[user] = password
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{u} {p}\n" for u, p in known.items()))
    port = server.ports["c2s"]
    print("\nDemo accounts (kept in %s):" % path)
    for user in DEMO_USERS:
        print(f"  {user}@{domain}   password: {known[user]}")
    print(f"\nConnect any XMPP client to 127.0.0.1 port {port} (STARTTLS; the certificate is self-signed:\n"
          f"  {server.cert_path}). For example, with profanity:\n"
          f"  /connect alice@{domain} server 127.0.0.1 port {port} tls trust\n", flush=True)


if __name__ == "__main__":
    sys.exit(main())
