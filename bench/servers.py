"""Throwaway servers for the benchmark: the common part (ports, pinning, start, stop by PID,
temp dirs) and Stockade itself. Prosody and ejabberd are in bench/peers.py.

Every server:
- listens on 127.0.0.1 only, on a free port below the ephemeral range (so the generator's own
  outgoing connections can never take it), with the benchmark's plaintext c2s listener;
- runs pinned to one core (`taskset -c SERVER_CORE`), in a temp dir removed at `cleanup()`;
- is provisioned once (outside every timed run) and then started and stopped for each
  measurement, so every measurement begins with the same accounts and rosters (what a
  measurement stores stays: Stockade's archive grows from one 1:1 measurement to the next);
- is stopped by its PID (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import dataset
from .dataset import Dataset

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
# The server runs on SERVER_CORE, the generator on GENERATOR_CORE (BENCH_SERVER_CORE and
# BENCH_GENERATOR_CORE in the environment change them: two runs side by side, one per core, show
# what the machine itself gives a second busy core).
SERVER_CORE = int(os.environ.get("BENCH_SERVER_CORE", "0"))
GENERATOR_CORE = int(os.environ.get("BENCH_GENERATOR_CORE", "1"))
PORT_RANGE = (20001, 29999)      # below ip_local_port_range (32768-60999): never an outgoing port
BACKLOG = 1024                   # listen backlog every server gets (Stockade's built-in value)
MAX_STANZA_SIZE = 262144         # bytes; the same limit on every server (their common default)
START_TIMEOUT = 60.0             # seconds a server may take to start listening
STOP_GRACE = 15.0                # seconds between SIGTERM and SIGKILL
PROBE_INTERVAL = 0.05            # seconds between two connection attempts while a server starts


class ServerError(Exception):
    """A server could not be provisioned or started; the text says why and where its log is."""


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port() -> int:
    """A random free odd port in PORT_RANGE."""
    for _ in range(1000):
        port = random.randrange(PORT_RANGE[0] | 1, PORT_RANGE[1], 2)
        if port_free(port):
            return port
    raise ServerError("no free port found")


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def pinned(cmd: list[str], core: int) -> list[str]:
    """`cmd` run on one core; taskset execs, so the PID stays the server's own."""
    return ["taskset", "-c", str(core), *cmd] if shutil.which("taskset") else cmd


def make_certificate(directory: Path, domain: str) -> tuple[Path, Path]:
    """A throwaway ECDSA P-256 certificate for `domain` and its MUC service (all servers use it)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{domain}.crt", directory / f"{domain}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "7", "-subj", f"/CN={domain}",
                    "-addext", f"subjectAltName=DNS:{domain},DNS:conference.{domain},DNS:pubsub.{domain}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class Server:
    """One server under test. Subclasses write the config, provision, and say how to start."""

    name = "server"
    #: one line for the report: what is loaded
    description = ""

    def __init__(self, data: Dataset) -> None:
        self.data = data
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name.split()[0].lower()}-"))
        self.port = pick_port()
        self.cert, self.key = make_certificate(self.dir / "certs", dataset.DOMAIN)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "server.log"
        self.provision_seconds = 0.0

    # -- subclass interface ---------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def provision(self) -> None:
        """Create every account and roster (untimed). Called once, before the first start."""
        raise NotImplementedError

    def failed_to_listen(self) -> bool:
        """Whether the log shows that the listener could not be opened (some servers keep running)."""
        return False

    def version(self) -> str:
        return "?"

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, core: int | None = SERVER_CORE, probe: bool = True) -> None:
        """Start, wait until the c2s port accepts connections and (`probe`) one account can log in."""
        cmd = self.command()
        if core is not None:
            cmd = pinned(cmd, core)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.dir, env=self.environment())
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.proc.returncode} while starting; see {self.log_path}:\n"
                                  + self.log_tail())
            if self.failed_to_listen():
                self.stop()
                raise ServerError(f"{self.name} could not open port {self.port}; see {self.log_path}")
            if listening(self.port):
                if probe:
                    self.probe_login(deadline)
                return
            time.sleep(PROBE_INTERVAL)     # nothing to wait on: the server gives no other signal
        self.stop()
        raise ServerError(f"{self.name} did not listen on {self.port} within {START_TIMEOUT:.0f} s; see {self.log_path}")

    def probe_login(self, deadline: float) -> None:
        """Log one provisioned account in: some servers open their port before they can serve."""
        import asyncio
        from .loadgen.scram import SaltedPasswords
        from .loadgen.xmpp import LoginError, login
        account = self.data.plain[-1]
        salted = SaltedPasswords()
        salted.add(account.password, account.salt, account.iterations, account.salted_password)

        async def attempt() -> None:
            conn, _ = await login("127.0.0.1", self.port, dataset.DOMAIN, account.user, account.password, salted,
                                  resource="probe")
            conn.close()
            await asyncio.wait_for(conn.closed, STOP_GRACE)

        while True:
            try:
                asyncio.run(attempt())
                return
            except (OSError, LoginError, asyncio.TimeoutError) as exc:
                if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                    self.stop()
                    raise ServerError(f"{self.name} listens but no login succeeded: {exc}; see {self.log_path}") from None
            time.sleep(PROBE_INTERVAL * 4)   # the server gives no signal of being ready: try again

    def stop(self) -> None:
        """SIGTERM the server's PID, SIGKILL it after STOP_GRACE seconds."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            print(f"bench: {self.name} did not stop within {STOP_GRACE:.0f} s; killing it", file=sys.stderr)
            proc.kill()
            proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# -- Stockade -------------------------------------------------------------------------------------
ROUTING_ONLY_KEEP = ("roster", "presence", "disco", "offline")


def stockade_modules() -> list[str]:
    """Every feature module Stockade loads by default (read from the source, not duplicated)."""
    from stockade.modules import DEFAULT_MODULES
    return list(DEFAULT_MODULES)


# Journal, encryption and policy off: the "default" and "routing" variants measure the messaging
# server itself.
NO_POLICY = """
[hosts.policy.flood]
enabled = false

[journal]
enabled = false

[encryption]
enabled = false
"""

# The "journal" variant: the compliance journal and encryption at rest on, and the default policy
# set (what Stockade does without policy configuration: flood limits, worm detection, external
# sender labels), with rate limits no benchmark connection reaches (a few pairs each send
# thousands of messages a second, far above the default limits; the fan-out and worm checks keep
# their defaults: each user has one partner).
JOURNAL_POLICY = """
[hosts.policy.flood]
session_rate = 1000000.0
session_burst = 10000000
user_rate = 1000000.0
user_burst = 10000000
"""

# The "dlp" variant: the same plus content rules a regulated company typically adds: DLP rules
# that scan every body (payment cards, credentials, a keyword list) and links in warn mode.
DLP_POLICY = JOURNAL_POLICY + """
[hosts.policy.links]
mode = "warn"

[[hosts.policy.dlp.rules]]
name = "cards"
kind = "card"
action = "block"

[[hosts.policy.dlp.rules]]
name = "credentials"
kind = "credentials"
action = "block"

[[hosts.policy.dlp.rules]]
name = "project-names"
kind = "keywords"
keywords = ["bluebird", "nightjar"]
action = "flag"
"""

# The "policy" variant: the default policy set alone (the journal and encryption off), to tell
# the policy controls' cost from the journal's.
POLICY_ONLY = JOURNAL_POLICY + """
[journal]
enabled = false

[encryption]
enabled = false
"""

# The "journal-plain" variant: the compliance journal and the default policy set, encryption at
# rest off: the configuration issue 4's journal target names (encryption is a feature of its own).
JOURNAL_PLAIN = JOURNAL_POLICY + """
[encryption]
enabled = false
"""

# The "workers" variant: one worker process per core (docs/architecture.md, "Worker processes").
WORKERS = os.cpu_count() or 1

POLICIES = {"journal": JOURNAL_POLICY, "journal-plain": JOURNAL_PLAIN, "dlp": DLP_POLICY, "policy": POLICY_ONLY,
            "journal-workers": JOURNAL_POLICY}
WORKER_VARIANTS = ("workers", "journal-workers")


class Stockade(Server):
    """Stockade from this checkout, with the benchmark-only plaintext listener on loopback.

    variant "default": every default module (stream management, carbons, MAM, offline, MUC, ...),
                       with the compliance journal, encryption at rest and the policy controls off.
    variant "journal": the same with the compliance journal, encryption at rest and the default
                       policy set on (JOURNAL_POLICY).
    variant "journal-plain": "journal" without encryption at rest (JOURNAL_PLAIN).
    variant "policy":  "default" with the default policy set on, the journal off (POLICY_ONLY).
    variant "dlp":     "journal" plus DLP rules and link warnings (DLP_POLICY): what a regulated
                       company runs.
    variant "routing": only roster, presence, disco and offline (the routing-only configuration).
    variant "no-archive": every default module but the message archive (MAM), like the peers,
                       which keep none in their default configurations.
    variant "workers": "default" in one worker process per core (WORKERS).
    variant "journal-workers": "journal" in one worker process per core.
    """

    def __init__(self, data: Dataset, variant: str = "default", *, share_dir: Path | None = None,
                 source: Path | None = None) -> None:
        self.variant = variant
        self.source = source             # a snapshot of src/ (see snapshot_source), or None: this checkout
        self.source_digest = ""
        self.name = "Stockade" if variant == "default" else f"Stockade ({variant})"
        super().__init__(data)
        if variant == "no-archive":
            disabled = ["mam"]
        elif variant in ("default", "journal", "journal-plain", "dlp", "policy", *WORKER_VARIANTS):
            disabled = []
        else:
            disabled = [m for m in stockade_modules() if m not in ROUTING_ONLY_KEEP]
        self.description = ("all default modules" if not disabled else
                            "modules: " + ", ".join(m for m in stockade_modules() if m not in disabled))
        if variant in ("journal", "journal-workers"):
            self.description += ", compliance journal, encryption at rest, default policy set"
        elif variant == "journal-plain":
            self.description += ", compliance journal, default policy set (no encryption at rest)"
        elif variant == "policy":
            self.description += ", default policy set (no journal, no encryption at rest)"
        elif variant == "dlp":
            self.description += ", compliance journal, encryption at rest, default policy set, DLP rules, link warnings"
        if variant in WORKER_VARIANTS:
            self.description += f", {WORKERS} worker processes"
        self.data_dir = share_dir or (self.dir / "data")
        self.config = self.dir / "stockade.toml"
        self.config.write_text(self._config(disabled))

    def _config(self, disabled: list[str]) -> str:
        modules = ", ".join(f'"{m}"' for m in disabled)
        return f"""# Written by bench/servers.py: the benchmark configuration (plaintext listener on loopback only).
[server]
data_dir = "{self.data_dir}"
log_level = "warning"
use_uvloop = true
disabled_modules = [{modules}]
{f"workers = {WORKERS}" if self.variant in WORKER_VARIANTS else ""}
{"pin_workers = true" if self.variant in WORKER_VARIANTS else ""}

[[hosts]]
domain = "{dataset.DOMAIN}"
{POLICIES.get(self.variant, NO_POLICY)}
[tls]
cert_path = "{self.cert}"
key_path = "{self.key}"

[c2s]
interfaces = ["127.0.0.1"]
port = {self.port}
direct_tls = false
require_tls = false
max_stanza_size = {MAX_STANZA_SIZE}
max_connections_per_address = 100000
new_connections_per_minute = 0

[http]
enabled = false

[auth]
mechanisms = ["SCRAM-SHA-256"]
"""

    def command(self) -> list[str]:
        return [str(VENV_BIN / "python"), "-m", "stockade", "--config", str(self.config), "serve"]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)
        return env

    def start(self, core: int | None = SERVER_CORE, probe: bool = True) -> None:
        """Start and wait for "Stockade is running" on its output."""
        cmd = self.command()
        if core is not None:
            cmd = pinned(cmd, core)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                         cwd=self.dir, env=self.environment())
        finally:
            log.close()
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline().decode(errors="replace") if ready else ""   # the line, or EOF on exit
        if "Stockade is running" not in line:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
            raise ServerError(f"Stockade did not start (printed {line!r}); see {self.log_path}:\n{self.log_tail()}")
        self.proc.stdout.close()             # nothing else is printed on stdout

    def provision(self) -> None:
        """`stockade import` of a JSON file with every account's SCRAM keys and the rosters."""
        import base64
        import json
        started = time.perf_counter()
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        users = [{"jid": a.jid, "scram": {"sha256": {"salt": b64(a.salt), "iterations": a.iterations,
                                                      "stored_key": b64(a.stored_key),
                                                      "server_key": b64(a.server_key)}}}
                 for a in self.data.accounts]
        rosters = [{"owner": f"{o}@{dataset.DOMAIN}", "contact": f"{c}@{dataset.DOMAIN}", "subscription": "both"}
                   for o, c in self.data.roster_pairs()]
        path = self.dir / "users.json"
        path.write_text(json.dumps({"users": users, "rosters": rosters}))
        result = subprocess.run([str(VENV_BIN / "python"), "-m", "stockade", "--config", str(self.config),
                                 "import", str(path)], capture_output=True, text=True, env=self.environment())
        if result.returncode != 0:
            raise ServerError(f"stockade import failed: {result.stdout}{result.stderr}")
        self.provision_seconds = time.perf_counter() - started

    def version(self) -> str:
        from importlib.metadata import version
        tree = f", src/ snapshot {self.source_digest}" if self.source is not None else ""
        return f"{version('stockade')} (commit {git_commit(REPO)}{tree})"


def snapshot_source(dest: Path) -> str:
    """Copy src/ to `dest` and return a digest of its content.

    Others may edit the working tree while a benchmark runs; every Stockade start of one run then
    uses the same code (run with PYTHONPATH=dest, which comes before the editable install)."""
    import hashlib
    shutil.copytree(REPO / "src", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    digest = hashlib.sha256()
    for path in sorted(dest.rglob("*.py")):
        digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def source_importable(source: Path) -> str | None:
    """None when Stockade from `source` imports; otherwise the error (another edit in progress)."""
    result = subprocess.run([str(VENV_BIN / "python"), "-c", "import stockade.app, stockade.cli"],
                            env={**os.environ, "PYTHONPATH": str(source)}, capture_output=True, text=True)
    return None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["?"])[-1]


def git_commit(repo: Path) -> str:
    """The checked-out commit, read from .git without running git."""
    git = repo / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()[:12]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    except OSError:
        pass
    return "unknown"
