"""Command line of the load generator: one scenario against one server, results as JSON.

    python -m bench.loadgen one_to_one --port 5222 --credentials keys.json --pairs 500 --window 50
    python -m bench.loadgen --help              # every scenario and its parameters

The credentials file maps each user to [password, base64 salt, iterations, hex salted password]
(bench.dataset writes it); the salted passwords go into the SCRAM cache before anything is timed.
Every scenario parameter (see bench/loadgen/scenarios.py) is a --flag with the default shown.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import inspect
import json
import sys
from pathlib import Path

from .scenarios import SCENARIOS, Env
from .scram import SaltedPasswords
from .xmpp import client_tls_context


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="scenario", required=True)
    for name, func in SCENARIOS.items():
        p = sub.add_parser(name, help=(func.__doc__ or "").split("\n")[0])
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--domain", default="bench.local")
        p.add_argument("--muc-domain", default=None, help="default: conference.<domain>")
        p.add_argument("--credentials", type=Path, required=True)
        p.add_argument("--tls", action="store_true", help="STARTTLS before authenticating")
        p.add_argument("--server-pid", type=int, default=None, help="to read the server's CPU and memory")
        p.add_argument("--login-concurrency", type=int, default=100, help="logins in flight while setting up")
        p.add_argument("--json-out", type=Path, default=None, help="write the result here (default: stdout)")
        for pname, param in inspect.signature(func).parameters.items():
            if pname == "env":
                continue
            p.add_argument("--" + pname.replace("_", "-"), dest="param_" + pname, type=type(param.default),
                           default=param.default, help=f"default {param.default}")
    return parser


def load_credentials(path: Path, salted: SaltedPasswords) -> dict[str, tuple[str, bytes, int]]:
    """Read the provisioned credentials and fill the PBKDF2 cache (done before anything is timed)."""
    creds: dict[str, tuple[str, bytes, int]] = {}
    for user, (password, salt_b64, iterations, salted_hex) in json.loads(path.read_text()).items():
        salt = base64.b64decode(salt_b64)
        creds[user] = (password, salt, iterations)
        salted.add(password, salt, iterations, bytes.fromhex(salted_hex))
    return creds


async def _run(args: argparse.Namespace) -> dict:
    salted = SaltedPasswords()
    env = Env(host=args.host, port=args.port, domain=args.domain,
              muc_domain=args.muc_domain or f"conference.{args.domain}",
              credentials=load_credentials(args.credentials, salted), salted=salted,
              tls=client_tls_context() if args.tls else None, server_pid=args.server_pid,
              concurrency=args.login_concurrency)
    params = {k[len("param_"):]: v for k, v in vars(args).items() if k.startswith("param_")}
    result = await SCENARIOS[args.scenario](env, **params)
    return {"scenario": args.scenario, "params": params, "tls": args.tls, **result}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import uvloop
    except ImportError:
        uvloop = None
        print("bench.loadgen: uvloop is not installed; running on the default event loop", file=sys.stderr)
    result = uvloop.run(_run(args)) if uvloop is not None else asyncio.run(_run(args))
    text = json.dumps(result, indent=1)
    if args.json_out:
        args.json_out.write_text(text)
    else:
        print(text)
    return 1 if result.get("failures") or result.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
