"""The real `stockade` command for tests: `stockade serve` as a child process, and one-shot CLI runs.

    with ServerProcess(tmp_path, domains=["example.com"]) as proc:   # free loopback ports, waits
        proc.cli("user", "add", "alice@example.com", "--password", "alice-pw-1")
        ... connect real clients to 127.0.0.1:proc.c2s_port, trusting proc.cert_path ...
        proc.terminate()                     # SIGTERM: the graceful shutdown
        assert proc.wait() == 0

The ports are chosen just before each start (bind port 0, note the number, release it). Another
program may take a port in between; a start that fails with "cannot listen" is retried on new
ports. Start-up is detected by the line the server prints once it listens, read from its stdout
in a thread, never by sleeping. The log (stderr) goes to a file, `proc.log_path`.

A `ServerProcess` is also an object `stockade.testing.xmpp.client()` and `RawStream.open()` accept:
it has `c2s_port`, `direct_tls_port`, `cert_path` and `config`.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import ServerConfig, load_config

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
READY = "Stockade is running"


@dataclass(frozen=True)
class CliResult:
    status: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.splitlines()


def stockade_command() -> list[str]:
    """The command line that runs `stockade` from the interpreter running the tests."""
    return [sys.executable, "-m", "stockade"]


def run_cli(*args: str, config: Path | None = None, timeout: float = 60.0,
            env: dict[str, str] | None = None) -> CliResult:
    """Run `stockade [--config FILE] ARGS...` and return its status and output. Never reads stdin."""
    argv = [*stockade_command(), *(["--config", str(config)] if config is not None else []), *args]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          env=env)
    return CliResult(done.returncode, done.stdout, done.stderr)


def terminate(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Stop a daemon a test started: `sig`, then SIGKILL if it has not exited within `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_on_a_free_port(name: str, spawn: Callable[[int], subprocess.Popen[bytes]],
                         is_ready: Callable[[int], bool], log_path: Path, *, attempts: int,
                         timeout: float) -> tuple[subprocess.Popen[bytes], int]:
    """Start a throwaway server (`spawn(port)`, logging to `log_path`) on the first candidate
    port where it comes up: `is_ready(port)` is polled until it is true, or the process exits
    (another process took the port between our check and its bind), or `timeout` passes."""
    failures = []
    for port in candidate_ports(attempts):
        proc = spawn(port)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if is_ready(port):
                return proc, port
            time.sleep(0.05)              # waiting on another process: there is no event to wait on
        if proc.poll() is None:           # alive but never ready: give up on it
            proc.kill()
        proc.wait()
        tail = log_path.read_text(errors="replace").strip().splitlines()[-2:]
        failures.append(f"port {port}: exit {proc.returncode}: {' / '.join(tail)}")
    raise RuntimeError(f"{name} did not start; " + "; ".join(failures))


def candidate_ports(count: int) -> list[int]:
    """Odd ports that are free right now, preferably above the kernel's ephemeral range.

    Ports inside the ephemeral range can be taken at any moment as the source port of someone's
    outgoing connection, and connect() hands out even ports first; odd ports above the range
    avoid both. Another process may still grab a port between this check and the server binding
    it, which is why the caller retries with the next candidate.
    """
    low, high = _ephemeral_range()
    if high + 2 < 65535:
        start, stop = high + 1, 65535
    else:
        start, stop = 20001, low                      # below the range
    odd = list(range(start | 1, stop, 2))
    random.shuffle(odd)                               # parallel runs should not collide
    return [port for port in odd[:count * 5] if _is_free(port)][:count]


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999                           # Linux default


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def to_toml(doc: dict[str, Any]) -> str:
    """Enough TOML for test configurations: tables, arrays of tables, tables inside those
    (`hosts[0].directory`), strings, numbers, booleans and lists of those."""
    lines: list[str] = []
    for key, value in doc.items():
        if not isinstance(value, (dict, list)) or (isinstance(value, list) and not all(isinstance(v, dict) for v in value)):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in doc.items():
        if isinstance(value, dict):
            lines += _table(f"[{key}]", key, value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for table in value:
                lines += _table(f"[[{key}]]", key, table)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(heading: str, path: str, table: dict[str, Any]) -> list[str]:
    """A table's heading and values, then its sub-tables ([path.name])."""
    lines = [f"\n{heading}"] + [f"{k} = {_toml_value(v)}" for k, v in table.items() if not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines += _table(f"[{path}.{k}]", f"{path}.{k}", v)
    return lines


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


class StartError(Exception):
    """The server exited instead of listening; the text is what it wrote on stderr."""

    def __init__(self, status: int, stderr: str) -> None:
        super().__init__(f"stockade serve exited with status {status}: {stderr.strip()[-2000:]}")
        self.status = status
        self.stderr = stderr


class ServerProcess:
    """`stockade --config FOLDER/stockade.toml serve` with its data in FOLDER/data.

    `config` sections are merged over the defaults written here (loopback c2s, data folder, a
    short shutdown grace); the c2s and component ports are rewritten on every start.
    """

    def __init__(self, folder: Path, domains: list[str] | None = None, *, config: dict[str, Any] | None = None,
                 start_attempts: int = 5) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_path = self.folder / "stockade.toml"
        self.data_dir = self.folder / "data"
        self.log_path = self.folder / "stockade.log"
        self.start_attempts = start_attempts
        self.doc: dict[str, Any] = {
            "server": {"data_dir": str(self.data_dir), "shutdown_grace": 10.0, "use_uvloop": False},
            "c2s": {"interfaces": ["127.0.0.1"], "port": 0, "direct_tls_port": 0},
            "hosts": [{"domain": d} for d in (domains or ["localhost"])],
        }
        for section, values in (config or {}).items():
            if isinstance(values, dict) and isinstance(self.doc.get(section), dict):
                self.doc[section] = {**self.doc[section], **values}
            else:
                self.doc[section] = values
        self.ports: dict[str, int] = {}
        self.process: subprocess.Popen[str] | None = None
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self._log_file: Any = None
        self.write_config()

    # -- configuration --------------------------------------------------------------------------
    def write_config(self) -> None:
        self.config_path.write_text(to_toml(self.doc), encoding="utf-8")

    @property
    def config(self) -> ServerConfig:
        from ..app import module_options
        return load_config(self.config_path, module_options())

    def _choose_ports(self) -> None:
        self.ports = {"c2s": free_port(), "c2s_direct_tls": free_port()}
        self.doc["c2s"] = {**self.doc["c2s"], "port": self.ports["c2s"],
                           "direct_tls_port": self.ports["c2s_direct_tls"]}
        if self.doc.get("component_listener", {}).get("enabled"):
            self.ports["component"] = free_port()
            self.doc["component_listener"] = {**self.doc["component_listener"], "port": self.ports["component"]}
        if self.doc.get("http", {}).get("enabled", True):      # on by default, on a fixed port
            self.ports["https"] = free_port()
            self.doc["http"] = {**self.doc.get("http", {}), "port": self.ports["https"]}
        self.write_config()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        """Start on fresh free ports and wait until the server listens (retrying on a port race)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        for attempt in range(1, self.start_attempts + 1):
            self._choose_ports()
            try:
                self._spawn(timeout)
                return self
            except StartError as exc:
                if "cannot listen" not in exc.stderr or attempt == self.start_attempts:
                    raise
        raise AssertionError("unreachable")

    def _spawn(self, timeout: float) -> None:
        self._log_file = open(self.log_path, "a", encoding="utf-8")
        log_start = self.log_path.stat().st_size
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = proc = subprocess.Popen(
            [*stockade_command(), "--config", str(self.config_path), "serve"], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self._log_file, text=True, env=env)
        self._stdout = lines = queue.Queue()
        threading.Thread(target=self._read_stdout, args=(proc, lines), daemon=True,
                         name=f"stockade-{proc.pid}-stdout").start()
        deadline = time.monotonic() + timeout
        try:
            while True:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                if line is None:                           # stdout closed: the process is ending
                    status = proc.wait(timeout)
                    self._log_file.close()
                    raise StartError(status, self.log_path.read_text(encoding="utf-8")[log_start:])
                if line.startswith(READY):
                    return
        except queue.Empty:
            self.kill()
            raise TimeoutError(f"stockade serve did not listen within {timeout:.0f} s; log: {self.log}") from None

    @staticmethod
    def _read_stdout(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    async def astart(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        """`start()` without blocking the caller's event loop (its clients keep running)."""
        return await asyncio.to_thread(self.start, timeout)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """Send SIGTERM (the graceful shutdown) and return at once."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to exit; returns its status."""
        assert self.process is not None
        status = self.process.wait(timeout)
        if self._log_file is not None and not self._log_file.closed:
            self._log_file.close()
        return status

    async def await_exit(self, timeout: float = STOP_TIMEOUT) -> int:
        return await asyncio.to_thread(self.wait, timeout)

    def kill(self) -> None:
        if self.is_running():
            assert self.process is not None
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
        if self._log_file is not None and not self._log_file.closed:
            self._log_file.close()

    def stop(self) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit. Returns the status (None if never started)."""
        if self.process is None:
            return None
        if self.is_running():
            self.terminate()
            try:
                return self.wait()
            except subprocess.TimeoutExpired:
                self.kill()
        return self.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers --------------------------------------------------------------------------------
    def cli(self, *args: str) -> CliResult:
        """Run `stockade --config <this server's file> ARGS...`."""
        return run_cli(*args, config=self.config_path)

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8") if self.log_path.exists() else ""

    @property
    def c2s_port(self) -> int:
        return self.ports["c2s"]

    @property
    def direct_tls_port(self) -> int:
        return self.ports["c2s_direct_tls"]

    @property
    def component_port(self) -> int:
        return self.ports["component"]

    @property
    def https_port(self) -> int:
        return self.ports["https"]

    @property
    def cert_path(self) -> Path:
        """The certificate clients should trust: [tls] cert_path, or the generated self-signed one."""
        configured = self.doc.get("tls", {}).get("cert_path")
        return self.folder / configured if configured else self.data_dir / "certs" / "stockade.crt"
