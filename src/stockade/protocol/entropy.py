"""Random bytes for values made many times a second: stream ids, SASL nonces, resources,
archive keys, encryption nonces.

Each `os.urandom` is a system call, and a system call lets another thread take the interpreter
lock (the database threads); getting it back can take milliseconds. A login makes several
random values (a stream id per stream header, the SCRAM nonce, a resource), a message several
more. `entropy` reads 64 KiB from the operating system at a time and hands the bytes out once
each. They are the operating system's random bytes (the same source as `secrets`), only read in
larger pieces. A forked child starts with an empty buffer, so two processes never share bytes.
"""

from __future__ import annotations

import base64
import os
import threading
from collections import deque

BUFFER_SIZE = 65536


class _Entropy:
    """Random bytes from the operating system, read 64 KiB at a time and handed out once each.
    Thread-safe: the database threads take bytes too (encryption nonces, data keys)."""

    __slots__ = ("_buffer", "_position", "_lock")

    def __init__(self) -> None:
        self._buffer = b""
        self._position = 0
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._buffer = b""
        self._position = 0
        self._lock = threading.Lock()

    def take(self, count: int) -> bytes:
        with self._lock:
            position = self._position
            if position + count > len(self._buffer):
                self._buffer = os.urandom(max(BUFFER_SIZE, count))
                position = 0
            self._position = position + count
            return self._buffer[position:position + count]


entropy = _Entropy()


class _Tokens:
    """72-bit random values as 12 URL-safe base64 characters, for archive keys (one or two per
    message): encoded POOL at a time, which costs a tenth of encoding each on its own. Taking
    one is a deque's popleft, atomic under the interpreter lock, so threads may share the pool.
    A forked child starts with an empty one."""

    POOL = 1024

    __slots__ = ("_pool",)

    def __init__(self) -> None:
        self._pool: deque[str] = deque()
        os.register_at_fork(after_in_child=self._pool.clear)

    def take(self) -> str:
        try:
            return self._pool.popleft()
        except IndexError:
            text = base64.urlsafe_b64encode(entropy.take(9 * self.POOL)).decode("ascii")
            self._pool.extend([text[i:i + 12] for i in range(12, len(text), 12)])
            return text[:12]


urlsafe_72 = _Tokens().take


def token_bytes(count: int) -> bytes:
    """`count` random bytes (like secrets.token_bytes)."""
    return entropy.take(count)


def token_hex(count: int) -> str:
    """`count` random bytes as 2 * count hexadecimal digits (like secrets.token_hex)."""
    return entropy.take(count).hex()


def token_urlsafe(count: int) -> str:
    """`count` random bytes in URL-safe base64 without padding (like secrets.token_urlsafe)."""
    return base64.urlsafe_b64encode(entropy.take(count)).rstrip(b"=").decode("ascii")
