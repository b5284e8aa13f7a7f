"""A short smoke run of the load generator (bench/loadgen) against a throwaway Stockade.

It checks only that the generator works end to end (logins succeed, messages are delivered and
none is lost), never a timing: figures come from `make bench` (docs/benchmarks.md). Plus
deterministic checks of the generator's own pieces: its SCRAM client against Stockade's SCRAM
server, and the byte scanner with stanzas split across reads.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import dataset
from bench.loadgen import scenarios, stats
from bench.loadgen.scram import SaltedPasswords, ScramClient
from bench.servers import Stockade
from stockade.protocol.sasl import Challenge, NeedCredential, Success
from stockade.protocol.sasl.scram import ScramCredential, ScramServer

REPO = Path(__file__).resolve().parents[2]
LOADGEN_TIMEOUT = 60          # seconds; the runs below take a few seconds


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> dataset.Dataset:
    return dataset.build(users=24, fanout_users=4, contacts=2, cache_dir=tmp_path_factory.mktemp("bench-cache"))


@pytest.fixture(scope="module")
def stockade(small_dataset: dataset.Dataset) -> Iterator[Stockade]:
    """Stockade with the benchmark configuration on a free port, provisioned by `stockade import`."""
    server = Stockade(small_dataset)
    try:
        server.provision()
        server.start(core=None)
        yield server
    finally:
        server.cleanup()


def run_loadgen(server: Stockade, data: dataset.Dataset, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench.loadgen", *args, "--port", str(server.port),
                           "--credentials", str(data.client_keys_file()), "--server-pid", str(server.pid)],
                          cwd=REPO, capture_output=True, text=True, timeout=LOADGEN_TIMEOUT)
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def test_login_storm_logs_everyone_in(stockade: Stockade, small_dataset: dataset.Dataset) -> None:
    result = run_loadgen(stockade, small_dataset, "login", "--clients", "12", "--concurrency", "4")
    assert result["errors"] == []
    assert result["logins"] == 12 and result["failures"] == 0
    assert result["login_time"]["samples"] == 12
    assert result["uncached_pbkdf2"] == 0          # every salted password came from the cache


def test_one_to_one_delivers_every_message(stockade: Stockade, small_dataset: dataset.Dataset) -> None:
    result = run_loadgen(stockade, small_dataset, "one_to_one", "--pairs", "3", "--window", "5",
                         "--duration", "1.5", "--warmup", "0.5")
    assert result["errors"] == []
    assert result["delivered"] > 0
    assert result["sent"] == result["received"] and result["lost"] == 0
    assert result["latency"]["samples"] == result["delivered"]
    assert result["server_thread_shares"] is not None       # the server's CPU by thread was read


def test_one_to_one_delivers_every_message_through_worker_processes(small_dataset: dataset.Dataset) -> None:
    """The `stockade-workers` configuration: clients moved to their accounts' workers, messages
    forwarded between them; none lost."""
    server = Stockade(small_dataset, "workers")
    try:
        server.provision()
        server.start(core=None)
        result = run_loadgen(server, small_dataset, "one_to_one", "--pairs", "6", "--window", "5",
                             "--duration", "1.5", "--warmup", "0.5")
    finally:
        server.cleanup()
    assert result["errors"] == []
    assert result["delivered"] > 0
    assert result["sent"] == result["received"] and result["lost"] == 0


def test_thread_cpu_is_told_apart_by_thread_name() -> None:
    """`stats.thread_cpu_seconds` adds up CPU per thread name, the first thread as "main"."""
    def busy() -> None:
        ctypes.CDLL(None).prctl(15, b"bench-busy", 0, 0, 0)      # PR_SET_NAME
        while time.thread_time() < 0.1:                       # CPU time, not a wall-clock wait
            pass
        done.set()
        release.wait(LOADGEN_TIMEOUT)

    done, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=busy)
    thread.start()
    try:
        assert done.wait(LOADGEN_TIMEOUT)
        spent = stats.thread_cpu_seconds(os.getpid())
    finally:
        release.set()
        thread.join()
    assert spent["bench-busy"] >= 0.05               # 0.1 s, in clock ticks: ample margin
    assert "main" in spent
    assert stats.thread_cpu_seconds(2**22 + 1) == {}   # no such process


def test_scram_client_against_stockade_server() -> None:
    salted = SaltedPasswords()
    cred_salt, iterations = b"0123456789abcdef", 4096
    sp = hashlib.pbkdf2_hmac("sha256", b"secret-password", cred_salt, iterations)
    client_key = hmac.digest(sp, b"Client Key", "sha256")
    cred = ScramCredential("sha256", cred_salt, iterations, hashlib.sha256(client_key).digest(),
                           hmac.digest(sp, b"Server Key", "sha256"))
    salted.add("secret-password", cred_salt, iterations, sp)
    client = ScramClient("alice", "secret-password", salted)
    server = ScramServer("SCRAM-SHA-256", b"fake-secret")
    assert isinstance(server.step(client.first()), NeedCredential)
    challenge = server.provide(cred)
    assert isinstance(challenge, Challenge)
    success = server.step(client.final(challenge.data))
    assert isinstance(success, Success)
    client.verify(success.data)
    assert salted.misses == 0


def test_receiver_counts_messages_split_across_reads() -> None:
    class Sink:
        def __init__(self) -> None:
            self.written = b""

        def write(self, data: bytes) -> None:
            self.written += data

    sink = Sink()
    pair = scenarios._Pair(sink, "bob@bench.local", 7)   # type: ignore[arg-type]
    window = scenarios._Window()
    window.open(0, 2**63 - 1)
    handle = scenarios._receiver(pair, window)
    stanza = b"<message from='a@b/c' to='bob@bench.local'><body>@1000:7 hello</body></message>"
    stream = stanza * 5
    cuts = [0, 3, 40, 81, 200, 260, len(stream)]         # read boundaries inside tags and bodies
    for start, end in zip(cuts, cuts[1:]):
        handle(stream[start:end])
    assert pair.received == 5 and window.delivered == 5
    assert len(window.latencies) == 5
    assert sink.written.count(b"<message ") == 5       # the sender's window was refilled, once per delivery


def test_the_rate_follows_deliveries_that_come_in_waves() -> None:
    # 900 messages at once every 0.9 s for 20 s: 1,000 a second. The window holds 23 waves,
    # so the plain count says 1,035 a second; the slope of the cumulative count does not.
    window = scenarios._Window()
    window.open(0, 20_000_000_000)
    for k in range(23):
        window.count(50_000_000 + k * 900_000_000, 900)
    assert window.delivered / 20 == 1035
    assert abs(window.rate() - 1000) < 10
    # Deliveries spread evenly give the plain rate.
    even = scenarios._Window()
    even.open(0, 20_000_000_000)
    for k in range(200):
        even.count(k * scenarios.BIN_NS + 1, 100)
    assert abs(even.rate() - 1000) < 10


def test_the_baseline_comparison_pairs_rounds_and_skips_failed_ones() -> None:
    """The A/B line of --baseline: the ratio of the medians and each round's ratio, from the
    rounds where both ran without errors and delivered something."""
    from bench.runner import SCENARIOS, ab_lines

    def result(server: str, round_no: int, value: float, errors: bool = False) -> dict:
        return {"scenario": "one_to_one", "server": server, "round": round_no,
                "msgs_per_s": value, **({"errors": ["stopped"]} if errors else {})}

    scenario = SCENARIOS["one_to_one"]
    results = [result("stockade-workers", 1, 110.0), result("stockade-baseline", 1, 100.0),
               result("stockade-workers", 2, 90.0), result("stockade-baseline", 2, 100.0),
               result("stockade-workers", 3, 500.0), result("stockade-baseline", 3, 1.0, errors=True),
               result("stockade-workers", 4, 80.0), result("stockade-baseline", 4, 0.0),
               result("stockade", 1, 50.0)]
    scenario = type(scenario)(**{**scenario.__dict__, "servers": ("stockade", "stockade-workers", "stockade-baseline")})
    [line] = ab_lines(results, [scenario], "stockade-workers")
    assert "1.000 by the medians" in line and "rounds: 1.100, 0.900)" in line
    assert ab_lines(results, [scenario], "stockade-journal-plain") == []


def test_a_baseline_revision_runs_beside_the_default_stockade(tmp_path: Path) -> None:
    """bench/run --baseline REV: src/ at REV, exported from git, runs right after the default
    Stockade in every scenario that has one; a revision git does not know is refused by name."""
    from bench.runner import Bench, _with_baseline
    from bench.servers import ServerError

    assert _with_baseline(("stockade", "stockade-routing", "ejabberd")) == (
        "stockade", "stockade-baseline", "stockade-routing", "ejabberd")
    assert _with_baseline(("prosody", "ejabberd")) == ("prosody", "ejabberd")
    assert _with_baseline(("stockade", "stockade-workers", "ejabberd"), "stockade-workers") == (
        "stockade", "stockade-workers", "stockade-baseline", "ejabberd")
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: nothing to export")
    for n, (revision, error) in enumerate((("HEAD", None), ("no-such-revision", "no-such-revision"))):
        bench = Bench.__new__(Bench)
        bench.workdir = tmp_path / str(n)
        bench.workdir.mkdir()
        if error is None:
            assert (bench._export(revision) / "stockade" / "app.py").is_file()
        else:
            with pytest.raises(ServerError, match=error):
                bench._export(revision)
