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
from pathlib import Path

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

    imp = sub.add_parser("import", help="bulk import accounts and rosters (JSON or CSV)")
    imp.add_argument("file", type=Path, help="the file to import")
    imp.add_argument("--format", choices=("json", "csv"), help="default: from the file extension")

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
    storage = await Storage.open(config.storage.url or f"sqlite:///{data_dir / 'stockade.db'}")
    return storage, AccountService(storage, set(config.domains), iterations=config.auth.scram_iterations,
                                   min_password_length=config.auth.min_password_length)


async def _user_command(config: ServerConfig, args: argparse.Namespace) -> int:
    from .core.accounts import AccountError
    from .storage import StorageError
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
    except StorageError as exc:
        return _fail(f"cannot open the database: {exc}")
    except OSError as exc:
        data_dir = resolve_path(config, config.server.data_dir)
        return _fail(f"cannot use the data folder {data_dir}: {exc.strerror or exc}"
                     f"{f' ({exc.filename})' if exc.filename else ''}; check server.data_dir in {config.source}")
    try:
        if args.action == "add":
            name = await accounts.create(host, username, args.password)
            print(f"created {name}@{host}")
        elif args.action == "passwd":
            await accounts.set_password(host, username, args.password)
            print(f"password changed for {username}@{host}")
        elif args.action == "remove":
            await accounts.remove(host, username)
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
        storage, _accounts = await _open_accounts(config)
    except ImportProblem as exc:
        return _fail(f"{args.file}: {exc}")
    except StorageError as exc:
        return _fail(f"cannot open the database: {exc}")
    try:
        report = await run_import(storage, data, set(config.domains), iterations=config.auth.scram_iterations,
                                  min_password=config.auth.min_password_length)
    except ImportProblem as exc:
        return _fail(f"{args.file}: {exc}; nothing was imported")
    finally:
        await storage.close()
    print(f"imported {len(report.created)} account(s), {report.roster_items} roster item(s)"
          + (f"; {len(report.existing)} account(s) already existed and were left unchanged" if report.existing else ""))
    return 0


# -- serving ----------------------------------------------------------------------------------
def _serve(config: ServerConfig, demo: bool) -> int:
    logging.basicConfig(level=config.server.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if config.server.use_uvloop:
        try:
            import uvloop
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    try:
        return asyncio.run(_run(config, demo))
    except KeyboardInterrupt:
        return 0


async def _run(config: ServerConfig, demo: bool) -> int:
    from .app import Server
    from .net.listener import ListenError
    from .net.tls import TlsError
    from .storage import StorageError
    server = Server(config)
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
    if demo:
        await _demo_accounts(server)
    print(f"Stockade is running: c2s port {server.ports['c2s']} (STARTTLS)"
          + (f", {server.ports['c2s_direct_tls']} (direct TLS)" if "c2s_direct_tls" in server.ports else ""),
          flush=True)
    await server.wait_stopped()
    return 0


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
