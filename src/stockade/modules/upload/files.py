"""Where the bytes of uploaded files live: one file per upload in a folder of the data directory.

Everything that touches the bytes goes through `FileStore` (write, read, delete), so that a store
that encrypts at rest can take its place without the HTTP side or the bookkeeping changing.
A file is written under a temporary name and only gets its final name on `commit()`: a crash or
a refused upload never leaves a half-written file that looks complete, and the temporary files
found at startup are removed.

Disk I/O runs in worker threads, in chunks of at most CHUNK bytes, so a slow disk never stalls the
event loop and no upload or download is ever held in memory whole.

Encryption at rest: with a Cipher (storage/crypto.py) every byte is sealed before it reaches
the disk, the partial file included (chunked AES-256-GCM, the file id as associated data, so a
file renamed to another id does not open), and opened again on reading; nothing plain is ever
written. Files stored while encryption was off (no sealed-file header) are read as they are.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from collections.abc import Callable
from typing import AsyncIterator, BinaryIO

from ...storage.crypto import (FILE_HEADER_BYTES, Cipher, FileOpener, FileSealer, UnknownDataKey,
                               file_key_id, is_sealed_file)

CHUNK = 1024 * 1024          # bytes written or read per trip to a worker thread
PARTIAL = ".part"            # suffix of files still being received


class FileWriter:
    """One file being received. `write()` chunks, then `finish()` (all bytes on disk, not yet
    served), then `commit()` (served from now on) or `discard()` (gone)."""

    def __init__(self, partial: Path, final: Path, handle: BinaryIO, sealer: FileSealer | None = None) -> None:
        self.partial = partial
        self.final = final
        self._handle: BinaryIO | None = handle
        self._sealer = sealer
        self._buffer = bytearray()
        self.size = 0

    async def write(self, data: bytes) -> None:
        self._buffer += data
        self.size += len(data)
        if len(self._buffer) >= CHUNK:
            await self._flush()

    async def _flush(self, is_last: bool = False) -> None:
        if (self._buffer or is_last) and self._handle is not None:
            data = bytes(self._buffer)
            self._buffer.clear()
            await asyncio.to_thread(self._write, self._handle, data, is_last)

    def _write(self, handle: BinaryIO, data: bytes, is_last: bool) -> None:
        sealer = self._sealer
        if sealer is not None:                  # encrypted in the worker thread too
            data = sealer.update(data) + (sealer.finish() if is_last else b"")
        handle.write(data)

    async def finish(self) -> Path:
        """Write what is buffered, make it durable and close: the path holds every byte received."""
        if self._handle is not None:
            await self._flush(is_last=True)
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

    def __init__(self, root: Path, cipher: Cipher | None = None) -> None:
        self.root = root
        self.cipher = cipher            # None: encryption at rest is off

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
        sealer = self.cipher.file_sealer(file_id.encode()) if self.cipher is not None else None
        return FileWriter(partial, final, await asyncio.to_thread(_open), sealer)

    async def open_for_read(self, file_id: str) -> AsyncIterator[bytes]:
        """The file's bytes (decrypted), chunk by chunk. Raises FileNotFoundError before the
        first chunk when the file is missing, OSError when it cannot be decrypted."""
        return await self.read_path(self.path(file_id), file_id)

    def reader(self, path: Path, file_id: str) -> Callable[[], AsyncIterator[bytes]]:
        """A factory of async iterators over the decrypted bytes at `path` (a received file not
        committed yet): what the UploadReceived hook gives its handlers as `read`."""
        async def read() -> AsyncIterator[bytes]:
            async for chunk in await self.read_path(path, file_id):
                yield chunk
        return read

    async def read_path(self, path: Path, file_id: str) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(open, path, "rb")
        try:
            start = await asyncio.to_thread(handle.read, FILE_HEADER_BYTES)
            if not is_sealed_file(start):
                await asyncio.to_thread(handle.seek, 0)
                return _chunks(handle)              # stored while encryption was off
            if self.cipher is None:
                raise OSError(f"{path} is encrypted, but encryption at rest is off "
                              "(encryption.enabled); turn it on again to read it")
            key_id = file_key_id(start)
            if key_id is not None and key_id not in self.cipher.data_keys:
                await self.cipher.reload()          # made by another process
                if key_id not in self.cipher.data_keys:
                    raise OSError(f"{path} cannot be decrypted: {UnknownDataKey(key_id)}")
            opener = self.cipher.file_opener(file_id.encode())
            first = opener.update(start)
            return _opened_chunks(handle, opener, first)
        except BaseException:
            handle.close()
            raise

    async def delete(self, file_id: str) -> None:
        await asyncio.to_thread(self.path(file_id).unlink, True)


async def _opened_chunks(handle: BinaryIO, opener: FileOpener, first: bytes) -> AsyncIterator[bytes]:
    """Decrypted chunks; a chunk is given out only once its tag checked (DecryptError otherwise)."""
    def step() -> tuple[bytes, bool]:
        data = handle.read(CHUNK)
        return (opener.update(data), False) if data else (opener.finish(), True)
    try:
        if first:
            yield first
        while True:
            plain, is_end = await asyncio.to_thread(step)
            if plain:
                yield plain
            if is_end:
                return
    finally:
        handle.close()


async def _chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while True:
            data = await asyncio.to_thread(handle.read, CHUNK)
            if not data:
                return
            yield data
    finally:
        handle.close()
