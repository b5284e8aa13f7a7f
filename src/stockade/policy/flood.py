"""Floods and worms: stanza rate limits, the fan-out limit and the buddy-list worm pattern.

Rules of [hosts.policy.flood] (config/schema.py FloodSection), checked on every stanza a client
sends (StanzaFromClient, priority FLOOD_PRIORITY: before the other policy controls):

1. Rate: one token bucket per connection (`session_rate`/`session_burst`) and one per account
   (`user_rate`/`user_burst`, all its connections together). A stanza without a token is refused
   with <resource-constraint/> and a text asking to slow down; `disconnect_after` refusals in a
   row end the stream with <policy-violation/>.
2. Fan-out: the recipients an account messaged within the last minute are remembered; a message
   with a body to one more recipient when `fanout_per_minute` are already there is a worm.
3. Identical bodies: the same body to `identical_recipients` distinct recipients within
   `identical_window` seconds is a worm (the buddy-list worm pattern: "look at this" to everyone).
4. A worm is throttled for `throttle_for` seconds: its messages to recipients it has not been
   talking to are refused (its current conversations go on), administrators get an alert
   (policy/alerts.py, audit entry `alert.worm`), and with `suspend_on_worm` the account is
   suspended: locked like a login lockout (core/lockouts.py, `stockade user unlock` lifts it) and
   every session ended.

Messages of type groupchat and error, and messages without a body (chat states, receipts), are
never a conversation start: they do not count towards 2 and 3.

Cost on the message path: one dict lookup for the host, the session's state in `session.extra`,
two bucket updates and, for a recipient already talked to, one dict store. Only the first message
to a new recipient does more (a body lookup, a hash). Every time comes from the injected clock.

Per-address connection rate (new connections per minute from one IP address, `[c2s]
new_connections_per_minute`) is `ConnectionRate`, asked by the listener (net/c2s.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Callable

from ..config.schema import FloodSection
from ..core.hooks import POLICY, AccountLocked, SessionClosed, StanzaFromClient
from ..core.verdict import Deny
from ..protocol.errors import StreamError
from ..protocol.jid import JID

if TYPE_CHECKING:
    from ..config.schema import PolicySection
    from ..core.auth import LoginThrottle
    from ..core.bus import HookBus
    from ..core.clock import Clock
    from ..core.sessions import ClientSession, SessionManager
    from ..directory.groups import GroupService
    from .alerts import AdminAlerts

log = logging.getLogger("stockade.policy.flood")

FLOOD_PRIORITY = POLICY + 30          # first of the threat controls: then contact + 20, DLP - 20, links - 30
FANOUT_WINDOW = 60.0                  # seconds: fan-out is "distinct recipients per minute"
_STATE = "flood"                      # key of the per-session state in session.extra

TOO_FAST = ("You are sending too fast: this was not sent. Slow down and send it again in a moment "
            "(limit: {rate:g} per second per {scope}).")
KICKED = ("You kept sending faster than allowed after being told to slow down, so this connection "
          "was closed. Reconnect and send more slowly.")
THROTTLED = ("This message was not sent: your account sent messages to many different people in a "
             "short time, the way a worm spreads, so it may not start new conversations for now. "
             "Your administrator was told; contact them if this was you.")
SUSPENDED = ("Your account was suspended because it sent messages to many different people in a "
             "short time, the way a worm spreads. Ask your administrator to check the device and "
             "unlock the account.")


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; one token per stanza."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


class _UserState:
    """One account's bucket, recent recipients and worm state, shared by its sessions."""

    __slots__ = ("limits", "bucket", "recent", "bodies", "throttled_until", "is_exempt", "is_suspended")

    def __init__(self, limits: FloodSection, now: float, is_exempt: bool) -> None:
        self.limits = limits
        self.bucket = TokenBucket(limits.user_rate, limits.user_burst, now) if limits.user_rate else None
        self.recent: dict[str, float] = {}                   # recipient -> last message time
        self.bodies: dict[int, tuple[float, set[str]]] = {}  # hash of a body -> (first seen, recipients)
        self.throttled_until = 0.0
        self.is_exempt = is_exempt
        self.is_suspended = False


class _SessionState:
    __slots__ = ("limits", "bucket", "user", "refused")

    def __init__(self, limits: FloodSection, user: _UserState, now: float) -> None:
        self.limits = limits
        self.bucket = TokenBucket(limits.session_rate, limits.session_burst, now) if limits.session_rate else None
        self.user = user
        self.refused = 0


Suspend = Callable[[str, str, float, str], None]


class FloodControl:
    """The rate, fan-out and worm rules of every host. A policy control (`apply`)."""

    def __init__(self, clock: Clock, alerts: AdminAlerts, sessions: SessionManager, groups: GroupService | None = None,
                 suspend: Suspend | None = None) -> None:
        self.clock = clock
        self.sessions = sessions
        self.alerts = alerts
        self.groups = groups
        self.suspend = suspend
        self._limits: dict[str, FloodSection] = {}
        self._users: dict[JID, _UserState] = {}
        self._bus: HookBus | None = None
        self.refused_total = 0
        self.worms_total = 0

    def apply(self, host: str, policy: PolicySection | None) -> None:
        section = (policy.flood if policy is not None else None) or FloodSection()
        if section.enabled:
            self._limits[host] = section
        else:
            self._limits.pop(host, None)
        self._sync_hook()

    def subscribe(self, bus: HookBus) -> None:
        self._bus = bus
        self._sync_hook()
        bus.on(SessionClosed, self._session_closed)

    def _sync_hook(self) -> None:
        """The stanza hook is registered only while some host has flood limits: off, they cost
        the message path nothing."""
        if self._bus is not None:
            self._bus.toggle(StanzaFromClient, self.on_stanza, FLOOD_PRIORITY, bool(self._limits))

    def is_throttled(self, host: str, username: str) -> bool:
        user = self._users.get(JID(username, host, None))
        return user is not None and user.throttled_until > self.clock.monotonic()

    # -- the message path -----------------------------------------------------------------------
    def on_stanza(self, event: StanzaFromClient) -> Deny | None:
        session = event.session
        limits = self._limits.get(session.host)
        if limits is None:
            return None
        now = self.clock.monotonic()
        state = session.extra.get(_STATE)
        if state is None or state.limits is not limits:
            state = self._new_state(session, limits, now)
        bucket = state.bucket
        user = state.user
        if (bucket is not None and not bucket.take(now)) or (user.bucket is not None and not user.bucket.take(now)):
            return self._too_fast(session, state, limits, bucket is not None and bucket.tokens < 1.0)
        state.refused = 0
        stanza = event.stanza
        if stanza.name != "message" or user.is_exempt:
            return None
        to = stanza.attrs.get("to")
        if to is None:
            return None
        recent = user.recent
        if to in recent:
            recent[to] = now
            return None
        return self._new_recipient(session, user, limits, stanza.attrs.get("type"), stanza.find_text("body"), to, now)

    def _new_state(self, session: ClientSession, limits: FloodSection, now: float) -> _SessionState:
        user = self._users.get(session.bare)
        if user is None or user.limits is not limits:
            exempt = bool(limits.exempt_groups) and self.groups is not None and any(
                g.id in limits.exempt_groups for g in self.groups.groups_of(session.host, session.username))
            old = user
            user = _UserState(limits, now, exempt)
            if old is not None:        # new limits: keep what the account did
                user.recent, user.bodies, user.throttled_until = old.recent, old.bodies, old.throttled_until
            self._users[session.bare] = user
        state = session.extra[_STATE] = _SessionState(limits, user, now)
        return state

    def _too_fast(self, session: ClientSession, state: _SessionState, limits: FloodSection, per_session: bool) -> Deny:
        self.refused_total += 1
        state.refused += 1
        if state.refused >= limits.disconnect_after:
            log.warning("closing %s: %d stanzas in a row over the rate limit", session, state.refused)
            session.close(StreamError("policy-violation", KICKED))
        rate, scope = (limits.session_rate, "connection") if per_session else (limits.user_rate, "account")
        return Deny("resource-constraint", TOO_FAST.format(rate=rate, scope=scope), rule="flood.rate",
                    error_type="wait")

    def _new_recipient(self, session: ClientSession, user: _UserState, limits: FloodSection, mtype: str | None,
                       body: str | None, to: str, now: float) -> Deny | None:
        if mtype in ("groupchat", "error") or not body:
            return None                 # not a conversation start
        if user.throttled_until > now:
            self.refused_total += 1
            return Deny("policy-violation", THROTTLED, rule="flood.worm")
        recent = user.recent
        fanout = limits.fanout_per_minute
        if len(recent) >= (fanout or 1024):
            for old in [r for r, t in recent.items() if now - t > FANOUT_WINDOW]:
                del recent[old]
        if fanout and len(recent) >= fanout:
            return self._worm(session, user, limits, now, "fanout",
                              f"{session.bare} started conversations with {len(recent) + 1} different people within "
                              f"a minute (limit {fanout})", recipients=len(recent) + 1)
        if limits.identical_recipients:
            bodies = user.bodies
            key = hash(body)
            entry = bodies.get(key)
            if entry is None or now - entry[0] > limits.identical_window:
                if len(bodies) >= 256:
                    for old_key in [k for k, (t, _) in bodies.items() if now - t > limits.identical_window]:
                        del bodies[old_key]
                entry = bodies[key] = (now, set())
            entry[1].add(to.partition("/")[0])
            if len(entry[1]) >= limits.identical_recipients:
                return self._worm(session, user, limits, now, "identical",
                                  f"{session.bare} sent the same message to {len(entry[1])} different people within "
                                  f"{limits.identical_window:g} seconds", recipients=len(entry[1]),
                                  sample=body[:200])
        recent[to] = now
        return None

    def _worm(self, session: ClientSession, user: _UserState, limits: FloodSection, now: float, pattern: str,
              what: str, **detail: object) -> Deny:
        self.worms_total += 1
        self.refused_total += 1
        user.throttled_until = now + limits.throttle_for
        account = str(session.bare)
        minutes = max(1, round(limits.throttle_for / 60))
        if limits.suspend_on_worm and self.suspend is not None:
            user.is_suspended = True
            action = f"The account was suspended (locked, sessions ended); unlock it with `stockade user unlock {account}` once the device is clean."
        else:
            action = f"It may not message anyone new for {minutes} minutes; its current conversations go on."
        self.alerts.alert(session.host, "worm", f"Possible worm: {what}. {action}", target=account, pattern=pattern,
                          suspended=user.is_suspended, **detail)
        if user.is_suspended and self.suspend is not None:
            # After this stanza is answered: the session being handled must not end under the hub.
            asyncio.get_running_loop().call_soon(self.suspend, session.host, session.username,
                                                 limits.suspend_for, SUSPENDED)
        return Deny("policy-violation", THROTTLED, rule=f"flood.worm.{pattern}")

    async def _session_closed(self, event: SessionClosed) -> None:
        """Forget an account's state when its last session ends, unless it is being throttled
        (logging in again must not lift a throttle; an administrator's unlock lifts a suspension)."""
        session = event.session
        user = self._users.get(session.bare)
        if user is None or session.extra.get(_STATE) is None:
            return
        if self.sessions.of_user(session.bare):
            return                      # the closed session is already unregistered: others remain
        if user.is_suspended or user.throttled_until <= self.clock.monotonic():
            del self._users[session.bare]


class AccountSuspension:
    """Suspend an account: lock it like a login lockout (recorded in the lockout store, audited
    as `auth.lockout`; `stockade user unlock` ends it) and end every session with a stream error."""

    def __init__(self, throttle: LoginThrottle, bus: HookBus, sessions: SessionManager, clock: Clock) -> None:
        self.throttle = throttle
        self.bus = bus
        self.sessions = sessions
        self.clock = clock

    def __call__(self, host: str, username: str, seconds: float, text: str) -> None:
        self.throttle.lock_for(self.throttle.account_key(host, username), seconds)
        # The lockout registry records the lock (so that an admin can list and end it), the
        # audit log records auth.lockout.
        self.bus.fire(AccountLocked(host, username, "", self.clock.time() + seconds, "account"))
        for session in self.sessions.of_user(JID(username, host, None)):
            session.close(StreamError("policy-violation", text))
        log.warning("suspended %s@%s for %.0f s", username, host, seconds)


class ConnectionRate:
    """New connections per minute from one IP address (sliding window of arrival times)."""

    def __init__(self, clock: Clock, per_minute: int) -> None:
        self.clock = clock
        self.per_minute = per_minute
        self._arrivals: dict[str, deque[float]] = {}
        self.refused_total = 0

    def admit(self, address: str) -> bool:
        """Count a new connection from `address`; False when it is one too many this minute."""
        if not self.per_minute:
            return True
        now = self.clock.monotonic()
        arrivals = self._arrivals.get(address)
        if arrivals is None:
            if len(self._arrivals) > 100_000:
                self._forget_idle(now)
            arrivals = self._arrivals[address] = deque()
        while arrivals and now - arrivals[0] >= 60.0:
            arrivals.popleft()
        if len(arrivals) >= self.per_minute:
            self.refused_total += 1
            return False
        arrivals.append(now)
        return True

    def _forget_idle(self, now: float) -> None:
        for address in [a for a, q in self._arrivals.items() if not q or now - q[-1] >= 60.0]:
            del self._arrivals[address]
