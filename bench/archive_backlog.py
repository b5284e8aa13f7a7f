"""Reproduce a finding of the benchmark: under 1:1 load with the default modules, Stockade's
message archive (MAM) writes fall behind the routing. The database barely grows while the load
runs, the server's memory grows with every message, and the queued rows are written only after
the load stops (or lost if the process dies first).

    .venv/bin/python -m bench.archive_backlog [--duration 20] [--pairs 500]

It starts Stockade (default modules, benchmark configuration, pinned to core 0), runs the 1:1
scenario on core 1, and prints the server's RSS and the size of its database (with the WAL)
every two seconds, during the load and after it, then the time Stockade takes to exit on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import dataset
from .loadgen.stats import rss_bytes
from .servers import GENERATOR_CORE, REPO, VENV_BIN, Stockade, pinned

SAMPLE_EVERY = 2.0        # seconds between two samples
AFTER_LOAD = 12.0         # seconds sampled after the load generator finished
EXIT_WAIT = 120.0         # seconds to wait for the exit after SIGTERM


def database_mib(data_dir: Path) -> float:
    return sum(p.stat().st_size for p in data_dir.glob("stockade.db*")) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--pairs", type=int, default=500)
    args = parser.parse_args()
    data = dataset.build()
    server = Stockade(data)
    stop = threading.Event()
    started = time.monotonic()

    def sample(label: str) -> None:
        rss = rss_bytes(server.pid) or 0
        print(f"{time.monotonic() - started:6.1f} s  {label:<11} RSS {rss / 2**20:7.0f} MiB   "
              f"database {database_mib(server.data_dir):6.0f} MiB", flush=True)

    def sampler() -> None:
        while not stop.wait(SAMPLE_EVERY):
            sample("under load")

    try:
        server.provision()
        server.start()
        started = time.monotonic()
        sample("started")
        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        proc = subprocess.run(pinned([str(VENV_BIN / "python"), "-m", "bench.loadgen", "one_to_one",
                                      "--port", str(server.port), "--credentials", str(data.client_keys_file()),
                                      "--server-pid", str(server.pid), "--pairs", str(args.pairs),
                                      "--duration", str(args.duration)], GENERATOR_CORE),
                              cwd=REPO, capture_output=True, text=True)
        stop.set()
        thread.join()
        result = json.loads(proc.stdout)
        print(f"load done: {result['msgs_per_s']:.0f} msgs/s, {result['sent']} sent, {result['received']} received",
              flush=True)
        deadline = time.monotonic() + AFTER_LOAD
        while time.monotonic() < deadline:
            sample("after load")
            time.sleep(SAMPLE_EVERY)    # sampling on purpose: watching the server catch up
        t = time.monotonic()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(EXIT_WAIT)
            print(f"exited {time.monotonic() - t:.1f} s after SIGTERM (code {server.proc.returncode})")
        except subprocess.TimeoutExpired:
            print(f"still running {EXIT_WAIT:.0f} s after SIGTERM")
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
