"""CPU per compliance-journal record in the database thread: `prepare` (addresses, JSON), the
optional sealing, digest and chain hash, and the insert, in batches like the journal writer's.

    .venv/bin/python -m bench.journal_append [--batches 10] [--size 2000] [--seal]

Prints the process CPU time per record for each round of batches (all threads; the table grows
from round to round, so later rounds show what index maintenance costs at that size).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from stockade.compliance.journal import ROUTED, prepare
from stockade.storage import Storage
from stockade.storage.crypto import Cipher, Keyring

# A 1:1 message as the server serialises it after stamping its sender.
STANZA = ('<message xmlns="jabber:client" to="u{to:05d}@bench.local" type="chat" id="b" '
          'from="u{sender:05d}@bench.local/r"><body>@1764120000000000005:12 the quick brown fox jumps '
          'over the lazy dog</body></message>')


async def run(batches: int, size: int, rounds: int, seal: bool) -> None:
    folder = tempfile.mkdtemp(prefix="journal-append-")
    keyring = Keyring([bytes(range(32))], "a benchmark key") if seal else None
    storage = await Storage.open(f"sqlite:///{folder}/journal.db", keyring=keyring)
    sealer = storage.cipher.seal if seal and isinstance(storage.cipher, Cipher) else None
    stanzas = [STANZA.format(sender=i % 500, to=(i + 1) % 500).encode() for i in range(size)]
    try:
        for round_no in range(1, rounds + 1):
            # Times grow from record to record, as in the server: the (host, ts) index is then
            # appended at its end (the same times in every batch would insert mid-index, which
            # costs 1 to 2 us more per record and grows with the table).
            first = (round_no - 1) * batches * size
            runs = [[(1764120000.0 + (first + b * size + i) * 1e-4, "bench.local", "chat",
                      f"u{i % 500:05d}@bench.local/r", f"u{(i + 1) % 500:05d}@bench.local", "chat",
                      stanzas[i], ROUTED) for i in range(size)] for b in range(batches)]
            started = time.process_time()
            for entries in runs:
                await storage.journal.append_batch(entries, prepare, sealer, 10 ** 9, None, 0.0)
            spent = time.process_time() - started
            print(f"round {round_no}: {spent / (batches * size) * 1e6:.2f} CPU-us per record "
                  f"({round_no * batches * size} records in the table)")
    finally:
        await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seal", action="store_true", help="seal payloads (encryption at rest)")
    args = parser.parse_args()
    asyncio.run(run(args.batches, args.size, args.rounds, args.seal))


if __name__ == "__main__":
    main()
