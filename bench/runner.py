"""bench/run: every scenario against Stockade, Prosody and ejabberd, alternately, in one run.

    bench/run all                          # every scenario, 3 rounds, the issue-4 parameters
    bench/run one_to_one --rounds 3        # one scenario
    bench/run all --quick                  # small parameters: a functional check in a few minutes
    bench/run all --json results.json      # also write every raw result

Each measurement starts the server afresh (pinned to core SERVER_CORE with taskset) from its
provisioned state, runs the load generator on core GENERATOR_CORE, and stops the server. Servers
alternate inside every round (the order rotates from round to round), so a disturbance of the
machine (other work on it) spreads over all of them instead of hitting one. The figures printed
are the median over the rounds with the spread (min-max), and the ratios Stockade/peer of the
medians, next to the targets of issue 4.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import dataset
from .peers import Ejabberd, EjabberdMam, Prosody
from .servers import (GENERATOR_CORE, REPO, SERVER_CORE, VENV_BIN, WORKER_VARIANTS, Server, ServerError, Stockade,
                      git_commit, pinned, snapshot_source, source_importable)

LOADGEN_TIMEOUT = 900.0          # seconds one measurement may take before it is abandoned
SNAPSHOT_WAIT = 600.0            # seconds to wait for src/ to import again (another edit in progress)
SNAPSHOT_RETRY = 15.0


@dataclass(frozen=True)
class Scenario:
    """One row group of the table: a load generator scenario, its parameters, who runs it, and the
    figure that is compared."""
    name: str
    loadgen: str
    params: dict[str, Any]
    metric: str                                # key in the result (dotted for nested)
    unit: str
    higher_is_better: bool = True
    servers: tuple[str, ...] = ("stockade", "prosody", "ejabberd")
    tls: bool = False
    extra_metrics: tuple[tuple[str, str], ...] = ()    # (key, unit) also shown


# The Stockade configurations.
STOCKADE_VARIANTS: dict[str, str] = {
    "stockade": "default",             # every default module: SM, carbons, MAM, offline, MUC, ...
    "stockade-journal": "journal",     # the same with journal, encryption at rest, default policy set
    "stockade-journal-plain": "journal-plain",   # journal and default policy set, no encryption at rest
    "stockade-dlp": "dlp",             # ... plus DLP rules and link warnings
    "stockade-policy": "policy",       # the default policy set alone (no journal, no encryption)
    "stockade-routing": "routing",     # routing only: roster, presence, disco, offline
    "stockade-noarchive": "no-archive",   # every default module but MAM (the peers keep no archive)
    "stockade-2cores": "default",      # every default module, the server not pinned (see UNPINNED)
    "stockade-workers": "workers",     # every default module, one worker process per core, not pinned
    "stockade-journal-workers": "journal-workers",   # "stockade-journal" in one worker process per core
}
# Servers started on every core instead of core SERVER_CORE: what one Stockade process gets out of
# a second core (its database threads run beside the event loop while SQLite works without the
# interpreter lock). The load generator keeps running on GENERATOR_CORE, so on a 2-core machine
# the server shares that core with it.
UNPINNED = {"stockade-2cores", "stockade-workers", "stockade-journal-workers"}
# Run only when named in --servers: ejabberd with its message archive in SQLite (bench/peers.py)
# falls behind under the 1:1 load (about 1,200 msgs/s here) and would add a failed run to every
# `make bench`; it is there to compare archives like for like. The journal in worker processes
# is a figure for docs/benchmarks.md, not a target, and would add a minute to every round.
OPT_IN = {"ejabberd-mam", "stockade-journal-workers"}
# Rounds per server and scenario. The figures are medians over the rounds: with two rounds that
# is their mean, and one round disturbed by the machine moved three targets in the full run at
# 3112e86 (docs/benchmarks.md, "Runs at 3112e86"); the median of three rounds leaves one out.
DEFAULT_ROUNDS = 3
PY_SPY = "py-spy==0.4.3"          # the sampling profiler behind --profile, installed when missing
SERVER_LABELS = {"stockade": "Stockade", "stockade-journal": "Stockade journal+policy+encryption",
                 "stockade-journal-plain": "Stockade journal+policy",
                 "stockade-dlp": "Stockade journal+policy+encryption+DLP", "stockade-policy": "Stockade policy only",
                 "stockade-routing": "Stockade routing-only", "stockade-noarchive": "Stockade without archive",
                 "stockade-2cores": "Stockade on both cores", "stockade-workers": "Stockade workers on all cores",
                 "stockade-journal-workers": "Stockade journal+policy+encryption, workers on all cores",
                 "prosody": "Prosody", "ejabberd": "ejabberd",
                 "ejabberd-mam": "ejabberd with MAM", "stockade-baseline": "Stockade at the baseline"}

SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("login", "login", {"clients": 3000, "concurrency": 100}, "logins_per_s", "logins/s",
             servers=("stockade", "stockade-workers", "prosody", "ejabberd"),
             extra_metrics=(("login_time.p50_ms", "p50 ms"), ("login_time.p99_ms", "p99 ms"),
                            ("per_server_cpu_s", "logins per server CPU-s"))),
    Scenario("one_to_one", "one_to_one", {"pairs": 500, "window": 50, "duration": 20.0, "warmup": 2.0},
             "msgs_per_s", "msgs/s", servers=("stockade", "stockade-policy", "stockade-journal-plain", "stockade-journal", "stockade-dlp",
                                              "stockade-routing", "stockade-noarchive", "stockade-2cores", "stockade-workers",
                                              "stockade-journal-workers", "prosody", "ejabberd", "ejabberd-mam"),
             extra_metrics=(("latency.p50_ms", "p50 ms"), ("latency.p99_ms", "p99 ms"),
                            ("per_server_cpu_s", "msgs per server CPU-s"))),
    # Held 25 s: long enough for Stockade's idle sweep (every 10 s, of connections silent for a
    # whole interval) to have compacted them; right after the login storm is shown beside it.
    Scenario("idle", "idle", {"connections": 10_000, "concurrency": 200, "hold": 25.0}, "kib_per_connection",
             "KiB/conn", higher_is_better=False, servers=("stockade", "stockade-workers", "prosody", "ejabberd"),
             extra_metrics=(("kib_per_connection_at_login", "KiB/conn right after logging in"),)),
    Scenario("idle_tls", "idle", {"connections": 10_000, "concurrency": 200, "hold": 25.0}, "kib_per_connection",
             "KiB/conn", higher_is_better=False, tls=True, servers=("stockade", "stockade-workers", "prosody", "ejabberd"),
             extra_metrics=(("kib_per_connection_at_login", "KiB/conn right after logging in"),)),
    Scenario("presence", "presence", {"users": 200, "contacts": 50, "repeats": 3}, "presences_per_s",
             "presences/s", extra_metrics=(("per_server_cpu_s", "presences per server CPU-s"),)),
    Scenario("muc", "muc", {"occupants": 100, "senders": 10, "window": 5, "duration": 10.0, "warmup": 1.0},
             "deliveries_per_s", "deliveries/s", extra_metrics=(("latency.p99_ms", "p99 ms"),
                                                                ("per_server_cpu_s", "deliveries per server CPU-s"))),
]}

QUICK_PARAMS: dict[str, dict[str, Any]] = {
    "login": {"clients": 300}, "one_to_one": {"pairs": 50, "duration": 3.0, "warmup": 1.0},
    "idle": {"connections": 500, "hold": 1.0}, "idle_tls": {"connections": 300, "hold": 1.0},
    "presence": {"repeats": 1}, "muc": {"occupants": 30, "duration": 3.0},
}


@dataclass
class Target:
    """A target of issue 4, checked on the medians."""
    scenario: str
    text: str
    check: Callable[[dict[str, float]], tuple[float | None, float, bool] | None]   # (value, goal, met)


def _with_baseline(servers: tuple[str, ...], of: str = "stockade") -> tuple[str, ...]:
    """`servers` with the --baseline Stockade right after the configuration it is compared with
    (`of`, --baseline-of), where that runs."""
    if of not in servers:
        return servers
    at = servers.index(of) + 1
    return servers[:at] + ("stockade-baseline",) + servers[at:]


def ab_lines(results: list[dict[str, Any]], scenarios: list[Scenario], of: str) -> list[str]:
    """The --baseline comparison of each scenario's main figure: the working tree's `of` against
    the baseline, as the ratio of their medians and round by round (each round measures the two
    one right after the other)."""
    lines = []
    for scenario in scenarios:
        if of not in scenario.servers or "stockade-baseline" not in scenario.servers:
            continue
        rounds: dict[int, dict[str, float]] = {}
        for r in results:
            if r["scenario"] != scenario.name or r["server"] not in (of, "stockade-baseline") or r.get("errors"):
                continue
            value = dig(r, scenario.metric)
            if value:                                    # a zero figure has no ratio
                rounds.setdefault(r["round"], {})[r["server"]] = value
        pairs = [(v[of], v["stockade-baseline"]) for _, v in sorted(rounds.items()) if len(v) == 2]
        if not pairs:
            continue
        median = statistics.median(a for a, _ in pairs) / statistics.median(b for _, b in pairs)
        by_round = ", ".join(f"{a / b:.3f}" for a, b in pairs)
        lines.append(f"A/B {scenario.name}: {SERVER_LABELS[of]} / {SERVER_LABELS['stockade-baseline']} "
                     f"{scenario.unit}: {median:.3f} by the medians (rounds: {by_round})")
    return lines


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


TARGETS = [
    Target("one_to_one", "Stockade (default modules) >= 2.0x ejabberd msgs/s",
           lambda m: _goal(_ratio(m.get("stockade"), m.get("ejabberd")), 2.0)),
    Target("one_to_one", "Stockade routing-only >= 3.0x ejabberd msgs/s",
           lambda m: _goal(_ratio(m.get("stockade-routing"), m.get("ejabberd")), 3.0)),
    Target("one_to_one", "Stockade journal+policy >= 75% of Stockade (default modules) msgs/s",
           lambda m: _goal(_ratio(m.get("stockade-journal-plain"), m.get("stockade")), 0.75)),
    Target("one_to_one", "Stockade journal+policy+encryption >= 75% of Stockade (default modules) msgs/s",
           lambda m: _goal(_ratio(m.get("stockade-journal"), m.get("stockade")), 0.75)),
    Target("one_to_one", "Stockade workers on all cores >= 1.7x Stockade on one core msgs/s",
           lambda m: _goal(_ratio(m.get("stockade-workers"), m.get("stockade")), 1.7)),
    Target("one_to_one:latency.p99_ms", "Stockade p99 latency <= 0.5x ejabberd's (50 in flight)",
           lambda m: _goal(_ratio(m.get("stockade"), m.get("ejabberd")), 0.5, higher=False)),
    Target("login", "Stockade logins/s >= 2.0x ejabberd (SCRAM-SHA-256)",
           lambda m: _goal(_ratio(m.get("stockade"), m.get("ejabberd")), 2.0)),
    Target("idle", "Stockade idle memory <= 20 KiB per connection (plaintext)",
           lambda m: _goal(m.get("stockade"), 20.0, higher=False)),
    Target("presence", "Stockade presence fan-out >= 2.0x the faster peer",
           lambda m: _goal(_ratio(m.get("stockade"), max(m.get("prosody") or 0, m.get("ejabberd") or 0) or None), 2.0)),
]


def _goal(value: float | None, goal: float, higher: bool = True) -> tuple[float | None, float, bool] | None:
    if value is None:
        return None
    return value, goal, value >= goal if higher else value <= goal


def dig(result: dict[str, Any], key: str) -> float | None:
    value: Any = result
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value if isinstance(value, (int, float)) else None


# -- running ----------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data: dataset.Dataset | None = None
        self.servers: dict[str, Server] = {}
        self.results: list[dict[str, Any]] = []
        self.versions: dict[str, str] = {}
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-run-"))

    def setup(self, needed: set[str]) -> None:
        t = time.perf_counter()
        self.data = dataset.build(self.args.accounts, dataset.DEFAULT_FANOUT_USERS, dataset.DEFAULT_CONTACTS)
        print(f"accounts: {len(self.data.accounts)} with SCRAM-SHA-256 keys ({time.perf_counter() - t:.1f} s)", flush=True)
        if any(key in needed for key in STOCKADE_VARIANTS):
            source, digest = self._snapshot()
            main = Stockade(self.data, "default", source=source)
            main.source_digest = digest
            self.servers["stockade"] = main
            self._provision(main)
            for key, variant in STOCKADE_VARIANTS.items():
                if key != "stockade" and key in needed:
                    # Variants with several workers keep their archive in a file per worker
                    # (storage/archive_files.py): on the single process's data they would move
                    # every archive at each start, so they get data of their own.
                    own = variant in WORKER_VARIANTS
                    self.servers[key] = Stockade(self.data, variant, share_dir=None if own else main.data_dir,
                                                 source=source)
                    self.servers[key].source_digest = digest
                    if own:
                        self._provision(self.servers[key])
            if "stockade-baseline" in needed:
                baseline_src = self._export(self.args.baseline)
                # Provisioned by its own code: its schema may be older than the working tree's.
                baseline = Stockade(self.data, STOCKADE_VARIANTS[self.args.baseline_of], source=baseline_src)
                baseline.name = SERVER_LABELS["stockade-baseline"]
                baseline.source_digest = f"git {self.args.baseline}"
                self.servers["stockade-baseline"] = baseline
                self._provision(baseline)
        for key, cls in (("prosody", Prosody), ("ejabberd", Ejabberd), ("ejabberd-mam", EjabberdMam)):
            if key in needed:
                server = cls(self.data)
                self.servers[key] = server
                self._provision(server)

    def _snapshot(self) -> tuple[Path, str]:
        """A copy of src/ that imports (others may be editing the working tree meanwhile)."""
        deadline = time.monotonic() + SNAPSHOT_WAIT
        while True:
            dest = self.workdir / f"src-{int(time.time())}"
            digest = snapshot_source(dest)
            problem = source_importable(dest)
            if problem is None:
                print(f"Stockade source: snapshot {digest} of src/ (commit {git_commit(REPO)})", flush=True)
                return dest, digest
            shutil.rmtree(dest, ignore_errors=True)
            if time.monotonic() > deadline:
                raise ServerError(f"src/ does not import ({problem}); is an edit in progress?")
            print(f"bench: src/ does not import right now ({problem}); trying again in {SNAPSHOT_RETRY:.0f} s",
                  flush=True)
            time.sleep(SNAPSHOT_RETRY)     # waiting for someone else's edit to be finished

    def _export(self, revision: str) -> Path:
        """src/ as it is at git `revision`, for --baseline."""
        dest = self.workdir / "baseline"
        dest.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "src"], capture_output=True)
        if archive.returncode != 0:
            raise ServerError(f"--baseline {revision}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        source = dest / "src"
        problem = source_importable(source)
        if problem is not None:
            raise ServerError(f"--baseline {revision}: its src/ does not import ({problem})")
        print(f"Stockade baseline: src/ at {revision}", flush=True)
        return source

    def _provision(self, server: Server) -> None:
        server.provision()
        for key, known in self.servers.items():
            self.versions.setdefault(key, known.version())     # now: the tree may change during the run
        print(f"provisioned {server.name} {server.version()}: {len(self.data.accounts)} accounts, "
              f"{len(self.data.roster_pairs())} roster items in {server.provision_seconds:.1f} s", flush=True)

    def cleanup(self) -> None:
        for server in self.servers.values():
            try:
                server.cleanup()
            except Exception as exc:        # keep stopping the others
                print(f"bench: stopping {server.name}: {exc}", file=sys.stderr)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def measure(self, scenario: Scenario, key: str, round_no: int) -> dict[str, Any]:
        server = self.servers[key]
        params = {**scenario.params, **(QUICK_PARAMS.get(scenario.name, {}) if self.args.quick else {}),
                  **self._overrides(scenario)}
        load_before = os.getloadavg()
        entry: dict[str, Any] = {"scenario": scenario.name, "server": key, "round": round_no, "params": params,
                                 "loadavg_before": [round(x, 2) for x in load_before]}
        out = self.workdir / f"{scenario.name}-{key}-{round_no}.json"
        try:
            unpinned = key in UNPINNED or (key == "stockade-baseline" and self.args.baseline_of in UNPINNED)
            server.start(core=None if unpinned else SERVER_CORE)
        except ServerError as exc:
            entry["errors"] = [str(exc)]
            return entry
        try:
            cmd = [str(VENV_BIN / "python"), "-m", "bench.loadgen", scenario.loadgen, "--port", str(server.port),
                   "--domain", dataset.DOMAIN, "--credentials", str(self.data.client_keys_file()),
                   "--server-pid", str(server.pid), "--json-out", str(out)]
            if scenario.tls:
                cmd.append("--tls")
            for name, value in params.items():
                cmd += ["--" + name.replace("_", "-"), str(value)]
            profiler = self._start_profiler(key, server, scenario.name, round_no)
            try:
                proc = subprocess.run(pinned(cmd, GENERATOR_CORE), cwd=REPO, capture_output=True, text=True,
                                      timeout=LOADGEN_TIMEOUT)
            finally:
                if profiler is not None:
                    profiler.send_signal(signal.SIGINT)      # py-spy writes its output on SIGINT
                    profiler.wait(60)
            if out.exists():
                result = json.loads(out.read_text())
                result["loadgen_scenario"] = result.pop("scenario", scenario.loadgen)
                result["params"] = {**params, **result.get("params", {})}
                entry.update(result)
                value, share = dig(entry, scenario.metric), entry.get("server_cpu_share")
                if scenario.higher_is_better and value and share:
                    # the rate per second of server CPU: what one whole core would do, a figure
                    # that other work on the machine (taking CPU from the server) disturbs less
                    entry["per_server_cpu_s"] = round(value / share, 1)
            else:
                entry["errors"] = [f"the load generator failed ({proc.returncode}): {proc.stderr[-2000:]}"]
            alive = server.proc is not None and server.proc.poll() is None
            if not alive:
                entry.setdefault("errors", []).append(f"{server.name} died during the run; log: {server.log_tail(10)}")
            elif entry.get("errors"):
                entry["errors"].append(f"{server.name}'s log ends: {server.log_tail(10)}")
        except subprocess.TimeoutExpired:
            entry["errors"] = [f"the load generator did not finish within {LOADGEN_TIMEOUT:.0f} s"]
        finally:
            server.stop()
        entry["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        return entry

    def _start_profiler(self, key: str, server: Server, scenario: str, round_no: int) -> subprocess.Popen | None:
        """py-spy sampling Stockade during the measurement (--profile DIR): folded stacks for a
        flame graph (flamegraph.pl or speedscope), one file per measurement."""
        if self.args.profile is None or not key.startswith("stockade"):
            return None
        self.args.profile.mkdir(parents=True, exist_ok=True)
        out = self.args.profile / f"{scenario}-{key}-{round_no}.folded"
        gil = ["--gil"] if self.args.profile_gil else []
        return subprocess.Popen([str(VENV_BIN / "py-spy"), "record", "--pid", str(server.pid), "--format", "raw",
                                 "--rate", "250", "--nonblocking", *gil, "--output", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _overrides(self, scenario: Scenario) -> dict[str, Any]:
        out = {}
        for name in scenario.params:
            value = getattr(self.args, name, None)
            if value is not None:
                out[name] = value
        return out

    def run(self, scenarios: list[Scenario]) -> None:
        for round_no in range(1, self.args.rounds + 1):
            for scenario in scenarios:
                keys = [k for k in scenario.servers if k in self.servers]
                shift = (round_no - 1) % len(keys)
                for key in keys[shift:] + keys[:shift]:          # alternate who goes first
                    entry = self.measure(scenario, key, round_no)
                    self.results.append(entry)
                    value = dig(entry, scenario.metric)
                    errors = entry.get("errors") or []
                    print(f"round {round_no} {scenario.name:<10} {SERVER_LABELS[key]:<22} "
                          f"{_fmt(value):>10} {scenario.unit:<12} load {entry['loadavg_before'][0]:.2f} "
                          f"gen CPU {_fmt(entry.get('generator_cpu_share'))} server CPU {_fmt(entry.get('server_cpu_share'))}"
                          + _threads(entry.get("server_thread_shares"))
                          + (f"  ERRORS: {errors[:2]}" if errors else ""), flush=True)


# -- reporting --------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.1f}"


def _threads(shares: dict[str, float] | None) -> str:
    """The server's busiest threads, when it has more than one: " (main 0.83, sqlite-writer-0 0.15)"."""
    if not shares or len(shares) < 2:
        return ""
    return " (" + ", ".join(f"{name} {_fmt(share)}" for name, share in list(shares.items())[:3]) + ")"


def summarise(results: list[dict[str, Any]], scenarios: list[Scenario]) -> dict[str, Any]:
    """Median, min and max per (scenario, metric, server), over the rounds without errors."""
    table: dict[str, Any] = {}
    for scenario in scenarios:
        for metric, unit in ((scenario.metric, scenario.unit), *scenario.extra_metrics):
            row: dict[str, Any] = {}
            for key in scenario.servers:
                values = [v for r in results if r["scenario"] == scenario.name and r["server"] == key
                          and not r.get("errors") and (v := dig(r, metric)) is not None]
                failed = sum(1 for r in results if r["scenario"] == scenario.name and r["server"] == key and r.get("errors"))
                if values or failed:
                    row[key] = {"median": statistics.median(values) if values else None,
                                "min": min(values) if values else None, "max": max(values) if values else None,
                                "n": len(values), "failed": failed}
            table[f"{scenario.name}:{metric}"] = {"unit": unit, "servers": row,
                                                  "higher_is_better": scenario.higher_is_better}
    return table


def render(table: dict[str, Any]) -> str:
    lines = ["| scenario | figure | server | median | spread (min-max) | runs | Stockade / this server |",
             "|---|---|---|---|---|---|---|"]
    for key, row in table.items():
        scenario, metric = key.split(":", 1)
        stockade = (row["servers"].get("stockade") or {}).get("median")
        for server, v in row["servers"].items():
            ratio = _ratio(stockade, v["median"]) if server != "stockade" else None
            spread = "-" if v["min"] is None else f"{_fmt(v['min'])}-{_fmt(v['max'])}"
            runs = f"{v['n']}" + (f" (+{v['failed']} failed)" if v["failed"] else "")
            lines.append(f"| {scenario} | {metric} ({row['unit']}) | {SERVER_LABELS[server]} | {_fmt(v['median'])} | "
                         f"{spread} | {runs} | {'-' if ratio is None else f'{ratio:.2f}x'} |")
    return "\n".join(lines)


def check_targets(table: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for target in TARGETS:
        scenario, _, metric = target.scenario.partition(":")
        row = next((r for k, r in table.items() if k.startswith(scenario + ":")
                    and (not metric or k == f"{scenario}:{metric}")), None)
        if row is None:
            continue
        medians = {k: v["median"] for k, v in row["servers"].items()}
        result = target.check(medians)
        out.append({"target": target.text, "value": None if result is None else round(result[0], 3),
                    "goal": None if result is None else result[1], "met": None if result is None else result[2]})
    return out


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem_kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", default="all", choices=["all", *SCENARIOS])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help=f"measurements per server and scenario (default {DEFAULT_ROUNDS})")
    parser.add_argument("--servers", default=None,
                        help="comma-separated subset of " + ",".join(SERVER_LABELS) + " (default: all)")
    parser.add_argument("--accounts", type=int, default=dataset.DEFAULT_USERS, help="plain accounts provisioned (default 10000)")
    parser.add_argument("--quick", action="store_true", help="small parameters: a functional check, not figures")
    parser.add_argument("--json", type=Path, default=None, help="write every result and the summary here")
    parser.add_argument("--profile", type=Path, default=None,
                        help="sample Stockade with py-spy during each measurement; folded stacks go to this directory")
    parser.add_argument("--profile-gil", action="store_true",
                        help="with --profile: sample only the thread holding the interpreter lock (where CPU goes)")
    parser.add_argument("--baseline", metavar="REVISION", default=None,
                        help="also run Stockade from src/ at this git revision, as the configuration --baseline-of "
                             "names (default modules unless told), right after the working tree's in every round: "
                             "an A/B comparison in one run, whose ratio a line after the table gives; it provisions "
                             "its own database")
    parser.add_argument("--baseline-of", metavar="SERVER", default="stockade",
                        choices=sorted(STOCKADE_VARIANTS),
                        help="with --baseline: the Stockade configuration the baseline runs as and is compared "
                             "with, right after it in every round (default: stockade; e.g. stockade-workers, "
                             "stockade-journal-plain); an A/B line after the table gives their ratio")
    for name in sorted({p for s in SCENARIOS.values() for p in s.params}):
        parser.add_argument("--" + name.replace("_", "-"), dest=name,
                            type=float if name in ("duration", "warmup", "hold") else int, default=None,
                            help="override this scenario parameter")
    args = parser.parse_args(argv)
    scenarios = list(SCENARIOS.values()) if args.scenario == "all" else [SCENARIOS[args.scenario]]
    chosen = set(args.servers.split(",")) if args.servers else set(SERVER_LABELS) - OPT_IN - {"stockade-baseline"}
    if args.baseline:
        chosen.add("stockade-baseline")
        SERVER_LABELS["stockade-baseline"] = f"{SERVER_LABELS[args.baseline_of]} at {args.baseline}"
        scenarios = [Scenario(**{**s.__dict__, "servers": _with_baseline(s.servers, args.baseline_of)})
                     for s in scenarios]
    elif args.baseline_of != "stockade":
        parser.error("--baseline-of needs --baseline")
    unknown = chosen - set(SERVER_LABELS)
    if unknown:
        parser.error(f"unknown server(s): {', '.join(sorted(unknown))}")
    scenarios = [Scenario(**{**s.__dict__, "servers": tuple(k for k in s.servers if k in chosen)}) for s in scenarios]
    needed = {k for s in scenarios for k in s.servers}

    if args.profile is not None and not (VENV_BIN / "py-spy").exists():
        print(f"bench: installing {PY_SPY} into the virtual environment for --profile", flush=True)
        if subprocess.run([str(VENV_BIN / "pip"), "install", "-q", PY_SPY]).returncode != 0:
            parser.error(f"--profile needs py-spy, and `pip install {PY_SPY}` failed")

    bench = Bench(args)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"bench: {started}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
          f"({machine()['cpu']}); servers on core {SERVER_CORE}, generator on core {GENERATOR_CORE}",
          flush=True)
    try:
        bench.setup(needed)
        bench.run(scenarios)
    except KeyboardInterrupt:
        print("bench: interrupted; stopping the servers", file=sys.stderr)
        return 130
    except ServerError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        versions = {k: bench.versions.get(k) or s.version() for k, s in bench.servers.items()}
        provisioning = {k: round(s.provision_seconds, 1) for k, s in bench.servers.items()}
        bench.cleanup()
    table = summarise(bench.results, scenarios)
    targets = check_targets(table)
    print("\n" + render(table) + "\n")
    for t in targets:
        verdict = "n/a" if t["met"] is None else ("MET" if t["met"] else "MISSED")
        print(f"target: {t['target']}: {verdict} (value {_fmt(t['value'])}, goal {t['goal']})")
    if args.baseline:
        for line in ab_lines(bench.results, scenarios, args.baseline_of):
            print(line)
    errors = [r for r in bench.results if r.get("errors")]
    for r in errors:
        print(f"errors in {r['scenario']} / {SERVER_LABELS[r['server']]} round {r['round']}: {r['errors']}")
    if args.json:
        args.json.write_text(json.dumps({"started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                                         "machine": machine(), "versions": versions, "provisioning_s": provisioning,
                                         "argv": sys.argv[1:], "summary": table, "targets": targets,
                                         "results": bench.results}, indent=1))
        print(f"results written to {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
