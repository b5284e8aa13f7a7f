"""The archive's group-commit writes in a process of their own (SQLite files, more than one core).

Why. An archive batch is thousands of INSERTs, and Python's sqlite3 gives up the interpreter
lock around each row's step and takes it back for the next row's parameters. A writer THREAD
therefore needs the lock thousands of times per batch while the event loop's thread is busy
routing: the two run in turns, never together, and a second core does not help (measured:
default 1:1 throughput unchanged with the server on two cores instead of one). In a process of
its own, the writes have their own interpreter and run beside the routing.

How. `ArchiveProcess` starts a Python running `writer_process.main()` with pipes for stdin and
stdout. Each batch goes down as one frame (8-byte length, then a pickle of the rows and which of
them name their owner instead of giving its id); the process writes it in one transaction
(`archive.insert_batch`, the same code the in-process writer runs) and answers with the ids and
the owner ids it created, or with the error. One batch at a time: the ArchiveWriter awaits each
answer before it sends the next, so answers need no numbering. The first frame is the database
URL (not in argv, where `ps` would show it). After CHECKPOINT_AFTER_ROWS rows the process
checkpoints the WAL in a thread beside its writes, as the in-process writer does.

Failures. A batch the process could not write comes back as StorageError and fails that batch
only. If the process dies (killed, out of memory), the batch in flight fails with StorageError
saying it may or may not have been stored, and the next batch starts a new process. The process
exits when its stdin closes: at `close()`, or when the server dies.

Only the archive's appends move: the compliance journal (its chain state and signing key) and
every other write stay in the server process. Both processes take SQLite's write lock in turn
(BEGIN IMMEDIATE with a busy timeout), as the `stockade` CLI already does beside a server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sys
import threading
from typing import Any, BinaryIO

from .errors import StorageError

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0          # how long close() waits for the process to exit after its stdin closed


class ArchiveProcess:
    """The server's side: sends batches, awaits their answers, restarts a process that died."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._proc: asyncio.subprocess.Process | None = None

    async def insert_batch(self, rows: list[tuple], unresolved: list[int]) -> tuple[list[int], dict]:
        """Write one batch (see archive.insert_batch); its ids and the owner ids it created.
        Raises StorageError."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            proc = await self._start()
        try:
            _send(proc, pickle.dumps((rows, unresolved), protocol=pickle.HIGHEST_PROTOCOL))
            await proc.stdin.drain()
            ok, answer = pickle.loads(await _receive(proc))
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            code = await self._lost(proc)
            raise StorageError(f"the archive writer process stopped ({_exit(code)}) while writing a "
                               f"batch of {len(rows)} appends, which may or may not have been stored; "
                               f"the next batch starts a new one") from exc
        except BaseException:
            await self._lost(proc)           # cancelled mid-exchange: its answers are out of step
            raise
        if not ok:
            raise StorageError(answer)
        return answer

    async def _start(self) -> asyncio.subprocess.Process:
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "from stockade.storage.writer_process import main; main()",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20)
        except OSError as exc:
            raise StorageError(f"cannot start the archive writer process: {exc.strerror}") from exc
        _send(proc, pickle.dumps(self._url))
        self._proc = proc
        return proc

    async def _lost(self, proc: asyncio.subprocess.Process) -> int | None:
        """Stop a process whose exchange failed; its exit code."""
        self._proc = None
        if proc.returncode is None:
            proc.kill()
        try:
            return await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except asyncio.TimeoutError:
            return None

    async def close(self) -> None:
        """Let the process finish (it exits when its stdin closes) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("the archive writer process did not exit within %.0f s; killing it", STOP_TIMEOUT_S)
            proc.kill()
            await proc.wait()


def _send(proc: asyncio.subprocess.Process, frame: bytes) -> None:
    proc.stdin.write(len(frame).to_bytes(8, "big") + frame)


async def _receive(proc: asyncio.subprocess.Process) -> bytes:
    size = int.from_bytes(await proc.stdout.readexactly(8), "big")
    return await proc.stdout.readexactly(size)


def _exit(code: int | None) -> str:
    if code is None:
        return "it did not exit"
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


# -- the process ----------------------------------------------------------------------------------

def _read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(8)
    if len(header) < 8:
        return None                                   # stdin closed: the server is done with us
    size = int.from_bytes(header, "big")
    data = stream.read(size)
    if len(data) < size:
        return None
    return data


def _write_frame(stream: BinaryIO, data: bytes) -> None:
    stream.write(len(data).to_bytes(8, "big") + data)
    stream.flush()


class _Checkpoints:
    """PASSIVE WAL checkpoints in a thread beside the writes, one at a time (see
    Database.checkpoint_soon, which does the same in the server process)."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self._rows = 0
        self._thread: threading.Thread | None = None

    def committed(self, rows: int) -> None:
        from .engine import CHECKPOINT_AFTER_ROWS
        self._rows += rows
        if self._rows >= CHECKPOINT_AFTER_ROWS and (self._thread is None or not self._thread.is_alive()):
            self._rows = 0
            self._thread = threading.Thread(target=self._run, name="stockade-archive-checkpoint", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._db.checkpoint_sync()
        except Exception as exc:                      # the writer's automatic checkpoint still runs
            log.warning("a background WAL checkpoint failed: %s", exc)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()


def serve(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """The process: the URL, then batches until stdin closes."""
    from .archive import ArchiveStatements, insert_batch
    from .engine import Database

    first = _read_frame(stdin)
    if first is None:
        return 0
    db = Database.from_url(pickle.loads(first))
    statements = ArchiveStatements(db)
    checkpoints = _Checkpoints(db)
    try:
        while True:
            frame = _read_frame(stdin)
            if frame is None:
                return 0
            rows, unresolved = pickle.loads(frame)
            new_owners: dict[tuple[str, str, str], int] = {}
            try:
                ids = db.write_sync("archive.append", insert_batch, statements, rows, unresolved, new_owners)
                answer: tuple[bool, Any] = (True, (ids, new_owners))
            except StorageError as exc:
                answer = (False, str(exc))
            except Exception as exc:                  # any failure fails this batch, not the process
                answer = (False, f"archive append failed: {type(exc).__name__}: {exc}")
            _write_frame(stdout, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
            if answer[0]:
                checkpoints.committed(len(rows))
    finally:
        checkpoints.join()
        db.dispose_sync()


def main() -> None:
    """The process's entry point (see ArchiveProcess._start)."""
    # Frames only on stdout: anything else (a warning) goes to stderr, the server's log.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, format="stockade archive writer: %(message)s")
    sys.exit(serve(sys.stdin.buffer, out))
