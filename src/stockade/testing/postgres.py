"""A throwaway PostgreSQL 15 server for tests (see shared/recipes/postgres.md).

    pg = ThrowawayPostgres().start()
    url = pg.create_database("t1")        # postgresql://postgres:PW@127.0.0.1:PORT/t1
    ...
    pg.stop()                             # fast shutdown, temp directory removed

The cluster lives in a temp directory under /tmp with fsync off: fast and disposable, never for
real data. PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system
user (setpriv, which execs: the child PID is the postmaster itself, so stopping it by PID works).
It listens on 127.0.0.1 only, with password (SCRAM) auth over TCP and trust over its private unix
socket, which this helper uses for CREATE/DROP DATABASE.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from .process import start_on_a_free_port, terminate

PGBIN = Path("/usr/lib/postgresql/15/bin")
DEBIAN_PACKAGE = "postgresql-15"
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30
PORT_ATTEMPTS = 10
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class ThrowawayPostgres:
    """One disposable PostgreSQL server; `start()` it, use `url`, `stop()` it."""

    def __init__(self) -> None:
        self.password = secrets.token_hex(16)
        self.port: int | None = None
        self.url: str = ""
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ThrowawayPostgres:
        """initdb a fresh cluster and start the server; returns self once it accepts connections."""
        _ensure_binaries()
        self._dir = Path(tempfile.mkdtemp(prefix="stockade-pg-"))   # under /tmp: postgres must reach it
        # A safety net for an interrupted test run; stop() is idempotent.
        atexit.register(self.stop)
        try:
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise
        self.url = f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), then remove the cluster's directory."""
        proc, self._proc = self._proc, None
        terminate(proc, signal.SIGINT, STOP_TIMEOUT_S)         # fast: disconnect clients, shut down cleanly
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        atexit.unregister(self.stop)

    # -- databases ------------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; its URL."""
        self._psql(f'CREATE DATABASE "{_check_name(name)}"')
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{name}"

    def drop_database(self, name: str) -> None:
        """DROP DATABASE `name`, disconnecting whoever is still connected to it."""
        self._psql(f'DROP DATABASE IF EXISTS "{_check_name(name)}" WITH (FORCE)')

    # -- internals ------------------------------------------------------------------------------

    def _initdb(self) -> None:
        assert self._dir is not None
        pwfile = self._dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self._dir, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        result = subprocess.run(
            _as_postgres() + [str(PGBIN / "initdb"), "-D", str(self._dir / "data"), "-U", "postgres",
                              f"--pwfile={pwfile}", "--auth-local=trust",
                              "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                              "--no-sync"],
            capture_output=True, text=True)
        pwfile.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {result.returncode}): {result.stderr.strip()}")

    def _start_server(self) -> None:
        assert self._dir is not None
        log_path = self._dir / "postgres.log"

        def spawn(port: int) -> subprocess.Popen[bytes]:
            with open(log_path, "wb") as log:
                return subprocess.Popen(
                    _as_postgres() + [
                        str(PGBIN / "postgres"), "-D", str(self._dir / "data"), "-p", str(port),
                        "-k", str(self._dir), "-c", "listen_addresses=127.0.0.1",
                        "-c", "fsync=off", "-c", "full_page_writes=off",
                        "-c", "synchronous_commit=off"],
                    stdout=log, stderr=subprocess.STDOUT)

        def is_ready(port: int) -> bool:
            return subprocess.run([str(PGBIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
                                  capture_output=True).returncode == 0

        self._proc, self.port = start_on_a_free_port("PostgreSQL", spawn, is_ready, log_path,
                                                     attempts=PORT_ATTEMPTS, timeout=START_TIMEOUT_S)

    def _psql(self, sql: str) -> None:
        if self._proc is None or self._dir is None:
            raise RuntimeError("the throwaway PostgreSQL is not running; call start() first")
        # The unix socket in our directory uses trust auth: no password on the command line.
        result = subprocess.run(
            [str(PGBIN / "psql"), "-h", str(self._dir), "-p", str(self.port), "-U", "postgres",
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
            capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {result.stderr.strip()}")


def _check_name(name: str) -> str:
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(f"database names here are lowercase identifiers ([a-z_][a-z0-9_]*), "
                         f"got {name!r}")
    return name


def _as_postgres() -> list[str]:
    """initdb and postgres refuse to run as root: drop to the postgres user when we are root."""
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    return []


def _ensure_binaries() -> None:
    if (PGBIN / "postgres").exists():
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"PostgreSQL 15 is not installed ({PGBIN} is missing); install the "
                           f"{DEBIAN_PACKAGE} package (apt-get install {DEBIAN_PACKAGE}) and retry")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "postgresql"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        # A fresh container often has no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    if not (PGBIN / "postgres").exists():
        raise RuntimeError(f"installed the postgresql package but {PGBIN} is still missing; "
                           f"install {DEBIAN_PACKAGE} explicitly")
