"""Where the bytes of uploaded files live: one file per upload in a folder of the data directory.

Everything that touches the bytes goes through `FileStore` (write, read, delete), so that a store
that encrypts at rest can take its place without the HTTP side or the bookkeeping changing.
A file is written under a temporary name and only gets its final name on `commit()`: a crash or
a refused upload never leaves a half-written file that looks complete, and the temporary files
found at startup are removed.

Disk I/O runs in worker threads, in chunks of at most CHUNK bytes, so a slow disk never stalls the
event loop and no upload or download is ever held in memory whole.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import AsyncIterator, BinaryIO

CHUNK = 1024 * 1024          # bytes written or read per trip to a worker thread
PARTIAL = ".part"            # suffix of files still being received


class FileWriter:
    """One file being received. `write()` chunks, then `finish()` (all bytes on disk, not yet
    served), then `commit()` (served from now on) or `discard()` (gone)."""

    def __init__(self, partial: Path, final: Path, handle: BinaryIO) -> None:
        self.partial = partial
        self.final = final
        self._handle: BinaryIO | None = handle
        self._buffer = bytearray()
        self.size = 0

    async def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= CHUNK:
            await self._flush()

    async def _flush(self) -> None:
        if self._buffer and self._handle is not None:
            data = bytes(self._buffer)
            self._buffer.clear()
            await asyncio.to_thread(self._handle.write, data)

    async def finish(self) -> Path:
        """Write what is buffered, make it durable and close: the path holds every byte received."""
        await self._flush()
        handle, self._handle = self._handle, None
        if handle is not None:
            await asyncio.to_thread(_sync_close, handle)
        return self.partial

    async def commit(self) -> None:
        """Give the received file its final name: from now on it can be read."""
        await self.finish()
        await asyncio.to_thread(os.replace, self.partial, self.final)

    async def discard(self) -> None:
        """Forget the received bytes (refused, broken off, or failed)."""
        handle, self._handle = self._handle, None
        self._buffer.clear()
        if handle is not None:
            await asyncio.to_thread(handle.close)
        await asyncio.to_thread(self.partial.unlink, True)


def _sync_close(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


class FileStore:
    """Uploaded files by id, in `root`. Ids are the random, URL-safe slot ids (no separators)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, file_id: str) -> Path:
        if not file_id or "/" in file_id or "\\" in file_id or file_id.startswith("."):
            raise ValueError(f"not a file id: {file_id!r}")
        return self.root / file_id

    def remove_partials(self) -> int:
        """Delete files left half-received by an earlier run (nothing is being received at startup)."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for leftover in self.root.glob("*" + PARTIAL):
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def exists(self, file_id: str) -> bool:
        return self.path(file_id).is_file()

    async def open_for_write(self, file_id: str) -> FileWriter:
        final = self.path(file_id)
        partial = final.with_name(final.name + PARTIAL)

        def _open() -> BinaryIO:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            # "x": never write through an existing file (or a link someone placed there).
            return open(partial, "xb")
        return FileWriter(partial, final, await asyncio.to_thread(_open))

    async def open_for_read(self, file_id: str) -> AsyncIterator[bytes]:
        """The file's bytes, chunk by chunk. Raises FileNotFoundError before the first chunk when
        the file is missing."""
        handle = await asyncio.to_thread(open, self.path(file_id), "rb")
        return _chunks(handle)

    async def delete(self, file_id: str) -> None:
        await asyncio.to_thread(self.path(file_id).unlink, True)


async def _chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while True:
            data = await asyncio.to_thread(handle.read, CHUNK)
            if not data:
                return
            yield data
    finally:
        handle.close()
