"""The benchmark scenarios. Each is one coroutine taking the environment and its parameters and
returning a JSON-able dict of results (the figures, the checks, and the CPU the generator and the
server used in the measured window).

Every scenario also checks what it can without costing the hot path: logins that failed, messages
sent but never delivered once the senders stopped (after a drain), presences missing, occupants
that never got into the room. A scenario that loses anything says so in `errors`.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .scram import SaltedPasswords
from .stats import NS_PER_US, CpuWindow, rss_bytes, summary_ms
from .xmpp import Connection, login

DRAIN_TIMEOUT = 15.0          # seconds to wait, after the senders stopped, for messages in flight
CLOSE_TIMEOUT = 20.0          # seconds to wait for the server to close connections we ended
PRESENCE_TIMEOUT = 30.0       # seconds a presence fan-out round may take before it counts as failed
JOIN_TIMEOUT = 30.0           # seconds for a room occupant to get its own presence back
MAX_ERRORS_KEPT = 5           # distinct error texts kept in a result
ROOM = "bench"

# The body of every timed message starts with "@<send time in ns, hexadecimal>:<sender index>";
# the receivers find it with one regular-expression scan per chunk, never an XML parse. In
# hexadecimal, not decimal: a 15-digit decimal number in every message would make every server's
# DLP card detector do the work it does for numbers that look like card numbers (an ordinary chat
# message rarely has one).
_STAMP = re.compile(rb"<body>@([0-9a-f]+):(\d+)")
_PRESENCE_FROM = re.compile(rb"<presence\b[^>]*?\bfrom=['\"]([^'\"/]+)")
_SELF_PRESENCE = re.compile(rb"code=['\"]110['\"]")
_CONFIG_REPLY = re.compile(rb"<iq\b[^>]*\bid=['\"]cfg1['\"]")
_MESSAGE_END = b"</message>"
_MAX_TAIL = 1 << 20           # a partial stanza carried to the next chunk never grows past this


@dataclass
class Env:
    """Where and as whom to connect, shared by every scenario."""
    host: str
    port: int
    domain: str
    muc_domain: str
    credentials: dict[str, tuple[str, bytes, int]]     # user -> (password, salt, iterations)
    salted: SaltedPasswords
    tls: ssl.SSLContext | None = None
    server_pid: int | None = None
    concurrency: int = 100
    errors: list[str] = field(default_factory=list)

    def note(self, error: BaseException | str) -> None:
        text = str(error)
        if text not in self.errors and len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(text)

    def users(self, prefix: str, count: int, first: int = 0) -> list[str]:
        names = sorted(u for u in self.credentials if u.startswith(prefix))
        if first + count > len(names):
            raise ValueError(f"the scenario needs {first + count} '{prefix}' accounts, {len(names)} are provisioned")
        return names[first:first + count]

    async def login(self, user: str, *, presence: bool = True, handler: Callable[[bytes], None] | None = None,
                    resource: str = "bench") -> tuple[Connection, float]:
        password, _salt, _iterations = self.credentials[user]
        return await login(self.host, self.port, self.domain, user, password, self.salted, resource=resource,
                           tls=self.tls, presence=presence, handler=handler)


async def login_all(env: Env, users: Iterable[str], *, presence: bool = True, concurrency: int | None = None,
                    handlers: dict[str, Callable[[bytes], None]] | None = None
                    ) -> tuple[dict[str, Connection], list[int], int]:
    """Log `users` in with at most `concurrency` logins in flight.
    Returns the connections by user, each login's duration (ns) and the number of failures."""
    limit = asyncio.Semaphore(concurrency or env.concurrency)
    conns: dict[str, Connection] = {}
    durations: list[int] = []
    failures = 0

    async def one(user: str) -> None:
        nonlocal failures
        async with limit:
            try:
                conn, seconds = await env.login(user, presence=presence,
                                                handler=handlers.get(user) if handlers else None)
            except Exception as exc:       # every failure is counted and its text kept
                failures += 1
                env.note(f"login {user}: {type(exc).__name__}: {exc}")
                return
            conns[user] = conn
            durations.append(int(seconds * 1e9))

    await asyncio.gather(*(one(u) for u in users))
    return conns, durations, failures


async def close_all(conns: Iterable[Connection]) -> int:
    """End every stream and wait for the server to close; returns how many had to be aborted."""
    conns = list(conns)
    for conn in conns:
        conn.close()
    pending = [c.closed for c in conns if not c.closed.done()]
    aborted = 0
    if pending:
        _done, late = await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)
        aborted = len(late)
    for conn in conns:
        if not conn.closed.done():
            conn.abort()
    return aborted


def _base_result(env: Env, cpu: CpuWindow) -> dict[str, Any]:
    return {**cpu.as_dict(), "uncached_pbkdf2": env.salted.misses}


# -- login storm ------------------------------------------------------------------------------
async def login_storm(env: Env, clients: int = 2000, concurrency: int = 100) -> dict[str, Any]:
    """`clients` users connect, authenticate, bind and send initial presence, `concurrency` at a
    time; logins per second and the distribution of one login's duration."""
    users = env.users("u", clients)
    cpu = CpuWindow(env.server_pid)
    cpu.start()
    conns, durations, failures = await login_all(env, users, concurrency=concurrency)
    cpu.stop()
    await close_all(conns.values())
    return {**_base_result(env, cpu), "clients": clients, "concurrency": concurrency, "logins": len(conns),
            "failures": failures, "logins_per_s": round(len(conns) / cpu.wall, 1),
            "login_time": summary_ms(durations), "errors": env.errors}


# -- 1:1 throughput and latency --------------------------------------------------------------------
class _Pair:
    """A sender and its receiver; the sender keeps `window` messages in flight."""

    __slots__ = ("sender", "prefix", "suffix", "sent", "received", "sending")

    def __init__(self, sender: Connection | None, to: str, index: int) -> None:
        self.sender = sender
        self.prefix = f"<message to='{to}' type='chat' id='b'><body>@".encode()
        self.suffix = f":{index} the quick brown fox jumps over the lazy dog</body></message>".encode()
        self.sent = 0
        self.received = 0
        self.sending = True

    def send(self, count: int) -> None:
        stanza = self.prefix + format(time.monotonic_ns(), "x").encode() + self.suffix
        self.sent += count
        self.sender.write(stanza * count)           # one write for the whole batch


BIN_NS = 100_000_000           # deliveries are also counted per 100 ms of the window (_Window.rate)


class _Window:
    """The measured interval and what was received inside it."""

    def __init__(self) -> None:
        self.start_ns = 0
        self.end_ns = 0
        self.delivered = 0
        self.latencies: list[int] = []
        self.bins: list[int] = []

    def open(self, start_ns: int, end_ns: int) -> None:
        self.start_ns, self.end_ns = start_ns, end_ns
        self.bins = []

    def count(self, now: int, count: int) -> None:
        self.delivered += count
        index = (now - self.start_ns) // BIN_NS
        bins = self.bins
        if index >= len(bins):
            bins.extend([0] * (index + 1 - len(bins)))
        bins[index] += count

    def rate(self) -> float:
        """Deliveries per second: the least-squares slope of the cumulative count per 100 ms.

        Under full load the messages in flight move through a server in waves (about one per
        p50 latency), so the plain count in the window depends on how many whole waves it holds:
        up to one wave (window * pairs messages) more or less. The slope over the 200 points of
        the window does not: it follows the waves' average rate."""
        bins = self.bins
        span = -(-(self.end_ns - self.start_ns) // BIN_NS)
        if len(bins) < span <= 1_000_000:
            bins = bins + [0] * (span - len(bins))     # nothing came at the end of the window
        n = len(bins)
        if n < 2:
            return self.delivered / max(1e-9, (self.end_ns - self.start_ns) / 1e9)
        cumulative, total = [], 0
        for count in bins:
            total += count
            cumulative.append(total)
        mean_x = (n - 1) / 2
        mean_y = sum(cumulative) / n
        num = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(cumulative))
        den = sum((i - mean_x) ** 2 for i in range(n))
        return num / den / (BIN_NS / 1e9)


def _receiver(pair: _Pair, window: _Window) -> Callable[[bytes], None]:
    """The traffic handler of a 1:1 receiver: count, take latencies, refill the sender's window."""
    tail = b""
    latencies = window.latencies
    findall = _STAMP.findall

    def handle(data: bytes) -> None:
        nonlocal tail
        if tail:
            data = tail + data
        end = data.rfind(_MESSAGE_END)
        if end < 0:
            tail = data if len(data) < _MAX_TAIL else b""
            return
        end += len(_MESSAGE_END)
        tail = data[end:]
        stamps = findall(data, 0, end)
        count = len(stamps)
        if not count:
            return
        pair.received += count
        now = time.monotonic_ns()
        if window.start_ns <= now < window.end_ns:
            window.count(now, count)
            latencies.extend([now - int(ts, 16) for ts, _ in stamps])
        if pair.sending:
            pair.send(count)
    return handle


async def one_to_one(env: Env, pairs: int = 500, window: int = 50, duration: float = 20.0,
                     warmup: float = 2.0, first_user: int = 0) -> dict[str, Any]:
    """`pairs` senders each keep `window` chat messages in flight to their own receiver for
    `warmup` + `duration` seconds; delivered messages per second in the last `duration` seconds
    and the end-to-end latency (send time written in the body)."""
    users = env.users("u", 2 * pairs, first_user)
    senders, receivers = users[:pairs], users[pairs:]
    measured = _Window()
    pair_list = [_Pair(None, f"{r}@{env.domain}", i) for i, r in enumerate(receivers)]
    handlers = {r: _receiver(p, measured) for r, p in zip(receivers, pair_list)}
    conns, _durations, failures = await login_all(env, users, handlers=handlers)
    if failures:
        await close_all(conns.values())
        return {"errors": env.errors, "failures": failures}
    for sender, pair in zip(senders, pair_list):
        pair.sender = conns[sender]
    start = time.monotonic_ns()
    measured.open(start + int(warmup * 1e9), start + int((warmup + duration) * 1e9))
    for pair in pair_list:
        pair.send(window)
    await asyncio.sleep(warmup)                       # the scenario's own timing, not synchronisation
    cpu = CpuWindow(env.server_pid)
    cpu.start()
    await asyncio.sleep(duration)
    cpu.stop()
    for pair in pair_list:
        pair.sending = False
    lost = await _drain(pair_list)
    await close_all(conns.values())
    sent = sum(p.sent for p in pair_list)
    received = sum(p.received for p in pair_list)
    if lost:
        env.note(f"{lost} of {sent} messages not delivered {DRAIN_TIMEOUT:.0f} s after the senders stopped")
    if received > sent:
        env.note(f"{received - sent} messages delivered more than once")
    return {**_base_result(env, cpu), "pairs": pairs, "window": window, "duration_s": duration,
            "delivered": measured.delivered, "msgs_per_s": round(measured.rate(), 1),
            "msgs_per_s_by_count": round(measured.delivered / cpu.wall, 1),
            "deliveries_per_100ms": measured.bins,
            "latency": summary_ms(measured.latencies), "sent": sent, "received": received, "lost": lost,
            "generator_cpu_us_per_msg": round(cpu.generator / max(1, measured.delivered) * 1e6, 2),
            "server_cpu_us_per_msg": None if cpu.server is None else
            round(cpu.server / max(1, measured.delivered) * 1e6, 2),
            "errors": env.errors}


async def _drain(pairs: list[_Pair]) -> int:
    """Wait until every message sent was received (or DRAIN_TIMEOUT); returns how many were not."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    loop = asyncio.get_running_loop()
    while time.monotonic() < deadline:
        missing = sum(p.sent - p.received for p in pairs)
        if missing <= 0:
            return 0
        done: asyncio.Future[None] = loop.create_future()
        loop.call_later(0.05, done.set_result, None)   # poll the counters: receivers run meanwhile
        await done
    return max(0, sum(p.sent - p.received for p in pairs))


# -- idle connections ------------------------------------------------------------------------------
async def idle(env: Env, connections: int = 10_000, concurrency: int = 200, hold: float = 25.0) -> dict[str, Any]:
    """`connections` authenticated, available, idle clients; the server's RSS before and after,
    per connection."""
    if not env.server_pid:
        raise ValueError("the idle scenario needs --server-pid to read the server's memory")
    users = env.users("u", connections)
    before = rss_bytes(env.server_pid) or 0
    cpu = CpuWindow(env.server_pid)
    cpu.start()
    conns, durations, failures = await login_all(env, users, concurrency=concurrency)
    cpu.stop()
    logged_in = rss_bytes(env.server_pid) or 0
    await asyncio.sleep(hold)                          # idle on purpose: the scenario is being idle
    after = rss_bytes(env.server_pid) or 0
    still_open = sum(1 for c in conns.values() if not c.closed.done())
    if still_open < len(conns):
        env.note(f"the server closed {len(conns) - still_open} idle connections within {hold:.0f} s")
    await close_all(conns.values())
    n = max(1, len(conns))
    return {**_base_result(env, cpu), "connections": len(conns), "failures": failures, "tls": env.tls is not None,
            "rss_before_mib": round(before / 2**20, 1), "rss_after_mib": round(after / 2**20, 1),
            "kib_per_connection": round((after - before) / n / 1024, 2),
            "kib_per_connection_at_login": round((logged_in - before) / n / 1024, 2),
            "logins_per_s": round(len(conns) / cpu.wall, 1), "login_time": summary_ms(durations),
            "errors": env.errors}


# -- presence fan-out ------------------------------------------------------------------------------
async def presence_fanout(env: Env, users: int = 200, contacts: int = 50, repeats: int = 3) -> dict[str, Any]:
    """The fan-out population (rosters provisioned: `contacts` mutual contacts each) logs in
    without presence; then all send initial presence at once. Contact presences delivered per
    second until every user has seen every contact online. Repeated `repeats` times."""
    names = env.users("f", users)
    results = []
    cpu_total = CpuWindow(env.server_pid)
    for _ in range(repeats):
        seen: dict[str, set[bytes]] = {n: set() for n in names}
        total = [0]
        done_at: dict[str, int] = {}
        all_done = asyncio.get_running_loop().create_future()

        def handler(name: str) -> Callable[[bytes], None]:
            own = f"{name}@{env.domain}".encode()
            mine = seen[name]
            tail = b""

            def handle(data: bytes) -> None:
                nonlocal tail
                if tail:
                    data = tail + data
                cut = data.rfind(b"<")
                if data.find(b">", cut) < 0:         # a start tag split across chunks: finish it next time
                    data, tail = data[:cut], data[cut:]
                else:
                    tail = b""
                for sender in _PRESENCE_FROM.findall(data):
                    if sender != own:
                        total[0] += 1
                        mine.add(sender)
                if name not in done_at and len(mine) >= contacts:
                    done_at[name] = time.monotonic_ns()
                    if len(done_at) == len(names) and not all_done.done():
                        all_done.set_result(None)
            return handle

        conns, _durations, failures = await login_all(env, names, presence=False,
                                                      handlers={n: handler(n) for n in names})
        if failures:
            await close_all(conns.values())
            return {"errors": env.errors, "failures": failures}
        cpu = CpuWindow(env.server_pid)
        cpu.start()
        start = time.monotonic_ns()
        for conn in conns.values():
            conn.write(b"<presence/>")
        try:
            await asyncio.wait_for(asyncio.shield(all_done), PRESENCE_TIMEOUT)
        except asyncio.TimeoutError:
            missing = sum(contacts - len(s) for s in seen.values() if len(s) < contacts)
            env.note(f"{missing} contact presences missing {PRESENCE_TIMEOUT:.0f} s after all came online")
        cpu.stop()
        finished = max(done_at.values()) if done_at else time.monotonic_ns()
        unique = sum(min(len(s), contacts) for s in seen.values())
        seconds = (finished - start) / 1e9
        results.append({"seconds": round(seconds, 4), "presences_per_s": round(unique / seconds, 1),
                        "unique": unique, "total_received": total[0], **cpu.as_dict()})
        cpu_total.wall += cpu.wall
        cpu_total.generator += cpu.generator
        if cpu.server is not None:
            cpu_total.server = (cpu_total.server or 0.0) + cpu.server
        await close_all(conns.values())
    rates = sorted(r["presences_per_s"] for r in results)
    return {**_base_result(env, cpu_total), "users": users, "contacts": contacts,
            "presences_per_s": rates[len(rates) // 2], "rounds": results, "errors": env.errors}


# -- MUC fan-out -----------------------------------------------------------------------------------
class _Occupant:
    __slots__ = ("conn", "index", "prefix", "suffix", "sending", "sent", "echoed", "joined")

    def __init__(self, index: int, room: str) -> None:
        self.conn: Connection | None = None
        self.index = index
        self.prefix = f"<message to='{room}' type='groupchat' id='g'><body>@".encode()
        self.suffix = f":{index} the quick brown fox jumps over the lazy dog</body></message>".encode()
        self.sending = False
        self.sent = 0
        self.echoed = 0
        self.joined: asyncio.Future[bytes] | None = None

    def send(self, count: int) -> None:
        self.sent += count
        self.conn.write((self.prefix + format(time.monotonic_ns(), "x").encode() + self.suffix) * count)


def _occupant_handler(occ: _Occupant, window: _Window, totals: list[int]) -> Callable[[bytes], None]:
    """Before joining: wait for the own presence (status 110); then count deliveries, refill own
    window on own echoes."""
    tail = b""
    own = str(occ.index).encode()
    latencies = window.latencies

    def handle(data: bytes) -> None:
        nonlocal tail
        if tail:
            data = tail + data
        joined = occ.joined
        if joined is not None and not joined.done():
            if _SELF_PRESENCE.search(data) or _CONFIG_REPLY.search(data):
                joined.set_result(data)
        end = data.rfind(_MESSAGE_END)
        if end < 0:
            tail = data if len(data) < _MAX_TAIL else b""
            return
        end += len(_MESSAGE_END)
        tail = data[end:]
        stamps = _STAMP.findall(data, 0, end)
        if not stamps:
            return
        totals[0] += len(stamps)
        now = time.monotonic_ns()
        if window.start_ns <= now < window.end_ns:
            window.delivered += len(stamps)
            latencies.extend([now - int(ts, 16) for ts, _ in stamps])
        echoes = sum(1 for _, who in stamps if who == own)
        if echoes:
            occ.echoed += echoes
            if occ.sending:
                occ.send(echoes)
    return handle


async def muc_fanout(env: Env, occupants: int = 100, senders: int = 10, window: int = 5,
                     duration: float = 10.0, warmup: float = 1.0) -> dict[str, Any]:
    """A room of `occupants`; `senders` of them keep `window` messages each in flight (a message
    is done when the room reflects it back to its sender); messages delivered to occupants per
    second."""
    room = f"{ROOM}@{env.muc_domain}"
    names = env.users("u", occupants)
    occs = [_Occupant(i, room) for i in range(occupants)]
    measured = _Window()
    totals = [0]
    handlers = {n: _occupant_handler(o, measured, totals) for n, o in zip(names, occs)}
    conns, _d, failures = await login_all(env, names, handlers=handlers)
    if failures:
        await close_all(conns.values())
        return {"errors": env.errors, "failures": failures}
    loop = asyncio.get_running_loop()
    join = "<x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x>"

    async def enter(occ: _Occupant, name: str) -> None:
        occ.conn = conns[name]
        occ.joined = loop.create_future()
        occ.conn.write(f"<presence to='{room}/{name}'>{join}</presence>".encode())
        await asyncio.wait_for(occ.joined, JOIN_TIMEOUT)

    try:
        await enter(occs[0], names[0])             # creates the room; make it an instant room
        occs[0].joined = loop.create_future()
        occs[0].conn.write(f"<iq type='set' id='cfg1' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                           f"<x xmlns='jabber:x:data' type='submit'/></query></iq>".encode())
        await asyncio.wait_for(occs[0].joined, JOIN_TIMEOUT)
        limit = asyncio.Semaphore(env.concurrency)

        async def enter_limited(occ: _Occupant, name: str) -> None:
            async with limit:
                await enter(occ, name)
        await asyncio.gather(*(enter_limited(o, n) for o, n in zip(occs[1:], names[1:])))
    except asyncio.TimeoutError:
        env.note(f"an occupant did not get into {room} within {JOIN_TIMEOUT:.0f} s")
        await close_all(conns.values())
        return {"errors": env.errors, "failures": 1}
    active = occs[:senders]
    start = time.monotonic_ns()
    measured.open(start + int(warmup * 1e9), start + int((warmup + duration) * 1e9))
    for occ in active:
        occ.sending = True
        occ.send(window)
    await asyncio.sleep(warmup)
    cpu = CpuWindow(env.server_pid)
    cpu.start()
    await asyncio.sleep(duration)
    cpu.stop()
    for occ in active:
        occ.sending = False
    deadline = time.monotonic() + DRAIN_TIMEOUT
    expected = lambda: sum(o.sent for o in active) * occupants  # noqa: E731
    while totals[0] < expected() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)                  # poll the counters while the occupants receive
    lost = max(0, expected() - totals[0])
    if lost:
        env.note(f"{lost} of {expected()} room deliveries missing {DRAIN_TIMEOUT:.0f} s after the senders stopped")
    await close_all(conns.values())
    return {**_base_result(env, cpu), "occupants": occupants, "senders": senders, "window": window,
            "delivered": measured.delivered, "deliveries_per_s": round(measured.delivered / cpu.wall, 1),
            "room_messages_per_s": round(measured.delivered / occupants / cpu.wall, 1),
            "latency": summary_ms(measured.latencies), "lost": lost, "errors": env.errors}


SCENARIOS: dict[str, Callable[..., Any]] = {
    "login": login_storm,
    "one_to_one": one_to_one,
    "idle": idle,
    "presence": presence_fanout,
    "muc": muc_fanout,
}

__all__ = ["Env", "SCENARIOS", "NS_PER_US"]
