"""Encryption at rest: AES-256-GCM envelope encryption of message bodies and uploaded files.

Two levels of keys (docs/encryption.md):

- Master keys (`Keyring`): 32 random bytes each, kept OUTSIDE the database, in a key file or an
  environment variable (storage/keyfile.py). A master key never encrypts data; it only wraps
  (encrypts) data keys. Its id is derived from the key itself (`master_key_id`), so a key file
  cannot name a key wrongly.
- Data keys (`data_keys` table, storage/datakeys.py): 32 random bytes each, stored wrapped by a
  master key. A process unwraps them all once at start (`Cipher`) and keeps them in memory;
  a server start seals with the newest one (and makes a new one after 2**30 seals). Rotating the
  master key (`stockade keys rotate`) rewraps the data keys only: no data is re-encrypted.

Formats (version 1):

- A sealed value (`Cipher.seal`): version byte 0x01, data key id (4 bytes, big-endian),
  96-bit nonce, AES-256-GCM ciphertext and 16-byte tag. The version byte and key id are part of
  the authenticated data together with the caller's `aad`, which binds the value to where it
  belongs (an archive value to its store and owner), so a value copied to another row does not
  open there.
- A sealed text column (`Cipher.seal_text`): MARKER ("$sk1$") and the standard base64 of a
  sealed value. Text without the marker is a value written while encryption was off, and is
  returned as it is.
- A sealed file (`FileSealer`, `FileOpener`): FILE_MAGIC ("SKF1"), version 0x01, data key id
  (4 bytes), an 8-byte random nonce prefix; then chunks of FILE_CHUNK (64 KiB) plaintext bytes,
  each sealed with the nonce prefix + the chunk index (4 bytes) and with the header, the chunk
  index and a last-chunk flag as authenticated data. The last chunk (possibly empty) carries the
  flag: reordered, duplicated, dropped or truncated chunks all fail to open.

Nonces. A value's nonce is a 64-bit random prefix, drawn when the process starts sealing and
again every 2**32 values, followed by a 32-bit counter (the "fixed field + invocation counter"
construction of NIST SP 800-38D 8.2.1, with a random fixed field): unique within a process
without a system call per value (the message path seals three values per message), and two
processes (or two runs) sealing with the same data key would need the same 64-bit prefix to
collide. A file's nonces are its own random 64-bit prefix plus the chunk index. Stockade also
starts a new data key after 2**30 values sealed by one process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import StorageError
from ..protocol.entropy import entropy

if TYPE_CHECKING:
    from .datakeys import DataKeyStore

KEY_BYTES = 32                      # AES-256
NONCE_BYTES = 12                    # 96 bits, as GCM wants them
_NONCE_COUNTER_LIMIT = 2 ** 32       # values per random nonce prefix (a 4-byte counter)
TAG_BYTES = 16
VERSION = 1
_HEADER = struct.Struct(">BI")      # version, data key id
HEADER_BYTES = _HEADER.size
MARKER = "$sk1$"                    # prefix of a sealed text column value
MAX_SEALS_PER_KEY = 2 ** 30         # then a new data key (random nonces: stay far below 2**32)

FILE_MAGIC = b"SKF1"
FILE_CHUNK = 64 * 1024              # plaintext bytes per sealed chunk
_FILE_HEADER = struct.Struct(">4sBI8s")     # magic, version, data key id, nonce prefix
FILE_HEADER_BYTES = _FILE_HEADER.size
_CHUNK_AAD = struct.Struct(">IB")           # chunk index, is-last flag

log = logging.getLogger(__name__)


class KeyFileError(StorageError):
    """The master key is missing, unreadable, malformed or wrong. The message names the file (or
    environment variable), says what is wrong with it and what to do. Startup stops on it:
    Stockade never falls back to storing data unencrypted."""


class DecryptError(ValueError):
    """A sealed value or file did not open: wrong key, wrong aad, or changed bytes."""


class UnknownDataKey(DecryptError):
    """The value was sealed with a data key this process has not loaded (yet)."""

    def __init__(self, key_id: int) -> None:
        super().__init__(f"the data was encrypted with data key {key_id}, which this process has not "
                         "loaded; it may have been created by another process, or removed from the database")
        self.key_id = key_id


def master_key_id(key: bytes) -> str:
    """A master key's short id: 8 hex digits of a hash of the key (not of any secret use)."""
    return hashlib.sha256(b"stockade master key id\0" + key).hexdigest()[:8]


class Keyring:
    """The master keys, in the order of the key file: the last one is current (wraps new data
    keys); the others are kept while data keys wrapped by them remain (during a rotation).

    `source` says where the keys came from, for messages ("the key file /var/keys/master.key",
    "the environment variable STOCKADE_MASTER_KEY"). `path` is the key file, None for the
    environment. `is_new`: the keys were just generated and are not written yet; `Storage.open`
    writes them only if the database holds no data keys (storage/keyfile.py).
    """

    def __init__(self, keys: list[bytes], source: str, *, path: object = None, is_new: bool = False) -> None:
        if not keys:
            raise KeyFileError(f"{source} holds no master key; restore it from your backup")
        for key in keys:
            if len(key) != KEY_BYTES:
                raise KeyFileError(f"{source} holds a key of {len(key)} bytes; master keys are "
                                   f"{KEY_BYTES} bytes (AES-256); restore the file from your backup")
        self.keys: dict[str, bytes] = {master_key_id(k): k for k in keys}
        self.current_id = master_key_id(keys[-1])
        self.source = source
        self.path = path
        self.is_new = is_new
        self.refresh: Callable[[], Keyring] | None = None       # re-reads the file (keyfile.py)

    @property
    def ids(self) -> list[str]:
        return list(self.keys)

    def wrap(self, data_key_id: int, data_key: bytes) -> tuple[bytes, str]:
        """`data_key` encrypted with the current master key, and that key's id."""
        # os.urandom, not the shared buffer: this may run in a database thread (rare, not on
        # the message path), and the buffer is for the event loop's thread only.
        nonce = os.urandom(NONCE_BYTES)
        wrapped = nonce + AESGCM(self.keys[self.current_id]).encrypt(nonce, data_key, _wrap_aad(data_key_id))
        return wrapped, self.current_id

    def unwrap(self, data_key_id: int, wrapped: bytes, master_id: str) -> bytes:
        """The data key; KeyFileError (naming the source) if it cannot be unwrapped."""
        master = self.keys.get(master_id)
        if master is None:
            raise KeyFileError(
                f"{self.source} does not hold master key {master_id}, which wraps data key {data_key_id} "
                f"in the database (it holds {', '.join(self.keys)}); this is the wrong key, or a key "
                "rotation was not finished: restore the key file from your backup")
        try:
            key = AESGCM(master).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(data_key_id))
        except (InvalidTag, ValueError):
            raise KeyFileError(f"master key {master_id} of {self.source} cannot unwrap data key "
                               f"{data_key_id}: the key or the data_keys table was changed; restore "
                               "the key file (and the database) from your backup") from None
        if len(key) != KEY_BYTES:
            raise KeyFileError(f"data key {data_key_id} unwrapped to {len(key)} bytes; the data_keys "
                               "table is damaged: restore the database from your backup")
        return key


def _wrap_aad(data_key_id: int) -> bytes:
    return b"stockade data key\0" + str(data_key_id).encode()


@dataclass(frozen=True, slots=True)
class DataKey:
    id: int
    key: bytes
    master_key_id: str
    created: float


class Cipher:
    """Seals and opens values with the data keys of one database (one per Storage).

    `seal`/`open` are synchronous and cheap (a few microseconds for a stanza): they are on the
    message path. `unseal` is `open` that first loads data keys another process created.
    """

    def __init__(self, keyring: Keyring, store: DataKeyStore | None = None) -> None:
        self.keyring = keyring
        self._store = store
        self._aead: dict[int, AESGCM] = {}
        self.data_keys: dict[int, DataKey] = {}
        self._current: int | None = None
        self._current_aead: AESGCM | None = None
        self._header = b""
        self._seals = 0
        self._renewing: asyncio.Task[None] | None = None
        self._nonce_prefix = b""                           # drawn at the first seal (see above)
        self._nonce_counter = _NONCE_COUNTER_LIMIT

    @classmethod
    async def load(cls, keyring: Keyring, store: DataKeyStore) -> Cipher:
        """Unwrap every data key of the database and seal with the newest one (made if none).
        Raises KeyFileError when the keyring cannot unwrap them."""
        cipher = cls(keyring, store)
        await cipher.reload()
        if cipher._current is None:
            await cipher.new_data_key()
        return cipher

    # -- data keys -----------------------------------------------------------------------------
    def add_data_key(self, data_key: DataKey, *, is_current: bool = False) -> None:
        """Use `data_key` for opening, and for sealing if `is_current` (or if it is the only one)."""
        self.data_keys[data_key.id] = data_key
        self._aead[data_key.id] = AESGCM(data_key.key)
        if is_current or self._current is None:
            self._use(data_key.id)

    def _use(self, key_id: int) -> None:
        self._current = key_id
        self._current_aead = self._aead[key_id]
        self._header = _HEADER.pack(VERSION, key_id)
        self._seals = 0

    async def reload(self) -> None:
        """Load the data keys this process does not have yet (made by another process)."""
        if self._store is None:
            return
        newest = None
        for key_id, wrapped, master_id, created in await self._store.all():
            newest = key_id
            if key_id not in self.data_keys:
                key = self.keyring.unwrap(key_id, wrapped, master_id)
                self.data_keys[key_id] = DataKey(key_id, key, master_id, created)
                self._aead[key_id] = AESGCM(key)
        if self._current is None and newest is not None:
            self._use(newest)

    async def new_data_key(self) -> DataKey:
        """Make a data key, store it wrapped by the current master key, and seal with it."""
        assert self._store is not None
        if self.keyring.refresh is not None:
            # A rotation by another process may have replaced the master key since this
            # process read the key file: wrap with the key file's current key.
            self.keyring = self.keyring.refresh()
        data_key = await self._store.create(self.keyring)
        self.add_data_key(data_key, is_current=True)
        return data_key

    @property
    def current_key_id(self) -> int | None:
        return self._current

    def _count_seal(self) -> None:
        self._seals += 1
        if self._seals >= MAX_SEALS_PER_KEY and self._renewing is None and self._store is not None:
            # Sealing goes on with the current key (far below the 2**32 limit) until the new
            # one is stored.
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._renewing = loop.create_task(self._renew(), name="stockade-new-data-key")

    async def _renew(self) -> None:
        try:
            await self.new_data_key()
        except Exception:
            log.exception("making a new data key failed; sealing goes on with data key %s", self._current)
            self._seals = 0
        finally:
            self._renewing = None

    # -- values --------------------------------------------------------------------------------
    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypt `plaintext`; `aad` (not stored) must be given again to open it."""
        aead = self._current_aead
        if aead is None:
            raise StorageError("encryption at rest has no data key; open the Storage with Storage.open")
        header = self._header
        counter = self._nonce_counter
        if counter >= _NONCE_COUNTER_LIMIT:
            self._nonce_prefix, counter = entropy.take(8), 0
        self._nonce_counter = counter + 1
        nonce = self._nonce_prefix + counter.to_bytes(4, "big")
        self._count_seal()
        return header + nonce + aead.encrypt(nonce, plaintext, header + aad)

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """Decrypt what `seal` made. DecryptError if it was changed or `aad` differs,
        UnknownDataKey if its data key is not loaded."""
        if len(sealed) < HEADER_BYTES + NONCE_BYTES + TAG_BYTES:
            raise DecryptError(f"a sealed value has at least {HEADER_BYTES + NONCE_BYTES + TAG_BYTES} "
                               f"bytes; this one has {len(sealed)}: it was cut short")
        version, key_id = _HEADER.unpack_from(sealed)
        if version != VERSION:
            raise DecryptError(f"unknown sealed-value version {version}; a newer Stockade wrote it")
        aead = self._aead.get(key_id)
        if aead is None:
            raise UnknownDataKey(key_id)
        start = HEADER_BYTES + NONCE_BYTES
        try:
            return aead.decrypt(sealed[HEADER_BYTES:start], sealed[start:], sealed[:HEADER_BYTES] + aad)
        except InvalidTag:
            raise DecryptError("a sealed value did not decrypt: it was changed, or belongs elsewhere "
                               "(wrong associated data)") from None

    async def unseal(self, sealed: bytes, aad: bytes = b"") -> bytes:
        """`open`, loading data keys made by another process first when needed."""
        try:
            return self.open(sealed, aad)
        except UnknownDataKey:
            await self.reload()
            return self.open(sealed, aad)

    def seal_text(self, text: str, aad: bytes = b"") -> str:
        """A sealed value for a Text column: MARKER and base64."""
        return MARKER + binascii.b2a_base64(self.seal(text.encode(), aad), newline=False).decode("ascii")

    def open_text(self, stored: str, aad: bytes = b"") -> str:
        """The text `seal_text` sealed; a value without the marker (stored while encryption was
        off) unchanged."""
        if not stored.startswith(MARKER):
            return stored
        try:
            sealed = base64.b64decode(stored[len(MARKER):], validate=True)
        except (binascii.Error, ValueError):
            raise DecryptError("a sealed text value is not valid base64: it was changed") from None
        try:
            return self.open(sealed, aad).decode()
        except UnicodeDecodeError:
            raise DecryptError("a sealed text value did not decrypt to UTF-8 text") from None

    async def unseal_text(self, stored: str, aad: bytes = b"") -> str:
        """`open_text`, loading data keys made by another process first when needed."""
        try:
            return self.open_text(stored, aad)
        except UnknownDataKey:
            await self.reload()
            return self.open_text(stored, aad)

    # -- files ---------------------------------------------------------------------------------
    def file_sealer(self, aad: bytes = b"") -> FileSealer:
        """A sealer for one file; `aad` (the file's id) must be given again to open it."""
        if self._current is None:
            raise StorageError("encryption at rest has no data key; open the Storage with Storage.open")
        self._count_seal()
        return FileSealer(self._aead[self._current], self._current, aad)

    def file_opener(self, aad: bytes = b"") -> FileOpener:
        return FileOpener(self, aad)


def is_sealed_file(start: bytes) -> bool:
    """Whether the first bytes of a file are those of a sealed file."""
    return start[:len(FILE_MAGIC) + 1] == FILE_MAGIC + bytes([VERSION])


def file_key_id(start: bytes) -> int | None:
    """The data key id of a sealed file from its first FILE_HEADER_BYTES bytes (None if not one)."""
    if len(start) < FILE_HEADER_BYTES or not is_sealed_file(start):
        return None
    return _FILE_HEADER.unpack_from(start)[2]


def sealed_file_size(plain_size: int) -> int:
    """The size on disk of a sealed file of `plain_size` bytes."""
    chunks = max(1, -(-plain_size // FILE_CHUNK))       # the last chunk holds 1..FILE_CHUNK bytes
    return FILE_HEADER_BYTES + plain_size + chunks * TAG_BYTES


class FileSealer:
    """Seals one file as it is written: `update(data)` and then `finish()` return the bytes to
    write (nothing plain is ever written). A chunk goes out only once more data follows it, so
    that the last one can carry the last-chunk flag."""

    def __init__(self, aead: AESGCM, key_id: int, aad: bytes) -> None:
        self._aead = aead
        self._aad = aad
        prefix = entropy.take(8)
        self._header = _FILE_HEADER.pack(FILE_MAGIC, VERSION, key_id, prefix)
        self._prefix = prefix
        self._index = 0
        self._buffer = bytearray()
        self._is_started = False

    def _chunk(self, data: bytes, is_last: bool) -> bytes:
        if self._index >= 2 ** 32:
            raise ValueError("a sealed file holds at most 2**32 chunks (256 TiB)")
        nonce = self._prefix + struct.pack(">I", self._index)
        aad = self._header + _CHUNK_AAD.pack(self._index, is_last) + self._aad
        self._index += 1
        return self._aead.encrypt(nonce, data, aad)

    def update(self, data: bytes) -> bytes:
        out = []
        if not self._is_started:
            self._is_started = True
            out.append(self._header)
        self._buffer += data
        while len(self._buffer) > FILE_CHUNK:
            out.append(self._chunk(bytes(self._buffer[:FILE_CHUNK]), False))
            del self._buffer[:FILE_CHUNK]
        return b"".join(out)

    def finish(self) -> bytes:
        start = self.update(b"")
        last = self._chunk(bytes(self._buffer), True)
        self._buffer.clear()
        return start + last


class FileOpener:
    """Opens one sealed file as it is read: `update(data)` returns the plaintext verified so far,
    `finish()` raises DecryptError when the file ended early. A chunk is only returned once its
    tag checked, and the last one only once the end of the file is seen."""

    def __init__(self, cipher: Cipher, aad: bytes) -> None:
        self._cipher = cipher
        self._aad = aad
        self._buffer = bytearray()
        self._header = b""
        self._aead: AESGCM | None = None
        self._prefix = b""
        self._index = 0
        self._is_done = False

    def key_id(self, start: bytes) -> int:
        """The data key the file was sealed with (from its first FILE_HEADER_BYTES bytes)."""
        key_id = file_key_id(start)
        if key_id is None:
            raise DecryptError("the file is not a sealed Stockade file (its header is wrong)")
        return key_id

    def _chunk(self, data: bytes, is_last: bool) -> bytes:
        assert self._aead is not None
        nonce = self._prefix + struct.pack(">I", self._index)
        aad = self._header + _CHUNK_AAD.pack(self._index, is_last) + self._aad
        try:
            plain = self._aead.decrypt(nonce, data, aad)
        except InvalidTag:
            where = "its last chunk" if is_last else f"chunk {self._index}"
            raise DecryptError(f"a sealed file did not decrypt at {where}: it was changed, cut short, "
                               "reordered, or belongs to another file") from None
        self._index += 1
        return plain

    def update(self, data: bytes) -> bytes:
        if self._is_done:
            raise DecryptError("a sealed file has bytes after its last chunk")
        self._buffer += data
        if self._aead is None:
            if len(self._buffer) < FILE_HEADER_BYTES:
                return b""
            key_id = self.key_id(bytes(self._buffer[:FILE_HEADER_BYTES]))
            aead = self._cipher._aead.get(key_id)
            if aead is None:
                raise UnknownDataKey(key_id)
            self._header = bytes(self._buffer[:FILE_HEADER_BYTES])
            self._prefix = self._header[-8:]
            self._aead = aead
            del self._buffer[:FILE_HEADER_BYTES]
        out = []
        size = FILE_CHUNK + TAG_BYTES
        # Keep at least one byte past a full chunk before opening it: it is then not the last.
        while len(self._buffer) > size:
            out.append(self._chunk(bytes(self._buffer[:size]), False))
            del self._buffer[:size]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._aead is None:
            raise DecryptError("a sealed file ended inside its header: it was cut short")
        if len(self._buffer) < TAG_BYTES:
            raise DecryptError("a sealed file ended without its last chunk: it was cut short")
        plain = self._chunk(bytes(self._buffer), True)
        self._buffer.clear()
        self._is_done = True
        return plain
