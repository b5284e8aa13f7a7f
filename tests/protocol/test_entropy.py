"""The buffered random source: bytes handed out once each, from any thread, and never shared
with a forked child."""

from __future__ import annotations

import os
import re
import threading

from stockade.protocol.entropy import BUFFER_SIZE, entropy, token_bytes, token_hex, token_urlsafe


def test_tokens_have_the_shapes_of_the_secrets_module():
    assert len(token_bytes(16)) == 16
    assert re.fullmatch(r"[0-9a-f]{12}", token_hex(6))
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", token_urlsafe(12))
    assert len(entropy.take(BUFFER_SIZE + 10)) == BUFFER_SIZE + 10        # larger than the buffer


def test_threads_taking_at_once_never_get_the_same_bytes():
    taken: list[list[bytes]] = [[] for _ in range(4)]

    def take(out: list[bytes]) -> None:
        for _ in range(20_000):
            out.append(entropy.take(12))
    threads = [threading.Thread(target=take, args=(out,)) for out in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    values = [v for out in taken for v in out]
    assert len(set(values)) == len(values) == 80_000


def test_a_forked_child_does_not_reuse_the_parents_bytes():
    entropy.take(1)                              # the parent has a buffer
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                 # child: report its next bytes, exit at once
        os.write(write, entropy.take(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != entropy.take(16)
