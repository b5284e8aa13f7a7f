"""A real Stockade server for tests: its own event loop in a thread, loopback ports chosen by the
system, a temporary data folder and a self-signed certificate.

    with RunningServer(domains=["example.com"]) as server:
        server.add_user("alice@example.com", "alicepw1")
        ... connect real clients to 127.0.0.1:server.c2s_port, trusting server.cert_path ...
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from ..config import config_from_dict
from ..core.clock import Clock

T = TypeVar("T")


class RunningServer:
    def __init__(self, domains: list[str] | None = None, *, config: dict[str, Any] | None = None,
                 clock: Clock | None = None, data_dir: Path | None = None, storage_url: str | None = None) -> None:
        self._own_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="stockade-test-")) if data_dir is None else data_dir
        doc: dict[str, Any] = {
            "server": {"data_dir": str(self.data_dir), "shutdown_grace": 5.0, "use_uvloop": False},
            "c2s": {"interfaces": ["127.0.0.1"], "port": 0, "direct_tls_port": 0},
            "http": {"interfaces": ["127.0.0.1"], "port": 0},
            "hosts": [{"domain": d} for d in (domains or ["localhost"])],
        }
        if storage_url:
            doc["storage"] = {"url": storage_url}
        for section, values in (config or {}).items():
            if isinstance(values, dict) and isinstance(doc.get(section), dict):
                doc[section] = {**doc[section], **values}
            else:
                doc[section] = values
        from ..app import module_options
        self.config = config_from_dict(doc, "(test)", self.data_dir, module_options())
        self.clock = clock
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="stockade-server", daemon=True)
        self.server: Any = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> RunningServer:
        from ..app import Server
        self._thread.start()
        self.server = Server(self.config, clock=self.clock)
        try:
            self.call(self.server.start(), timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.server is not None and self._thread.is_alive():
            try:
                self.call(self.server.stop(), timeout=60)
                self.call(self._cancel_leftovers(), timeout=30)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(30)
        if not self.loop.is_running():
            self.loop.close()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @staticmethod
    async def _cancel_leftovers() -> None:
        current = asyncio.current_task()
        leftovers = [t for t in asyncio.all_tasks() if t is not current]
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.wait(leftovers, timeout=10)

    def __enter__(self) -> RunningServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- access ---------------------------------------------------------------------------------
    def call(self, coro: Awaitable[T], timeout: float = 30) -> T:
        """Run a coroutine on the server's loop and wait for its result (from the test thread)."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    async def acall(self, coro: Awaitable[T], timeout: float = 30) -> T:
        """The same, awaited from a test's own event loop."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)

    def run(self, fn: Callable[[], T], timeout: float = 30) -> T:
        """Run a plain function on the server's loop (to read its state safely)."""
        async def wrapper() -> T:
            return fn()
        return self.call(wrapper(), timeout)

    def add_user(self, jid: str, password: str) -> None:
        user, _, host = jid.partition("@")
        self.call(self.server.accounts.create(host, user, password))

    @property
    def c2s_port(self) -> int:
        return self.server.ports["c2s"]

    @property
    def direct_tls_port(self) -> int:
        return self.server.ports["c2s_direct_tls"]

    @property
    def https_port(self) -> int:
        return self.server.ports["https"]

    @property
    def cert_path(self) -> Path:
        return self.server.cert_path
