"""XEP-0357: Push Notifications: wake a user's phone when a message waits for them.

    alice  -> <iq type='set'><enable xmlns='urn:xmpp:push:0' jid='push.example.com' node='N'>
                [<x xmlns='jabber:x:data'> publish options, e.g. a secret </x>]</enable></iq>
    (alice goes offline; bob writes to her; the message is stored offline or queued for her
     hibernating XEP-0198 session: the MessageHeld hook)
    server -> <iq type='set' from='alice@example.com' to='push.example.com'><pubsub><publish node='N'>
                <item><notification xmlns='urn:xmpp:push:0'><x type='submit'> urn:xmpp:push:summary:
                message-count, last-message-sender [, last-message-body] </x></notification></item>
                </publish><publish-options> the form alice gave </publish-options></pubsub></iq>
    alice  -> <iq type='set'><disable xmlns='urn:xmpp:push:0' jid='push.example.com' [node='N']/></iq>

Notifications leave the company: only app servers the administrator allows receive them, and
the message body goes along only when the options say so. An app server that answers with an
error loses the registration (XEP-0357 section 7.1); errors of type 'wait' are transient.

At most one notification per user every `min_interval` seconds: messages held meanwhile are
counted in the next one, so the count is never lost. The count is of messages held since the
user was last available. Registrations are kept per account in a map store.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass

from ..config.options import option
from ..core.hooks import AccountRemoved, MessageHeld, SessionAvailable
from ..core.iq import ACCOUNT, IqRequest
from ..core.module_api import ModuleAPI
from ..protocol import ns
from ..protocol.errors import StanzaError
from ..protocol.jid import JID, InvalidJid, parse_jid, try_jid
from ..protocol.xml import Element, parse

NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
SUMMARY = "urn:xmpp:push:summary"
MAX_OPTIONS = 8192            # bytes of one stored publish-options form (a secret, an endpoint)
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
# Payloads that deserve a notification although they have no <body/>: encrypted messages
# (OMEMO, OpenPGP) and call invitations (XEP-0353).
WAKING = frozenset({("encrypted", "eu.siacs.conversations.axolotl"), ("encrypted", "urn:xmpp:omemo:2"),
                    ("openpgp", "urn:xmpp:openpgp:0"), ("x", "jabber:x:encrypted"),
                    ("propose", "urn:xmpp:jingle-message:0")})


def _check_app_servers(value: list[str]) -> str | None:
    for entry in value:
        try:
            jid = parse_jid(entry)
        except InvalidJid as exc:
            return f"{entry!r} is not a JID: {exc}"
        if jid.resource is not None or str(jid) != entry:
            return f"write {entry!r} as a domain or a bare JID in normalised form ({jid.bare})"
    return None


@dataclass(frozen=True)
class Options:
    allowed_app_servers: list[str] = option(help="App servers (push services) that may receive notifications: "
                                                 "domains (push.example.com, any JID on it) or bare JIDs. Empty: any.",
                                            factory=list, check=_check_app_servers)
    include_body: bool = option(False, help="Send the text of the last message to the app server. Off: the text "
                                            "stays on this server (app servers are usually run by third parties).")
    min_interval: float = option(10.0, help="Seconds between two notifications to one user; messages held "
                                            "meanwhile are counted in the next one.", min=0.0, max=3600.0)
    max_registrations: int = option(10, help="App server registrations one account may have.", min=1, max=100)
    reply_timeout: float = option(60.0, help="Seconds to wait for an app server's answer before giving up on "
                                             "that notification (the registration is kept).", min=1.0, max=600.0)


@dataclass(frozen=True)
class Registration:
    jid: str                       # the app server, normalised
    node: str
    options: str | None            # the publish-options form, serialised

    @property
    def key(self) -> str:
        return json.dumps([self.jid, self.node])


@dataclass
class Pending:
    """Messages held for one user since the last notification, and the notifier's state."""
    count: int = 0                 # held since the user was last available
    sender: str = ""
    body: str | None = None
    is_new: bool = False           # something arrived that no notification has reported yet
    last_sent: float | None = None
    task: asyncio.Task[None] | None = None


def summary(stanza: Element) -> tuple[str, str | None] | None:
    """(sender, body) when this held message is worth a notification, else None."""
    if stanza.get("type") in ("error", "headline"):
        return None
    message = stanza
    if stanza.find("sent", NS_CARBONS) is not None:
        return None                            # the user's own message, copied to another device
    received = stanza.find("received", NS_CARBONS)
    if received is not None:
        inner = received.find("forwarded", NS_FORWARD)
        message = inner.find("message") if inner is not None else None
        if message is None:
            return None
    body = message.find_text("body")
    if body is None and not any((c.name, c.xmlns) in WAKING for c in message.elements()):
        return None
    sender = try_jid(message.get("from"))
    return (str(sender.bare) if sender is not None else ""), body


class PushNotifier:
    def __init__(self, module: ModuleAPI) -> None:
        self.module = module
        self.options: Options = module.options
        self.store = module.open_store("push", "map")
        self._registrations: dict[JID, dict[str, Registration]] = {}
        self._pending: dict[JID, Pending] = {}

    # -- who may receive ---------------------------------------------------------------------------
    def is_allowed(self, app: JID) -> bool:
        allowed = self.options.allowed_app_servers
        if not allowed:
            return True
        return any(entry == str(app.bare) if "@" in entry else entry == app.domain for entry in allowed)

    async def registrations(self, bare: JID) -> dict[str, Registration]:
        regs = self._registrations.get(bare)
        if regs is None:
            stored = await self.store.get_all(bare.domain, bare.local)
            regs = {key: Registration(v["jid"], v["node"], v.get("options")) for key, v in stored.items()}
            self._registrations[bare] = regs
        return regs

    async def _save(self, bare: JID, reg: Registration, keep: bool) -> None:
        value = {"jid": reg.jid, "node": reg.node, "options": reg.options} if keep else None
        await self.store.set(bare.domain, bare.local, reg.key, value)
        regs = await self.registrations(bare)
        if keep:
            regs[reg.key] = reg
        else:
            regs.pop(reg.key, None)

    # -- enable and disable ------------------------------------------------------------------------
    def _app_server(self, request: IqRequest) -> JID:
        if not request.is_own_account:
            raise StanzaError("forbidden", "push notifications are set up by the account's owner only")
        text = request.payload.get("jid")
        if not text:
            raise StanzaError("bad-request", "name the app server in the 'jid' attribute")
        try:
            return parse_jid(text)
        except InvalidJid as exc:
            raise StanzaError("jid-malformed", f"the 'jid' is not a valid JID: {exc}") from None

    async def enable(self, request: IqRequest) -> Element:
        app = self._app_server(request)
        node = request.payload.get("node")
        if not node:
            raise StanzaError("bad-request", "give the node of the app server in the 'node' attribute")
        if app.domain in self.module.ctx.domains:
            raise StanzaError("not-allowed", "notifications go to an app server's push service, not to this "
                                             "server or its users")
        if not self.is_allowed(app):
            raise StanzaError("not-allowed", f"{app} is not an app server this company allows push notifications "
                                             "to; ask your administrator")
        reg = Registration(str(app), node, self._publish_options(request.payload))
        bare = request.target
        regs = await self.registrations(bare)
        if reg.key not in regs and len(regs) >= self.options.max_registrations:
            raise StanzaError("resource-constraint", f"this account already has {len(regs)} push registrations; "
                                                     "disable one first")
        await self._save(bare, reg, keep=True)     # the same jid and node again: its new options win
        return request.result()

    @staticmethod
    def _publish_options(payload: Element) -> str | None:
        forms = list(payload.elements("x", ns.DATA_FORMS))
        others = [c for c in payload.elements() if c.xmlns != ns.DATA_FORMS or c.name != "x"]
        if len(forms) > 1 or others:
            raise StanzaError("bad-request", "<enable/> carries at most one data form, the publish options")
        if not forms:
            return None
        form = forms[0]
        form_type = next((f for f in form.elements("field", ns.DATA_FORMS) if f.get("var") == "FORM_TYPE"), None)
        if form_type is None or form_type.find_text("value", ns.DATA_FORMS) != PUBLISH_OPTIONS:
            raise StanzaError("bad-request", f"the data form must have the FORM_TYPE {PUBLISH_OPTIONS}")
        data = form.serialize(ns.CLIENT).decode()
        if len(data) > MAX_OPTIONS:
            raise StanzaError("not-acceptable", f"the publish options are larger than {MAX_OPTIONS} bytes")
        return data

    async def disable(self, request: IqRequest) -> Element:
        app = str(self._app_server(request))
        node = request.payload.get("node")
        bare = request.target
        for reg in list((await self.registrations(bare)).values()):
            if reg.jid == app and (node is None or reg.node == node):
                await self._save(bare, reg, keep=False)
        return request.result()

    # -- notifying ---------------------------------------------------------------------------------
    def held(self, event: MessageHeld) -> None:
        worth = summary(event.stanza)
        if worth is None:
            return
        bare = event.to.bare
        pending = self._pending.get(bare)
        if pending is None:
            pending = self._pending[bare] = Pending()
        pending.count += 1
        pending.sender, pending.body = worth
        pending.is_new = True
        if pending.task is None:
            pending.task = asyncio.get_running_loop().create_task(self._notify(bare, pending),
                                                                  name=f"push notifications for {bare}")

    async def _notify(self, bare: JID, pending: Pending) -> None:
        clock = self.module.clock
        interval = self.options.min_interval
        try:
            while pending.is_new:
                if pending.last_sent is not None:
                    # Checked against the server's clock every second at most, so that a test's
                    # fake clock moves it too.
                    while (wait := pending.last_sent + interval - clock.monotonic()) > 0:
                        await asyncio.sleep(min(wait, 1.0))
                pending.is_new = False
                pending.last_sent = clock.monotonic()
                await self._publish_all(bare, pending.count, pending.sender, pending.body)
        except Exception:
            self.module.log.exception("push notifications for %s failed", bare)
        finally:
            pending.task = None

    async def _publish_all(self, bare: JID, count: int, sender: str, body: str | None) -> None:
        waits = []
        for reg in sorted((await self.registrations(bare)).values(), key=lambda r: r.key):
            app = parse_jid(reg.jid)
            if not self.is_allowed(app):          # the administrator has withdrawn it since
                self.module.log.info("push registration of %s at %s dropped: no longer allowed", bare, app)
                await self._save(bare, reg, keep=False)
                continue
            waits.append(self._publish(bare, reg, count, sender, body))
        await asyncio.gather(*waits)

    async def _publish(self, bare: JID, reg: Registration, count: int, sender: str, body: str | None) -> None:
        iq_id = "push-" + secrets.token_hex(8)
        iq = Element("iq", ns.CLIENT, {"type": "set", "from": str(bare), "to": reg.jid, "id": iq_id})
        pubsub = iq.add("pubsub", NS_PUBSUB)
        item = pubsub.add("publish", attrs={"node": reg.node}).add("item")
        form = item.add("notification", NS_PUSH).add("x", ns.DATA_FORMS, {"type": "submit"})
        form.add("field", attrs={"var": "FORM_TYPE"}).add("value", text=SUMMARY)
        form.add("field", attrs={"var": "message-count"}).add("value", text=str(count))
        if sender:
            form.add("field", attrs={"var": "last-message-sender"}).add("value", text=sender)
        if body is not None and self.options.include_body:
            form.add("field", attrs={"var": "last-message-body"}).add("value", text=body)
        if reg.options is not None:
            pubsub.add("publish-options").append(parse(reg.options))
        dispatcher = self.module.ctx.iq
        answer = dispatcher.expect_reply(iq_id)
        self.module.send(iq)
        try:
            reply = await asyncio.wait_for(answer, self.options.reply_timeout)
        except asyncio.TimeoutError:
            self.module.log.info("the app server %s did not answer a push notification for %s", reg.jid, bare)
            return
        finally:
            dispatcher.forget(iq_id)
        if reply.get("type") != "error" or try_jid(reply.get("from")) != parse_jid(reg.jid):
            return
        error = reply.find("error")
        if error is not None and error.get("type") == "wait":
            return                                  # transient: try again with the next message
        self.module.log.info("the app server %s refused a push notification for %s; registration removed",
                             reg.jid, bare)
        await self._save(bare, reg, keep=False)

    # -- the user is back; the account is gone -----------------------------------------------------
    async def available(self, event: SessionAvailable) -> None:
        bare = event.session.bare
        pending = self._pending.get(bare)
        if pending is None:
            return
        if pending.task is None:
            del self._pending[bare]
        else:
            # The held messages are being delivered: nothing is left to announce, and the next
            # notification counts from zero.
            pending.count, pending.is_new = 0, False

    async def removed(self, event: AccountRemoved) -> None:
        bare = JID(event.username, event.host, None)
        self._registrations.pop(bare, None)
        pending = self._pending.pop(bare, None)
        if pending is not None and pending.task is not None:
            pending.task.cancel()
        await self.store.delete_all(event.host, event.username)


def setup(module: ModuleAPI) -> None:
    notifier = PushNotifier(module)
    module.add_feature(NS_PUSH, target=ACCOUNT)
    module.on_iq("set", NS_PUSH, "enable", notifier.enable, target=ACCOUNT)
    module.on_iq("set", NS_PUSH, "disable", notifier.disable, target=ACCOUNT)
    module.on(MessageHeld, notifier.held)
    module.on(SessionAvailable, notifier.available)
    module.on(AccountRemoved, notifier.removed)
