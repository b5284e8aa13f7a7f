"""Link policy: links in message bodies are allowed, marked with a warning, or refused.

    [hosts.policy.links]
    mode = "warn"                      # allow, warn, block: links to domains on neither list
    allow_domains = ["example.com"]    # always pass (subdomains too); the host's own domains too
    deny_domains = ["evil.test"]       # always refused
    suspicious = "block"               # look-alike domains: warn or block

A link is an http(s):// or www. address, or a bare domain with a common top-level domain
(`example.com/path`). Its host decides:

1. a denied domain (or a subdomain of one): Deny, naming the domain;
2. an allowed domain, or one of this server's own: passes;
3. a suspicious domain: punycode (xn--) or non-ASCII letters, a label mixing scripts, or one
   that reads like an allowed or own domain once look-alike characters are folded
   (examp1e.com, exаmple.com with a Cyrillic а, rn for m): `suspicious` (warn or block);
4. anything else: `mode`.

"warn" delivers a changed copy (a Redact verdict): the body starts with a warning line and the
message carries <warning xmlns="urn:stockade:policy:0" type="link" domain="..."/> for clients
that show it their own way. The strongest outcome of all the links of a message wins.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..core.hooks import POLICY, StanzaFromClient
from ..core.verdict import Deny, Redact

if TYPE_CHECKING:
    from ..config.schema import LinksSection, PolicySection
    from ..core.bus import HookBus

NS_POLICY = "urn:stockade:policy:0"
PRIORITY = POLICY - 30        # after DLP (h7-shared.md)
MAX_SCAN = 65536              # characters of a body searched for links

_TLDS = ("com|org|net|edu|gov|mil|int|io|co|uk|de|fr|it|es|nl|be|ch|at|se|no|dk|fi|pl|cz|ru|ua|cn|jp|kr|in|"
         "au|nz|ca|us|br|mx|ar|info|biz|me|tv|app|dev|xyz|online|site|top|link|click|zip|mov|ly|gl|to|cc|ws")
_URL = re.compile(r"(?i)(?:\bhttps?://|(?<![\w@.-])www\.)[^\s<>\"'`]{1,2048}"
                  rf"|(?<![\w@./-])(?:[\w-]{{1,63}}\.){{1,8}}(?:{_TLDS})(?![\w-])(?:/[^\s<>\"'`]{{0,2048}})?")

# Characters that read like a Latin letter or digit (a small part of Unicode's confusables).
_FOLD = str.maketrans({
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
    "ԁ": "d", "һ": "h", "ӏ": "l", "к": "k", "м": "m", "т": "t", "в": "b", "н": "h", "п": "n", "г": "r",
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "ι": "i", "κ": "k", "τ": "t", "υ": "u", "χ": "x", "ε": "e",
    "ɡ": "g", "ɑ": "a", "ı": "i", "ℓ": "l",
    "0": "o", "1": "l", "3": "e", "5": "s", "|": "l", "i": "l",
})


def domain_problem(domain: str) -> str | None:
    """Why `domain` cannot be on a list; None when it can (the configuration check)."""
    if not domain or domain != domain.strip() or "/" in domain or ":" in domain or " " in domain:
        return f"{domain!r} is not a domain: write it as example.com, without scheme, port or path"
    if domain.startswith(".") or ".." in domain:
        return f"{domain!r} is not a domain: write it as example.com (subdomains are included)"
    return None


def ascii_domain(host: str) -> str:
    """The host in lowercase ASCII (IDNA), or as it is when it cannot be encoded."""
    host = host.lower().rstrip(".")
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def unicode_domain(host: str) -> str:
    try:
        return host.encode("ascii").decode("idna")
    except UnicodeError:
        return host


def skeleton(host: str) -> str:
    """The host with look-alike characters folded, for comparing what people read."""
    text = unicodedata.normalize("NFKC", unicode_domain(host)).lower().translate(_FOLD)
    return text.replace("rn", "m").replace("vv", "w")


def _scripts(label: str) -> set[str]:
    out = set()
    for ch in label:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            out.add(name.split(" ")[0] if name else "?")
    return out


def host_of(link: str) -> str:
    """The host of a link as written: no scheme, user, port or path."""
    rest = re.sub(r"(?i)^https?://", "", link)
    rest = re.split(r"[/?#\\]", rest, maxsplit=1)[0]
    rest = rest.rsplit("@", 1)[-1]
    if rest.startswith("["):
        return rest
    return rest.split(":", 1)[0].rstrip(".,;!)").lower()


def find_hosts(text: str) -> list[str]:
    """The hosts of the links in `text`, in order, without repeats."""
    seen: dict[str, None] = {}
    for m in _URL.finditer(text[:MAX_SCAN]):
        host = host_of(m.group())
        if host:
            seen.setdefault(host, None)
    return list(seen)


def _under(host: str, domains: Iterable[str]) -> str | None:
    for d in domains:
        if host == d or host.endswith("." + d):
            return d
    return None


class HostLinks:
    """One host's link rules, compiled."""

    def __init__(self, section: LinksSection, own: Iterable[str]) -> None:
        self.mode = section.mode
        self.suspicious = section.suspicious
        self.allow = tuple(ascii_domain(d) for d in (*section.allow_domains, *own))
        self.deny = tuple(ascii_domain(d) for d in section.deny_domains)
        self.protected = {skeleton(d): d for d in self.allow}

    def classify(self, host: str) -> tuple[str, str]:
        """("allow" | "warn" | "block", why) for a link to `host`."""
        ascii_host = ascii_domain(host)
        denied = _under(ascii_host, self.deny)
        if denied:
            return "block", f"links to {denied} are not allowed here"
        if _under(ascii_host, self.allow):
            return "allow", ""
        why = self._suspicion(host, ascii_host)
        if why:
            return self.suspicious, why
        return self.mode, ""

    def _suspicion(self, host: str, ascii_host: str) -> str:
        readable = unicode_domain(ascii_host)
        for label in readable.split("."):
            if len(_scripts(label)) > 1:
                return f"{readable} mixes letters of different scripts"
        shape = skeleton(ascii_host)
        for protected_shape, domain in self.protected.items():
            if shape == protected_shape or shape.endswith("." + protected_shape):
                return f"{readable} looks like {domain} but is a different domain"
        if "xn--" in ascii_host or not host.isascii():
            return f"{readable} is an international domain name ({ascii_host}), often used to imitate others"
        return ""


def warning_line(domains: list[str]) -> str:
    return (f"[Warning from Stockade: this message links to {', '.join(domains)}, outside the trusted "
            "domains. Do not open it or enter passwords unless you expected it.]")


class LinkControl:
    """The link policy of every host, enforced on StanzaFromClient (contract: h7-shared.md)."""

    def __init__(self, domains: Iterable[str]) -> None:
        self.own = tuple(domains)
        self._hosts: dict[str, HostLinks] = {}
        self._bus: HookBus | None = None

    def subscribe(self, bus: HookBus) -> None:
        self._bus = bus
        self._sync_hook()

    def apply(self, host: str, policy: PolicySection | None) -> None:
        section = policy.links if policy is not None else None
        if section is None:
            self._hosts.pop(host, None)
        else:
            self._hosts[host] = HostLinks(section, self.own)
        self._sync_hook()

    def _sync_hook(self) -> None:
        bus = self._bus
        if bus is None:
            return
        bus.toggle(StanzaFromClient, self.check, PRIORITY, bool(self._hosts))

    def check(self, event: StanzaFromClient) -> Deny | Redact | None:
        rules = self._hosts.get(event.session.host)
        if rules is None:
            return None
        stanza = event.stanza
        if stanza.name != "message" or stanza.attrs.get("type") == "error":
            return None
        body = stanza.find("body")
        if body is None:
            return None
        text = "\n".join(el.text for el in stanza.elements("body"))
        if "." not in text:
            return None
        warned: list[tuple[str, str]] = []
        for host in find_hosts(text):
            outcome, why = rules.classify(host)
            if outcome == "block":
                shown = unicode_domain(ascii_domain(host))
                reason = f" ({why})" if why else ""
                return Deny("policy-violation",
                            f"This message was not sent: it contains a link to {shown}{reason}, which the "
                            "link policy of this server refuses. Remove the link and send again, or ask your "
                            "administrator to allow the domain.", rule="links.block")
            if outcome == "warn":
                warned.append((unicode_domain(ascii_domain(host)), why))
        if not warned:
            return None
        copy = stanza.copy()
        line = warning_line([domain for domain, _ in warned])
        for el in copy.elements("body"):
            el.set_text(f"{line}\n{el.text}")
        for domain, why in warned:
            attrs = {"type": "link", "domain": domain}
            if why:
                attrs["reason"] = why
            copy.add("warning", NS_POLICY, attrs, line)
        return Redact(copy, rule="links.warn")
