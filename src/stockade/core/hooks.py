"""The hook catalogue: every moment a module can act on, one typed dataclass each.

A handler is registered with `module.on(HookType, handler, priority)`. Handlers run from the
highest priority down; the first that returns something other than None ends the chain and its
value is the result. Priority bands: POLICY runs before everything (enterprise controls may veto),
DEFAULT is for features, FALLBACK runs last (e.g. offline storage when nothing else delivered).

Hooks marked "async" accept coroutine handlers and are fired with `await bus.fire_async(...)`.
The others are on the message path and must be plain functions: they are fired synchronously.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..protocol.jid import JID
from ..protocol.xml import Element

if TYPE_CHECKING:
    from .sessions import ClientSession

POLICY = 1000
DEFAULT = 0
FALLBACK = -1000


class Handled:
    """Returned by a handler that took care of the event; ends the chain."""

    _instance: ClassVar[Handled | None] = None

    def __new__(cls) -> Handled:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "HANDLED"


HANDLED = Handled()


@dataclass(slots=True)
class StanzaFromClient:
    """A client sent a stanza; its `from` is already stamped with the session's full JID.
    Fires before routing. Sync. May veto: a handler returns a Verdict (core.verdict); Deny stops the
    stanza and answers the sender with the verdict's stanza error."""
    ASYNC: ClassVar[bool] = False
    session: ClientSession
    stanza: Element


@dataclass(slots=True)
class VerdictGiven:
    """A policy gave a verdict other than Allow (Flag, Deny, Redact, Quarantine) about something
    a user did: a stanza (`stanza`, from `session`) or an upload (`stanza` None, `detail` names
    the file). Sync and informational: the audit log and the compliance journal record it here;
    handlers return None and must not block (queue writes). `actor` is the user's full or bare
    JID, `host` the tenant. For Redact, `verdict.stanza` is what is delivered and `stanza` the
    original."""
    ASYNC: ClassVar[bool] = False
    host: str
    actor: str
    verdict: Any
    stanza: Element | None = None
    session: ClientSession | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class MessageFromLocal:
    """A local client sent a message (after the policy verdict, before routing). Sync. Carbons copy
    it to the sender's other resources; the archive stores it for the sender. Handlers may add
    to the stanza; returning HANDLED stops routing (the handler disposed of it)."""
    ASYNC: ClassVar[bool] = False
    stanza: Element
    session: ClientSession


@dataclass(slots=True)
class StanzaToLocal:
    """A stanza (message, presence, or IQ for a full JID) is about to reach local account `to`
    from `sender`. Sync, on the delivery path. May veto: return a Verdict (Deny bounces with its
    error) or HANDLED to drop it silently (blocked contacts, privacy rules)."""
    ASYNC: ClassVar[bool] = False
    stanza: Element
    to: JID
    sender: JID


@dataclass(slots=True)
class MessageToLocal:
    """A message is about to be delivered to a local account (`to` is bare or full). Sync.
    Handlers may change the stanza (add a stanza id, a label) before delivery; returning HANDLED
    means the handler delivered or disposed of it."""
    ASYNC: ClassVar[bool] = False
    stanza: Element
    to: JID
    origin: ClientSession | None


@dataclass(slots=True)
class MessageDelivered:
    """A message was written to these sessions of the local account `to`. Sync. Carbons and the
    archive act here."""
    ASYNC: ClassVar[bool] = False
    stanza: Element
    to: JID
    sessions: list[ClientSession]


@dataclass(slots=True)
class MessageUndeliverable:
    """No session of the local account `to` can take this message now (RFC 6121 section 8.5.2.2).
    Async: the sender's next stanza waits until a handler has stored it durably. A handler that
    keeps it (offline storage) returns HANDLED; if none does, the sender gets <service-unavailable/>."""
    ASYNC: ClassVar[bool] = True
    stanza: Element
    to: JID


@dataclass(slots=True)
class MessageHeld:
    """A message for local account `to` could not reach a live connection: it was stored offline
    (`reason` "offline") or queued for a session waiting to be resumed ("hibernating"). Sync,
    informational: push notifications (XEP-0357) act here."""
    ASYNC: ClassVar[bool] = False
    stanza: Element
    to: JID
    reason: str


@dataclass(slots=True)
class PresenceFromClient:
    """A client sent presence: broadcast (no `to`) or directed (with `to`, including subscription
    requests). Async. The presence module handles this; its result is not used."""
    ASYNC: ClassVar[bool] = True
    session: ClientSession
    stanza: Element
    to: JID | None


@dataclass(slots=True)
class PresenceToLocal:
    """Presence addressed to a local account (bare or full `to`) from anyone, local or remote:
    availability, probes and subscription stanzas. Async. `from_jid` is trusted (stamped)."""
    ASYNC: ClassVar[bool] = True
    stanza: Element
    from_jid: JID
    to: JID


@dataclass(slots=True)
class SessionBound:
    """A client bound a resource; the session is registered and can receive stanzas. Async."""
    ASYNC: ClassVar[bool] = True
    session: ClientSession


@dataclass(slots=True)
class SessionAvailable:
    """A session sent its initial available presence. Async. Offline messages are delivered here."""
    ASYNC: ClassVar[bool] = True
    session: ClientSession


@dataclass(slots=True)
class SessionInterrupted:
    """The connection of a session was lost before the stream was closed properly. Async. A
    handler that keeps the session alive for resumption (XEP-0198) returns HANDLED; otherwise the
    session ends (SessionClosed)."""
    ASYNC: ClassVar[bool] = True
    session: ClientSession
    reason: str = ""


@dataclass(slots=True)
class SessionClosed:
    """A session ended (logout, dropped socket, replaced by a newer login, shutdown). Async.
    The session is already unregistered; unavailable presence is broadcast here."""
    ASYNC: ClassVar[bool] = True
    session: ClientSession
    reason: str = ""


@dataclass(slots=True)
class UploadReceived:
    """A file sent by HTTP upload (XEP-0363) has been received completely and is not yet
    downloadable. Async. May veto: return a Verdict (Deny refuses the upload with its text and
    the file is deleted; Quarantine keeps it stored but never downloadable). Content checks
    and malware scanning sit here. A handler that fails counts as Deny.

    Content checks must read the file with `read()`, never from `path`: with encryption at rest
    (storage/crypto.py, on by default) the file at `path` holds ciphertext. `read()` returns a
    new async iterator of the decrypted bytes each time it is called:
    `async for chunk in event.read(): ...`; it raises storage.crypto.DecryptError if the
    stored bytes were changed."""
    ASYNC: ClassVar[bool] = True
    VETO: ClassVar[bool] = True
    host: str
    username: str
    slot_id: str
    filename: str
    content_type: str
    size: int
    path: Any                 # pathlib.Path of the stored (encrypted) bytes; not for content checks
    read: Any = None          # () -> AsyncIterator[bytes]: the decrypted bytes (see above)


@dataclass(slots=True)
class VCardStored:
    """An account's vCard (XEP-0054) was stored; `source` says who changed it ("client", or the
    module that converted something into it). Async; the client's set is answered afterwards."""
    ASYNC: ClassVar[bool] = True
    owner: JID
    vcard: Element
    source: str = "client"


@dataclass(slots=True)
class AccountRemoved:
    """An account was deleted; modules drop what they keep for it. Async."""
    ASYNC: ClassVar[bool] = True
    host: str
    username: str


@dataclass(slots=True)
class AuthFailed:
    """A login attempt failed: wrong password, or no such account (told apart nowhere, so that
    nothing reveals which accounts exist). Fired after the failure was counted for lockout. Sync
    and informational, on the login path: handlers must return quickly (the audit log queues its
    write). `address` is the client's IP address; `reason` the SASL condition ("not-authorized")."""
    ASYNC: ClassVar[bool] = False
    host: str
    username: str
    address: str
    reason: str


@dataclass(slots=True)
class AccountLocked:
    """Too many failed logins locked an account (`scope` "account": `username@host` from any
    address) or a client address (`scope` "address": every login from `address`) until the
    wall-clock time `until` (unix seconds). Sync and informational, like AuthFailed; fired once
    per lock, right after the AuthFailed of the failure that caused it."""
    ASYNC: ClassVar[bool] = False
    host: str
    username: str
    address: str
    until: float
    scope: str = "account"


@dataclass(slots=True)
class ServerStarted:
    """Every module is loaded and the listeners are about to open. Async. Work that needs the
    final set of features (entity capabilities of the server) is done here."""
    ASYNC: ClassVar[bool] = True


@dataclass(slots=True)
class ServerStopping:
    """The server is shutting down gracefully; flush what must not be lost. Async."""
    ASYNC: ClassVar[bool] = True
    reason: str = "shutdown"
    extra: dict[str, Any] = field(default_factory=dict)


CATALOGUE = (StanzaFromClient, VerdictGiven, MessageFromLocal, StanzaToLocal, MessageToLocal, MessageDelivered,
             MessageUndeliverable, MessageHeld, PresenceFromClient, PresenceToLocal, SessionBound, SessionAvailable,
             SessionInterrupted, SessionClosed, UploadReceived, VCardStored, AccountRemoved, ServerStarted, ServerStopping,
             AuthFailed, AccountLocked)
