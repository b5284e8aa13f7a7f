"""XEP-0045 sections 7.2.13-7.2.15: discussion history sent to a new occupant, with its limits.

The room keeps its last messages in memory (a bounded deque, the service's `history_max`). A
joining occupant may narrow what it gets with `<history maxchars maxstanzas seconds since/>`; the
room sends the smallest set that meets every limit given, always whole stanzas, oldest first,
each stamped with a XEP-0203 delay whose 'from' is the room (never a real JID, 7.2.14).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

from ...protocol import ns
from ...protocol.errors import StanzaError
from ...protocol.xml import Element

NS_MUC = "http://jabber.org/protocol/muc"


def stamp(when: float) -> str:
    """XEP-0082 DateTime in UTC, with milliseconds."""
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_stamp(text: str, field: str) -> float:
    """A XEP-0082 DateTime as unix time; a time without a time zone is refused."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise StanzaError("bad-request", f"{field}: {text!r} is not a XEP-0082 date and time "
                                         f"(like 2024-05-01T12:00:00Z)") from None
    if when.tzinfo is None:
        raise StanzaError("bad-request", f"{field}: {text!r} has no time zone; add Z for UTC")
    return when.timestamp()


@dataclass(frozen=True)
class HistoryLimits:
    """What a joining occupant asked for; None means no limit of that kind."""
    max_chars: int | None = None
    max_stanzas: int | None = None
    since: float | None = None         # unix time; 'seconds' is turned into this on join

    @classmethod
    def from_join(cls, x: Element | None, now: float) -> HistoryLimits:
        """Read `<history/>` from the join presence's `<x xmlns='...muc'/>`."""
        history = x.find("history", NS_MUC) if x is not None else None
        if history is None:
            return cls()

        def number(attr: str) -> int | None:
            raw = history.get(attr)
            if raw is None:
                return None
            try:
                value = int(raw)
            except ValueError:
                raise StanzaError("bad-request", f"history {attr} must be a whole number, not {raw!r}") from None
            if value < 0:
                raise StanzaError("bad-request", f"history {attr} cannot be negative")
            return value

        seconds = number("seconds")
        since = parse_stamp(history.get("since", ""), "history since") if history.get("since") else None
        if seconds is not None:
            since = max(since or 0.0, now - seconds)
        return cls(number("maxchars"), number("maxstanzas"), since)


@dataclass(frozen=True)
class Entry:
    stanza: Element        # as broadcast, without 'to'
    when: float
    size: int              # characters of the serialised stanza


class History:
    def __init__(self, max_entries: int) -> None:
        self.entries: deque[Entry] = deque(maxlen=max_entries)

    def add(self, stanza: Element, when: float) -> None:
        if not self.entries.maxlen:
            return
        kept = stanza.copy()
        kept.attrs.pop("to", None)
        self.entries.append(Entry(kept, when, len(kept.serialize(ns.CLIENT))))

    def select(self, limits: HistoryLimits) -> list[Entry]:
        """The newest entries that satisfy every limit, oldest first."""
        chosen: list[Entry] = []
        chars = 0
        for entry in reversed(self.entries):
            if limits.max_stanzas is not None and len(chosen) >= limits.max_stanzas:
                break
            if limits.since is not None and entry.when < limits.since:
                break
            if limits.max_chars is not None and chars + entry.size > limits.max_chars:
                break
            chars += entry.size
            chosen.append(entry)
        chosen.reverse()
        return chosen

    def clear(self) -> None:
        self.entries.clear()


def delayed(entry: Entry, room: str, to: str) -> Element:
    """A history entry addressed to `to`, stamped with when the room first sent it."""
    out = entry.stanza.copy()
    out.attrs["to"] = to
    out.add("delay", ns.DELAY, {"from": room, "stamp": stamp(entry.when)})
    return out
