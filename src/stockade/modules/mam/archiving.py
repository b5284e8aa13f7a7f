"""What goes into a user's archive, and the XEP-0359 stanza id that tells the recipient where.

Every chat or normal message a local user sends or receives is stored in that user's archive,
with the other party's bare JID as its conversation partner, if it carries something a person
would want to read again: a body, an encrypted payload, a reaction, a retraction, or a
XEP-0334 <store/> hint. Never archived: chat states alone, messages marked <no-store/> or
<no-permanent-store/> (XEP-0334), groupchat (the room keeps its own archive), headline, error.

Where it happens (both hooks are synchronous, on the hot path):
- MessageFromLocal: the sender's copy, before routing. A message to oneself is left to the
  recipient side so that it is stored once (XEP-0313 5.1.1).
- MessageToLocal: the recipient's copy, before delivery or offline storage. Any <stanza-id/>
  claiming to be by the recipient that this server did not issue is removed first (XEP-0359
  rule 3: a forged archive id would make the client believe a message is archived under an id
  of the sender's choosing), then the archive id is added as <stanza-id by='user@host'/>.

Archive ids start with a time prefix that grows with every id the process makes
(storage/keys.py), so that the archive's key index is appended at its end instead of at a random
place (a page write per message). The rest is random for the sender's copy and a signature for
the ids put in a <stanza-id/> (`SignedIds`): nobody can make up an id this server would take as
its own, nor guess another message's id, and an id reveals no more than the time the archive
records anyway, not the size of the archive. The id is chosen here, so it is known at once, and
the row is queued with `ArchiveStore.queue` (group commit, see storage/archive.py). The stored copy is
serialised before the stanza id is added, which reuses the bytes the reader kept.

Decisions that need data not in memory. Preferences and rosters are cached while the user has a
session. A message for a user with no session goes to offline storage, which is asynchronous:
there (MessageUndeliverable, before the offline module stores it) the preferences and, for the
'roster' default, the roster are loaded and the message archived and stamped before it is stored.
In the rare case that the data is missing and the message is delivered at once (a resource bound
moments ago, its data still loading), the message is archived: keeping a record is the safe side.

Timestamps never go backwards within a process (a clock step back reuses the last one), so that
archive order (time, then append order: storage/archive.py) is the order messages were routed in.

Durability: appends are committed in batches (group commit). Each write is tracked on the
session whose stanza caused it (`ClientSession.track_write`: the sender's session for both the
sender's and the recipient's copy), and stream management (XEP-0198) awaits those writes before
it acknowledges the stanza. `flush()` waits for everything queued so far (shutdown, tests).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Any

from ...core.hooks import MessageFromLocal, MessageToLocal, MessageUndeliverable
from ...core.module_api import ModuleAPI
from ...core.sessions import ClientSession
from ...protocol.jid import JID, try_jid
from ...protocol.xml import Element, escape_attr
from ...storage import ArchiveStore, StorageError
from ...storage.keys import PREFIX_LENGTH, new_key, time_prefix
from ..roster import RosterService
from .prefs import ALWAYS, PrefsService
from .query import NS_SID

NS_HINTS = "urn:xmpp:hints"
# Payloads worth keeping in a message without a body.
CONTENT_NAMESPACES = frozenset({
    "eu.siacs.conversations.axolotl",       # OMEMO (legacy)
    "urn:xmpp:omemo:2",                     # OMEMO
    "urn:xmpp:openpgp:0",                   # XEP-0373
    "urn:xmpp:reactions:0",                 # XEP-0444
    "urn:xmpp:message-retract:0",           # XEP-0424
    "urn:xmpp:message-retract:1",
    "urn:xmpp:message-correct:0",           # XEP-0308
    "jabber:x:oob",                         # XEP-0066
})
ARCHIVED_TYPES = ("chat", "normal")


def is_worth_archiving(stanza: Element) -> bool:
    """A chat/normal message with content a person reads, and no hint against storing it."""
    if stanza.attrs.get("type", "normal") not in ARCHIVED_TYPES:
        return False
    worth = False
    for child in stanza.children:
        if child.__class__ is not Element:
            continue
        xmlns = child.xmlns
        if xmlns == NS_HINTS:
            name = child.name
            if name == "no-store" or name == "no-permanent-store":
                return False
            if name == "store":
                worth = True
        elif child.name == "body" and xmlns == stanza.xmlns:
            worth = True
        elif xmlns in CONTENT_NAMESPACES:
            worth = True
    return worth


# An id for the sender's copy (never shown in a stanza-id, so it needs no signature): the time
# prefix and 72 random bits, 26 URL-safe characters. The key maker itself: one call per message.
new_archive_id = new_key

# base64.urlsafe_b64encode without its two Python calls (a signed id is made per message).
_URLSAFE = bytes.maketrans(b"+/", b"-_")


class SignedIds:
    """Archive ids for received messages that prove they were issued here for that archive.

    An id is the 14-character time prefix (storage/keys.py: unique within the process, growing)
    and a 9-byte keyed BLAKE2b MAC over the archive owner and the prefix, in URL-safe base64: 26
    characters. A message that comes through MessageToLocal again (stream management routes an
    unacknowledged message anew) keeps its id and is not archived twice, while a <stanza-id/> a
    sender made up fails the check and is removed. The key lives for the process: messages are
    only routed again within it, and ids made by an earlier process differ by their MAC even
    if the clock went back and repeated a prefix.

    The MAC's state after the key and an owner is kept per owner (a bounded cache): an id then
    costs one copy, one update with the prefix and the digest. The prefix has a fixed length and
    comes last, so no two (owner, prefix) pairs give the same input.
    """

    LENGTH = PREFIX_LENGTH + 12
    OWNERS = 4096             # MAC states kept; the cache starts again when it is full

    def __init__(self) -> None:
        self._mac = hashlib.blake2b(key=secrets.token_bytes(32), digest_size=9)
        self._by_owner: dict[JID, Any] = {}

    def _keyed(self, owner: JID) -> Any:
        mac = self._by_owner.get(owner)
        if mac is None:
            if len(self._by_owner) >= self.OWNERS:
                self._by_owner.clear()
            mac = self._by_owner[owner] = self._mac.copy()
            mac.update(str(owner).encode())
        return mac

    def _sign(self, prefix: bytes, owner: JID) -> bytes:
        mac = self._keyed(owner).copy()
        mac.update(prefix)
        return mac.digest()

    def new(self, owner: JID) -> str:
        prefix = time_prefix()
        signature = binascii.b2a_base64(self._sign(prefix.encode(), owner), newline=False)
        return prefix + signature.translate(_URLSAFE).decode()

    def is_ours(self, archive_id: str, owner: JID) -> bool:
        if len(archive_id) != self.LENGTH:
            return False
        try:
            prefix = archive_id[:PREFIX_LENGTH].encode("ascii")
            signature = base64.urlsafe_b64decode(archive_id[PREFIX_LENGTH:].encode("ascii"))
        except (ValueError, UnicodeError):
            return False
        return hmac.compare_digest(signature, self._sign(prefix, owner))


class Archiver:
    """The hook handlers that fill the archive."""

    def __init__(self, module: ModuleAPI, store: ArchiveStore, prefs: PrefsService,
                 roster: RosterService) -> None:
        self.module = module
        self.store = store
        self.prefs = prefs
        self.roster = roster
        self.sessions = module.sessions
        self.clock = module.clock
        self.log = module.log
        self._last_when = 0.0
        self.ids = SignedIds()
        # The server's default preferences (which list nobody), when they keep every message.
        self._everything = prefs.server_default if prefs.server_default.default == ALWAYS else None
        self._last_raw: bytes | None = None        # see _text
        self._last_text = ""
        self._written = self._check_written      # one bound method, not one per message
        self._watched: asyncio.Future[None] | None = None          # the last batch future seen
        self._tracked: tuple[asyncio.Future[None] | None, ClientSession | None] = (None, None)

    # -- sender side ----------------------------------------------------------------------------
    def from_local(self, event: MessageFromLocal) -> None:
        stanza = event.stanza
        to = stanza.attrs.get("to")
        if to is None or not is_worth_archiving(stanza):
            return None           # no 'to': to the sender's own account, archived on delivery
        peer = try_jid(to)
        owner = event.session.bare
        if peer is None or peer.bare == owner:
            return None           # to oneself: archived once, on delivery
        if self._decide_cached(owner, peer) is not False:      # None, not loaded yet: archive
            self._append(owner, self._text(stanza), peer.bare, new_archive_id(), event.session)
        return None

    # -- recipient side -------------------------------------------------------------------------
    def to_local(self, event: MessageToLocal) -> None:
        stanza = event.stanza
        owner = event.to.bare
        for child in stanza.children:
            if child.__class__ is Element and child.xmlns == NS_SID and child.name == "stanza-id":
                if self._check_stanza_ids(stanza, owner):
                    return None   # archived here already: routed again, keeps its id
                break
        if not is_worth_archiving(stanza):
            return None
        to = event.to
        if to.resource is not None and stanza.attrs.get("type", "normal") != "chat" \
                and self.sessions.get(to) is None:
            return None           # a normal message for a resource that is gone is bounced
        peer = try_jid(stanza.attrs.get("from"))
        if peer is None:
            return None
        decision = self._decide_cached(owner, peer)
        if decision is None:
            if not self._delivered_now(to):
                return None       # decided in `undeliverable`, where the data can be loaded
            decision = True       # see the module docstring: keep a record
        if decision:
            self._archive_received(stanza, owner, peer, event.origin)
        return None

    async def undeliverable(self, event: MessageUndeliverable) -> None:
        """The recipient has no session: decide with loaded data before offline storage."""
        stanza = event.stanza
        owner = event.to.bare
        if not is_worth_archiving(stanza) or self._has_own_stanza_id(stanza, owner):
            return None
        peer = try_jid(stanza.attrs.get("from"))
        if peer is None:
            return None
        prefs = await self.prefs.get(owner)
        decision = prefs.decide(peer, None)
        if decision is None:
            decision = prefs.decide(peer, (await self.roster.get(owner)).items)
        if decision:
            # Stored durably before offline storage keeps the stamped copy (and before the
            # sender's next stanza: MessageUndeliverable is awaited).
            archive_id = self.ids.new(owner)
            future = self._append(owner, self._text(stanza), peer.bare, archive_id, None)
            if future is None:
                return None
            try:
                await future
            except Exception:
                return None       # logged by _check_written; stored offline without an archive id
            self._stamp(stanza, owner, archive_id)
        return None

    def _archive_received(self, stanza: Element, owner: JID, peer: JID, origin: ClientSession | None) -> None:
        archive_id = self.ids.new(owner)
        if self._append(owner, self._text(stanza), peer.bare, archive_id, origin) is not None:
            self._stamp(stanza, owner, archive_id)

    def _text(self, stanza: Element) -> str:
        """The stanza as stored: its serialisation (made once while it is unchanged, see
        Element.serialize_stanza) as text, decoded once for both copies of a message, which
        then share one string while they wait in the queue."""
        raw = stanza.serialize_stanza()
        if raw is not self._last_raw:
            self._last_raw, self._last_text = raw, raw.decode()
        return self._last_text

    @staticmethod
    def _stamp(stanza: Element, owner: JID, archive_id: str) -> None:
        """Add <stanza-id by='owner' id='archive_id'/>, written out here rather than serialised
        from its attributes (an archive id needs no escaping: hexadecimal digits and URL-safe
        base64)."""
        by = owner.text
        stanza.add_leaf("stanza-id", NS_SID, {"by": by, "id": archive_id},
                        f'<stanza-id xmlns="{NS_SID}" by="{escape_attr(by)}" id="{archive_id}"/>')

    # -- decisions ------------------------------------------------------------------------------
    def _decide_cached(self, owner: JID, peer: JID) -> bool | None:
        """The decision from memory only; None when it needs preferences or a roster not loaded."""
        prefs = self.prefs.cached(owner)
        if prefs is None:
            return None
        if prefs is self._everything:
            return True           # the server's default keeps every message, nobody listed
        decision = prefs.decide(peer, None)
        if decision is None:
            roster = self.roster.cached(owner)
            if roster is None:
                return None
            decision = prefs.decide(peer, roster.items)
        return decision

    def _delivered_now(self, to: JID) -> bool:
        """Whether the router will hand the message to a session rather than offline storage."""
        if to.resource is not None and self.sessions.get(to) is not None:
            return True
        return any(s.priority >= 0 for s in self.sessions.available(to.bare))

    # -- stanza ids -----------------------------------------------------------------------------
    @staticmethod
    def _claims(el: Element, owner: JID) -> bool:
        by = el.get("by")
        return by is not None and try_jid(by) == owner

    def _check_stanza_ids(self, stanza: Element, owner: JID) -> bool:
        """Remove every <stanza-id/> that claims to be by `owner` but was not issued here
        (XEP-0359 rule 3); True when one issued here remains (at most one, rule 4)."""
        claims = [c for c in stanza.elements("stanza-id", NS_SID) if self._claims(c, owner)]
        if not claims:
            return False
        genuine = next((c for c in claims if self.ids.is_ours(c.get("id") or "", owner)), None)
        forged = [c for c in claims if c is not genuine]
        for el in forged:
            stanza.remove(el)
        if forged:
            self.log.info("removed a <stanza-id/> claiming to be by %s from a message from %s",
                          owner, stanza.attrs.get("from"))
        return genuine is not None

    def _has_own_stanza_id(self, stanza: Element, owner: JID) -> bool:
        return any(self._claims(c, owner) for c in stanza.elements("stanza-id", NS_SID))

    # -- writing --------------------------------------------------------------------------------
    def _append(self, owner: JID, value: str, with_jid: JID, archive_id: str,
                origin: ClientSession | None) -> asyncio.Future[None] | None:
        """Queue the write; the session whose stanza caused it (if it acknowledges stanzas,
        XEP-0198) waits for it before acknowledging. None when the store refused it (closed):
        the message is still delivered, without an archive id.

        The appends of one batch share their future (storage/archive.py): it is watched once,
        and tracked once per session in a row (a message's two copies, a burst from one client).
        """
        when = self.clock.time()
        if when < self._last_when:
            when = self._last_when
        self._last_when = when
        try:
            commit = self.store.queue(owner.domain, owner.local or "", value, with_jid.text, when, archive_id)
        except StorageError as exc:
            self.log.error("a message for the archive of %s was not written: %s", owner, exc)
            return None
        if commit is not self._watched:
            self._watched = commit
            commit.add_done_callback(self._written)
        if origin is not None and (commit is not self._tracked[0] or origin is not self._tracked[1]):
            # Kept only for sessions that acknowledge stanzas (ClientSession.track_write).
            self._tracked = (commit, origin)
            origin.track_write(commit)
        return commit

    def _check_written(self, commit: asyncio.Future[None]) -> None:
        if not commit.cancelled() and commit.exception() is not None:
            self.log.error("archived messages could not be written: %s", commit.exception())

    async def flush(self) -> None:
        """Wait until every archive write queued so far is committed (see the module docstring)."""
        await self.module.ctx.storage.flush()

