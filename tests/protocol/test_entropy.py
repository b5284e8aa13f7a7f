"""The buffered random source: bytes handed out once each, from any thread, and never shared
with a forked child."""

from __future__ import annotations

import os
import re
import threading

from stockade.protocol.entropy import BUFFER_SIZE, entropy, token_bytes, token_hex, token_urlsafe, urlsafe_72


def test_tokens_have_the_shapes_of_the_secrets_module():
    assert len(token_bytes(16)) == 16
    assert re.fullmatch(r"[0-9a-f]{12}", token_hex(6))
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", token_urlsafe(12))
    assert len(entropy.take(BUFFER_SIZE + 10)) == BUFFER_SIZE + 10        # larger than the buffer


def _taken_by_threads(take, times: int, threads: int = 4) -> list:
    """What `threads` threads got from calling `take` `times` times each, all at once."""
    taken: list[list] = [[] for _ in range(threads)]

    def run(out: list) -> None:
        for _ in range(times):
            out.append(take())
    workers = [threading.Thread(target=run, args=(out,)) for out in taken]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [v for out in taken for v in out]


def test_threads_taking_at_once_never_get_the_same_bytes():
    values = _taken_by_threads(lambda: entropy.take(12), 20_000)
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


def test_pooled_72_bit_tokens_are_url_safe_and_never_repeat_across_threads_and_refills():
    values = _taken_by_threads(urlsafe_72, 5_000)          # several pools' worth each
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{12}", v) for v in values)
    assert len(set(values)) == len(values) == 20_000


def test_a_forked_child_does_not_reuse_the_parents_pooled_tokens():
    urlsafe_72()                                 # the parent has a pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, urlsafe_72().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 12).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child != urlsafe_72()
