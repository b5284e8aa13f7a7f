"""Independent XMPP clients for interop tests: go-sendxmpp and profanity (driven in tmux).

Stockade's own tests mostly use slixmpp; these helpers let a test check the server against two
other client implementations installed from Debian (libstrophe-based profanity, go-xmpp-based
go-sendxmpp). Both trust the server's self-signed certificate through ``SSL_CERT_FILE`` (OpenSSL
and Go read it), so certificate verification stays on.

    async with go_sendxmpp_listener(server, "alice@example.com", "alicepw1") as alice:
        await alice.wait_online()
        bob.send_message(mto="alice@example.com", mbody="hi", mtype="chat")
        assert await alice.next_message() == ("bob@example.com", "hi")

    async with profanity(server.cert_path) as alice:
        await alice.login("alice@example.com", "alicepw1", port=server.c2s_port)
        await alice.type("/msg bob@example.com hi")
        await alice.wait_for("bob@example.com/phone: hello")

Every wait polls with a deadline (default 30 s) and fails with what the client showed; every
process is killed and every temporary folder removed on the way out, pass or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

T = TypeVar("T")

TIMEOUT = 30.0
POLL = 0.05  # seconds between looks at a client's output, inside a deadline

# Which Debian package provides each program (CI installs them; a missing one fails the test).
PACKAGES = {"go-sendxmpp": "go-sendxmpp", "profanity": "profanity", "tmux": "tmux"}


class ToolMissing(RuntimeError):
    """A client program is not installed; the message names the Debian package to install."""


def require_tool(program: str) -> str:
    """The path of `program`, or ToolMissing saying which Debian package provides it."""
    path = shutil.which(program)
    if path is None:
        package = PACKAGES.get(program, program)
        raise ToolMissing(f"{program} is not installed, so this interop test cannot run; "
                          f"install the Debian package: apt-get install {package}")
    return path


def _isolated_env(home: Path, cert: Path) -> dict[str, str]:
    """The environment for a client: its own HOME and XDG folders, and the server cert as the CA."""
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
               XDG_CACHE_HOME=str(home / "cache"), XDG_STATE_HOME=str(home / "state"),
               SSL_CERT_FILE=str(cert), LANG="C.UTF-8", LC_ALL="C.UTF-8")
    return env


async def _stop(proc: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout`."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def _poll(look: Callable[[], Awaitable[T | None]], what: str, show: Callable[[], Awaitable[str]],
                timeout: float) -> T:
    """Call `look()` until it returns something truthy; on timeout fail with `show()`."""
    deadline = time.monotonic() + timeout
    while True:
        found = await look()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; the client showed:\n"
                                 f"{await show()}")
        await asyncio.sleep(POLL)


# -- go-sendxmpp ------------------------------------------------------------------------------------

class GoSendxmpp:
    """go-sendxmpp (Debian 0.5.6) logged in as one account, over STARTTLS or direct TLS.

    The server address is given as ``localhost:<port>`` so the name matches the certificate
    (its SAN covers ``localhost``); the account's domain comes from the JID.
    """

    def __init__(self, jid: str, password: str, *, port: int, cert: Path, direct_tls: bool = False) -> None:
        self.program = require_tool("go-sendxmpp")
        self.jid, self.password, self.port, self.direct_tls = jid, password, port, direct_tls
        self.dir = Path(tempfile.mkdtemp(prefix="stockade-gosx-"))
        self.env = _isolated_env(self.dir, Path(cert))

    def argv(self, *extra: str) -> list[str]:
        tls = ["-t"] if self.direct_tls else []  # without -t, go-sendxmpp uses STARTTLS
        return [self.program, "-u", self.jid, "-p", self.password, "-j", f"localhost:{self.port}",
                "--timeout", str(int(TIMEOUT)), *tls, *extra]

    async def send(self, to: str, body: str, timeout: float = TIMEOUT) -> None:
        """Log in, send one chat message with `body` to `to`, log out; fail with its debug output."""
        proc = await asyncio.create_subprocess_exec(
            *self.argv("-d", to), env=self.env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(body.encode()), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"go-sendxmpp did not finish sending to {to} within {timeout:.0f} s") from None
        finally:
            await _stop(proc)
        assert proc.returncode == 0, (f"go-sendxmpp exited with {proc.returncode} sending to {to}:\n"
                                      f"{out.decode(errors='replace')}{err.decode(errors='replace')}")

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


async def go_sendxmpp_send(server: Any, jid: str, password: str, *, to: str, body: str,
                           direct_tls: bool = False) -> None:
    """One ``echo body | go-sendxmpp to`` run as `jid`: log in, send a chat message, log out."""
    go = GoSendxmpp(jid, password, port=server.direct_tls_port if direct_tls else server.c2s_port,
                    cert=server.cert_path, direct_tls=direct_tls)
    try:
        await go.send(to, body)
    finally:
        go.close()


class GoListener:
    """A running ``go-sendxmpp -l -d``: stdout (one line per message) and stderr (the stanzas it
    received) go to files, which the waits poll."""

    LINE = re.compile(r"^\S+ (?P<sender>[^ :]+): (?P<body>.*)$")

    def __init__(self, proc: asyncio.subprocess.Process, out: Path, debug: Path) -> None:
        self.proc, self.out, self.debug = proc, out, debug
        self._seen = 0  # messages already returned by next_message
        self.full_jid: str | None = None

    async def transcript(self) -> str:
        code = "still running" if self.proc.returncode is None else f"exited with {self.proc.returncode}"
        return (f"[go-sendxmpp {code}]\n--- stdout ---\n{self._read(self.out)}"
                f"--- stderr (stanzas received) ---\n{self._read(self.debug)}")

    @staticmethod
    def _read(path: Path) -> str:
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait_online(self, timeout: float = TIMEOUT) -> str:
        """Wait until the server has bound a resource and reflected the initial presence to it
        (RFC 6121 4.2.2), so the session is available; returns the full JID."""
        async def look() -> str | None:
            if self.proc.returncode is not None:
                raise AssertionError(f"go-sendxmpp stopped before going online:\n{await self.transcript()}")
            text = self._read(self.debug)
            bound = re.search(r"<jid>([^<]+)</jid>", text)
            if bound and re.search(rf"<presence\b[^>]*\bfrom=['\"]{re.escape(bound[1])}['\"]", text):
                return bound[1]
            return None
        self.full_jid = await _poll(look, "go-sendxmpp's session to become available", self.transcript, timeout)
        return self.full_jid

    async def next_message(self, timeout: float = TIMEOUT) -> tuple[str, str]:
        """The next message go-sendxmpp printed, as (sender bare JID, body)."""
        async def look() -> tuple[str, str] | None:
            lines = [m for m in map(self.LINE.match, self._read(self.out).splitlines()) if m]
            if len(lines) > self._seen:
                self._seen += 1
                return lines[self._seen - 1]["sender"], lines[self._seen - 1]["body"]
            if self.proc.returncode is not None:
                raise AssertionError(f"go-sendxmpp stopped while listening:\n{await self.transcript()}")
            return None
        return await _poll(look, "a message printed by go-sendxmpp", self.transcript, timeout)


@contextlib.asynccontextmanager
async def go_sendxmpp_listener(server: Any, jid: str, password: str) -> AsyncIterator[GoListener]:
    """go-sendxmpp listening (``-l``) as `jid` on the server's STARTTLS port; killed on exit."""
    go = GoSendxmpp(jid, password, port=server.c2s_port, cert=server.cert_path)
    proc = None
    try:
        out, debug = go.dir / "stdout.txt", go.dir / "stderr.txt"
        with open(out, "wb") as stdout, open(debug, "wb") as stderr:
            proc = await asyncio.create_subprocess_exec(*go.argv("-l", "-d"), env=go.env,
                                                        stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
        yield GoListener(proc, out, debug)
    finally:
        if proc is not None:
            await _stop(proc)
        go.close()


# -- profanity in tmux --------------------------------------------------------------------------------

class Profanity:
    """profanity (libstrophe) in a private tmux server, with the pane wide enough not to wrap lines.

    The tmux server runs in the foreground (``tmux -D``) as our own child, with its socket in a
    temporary folder: ``kill-server`` only ever touches this instance, and we reap the server
    ourselves. (A daemonised tmux is re-parented to PID 1, which in containers may reap it late or
    never, leaving ``[tmux: server] <defunct>`` behind.) Profanity is the pane's process, a child
    of tmux; it is stopped and reaped before tmux is stopped.
    """

    def __init__(self, cert: Path) -> None:
        self.tmux = require_tool("tmux")
        self.program = require_tool("profanity")
        self.dir = Path(tempfile.mkdtemp(prefix="stockade-prof-"))
        self.socket = self.dir / "tmux.sock"
        self.env = _isolated_env(self.dir / "home", Path(cert))
        self.server: asyncio.subprocess.Process | None = None
        self.pane_pid: int | None = None

    async def _tmux(self, *args: str, timeout: float = 10.0) -> str:
        proc = await asyncio.create_subprocess_exec(
            self.tmux, "-S", str(self.socket), *args, env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        finally:
            await _stop(proc)
        if proc.returncode != 0:
            raise AssertionError(f"tmux {args[0]} failed ({proc.returncode}): {err.decode().strip()}")
        return out.decode(errors="replace")

    async def start(self, timeout: float = TIMEOUT) -> None:
        """Start tmux and profanity with an empty profile; wait for profanity's first-start banner."""
        (self.dir / "home").mkdir()
        with open(self.dir / "tmux.log", "wb") as log:
            self.server = await asyncio.create_subprocess_exec(
                self.tmux, "-D", "-S", str(self.socket), "-f", "/dev/null", env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        async def listening() -> bool:
            assert self.server is not None
            if self.server.returncode is not None:
                raise AssertionError(f"tmux exited with {self.server.returncode}: "
                                     f"{(self.dir / 'tmux.log').read_text(errors='replace')}")
            return self.socket.is_socket()

        async def no_screen() -> str:
            return "(tmux has not created its socket)"
        await _poll(listening, "tmux to listen", no_screen, timeout)
        await self._tmux("new-session", "-d", "-s", "prof", "-x", "200", "-y", "50", "--", self.program)
        self.pane_pid = int((await self._tmux("display-message", "-p", "-t", "prof", "#{pane_pid}")).strip())
        await self.wait_for("Type '/help'", timeout=timeout)

    async def screen(self) -> str:
        """The visible pane, without blank lines or trailing spaces."""
        try:
            shown = await self._tmux("capture-pane", "-p", "-t", "prof")
            return "\n".join(line.rstrip() for line in shown.splitlines() if line.strip())
        except AssertionError as e:  # the pane is gone: profanity exited
            return f"(no screen: {e})"

    async def type(self, line: str) -> None:
        """Type `line` literally (no tmux key names) and press Enter."""
        await self._tmux("send-keys", "-t", "prof", "-l", line)
        await self._tmux("send-keys", "-t", "prof", "Enter")

    async def wait_for(self, text: str, *, fail_on: tuple[str, ...] = (), timeout: float = TIMEOUT) -> str:
        """Wait until `text` is on screen and return the screen; fail early if a `fail_on` text shows."""
        async def look() -> str | None:
            shown = await self.screen()
            for bad in fail_on:
                if bad in shown:
                    raise AssertionError(f"profanity showed {bad!r} while waiting for {text!r}:\n{shown}")
            return shown if text in shown else None
        return await _poll(look, f"{text!r} in profanity", self.screen, timeout)

    async def login(self, jid: str, password: str, *, port: int, timeout: float = TIMEOUT) -> None:
        """``/connect`` over STARTTLS (profanity's default ``tls force``) to 127.0.0.1:`port`.

        libstrophe verifies the certificate against the JID's domain, trusting the server's cert
        (SSL_CERT_FILE). An untrusted cert would stop at profanity's ``/tls allow`` prompt; that
        fails the login here rather than being accepted."""
        await self.type(f"/connect {jid} server 127.0.0.1 port {port}")
        await self.wait_for("Enter password", timeout=timeout)
        await self.type(password)
        await self.wait_for("logged in successfully", timeout=timeout,
                            fail_on=("TLS certificate verification failed", "Login failed", "Connection failed"))

    async def close(self, timeout: float = 10.0) -> None:
        """``/quit`` profanity (SIGKILL if it hangs) and wait until tmux has reaped it; then stop
        tmux, reap it, and remove the temporary folder."""
        try:
            if self.pane_pid is not None and _exists(self.pane_pid):
                with contextlib.suppress(AssertionError, asyncio.TimeoutError):
                    await self.type("/quit")
                    await self._wait_reaped(timeout)
                if _exists(self.pane_pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pane_pid, signal.SIGKILL)
                    with contextlib.suppress(AssertionError, asyncio.TimeoutError):
                        await self._wait_reaped(timeout)
        finally:
            if self.server is not None:
                with contextlib.suppress(AssertionError, asyncio.TimeoutError):
                    await self._tmux("kill-server")
                await _stop(self.server)
            shutil.rmtree(self.dir, ignore_errors=True)

    async def _wait_reaped(self, timeout: float) -> None:
        """Wait until tmux has reaped profanity.

        Debian's tmux calls libutempter when a pane closes, which runs a helper with SIGCHLD set to
        SIG_DFL; if profanity's own SIGCHLD lands in that window it is lost, and profanity stays a
        zombie until tmux handles some other SIGCHLD. So while it is a zombie, make tmux run a
        trivial job: that job's exit makes tmux reap every exited child."""
        assert self.pane_pid is not None
        deadline = time.monotonic() + timeout
        while _exists(self.pane_pid):
            if time.monotonic() > deadline:
                raise asyncio.TimeoutError(f"profanity (pid {self.pane_pid}) still exists after {timeout:.0f} s")
            if _is_zombie(self.pane_pid):
                await self._tmux("run-shell", "true")
            await asyncio.sleep(POLL)


def _exists(pid: int) -> bool:
    """Whether `pid` is still in the process table (running, or a zombie not yet reaped)."""
    return Path(f"/proc/{pid}").exists()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return False


@contextlib.asynccontextmanager
async def profanity(cert: Path) -> AsyncIterator[Profanity]:
    """A started profanity trusting `cert`; quit, killed and cleaned up on exit."""
    prof = Profanity(cert)
    try:
        await prof.start()
        yield prof
    finally:
        await prof.close()
