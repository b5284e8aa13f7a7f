"""Python function calls per 1:1 message on the server's event loop, counted, not timed.

    .venv/bin/python -m bench.message_calls                     # default modules
    .venv/bin/python -m bench.message_calls --journal --top 60  # with the journal and the policy set
    .venv/bin/python -m bench.message_calls --garbage           # cyclic garbage per message instead

Starts a throwaway server in this process (plaintext listener on loopback, the benchmark's
configuration: journal, encryption at rest and flood limits off unless `--journal`), logs two
clients in over real sockets, sends a warm-up burst, then counts every Python function call
(and every call of a C function from Python) in the server's thread while `--messages` chat
messages like the load generator's go from one client to the other (sys.setprofile). Prints the
calls per message, most frequent first, each with its function.

On this server a Python call on the message path costs about 0.1-0.3 us with everything around
it (docs/benchmarks.md, "Fewer Python calls per message"), so this count is the quickest way to
see what a change adds to or takes from the message path, without the noise of a timed run.
The writer threads' work (the archive's and the journal's inserts) is not in it.

With `--garbage` it counts instead the objects the measured burst left in reference cycles,
which only the cyclic garbage collector frees (gc.DEBUG_SAVEALL, the whole process): a message
should leave none. Seven per message (a stanza and its children referring to each other) kept
the collector busy for about a seventh of a loaded server's time (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections import Counter
from types import FrameType
from typing import Any, Callable

from stockade.testing.raw import RawStream
from stockade.testing.server import RunningServer

PASSWORD = "correct horse battery staple"


def config(journal: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {"c2s": {"require_tls": False}, "journal": {"enabled": journal},
                           "encryption": {"enabled": False}}
    if not journal:
        doc["hosts"] = [{"domain": "localhost", "policy": {"flood": {"enabled": False}}}]
    return doc


class CallCounter:
    """A profile function: calls by function, Python ones as 'file:line name', C ones as 'C name'."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            where = code.co_filename.rpartition("/src/")[2].rpartition("site-packages/")[2]
            self.calls[f"{where}:{code.co_firstlineno} {code.co_qualname}"] += 1
        elif event == "c_call":
            self.calls[f"C {getattr(arg, '__qualname__', arg)}"] += 1

    def python_calls(self) -> int:
        return sum(n for name, n in self.calls.items() if not name.startswith("C "))


def count(messages: int, journal: bool) -> CallCounter:
    """The calls the server's thread made for `messages` messages."""
    counter = CallCounter()
    exchange(messages, journal,
             lambda server: server.run(lambda: sys.setprofile(counter)),
             lambda server: server.run(lambda: sys.setprofile(None)))
    return counter


def cyclic_garbage(messages: int, journal: bool) -> Counter[str]:
    """The objects, by type, that `messages` messages left in reference cycles (whole process)."""
    found: Counter[str] = Counter()

    def start(_server: RunningServer) -> None:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)

    def stop(_server: RunningServer) -> None:
        gc.collect()
        gc.set_debug(0)
        found.update(type(o).__name__ for o in gc.garbage)
        gc.garbage.clear()

    exchange(messages, journal, start, stop)
    return found


def exchange(messages: int, journal: bool, start: Callable[[RunningServer], None],
             stop: Callable[[RunningServer], None]) -> None:
    """Two clients of a throwaway server: a warm-up burst, then `messages` messages from one to
    the other between `start(server)` and `stop(server)`."""
    with RunningServer(config=config(journal)) as server:
        server.add_user("alice@localhost", PASSWORD)
        server.add_user("bob@localhost", PASSWORD)

        async def clients() -> None:
            alice, bob = await RawStream.open(server), await RawStream.open(server)
            for client, name in ((alice, "alice"), (bob, "bob")):
                answer = await client.authenticate(name, PASSWORD)
                if b"success" not in answer:
                    raise RuntimeError(f"{name} could not log in: {answer!r}")
                await client.bind("bench")
                await client.send("<presence/>")

            async def burst(tag: str) -> None:
                await alice.send("".join(
                    f"<message to='bob@localhost' type='chat' id='b'><body>@{tag}{n:x}:1 the quick brown fox "
                    f"jumps over the lazy dog</body></message>" for n in range(messages)))
                await bob.read_until(f"@{tag}{messages - 1:x}:1 ")

            await burst("w")                  # warm-up: sessions, caches and the archive writer started
            start(server)
            try:
                await burst("m")
            finally:
                stop(server)
            await alice.close()
            await bob.close()

        asyncio.run(clients())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--journal", action="store_true", help="the compliance journal and the default policy set on")
    parser.add_argument("--top", type=int, default=40, help="functions listed")
    parser.add_argument("--garbage", action="store_true", help="count objects left in reference cycles instead")
    args = parser.parse_args()
    what = "journal + policy" if args.journal else "default modules"
    if args.garbage:
        found = cyclic_garbage(args.messages, args.journal)
        print(f"{sum(found.values()) / args.messages:.2f} objects in reference cycles per message "
              f"({args.messages} messages, {what})")
        for name, n in found.most_common(args.top):
            print(f"{n / args.messages:7.2f}  {name}")
        return
    counter = count(args.messages, args.journal)
    c_calls = sum(counter.calls.values()) - counter.python_calls()
    print(f"{counter.python_calls() / args.messages:.1f} Python calls and {c_calls / args.messages:.1f} "
          f"C calls per message ({args.messages} messages, {what})")
    for name, n in counter.calls.most_common(args.top):
        print(f"{n / args.messages:7.2f}  {name}")


if __name__ == "__main__":
    main()
