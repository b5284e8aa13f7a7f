"""The XMPP side of the proxy: the in-process service on proxy.<domain>.

    alice  -> <iq type='get' to='proxy.example.com'><query xmlns='http://jabber.org/protocol/bytestreams'/></iq>
    proxy  -> <query><streamhost jid='proxy.example.com' host='192.0.2.5' port='7777'/></query>
    alice  -> <iq type='set' to='proxy.example.com'>
                <query sid='S'><activate>bob@example.com/phone</activate></query></iq>
    proxy  -> result, once both have connected to SHA1(S + alice's full JID + bob's full JID)

The router hands this service every stanza addressed to its domain with a trusted 'from' (`send`,
synchronous, must not block). Only users of the served domains may learn the streamhost or
activate a bytestream: the proxy relays their traffic, nobody else's. The activation is trusted
because the address is recomputed from the activation's stamped 'from': only the JID that
requested the bytestream can name the pair.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Callable

from ...protocol import ns
from ...protocol.errors import StanzaError, error_reply
from ...protocol.jid import JID, InvalidJid, parse_jid, try_jid
from ...protocol.xml import Element

if TYPE_CHECKING:
    from ...core.module_api import ModuleAPI
    from .relay import Relay

log = logging.getLogger(__name__)

NS_BYTESTREAMS = "http://jabber.org/protocol/bytestreams"


def stream_address(sid: str, requester: JID | str, target: JID | str) -> str:
    """DST.ADDR of XEP-0065: hex SHA1(SID + requester JID + target JID)."""
    return hashlib.sha1(f"{sid}{requester}{target}".encode("utf-8")).hexdigest()


class ProxyService:
    def __init__(self, module: ModuleAPI, domain: str, relay: Relay, streamhost: Callable[[], tuple[str, int]],
                 name: str) -> None:
        self.module = module
        self.domain = domain
        self.relay = relay
        self.streamhost = streamhost         # (host, port) clients connect to, known once listening
        self.name = name

    # -- entry from the router -------------------------------------------------------------------
    def send(self, stanza: Element) -> None:
        if stanza.name == "iq":
            try:
                reply = self._iq(stanza)
            except StanzaError as exc:
                reply = error_reply(stanza, exc)
            except Exception:
                log.exception("the SOCKS5 proxy failed on %s", stanza)
                reply = error_reply(stanza, StanzaError("internal-server-error",
                                                        "the proxy failed to handle this request"))
            if reply is not None:
                self.module.send(reply)
        elif stanza.name == "message" and stanza.get("type") not in ("error", "groupchat", "headline"):
            self.module.send(error_reply(stanza, StanzaError("service-unavailable",
                                                             "the SOCKS5 proxy does not take messages")))
        # Presence to the proxy means nothing; it is dropped.

    # -- IQ --------------------------------------------------------------------------------------
    def _iq(self, stanza: Element) -> Element | None:
        itype = stanza.get("type")
        if itype not in ("get", "set"):
            return None                          # the proxy sends no requests: nothing to match
        to = try_jid(stanza.get("to"))
        sender = try_jid(stanza.get("from"))
        children = [c for c in stanza.children if isinstance(c, Element)]
        if sender is None:
            return None
        if to is None or to.local is not None or to.resource is not None:
            raise StanzaError("service-unavailable", "the proxy has no other addresses")
        if len(children) != 1:
            raise StanzaError("bad-request", "an IQ get or set carries exactly one child element")
        payload = children[0]
        key = (itype, payload.xmlns, payload.name)
        if key == ("get", ns.DISCO_INFO, "query"):
            return self._result(stanza, self._info(payload))
        if key == ("get", ns.DISCO_ITEMS, "query"):
            return self._result(stanza, Element("query", ns.DISCO_ITEMS))
        if key == ("get", NS_BYTESTREAMS, "query"):
            self._check_user(sender)
            host, port = self.streamhost()
            query = Element("query", NS_BYTESTREAMS)
            query.add("streamhost", attrs={"jid": self.domain, "host": host, "port": str(port)})
            return self._result(stanza, query)
        if key == ("set", NS_BYTESTREAMS, "query"):
            self._check_user(sender)
            self._activate(sender, payload)
            return self._result(stanza, None)
        raise StanzaError("service-unavailable", "the SOCKS5 proxy does not support this request")

    def _info(self, query: Element) -> Element:
        if query.get("node"):
            raise StanzaError("item-not-found", "the proxy has no disco nodes")
        info = Element("query", ns.DISCO_INFO)
        info.add("identity", attrs={"category": "proxy", "type": "bytestreams", "name": self.name})
        for var in sorted((ns.DISCO_INFO, ns.DISCO_ITEMS, NS_BYTESTREAMS)):
            info.add("feature", attrs={"var": var})
        return info

    def _check_user(self, sender: JID) -> None:
        if sender.local is None or sender.domain not in self.module.ctx.domains:
            raise StanzaError("forbidden", "this proxy relays bytestreams of users of this server only")

    def _activate(self, sender: JID, query: Element) -> None:
        sid = query.get("sid")
        if not sid:
            raise StanzaError("bad-request", "say which bytestream to activate in the 'sid' attribute")
        activate = query.find("activate", NS_BYTESTREAMS)
        if activate is None or not activate.text.strip():
            raise StanzaError("bad-request", "name the target's JID in <activate/>")
        try:
            target = parse_jid(activate.text.strip())
        except InvalidJid as exc:
            raise StanzaError("jid-malformed", f"the target in <activate/> is not a JID: {exc}") from None
        # The 'from' is stamped by the server: only the requester itself reproduces the address.
        address = stream_address(sid, sender, target)
        self.relay.activate(address, str(sender.bare))
        log.info("SOCKS5 bytestream %s activated by %s for %s", sid, sender, target)

    def _result(self, stanza: Element, payload: Element | None) -> Element:
        attrs = {"type": "result", "from": self.domain, "to": stanza.get("from", "")}
        if "id" in stanza.attrs:
            attrs["id"] = stanza.attrs["id"]
        iq = Element("iq", stanza.xmlns, attrs)
        if payload is not None:
            iq.append(payload)
        return iq
