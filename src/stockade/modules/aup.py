"""The archive notice and the acceptable-use policy of each host ([hosts.compliance]).

Notice. When `notice` is set, every session of the host gets it once, as a headline message from
the domain, when it becomes available (its initial presence): people are told at each login that
their messages are archived (issue 6: "the people using IM must be told").

Acceptable use. When `aup_required` is set, a user who has not accepted the current
`aup_version` of `aup_text` cannot send messages: each message stanza is refused with
<policy-violation/> and a text saying how to accept (presence and IQs pass, so that the client
can run the command). The user accepts with the XEP-0050 ad-hoc command `accept-aup` on the
domain (modules/adhoc.py): its form shows the policy; completing it with `accept` ticked records
the acceptance (user, version, time) in the map store "aup" and in the audit log (`aup.accept`).
A new `aup_version` has to be accepted again. At login, a user who still has to accept gets
the policy and these instructions as a second headline.

Acceptances are read once at start and kept in memory: the check on the message path is a
dictionary look-up. Only this module writes them (no other process does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..compliance.audit import AuditLog
from ..config import ConfigError
from ..core.hooks import POLICY, AccountRemoved, ServerStarted, SessionAvailable, StanzaFromClient
from ..core.iq import IqRequest
from ..core.module_api import ModuleAPI
from ..core.verdict import Deny
from ..protocol import ns
from ..protocol.errors import StanzaError
from ..protocol.jid import JID
from ..protocol.xml import Element
from .adhoc import AdHocCommands, Command

if TYPE_CHECKING:
    from ..config.schema import ComplianceSection
    from ..core.sessions import ClientSession

NODE = "accept-aup"
FORM_TYPE = "urn:stockade:aup:0"
STORE = "aup"
GREETED = "aup.greeted"          # session.extra key


class AcceptableUse:
    def __init__(self, module: ModuleAPI, sections: dict[str, ComplianceSection]) -> None:
        self.module = module
        self.sections = sections
        self.store = module.open_store(STORE, "map")
        self.audit: AuditLog | None = module.ctx.services.get(AuditLog)
        self.accepted: dict[str, dict[str, str]] = {host: {} for host in sections}    # host -> user -> version

    async def load(self) -> None:
        for host in self.sections:
            records = await self.store.get_all(host, "")
            self.accepted[host] = {user: str(r.get("version", "")) for user, r in records.items()
                                   if isinstance(r, dict)}

    def has_accepted(self, host: str, username: str) -> bool:
        section = self.sections.get(host)
        return section is None or self.accepted[host].get(username) == section.aup_version

    def _instructions(self, host: str) -> str:
        section = self.sections[host]
        return (f"You have to accept the acceptable-use policy of {host} (version {section.aup_version}) before "
                f"you can send messages. Accept it with the command '{NODE}' on {host} (in your client: "
                f"'Run command' or 'Execute command' on the server {host}).")

    # -- the message path -----------------------------------------------------------------------
    def check(self, event: StanzaFromClient) -> Deny | None:
        stanza = event.stanza
        if stanza.name != "message" or stanza.attrs.get("type") == "error":
            return None
        session = event.session
        section = self.sections.get(session.host)
        if section is None or not section.aup_required:
            return None
        if self.accepted[session.host].get(session.username) == section.aup_version:
            return None
        return Deny("policy-violation", f"your message was not sent: {self._instructions(session.host)}", rule="aup")

    # -- login ----------------------------------------------------------------------------------
    async def greet(self, event: SessionAvailable) -> None:
        session = event.session
        section = self.sections.get(session.host)
        if section is None or session.extra.get(GREETED):
            return
        session.extra[GREETED] = True          # once per session, even if it becomes available again
        if section.notice:
            session.send(self._headline(session, "Archive notice", section.notice))
        if section.aup_required and not self.has_accepted(session.host, session.username):
            session.send(self._headline(session, "Acceptable-use policy",
                                        f"{section.aup_text}\n\n{self._instructions(session.host)}"))

    @staticmethod
    def _headline(session: ClientSession, subject: str, body: str) -> Element:
        message = Element("message", ns.CLIENT, {"type": "headline", "from": session.host, "to": str(session.jid)})
        message.add("subject", text=subject)
        message.add("body", text=body)
        return message

    # -- the ad-hoc command ---------------------------------------------------------------------
    def is_available(self, requester: JID, host: str) -> bool:
        section = self.sections.get(host)
        return (section is not None and bool(section.aup_text) and requester.local is not None
                and requester.domain == host)

    async def form(self, request: IqRequest) -> Element:
        section = self.sections[request.host]
        form = Element("x", ns.DATA_FORMS, {"type": "form"})
        form.add("title", text=f"Acceptable-use policy of {request.host}")
        form.add("instructions", text=section.aup_text)
        field = form.add("field", attrs={"var": "FORM_TYPE", "type": "hidden"})
        field.add("value", text=FORM_TYPE)
        field = form.add("field", attrs={"var": "version", "type": "hidden"})
        field.add("value", text=section.aup_version)
        field = form.add("field", attrs={"var": "policy", "type": "fixed"})
        field.add("value", text=section.aup_text)
        field = form.add("field", attrs={"var": "accept", "type": "boolean",
                                         "label": f"I accept the acceptable-use policy (version {section.aup_version})"})
        field.add("required")
        field.add("value", text="false")
        return form

    async def accept(self, request: IqRequest, form: Element | None) -> str:
        host, section = request.host, self.sections[request.host]
        values = _values(form) if form is not None and form.get("type") == "submit" else {}
        if values.get("accept") not in ("1", "true"):
            raise StanzaError("not-acceptable", "the policy was not accepted: tick 'accept' (set the field accept "
                                                "to true) and complete the command to accept it")
        submitted = values.get("version", section.aup_version)
        if submitted != section.aup_version:
            raise StanzaError("not-acceptable", f"the policy changed while you read it (now version "
                                                f"{section.aup_version}); run the command again to read the new one")
        user = request.sender.local or ""
        when = self.module.clock.time()
        await self.store.set(host, "", user, {"version": section.aup_version, "accepted": when})
        self.accepted[host][user] = section.aup_version
        if self.audit is not None:
            await self.audit.record(host, str(request.sender.bare), "aup.accept", str(request.sender.bare),
                                    version=section.aup_version)
        return f"Thank you: you accepted version {section.aup_version} of the acceptable-use policy of {host}."

    async def account_removed(self, event: AccountRemoved) -> None:
        if event.host in self.accepted:
            self.accepted[event.host].pop(event.username, None)
            await self.store.set(event.host, "", event.username, None)


def _values(form: Element) -> dict[str, str]:
    out = {}
    for field in form.elements("field", ns.DATA_FORMS):
        var = field.get("var")
        if var:
            out[var] = (field.find_text("value", ns.DATA_FORMS) or "").strip()
    return out


def setup(module: ModuleAPI) -> None:
    config = module.ctx.config
    sections = {h.domain: h.compliance for h in config.hosts if h.compliance is not None}
    for host, section in sections.items():
        if section.aup_required and not section.aup_text.strip():
            raise ConfigError(config.source, f"hosts[{host}].compliance.aup_required",
                              "a required acceptable-use policy needs its text: set aup_text")
    if not sections:
        return
    aup = AcceptableUse(module, sections)
    module.provide(aup)
    module.on(StanzaFromClient, aup.check, POLICY + 50)
    module.on(SessionAvailable, aup.greet)
    module.on(AccountRemoved, aup.account_removed)
    if any(s.aup_text for s in sections.values()):
        module.service(AdHocCommands).register(Command(
            node=NODE, name="Accept the acceptable-use policy", start=aup.form, complete=aup.accept,
            is_available=aup.is_available))

    async def started(_: ServerStarted) -> None:
        await aup.load()
    module.on(ServerStarted, started)
