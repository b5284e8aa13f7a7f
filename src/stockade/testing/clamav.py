"""A throwaway ClamAV daemon (clamd) for tests, with test signatures only (see shared/recipes/clamav.md).

    with ThrowawayClamd() as clamd:
        clamd.address                  # "127.0.0.1:PORT" (TCP); clamd.socket_path: its unix socket
        ... scan EICAR: Test.EICAR.NDB.UNOFFICIAL FOUND ...
        clamd.stop(); clamd.start()    # down and up again (same unix socket, maybe another port)

No internet, no freshclam: the database folder holds two signatures written here, a whole-file
MD5 of the EICAR test file and a body signature that finds its marker anywhere in a stream
(clamd refuses to start with an empty database folder). clamd runs from its own clamd.conf in a
temp folder with `Foreground yes`, so the child PID is clamd itself; nothing under /etc is
touched. The EICAR string is built in code, never stored as a file in the repository (antivirus
on developers' machines would quarantine it). This helper installs nothing: the Makefile's
TEST_DEBS brings Debian's clamav-daemon; `clamd_missing()` says why tests must skip without it.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from .process import start_on_a_free_port, terminate

CLAMD = Path("/usr/sbin/clamd")
DEBIAN_PACKAGE = "clamav-daemon"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20
PORT_ATTEMPTS = 10

# The EICAR anti-virus test file, in two halves so that no scanner flags this source file.
EICAR = (rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$" + rb"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
EICAR_MARKER = b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE"
SIGNATURE = "Test.EICAR.NDB.UNOFFICIAL"      # what clamd names a match of the body signature


def clamd_missing() -> str | None:
    """Why a throwaway clamd cannot run here (for pytest.skip), or None. As root a missing
    package is an error instead: `make test` installs it (scripts/ensure-debs)."""
    if CLAMD.exists():
        return None
    reason = f"ClamAV's daemon is not installed ({CLAMD} is missing; apt-get install {DEBIAN_PACKAGE})"
    if os.geteuid() == 0:
        raise RuntimeError(reason + "; `make system-deps` installs it")
    return reason


class ThrowawayClamd:
    """One disposable clamd listening on 127.0.0.1:<free port> and on a unix socket in its folder."""

    def __init__(self) -> None:
        self.port: int | None = None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        assert self.port is not None, "clamd has not been started"
        return f"127.0.0.1:{self.port}"

    @property
    def socket_path(self) -> str:
        assert self._dir is not None, "clamd has not been started"
        return str(self._dir / "clamd.sock")

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ThrowawayClamd:
        """Start, or start again after `stop`: the unix socket path stays, the TCP port may change."""
        if not CLAMD.exists():
            raise RuntimeError(f"{CLAMD} is missing: install Debian's {DEBIAN_PACKAGE}")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="stockade-clamd-"))
            self._write_database()
            atexit.register(self.close)
        try:
            self._start_server()
        except BaseException:
            self.close()
            raise
        return self

    def stop(self) -> None:
        """Stop clamd (SIGTERM, by PID); its folder stays for `start` to use again."""
        proc, self._proc = self._proc, None
        terminate(proc, signal.SIGTERM, STOP_TIMEOUT_S)

    def close(self) -> None:
        """Stop clamd and remove its folder."""
        self.stop()
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        atexit.unregister(self.close)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> ThrowawayClamd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------
    def _write_database(self) -> None:
        assert self._dir is not None
        db = self._dir / "db"
        db.mkdir()
        (db / "test.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Test.EICAR.HDB\n")
        (db / "test.ndb").write_text(f"Test.EICAR.NDB:0:*:{EICAR_MARKER.hex()}\n")

    def _configure(self, port: int) -> Path:
        assert self._dir is not None
        d = self._dir
        conf = d / "clamd.conf"
        conf.write_text(f"Foreground yes\nDatabaseDirectory {d}/db\nLocalSocket {d}/clamd.sock\n"
                        f"TCPSocket {port}\nTCPAddr 127.0.0.1\nPidFile {d}/clamd.pid\nLogFile {d}/clamd.log\n"
                        "StreamMaxLength 25M\nSelfCheck 0\n")
        return conf

    def _start_server(self) -> None:
        assert self._dir is not None
        log_path = self._dir / "clamd.log"

        def spawn(port: int) -> subprocess.Popen[bytes]:
            conf = self._configure(port)
            log_path.write_bytes(b"")
            # Foreground: the PID is clamd's. A busy TCP port does not stop clamd (it keeps the
            # unix socket), so readiness is a PONG on the TCP port and the log is checked for it.
            return subprocess.Popen([str(CLAMD), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)

        def is_ready(port: int) -> bool:
            if "Cannot bind" in log_path.read_text(errors="replace"):
                proc.kill()
                return False
            return ping(("127.0.0.1", port))

        proc: subprocess.Popen[bytes]

        def spawn_and_keep(port: int) -> subprocess.Popen[bytes]:
            nonlocal proc
            proc = spawn(port)
            return proc

        self._proc, self.port = start_on_a_free_port("clamd", spawn_and_keep, is_ready, log_path,
                                                     attempts=PORT_ATTEMPTS, timeout=START_TIMEOUT_S)


def ping(address: tuple[str, int] | str, timeout: float = 1.0) -> bool:
    """Whether clamd answers zPING with PONG at a TCP address or a unix socket path."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"zPING\0")
            return sock.recv(16).startswith(b"PONG")
    except OSError:
        return False
