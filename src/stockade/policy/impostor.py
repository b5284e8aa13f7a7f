"""Impostors: external-sender labels, look-alike warnings and first-contact notices.

Rules of [hosts.policy.impostor] (config/schema.py ImpostorSection), applied to every message
about to reach a local account (MessageToLocal, so every delivery path gets them: live, offline,
stream management), for the recipient's host:

- External: the sender's domain is neither the recipient's host nor a service under it
  (conference.example.com): another tenant of this server, or a federated user. The message gets

      <external xmlns="urn:stockade:policy:0" domain="other.org"/>

  and, when `external_prefix` is set, that text before its body.
- Look-alike: an external sender whose domain looks like a domain served here (examp1e.com for
  example.com, by the confusables skeleton of policy/confusables.py), or whose nickname
  (XEP-0172 <nick/> in the message) looks like a user of the recipient's host, gets the
  recipient a warning: `<lookalike xmlns="urn:stockade:policy:0" resembles="ceo@example.com"/>`
  and `lookalike_prefix` before the body.
- First contact (`first_contact`): the first message from a sender the recipient never
  exchanged messages with and does not have in the roster gets `<first-contact
  xmlns="urn:stockade:policy:0"/>` and `first_contact_prefix`. Who has seen whom is kept in the
  map store "policy_seen" (one row per host: "recipient\\nsender" -> first time), loaded into
  memory when the host turns the notice on.

Elements of this namespace written by the sender are removed first: only the server labels.
Cost: one dict lookup and a domain comparison for a message between users of the same host.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..config.schema import ImpostorSection
from ..core.hooks import POLICY, MessageFromLocal, MessageToLocal, SessionBound
from ..protocol.jid import JID, try_jid
from ..protocol.xml import Element
from .confusables import skeleton

if TYPE_CHECKING:
    from ..config.schema import PolicySection
    from ..core.accounts import AccountService
    from ..core.bus import HookBus
    from ..storage import MapStore

log = logging.getLogger("stockade.policy.impostor")

NS_POLICY = "urn:stockade:policy:0"
NS_NICK = "http://jabber.org/protocol/nick"
SEEN_STORE = "policy_seen"
_LABELED_MEMORY = 4096          # stanzas labeled recently (routed again by stream management: label once)


class _Directory:
    """Skeletons of one host's user names, rebuilt when the number of accounts changes."""

    __slots__ = ("count", "users")

    def __init__(self, count: int, users: dict[str, str]) -> None:
        self.count = count
        self.users = users        # skeleton -> user name


class ImpostorControl:
    """Labels and warnings on messages to local accounts. A policy control (`apply`); `roster`
    is the roster module's RosterService (`cached(owner)`), `seen` the map store "policy_seen"."""

    def __init__(self, domains: set[str], accounts: AccountService, roster: Any, seen: MapStore) -> None:
        self.domains = domains
        self.accounts = accounts
        self.roster = roster
        self.seen_store = seen
        self._hosts: dict[str, ImpostorSection] = {}
        self._domain_skeletons: dict[str, str] = {}
        self._directories: dict[str, _Directory] = {}
        self._refreshing: dict[str, asyncio.Future[None]] = {}
        self._seen: dict[str, dict[str, set[str]]] = {}        # host -> recipient -> senders (bare)
        self._labeled: dict[int, Element] = {}
        self._bus: HookBus | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def apply(self, host: str, policy: PolicySection | None) -> None:
        section = (policy.impostor if policy is not None else None) or ImpostorSection()
        if section.label_external or section.lookalike_warning or section.first_contact:
            self._hosts[host] = section
        else:
            self._hosts.pop(host, None)
        if section.first_contact and host not in self._seen:
            self._spawn(self._load_seen(host))
        elif not section.first_contact:
            self._seen.pop(host, None)
        self._domain_skeletons = {d: skeleton(d) for d in self.domains}
        self._sync_hooks()

    def subscribe(self, bus: HookBus) -> None:
        self._bus = bus
        self._sync_hooks()

    def _sync_hooks(self) -> None:
        bus = self._bus
        if bus is None:
            return
        sections = self._hosts.values()
        bus.toggle(MessageToLocal, self.on_message, POLICY, bool(self._hosts))
        bus.toggle(SessionBound, self._session_bound, POLICY, any(s.lookalike_warning for s in sections))
        bus.toggle(MessageFromLocal, self._sent, POLICY, any(s.first_contact for s in sections))

    # -- the message path -----------------------------------------------------------------------
    def on_message(self, event: MessageToLocal) -> None:
        to = event.to
        section = self._hosts.get(to.domain)
        if section is None:
            return None
        stanza = event.stanza
        origin = event.origin
        if origin is not None and origin.host == to.domain and not section.first_contact:
            return None                    # the common case: a colleague
        if stanza.attrs.get("type") in ("groupchat", "error"):
            return None
        sender = origin.jid if origin is not None else try_jid(stanza.attrs.get("from"))
        if sender is None or sender.local is None or sender.bare == to.bare:
            return None
        if self._labeled.get(id(stanza)) is stanza:
            return None                    # routed again (stream management): labeled already
        is_external = sender.domain != to.domain and not sender.domain.endswith("." + to.domain)
        marks: list[Element] = []
        prefixes: list[str] = []
        if is_external:
            if section.label_external:
                marks.append(Element("external", NS_POLICY, {"domain": sender.domain}))
                if section.external_prefix:
                    prefixes.append(section.external_prefix)
            if section.lookalike_warning:
                resembles = self.resembles(to.domain, sender, stanza.find_text("nick", NS_NICK))
                if resembles:
                    marks.append(Element("lookalike", NS_POLICY, {"resembles": resembles}))
                    if section.lookalike_prefix:
                        prefixes.append(section.lookalike_prefix.replace("{user}", resembles))
        if section.first_contact and self._is_first_contact(to, sender, stanza):
            marks.append(Element("first-contact", NS_POLICY))
            if section.first_contact_prefix:
                prefixes.append(section.first_contact_prefix)
        if is_external or marks:
            stanza.remove_all(xmlns=NS_POLICY)       # the sender's own "labels" do not count
        if not marks:
            return None
        for mark in marks:
            stanza.append(mark)
        body = stanza.find("body")
        if prefixes and body is not None:
            body.set_text("".join(prefixes) + body.text)
        self._remember_labeled(stanza)
        return None

    def resembles(self, host: str, sender: JID, nick: str | None) -> str | None:
        """The address (or domain) served here that this external sender imitates, or None."""
        sender_domain = skeleton(sender.domain)
        for domain, domain_skeleton in self._domain_skeletons.items():
            if domain_skeleton == sender_domain and domain != sender.domain:
                user = self._user_like(domain, sender.local or "")
                return f"{user}@{domain}" if user else domain
        if nick:
            user = self._user_like(host, nick)
            if user:
                return f"{user}@{host}"
        return None

    def _user_like(self, host: str, name: str) -> str | None:
        directory = self._directory(host)
        return directory.users.get(skeleton(name)) if directory is not None else None

    def _directory(self, host: str) -> _Directory | None:
        directory = self._directories.get(host)
        if directory is None or directory.count != self.accounts.count(host):
            self._refresh_soon(host)                 # accounts added or removed since: rebuild
        return directory

    def _refresh_soon(self, host: str) -> asyncio.Future[None]:
        """The rebuild of `host`'s skeletons: the one under way, or a new one. A login storm
        right after start shares one listing of the accounts instead of one per login."""
        pending = self._refreshing.get(host)
        if pending is None or pending.done():
            pending = self._refreshing[host] = asyncio.ensure_future(self.refresh(host))
            self._tasks.add(pending)
            pending.add_done_callback(self._done)
        return pending

    async def refresh(self, host: str) -> None:
        """Rebuild the skeletons of `host`'s user names (an account was added or removed)."""
        count = self.accounts.count(host)
        users = {skeleton(username): username for _h, username in await self.accounts.list(host)}
        self._directories[host] = _Directory(count, users)

    async def _session_bound(self, event: SessionBound) -> None:
        # Accounts are created while the server runs: check the skeletons at each login so that
        # a warning never depends on an earlier message having noticed the change.
        host = event.session.host
        section = self._hosts.get(host)
        if section is None or not section.lookalike_warning:
            return
        directory = self._directories.get(host)
        if directory is None or directory.count != self.accounts.count(host):
            await asyncio.shield(self._refresh_soon(host))

    # -- first contact --------------------------------------------------------------------------
    def _is_first_contact(self, to: JID, sender: JID, stanza: Element) -> bool:
        seen_of_host = self._seen.get(to.domain)
        if seen_of_host is None or stanza.find("body") is None:
            return False                     # still loading, or not a message anyone reads
        recipient = to.local or ""
        seen = seen_of_host.setdefault(recipient, set())
        sender_bare = str(sender.bare)
        if sender_bare in seen:
            return False
        self._mark_seen(to.domain, recipient, sender_bare)
        roster = self.roster.cached(to.bare) if self.roster is not None else None
        if roster is not None and sender.bare in roster.items:
            return False
        return True

    def _sent(self, event: MessageFromLocal) -> None:
        """A user who writes to someone has seen them: their answer is no first contact."""
        session = event.session
        seen_of_host = self._seen.get(session.host)
        to = event.stanza.attrs.get("to")
        if seen_of_host is None or not to:
            return None
        peer = to.partition("/")[0]
        seen = seen_of_host.setdefault(session.username, set())
        if peer not in seen:
            self._mark_seen(session.host, session.username, peer)
        return None

    def _mark_seen(self, host: str, recipient: str, sender: str) -> None:
        self._seen[host].setdefault(recipient, set()).add(sender)
        self._spawn(self.seen_store.set(host, "", f"{recipient}\n{sender}", True))

    async def _load_seen(self, host: str) -> None:
        rows = await self.seen_store.get_all(host, "")
        seen: dict[str, set[str]] = {}
        for key in rows:
            recipient, _, sender = key.partition("\n")
            seen.setdefault(recipient, set()).add(sender)
        if self._hosts.get(host) is not None and self._hosts[host].first_contact:
            self._seen[host] = seen

    async def flush(self) -> None:
        """Wait for pending loads and writes (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- helpers --------------------------------------------------------------------------------
    def _remember_labeled(self, stanza: Element) -> None:
        labeled = self._labeled
        if len(labeled) >= _LABELED_MEMORY:
            labeled.pop(next(iter(labeled)))
        labeled[id(stanza)] = stanza

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:                 # no running loop (configuration checks): nothing to do
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("impostor protection: %s", task.exception())
