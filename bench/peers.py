"""Prosody and ejabberd from Debian as throwaway peers, configured like Stockade for the benchmark.

What every peer gets, the same as Stockade:
- the virtual host bench.local and the MUC service conference.bench.local (XEP-0045);
- the benchmark's plaintext c2s port on 127.0.0.1 only, with STARTTLS offered but not required,
  and the same throwaway certificate;
- SASL SCRAM-SHA-256 only, against credentials stored as SCRAM keys (never passwords), identical
  on all servers (bench/dataset.py);
- no rate limits (Prosody: no mod_limits; ejabberd: no shapers, no mod_fail2ban or
  mod_pres_counter), the same stanza size limit and listen backlog;
- the feature modules of its Debian default configuration, minus HTTP, s2s and the rate limiters.

Provisioning writes the accounts straight into each server's own storage, outside every timed
run: Prosody's internal_hashed account and roster files (the format `prosodyctl register`
writes), and ejabberd's #scram{} and #roster{} records through one Erlang node that talks to the
running ejabberd (epmd-less distribution on a private port), instead of one `ejabberdctl` call (one
Erlang VM start) per user.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import subprocess
import time
from pathlib import Path

from . import dataset
from .dataset import Dataset
from .servers import BACKLOG, MAX_STANZA_SIZE, Server, ServerError, pick_port

DEBIAN_PACKAGES = {"prosody": "prosody", "ejabberd": "ejabberd", "ejabberd-mam": "erlang-p1-sqlite3"}
PROVISION_TIMEOUT = 600.0        # seconds for provisioning 10,000 accounts on a slow peer


def ensure_installed(*packages: str) -> None:
    """apt-get install the missing Debian packages when root; otherwise say what to install."""
    missing = [p for p in packages if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p],
                                                     capture_output=True, text=True).stdout.strip()
               != "install ok installed"]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ServerError(f"the benchmark needs the Debian packages {' '.join(missing)}: "
                          f"run as root, or: sudo apt-get install {' '.join(missing)}")
    print(f"bench: installing {' '.join(missing)} from Debian", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def debian_version(package: str) -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True).stdout.strip()


# -- Prosody --------------------------------------------------------------------------------------
# Debian's default modules_enabled for Prosody 0.12, minus: limits (rate limiting), dialback (s2s),
# register/invites (in-band registration), admin interfaces, and http-only modules.
PROSODY_MODULES = ["roster", "saslauth", "tls", "disco", "blocklist", "bookmarks", "carbons", "pep", "private",
                   "smacks", "vcard4", "vcard_legacy", "csi_simple", "ping", "time", "uptime", "version"]


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _prosody_encode(name: str) -> str:
    """util.datamanager's path encoding: every non-alphanumeric byte as %xx."""
    return re.sub(r"[^A-Za-z0-9]", lambda m: "%%%02x" % ord(m.group(0)), name)


class Prosody(Server):
    name = "Prosody"

    def __init__(self, data: Dataset) -> None:
        ensure_installed(DEBIAN_PACKAGES["prosody"])
        super().__init__(data)
        self.description = "modules: " + ", ".join(PROSODY_MODULES) + " + offline, muc (component)"
        self.data_path = self.dir / "data"
        self.data_path.mkdir()
        self.config = self.dir / "prosody.cfg.lua"
        self.config.write_text(self._config())

    def _config(self) -> str:
        d = self.dir
        modules = "; ".join(_lua_string(m) for m in PROSODY_MODULES)
        return f"""-- Written by bench/peers.py: Prosody for the load benchmark (loopback, plaintext allowed).
run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{self.data_path}"
certificates = "{d}/certs"
log = {{ {{ levels = {{ min = "warn" }}, to = "file", filename = "{self.log_path}" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
network_settings = {{ tcp_backlog = {BACKLOG} }}
modules_enabled = {{ {modules} }}
modules_disabled = {{ "s2s" }}
-- The benchmark listener: STARTTLS offered, not required (loopback only). SCRAM needs no more;
-- allow_unencrypted_plain_auth (off) would only concern PLAIN, which the benchmark never uses.
c2s_require_encryption = false
authentication = "internal_hashed"
password_hash = "SHA-256"          -- offers SCRAM-SHA-256 and keeps SHA-256 SCRAM keys
storage = "internal"
c2s_stanza_size_limit = {MAX_STANZA_SIZE}
VirtualHost "{dataset.DOMAIN}"
Component "{dataset.MUC_DOMAIN}" "muc"
"""

    def command(self) -> list[str]:
        return ["prosody", "-F", "--config", str(self.config)]

    def failed_to_listen(self) -> bool:
        try:
            return "Failed to open server port" in self.log_path.read_text(errors="replace")
        except OSError:
            return False

    def provision(self) -> None:
        """Write the internal_hashed account files and roster files (the format prosodyctl and
        mod_roster write) straight into the data dir."""
        started = time.perf_counter()
        host = self.data_path / _prosody_encode(dataset.DOMAIN)
        accounts, rosters = host / "accounts", host / "roster"
        accounts.mkdir(parents=True)
        rosters.mkdir()
        for a in self.data.accounts:
            (accounts / f"{_prosody_encode(a.user)}.dat").write_text(
                "return {\n"
                f"\t[\"iteration_count\"] = {a.iterations};\n"
                f"\t[\"salt\"] = {_lua_string(a.salt.decode())};\n"
                f"\t[\"server_key\"] = \"{a.server_key.hex()}\";\n"
                f"\t[\"stored_key\"] = \"{a.stored_key.hex()}\";\n"
                "};\n")
        by_owner: dict[str, list[str]] = {}
        for owner, contact in self.data.roster_pairs():
            by_owner.setdefault(owner, []).append(contact)
        for owner, contacts in by_owner.items():
            items = "".join(f"\t[\"{c}@{dataset.DOMAIN}\"] = {{\n\t\t[\"subscription\"] = \"both\";\n"
                            f"\t\t[\"groups\"] = {{}};\n\t}};\n" for c in contacts)
            (rosters / f"{_prosody_encode(owner)}.dat").write_text(
                "return {\n\t[false] = {\n\t\t[\"version\"] = 1;\n\t\t[\"pending\"] = {};\n\t};\n" + items + "};\n")
        self.provision_seconds = time.perf_counter() - started

    def version(self) -> str:
        return debian_version("prosody")


# -- ejabberd -------------------------------------------------------------------------------------
EJABBERD_LIB = "/usr/lib/x86_64-linux-gnu"       # ERL_LIBS of Debian's ejabberdctl
ERL = "/usr/bin/erl"
# Debian's default modules for ejabberd 23.01, minus: HTTP-only (bosh, http_api, conversejs,
# stun_disco, mqtt, push, push_keepalive), rate limiters (fail2ban, pres_counter), s2s dialback,
# and the admin ones (announce, configure, adhoc, admin_extra, muc_admin).
EJABBERD_MODULES = ["mod_avatar", "mod_blocking", "mod_caps", "mod_carboncopy", "mod_client_state", "mod_disco",
                    "mod_last", "mod_muc", "mod_offline", "mod_ping", "mod_privacy", "mod_private", "mod_pubsub",
                    "mod_roster", "mod_shared_roster", "mod_sic", "mod_stream_mgmt", "mod_vcard", "mod_vcard_xupdate",
                    "mod_version"]
_MODULE_OPTIONS = {
    "mod_muc": "{access: all, access_create: all, access_persistent: all, access_admin: none, "
               "max_users: 1000, default_room_options: {mam: false}}",
    "mod_offline": "{access_max_user_messages: max_user_offline_messages}",
    "mod_pubsub": "{plugins: [flat, pep]}",
    "mod_roster": "{versioning: true}",
    "mod_stream_mgmt": "{resend_on_timeout: if_offline}",
    "mod_vcard": "{search: false}",
}
PROVISION_SCRIPT = r"""
Node = list_to_atom(os:getenv("BENCH_NODE")),
{ok, Terms} = file:consult(os:getenv("BENCH_TERMS")),
Check = fun(R, What) -> case R of ok -> ok; {atomic, ok} -> ok; _ -> io:format("~p: ~p~n", [What, R]), halt(3) end end,
lists:foreach(fun({user, U, H, Scram}) ->
                      Check(rpc:call(Node, ejabberd_auth, try_register, [U, H, Scram]), U);
                 ({roster, Rec}) ->
                      Check(rpc:call(Node, mnesia, dirty_write, [Rec]), Rec)
              end, Terms),
io:format("provisioned ~p entries~n", [length(Terms)]),
halt(0).
"""


def _erl_binary(text: str) -> str:
    return '<<"' + text.replace("\\", "\\\\").replace('"', '\\"') + '">>'


class Ejabberd(Server):
    name = "ejabberd"

    def __init__(self, data: Dataset) -> None:
        ensure_installed(DEBIAN_PACKAGES["ejabberd"])
        super().__init__(data)
        self.description = "modules: " + ", ".join(EJABBERD_MODULES)
        self.node = f"bench{secrets.token_hex(3)}@localhost"
        self.cookie = secrets.token_hex(16)
        self.dist_port = pick_port()          # epmd-less distribution: no epmd daemon is started
        self.spool = self.dir / "spool"
        self.spool.mkdir()
        self.config = self.dir / "ejabberd.yml"
        (self.dir / "certs" / "bench.pem").write_text(self.cert.read_text() + self.key.read_text())
        self.config.write_text(self._config())

    def _config(self) -> str:
        modules = "\n".join(f"  {m}: {_MODULE_OPTIONS.get(m, '{}')}" for m in EJABBERD_MODULES)
        return f"""# Written by bench/peers.py: ejabberd for the load benchmark (loopback, plaintext allowed).
loglevel: warning
acme: {{auto: false}}
hosts: ["{dataset.DOMAIN}"]
certfiles: ["{self.dir}/certs/bench.pem"]
listen:
  - port: {self.port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: {MAX_STANZA_SIZE}
    shaper: none
    access: all
    starttls: true
    starttls_required: false
    backlog: {BACKLOG}
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha256
disable_sasl_mechanisms: ["digest-md5", "x-oauth2", "scram-sha-1", "plain"]
shaper: {{}}
shaper_rules:
  max_user_offline_messages: 5000
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
modules:
{modules}
"""

    def environment(self) -> dict[str, str]:
        return {**os.environ, "EJABBERD_CONFIG_PATH": str(self.config), "EJABBERD_LOG_PATH": str(self.log_path),
                "ERL_LIBS": EJABBERD_LIB, "ERL_CRASH_DUMP": str(self.dir / "erl_crash.dump"),
                "ERL_MAX_PORTS": "32000", "HOME": str(self.dir)}

    def _dist_args(self, listen: bool) -> list[str]:
        args = ["-setcookie", self.cookie, "-erl_epmd_port", str(self.dist_port), "-start_epmd", "false"]
        return args if listen else args + ["-dist_listen", "false", "-hidden"]

    def command(self) -> list[str]:
        # What `ejabberdctl foreground` runs, without its su and epmd handling: the PID is the VM's.
        return [ERL, "-sname", self.node, *self._dist_args(True), "+K", "true", "+P", "250000", "-noinput",
                "-mnesia", "dir", f'"{self.spool}"', "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
                "-s", "ejabberd"]

    def provision(self) -> None:
        """Start ejabberd (unpinned), then one hidden Erlang node writes every account (#scram{})
        and roster item through RPC; stop."""
        import base64
        started = time.perf_counter()
        b64 = lambda b: _erl_binary(base64.b64encode(b).decode())  # noqa: E731
        host = _erl_binary(dataset.DOMAIN)
        lines = [f"{{user, {_erl_binary(a.user)}, {host}, "
                 f"{{scram, {b64(a.stored_key)}, {b64(a.server_key)}, {b64(a.salt)}, sha256, {a.iterations}}}}}."
                 for a in self.data.accounts]
        for owner, contact in self.data.roster_pairs():
            o, c = _erl_binary(owner), _erl_binary(contact)
            lines.append(f"{{roster, {{roster, {{{o}, {host}, {{{c}, {host}, <<>>}}}}, {{{o}, {host}}}, "
                         f"{{{c}, {host}, <<>>}}, <<>>, both, none, [], <<>>, []}}}}.")
        terms = self.dir / "provision.terms"
        terms.write_text("\n".join(lines) + "\n")
        self.start(core=None, probe=False)
        try:
            result = subprocess.run(
                [ERL, "-sname", f"prov{secrets.token_hex(3)}@localhost", *self._dist_args(False), "-noinput",
                 "-eval", PROVISION_SCRIPT],
                env={**self.environment(), "BENCH_NODE": self.node, "BENCH_TERMS": str(terms)},
                capture_output=True, text=True, timeout=PROVISION_TIMEOUT)
            if result.returncode != 0:
                raise ServerError(f"ejabberd provisioning failed ({result.returncode}): {result.stdout}{result.stderr}")
        finally:
            self.stop()
        self.provision_seconds = time.perf_counter() - started

    def version(self) -> str:
        return debian_version("ejabberd")


# The schema ejabberd 23.01 ships for SQLite (it does not create its tables itself before 23.10).
EJABBERD_SQLITE_SCHEMA = Path("/usr/share/ejabberd/sql/lite.sql")


class EjabberdMam(Ejabberd):
    """ejabberd with a message archive like Stockade's default: mod_mam storing every chat message
    (`default: always`) in SQLite, the SQL database ejabberd supports on one machine without a
    server. Accounts and rosters stay in Mnesia, as for `ejabberd`."""

    name = "ejabberd-mam"

    def __init__(self, data: Dataset) -> None:
        ensure_installed(DEBIAN_PACKAGES["ejabberd-mam"])
        super().__init__(data)
        self.description += ", mod_mam (SQLite, every message)"
        conn = sqlite3.connect(self.database)
        try:
            # WAL, as Stockade's database: kept in the file, so ejabberd's connections use it too
            # (in the rollback journal that SQLite starts with, every commit also rewrites it).
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(EJABBERD_SQLITE_SCHEMA.read_text())
            conn.commit()
        finally:
            conn.close()

    @property
    def database(self) -> Path:
        return self.dir / "ejabberd.db"

    def _config(self) -> str:
        return super()._config() + f"""  mod_mam: {{db_type: sql, default: always}}
sql_type: sqlite
sql_database: "{self.database}"
new_sql_schema: false
"""


def available_peers() -> list[type[Server]]:
    return [Prosody, Ejabberd, EjabberdMam]


__all__ = ["Prosody", "Ejabberd", "EjabberdMam", "ensure_installed", "available_peers"]
