"""Measurements around a scenario: percentiles, the CPU the generator and the server used, RSS."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NS_PER_US = 1_000
NS_PER_MS = 1_000_000


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (fraction in [0, 1]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


def summary_ms(values_ns: list[int]) -> dict[str, float | None]:
    """p50/p99/max of durations given in nanoseconds, in milliseconds."""
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v / NS_PER_MS, 3)
    return {"p50_ms": ms(percentile(values_ns, 0.50)), "p99_ms": ms(percentile(values_ns, 0.99)),
            "max_ms": ms(max(values_ns) if values_ns else None), "samples": len(values_ns)}


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads) and of its live child processes (any helper
    processes a server starts), from /proc/PID/stat; None if it is gone."""
    own = _stat(pid)
    if own is None:
        return None
    total = own[1]
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != str(pid):
            child = _stat(int(entry))
            if child is not None and child[0] == pid:
                total += child[1]
    return total


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, or None if it is gone."""
    stat = _read_stat(f"/proc/{pid}/stat")
    return None if stat is None else stat[1:]


def _read_stat(path: str) -> tuple[str, int, float] | None:
    """(name, parent pid, CPU seconds) from a proc(5) stat file of a process or a thread, or None
    if it is gone."""
    try:
        with open(path) as f:
            head, _, rest = f.read().rpartition(")")
    except OSError:
        return None
    fields = rest.split()
    # fields[0] is field 3 (state) of proc(5); ppid is field 4, utime and stime are fields 14 and 15
    return head.partition("(")[2], int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads by name: "main" for the first thread (the event loop's,
    for Stockade), the others by the name the operating system knows them by (Stockade names its
    database threads sqlite-writer-0 and sqlite-reader-N); threads of one name are added up.
    Empty if the process is gone."""
    totals: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return totals
    for tid in tids:
        stat = _read_stat(f"/proc/{pid}/task/{tid}/stat")
        if stat is None:
            continue                         # the thread ended meanwhile
        name = "main" if tid == str(pid) else stat[0]
        totals[name] = totals.get(name, 0.0) + stat[2]
    return totals


def rss_bytes(pid: int) -> int | None:
    """VmRSS of a process and of its live child processes (Stockade's other worker processes),
    from /proc/PID/status; None if the process is gone."""
    own = _rss(pid)
    if own is None:
        return None
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != str(pid):
            child = _stat(int(entry))
            if child is not None and child[0] == pid:
                own += _rss(int(entry)) or 0
    return own


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def own_cpu_seconds() -> float:
    """CPU seconds (user + system) this process and its finished children used so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class CpuWindow:
    """CPU used by the generator and the server between `start()` and `stop()`."""
    server_pid: int | None = None
    wall: float = 0.0
    generator: float = 0.0
    server: float | None = None
    threads: dict[str, float] | None = None     # the server's CPU seconds by thread name

    def start(self) -> None:
        self._t = time.perf_counter()
        self._g = own_cpu_seconds()
        self._s = process_cpu_seconds(self.server_pid) if self.server_pid else None
        self._threads = thread_cpu_seconds(self.server_pid) if self.server_pid else {}

    def stop(self) -> None:
        self.wall = time.perf_counter() - self._t
        self.generator = own_cpu_seconds() - self._g
        if self.server_pid and self._s is not None:
            end = process_cpu_seconds(self.server_pid)
            self.server = None if end is None else end - self._s
            threads = thread_cpu_seconds(self.server_pid)
            # A thread started during the window counts from zero.
            self.threads = {name: spent - self._threads.get(name, 0.0) for name, spent in threads.items()} or None

    def as_dict(self) -> dict[str, float | None]:
        """Seconds, and the share of one core (1.0 = one core busy all the time)."""
        wall = self.wall or 1e-9
        return {"window_s": round(self.wall, 3),
                "generator_cpu_s": round(self.generator, 3),
                "generator_cpu_share": round(self.generator / wall, 3),
                "server_cpu_s": None if self.server is None else round(self.server, 3),
                "server_cpu_share": None if self.server is None else round(self.server / wall, 3),
                # Threads that used at least 0.5% of a core, busiest first.
                "server_thread_shares": None if self.threads is None else {
                    name: round(spent / wall, 3)
                    for name, spent in sorted(self.threads.items(), key=lambda item: -item[1])
                    if spent / wall >= 0.005}}
