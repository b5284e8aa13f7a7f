"""RFC 7622: JIDs, parsed and normalised once, then cached.

A JID is `[local@]domain[/resource]`. The localpart is enforced with the PRECIS
UsernameCaseMapped profile, the resourcepart with OpaqueString, and the domain is lower-cased and,
when not ASCII, converted with IDNA. Parsing the same string again returns the same object from a
bounded cache, so the routing path pays for normalisation once per distinct address.
"""

from __future__ import annotations

import re
import threading
import weakref

import precis_i18n

_LOCAL = precis_i18n.get_profile("UsernameCaseMapped")
_RESOURCE = precis_i18n.get_profile("OpaqueString")
# ASCII fast paths: strings made only of these characters need no PRECIS work beyond lower-casing.
_ASCII_LOCAL = re.compile(r"[!#$%()*+,\-.0-9;=?A-Z\[\\\]^_`a-z{|}~]{1,1023}")
_ASCII_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?")
_IP6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_LOCAL_FORBIDDEN = set("\"&'/:<>@")
MAX_PART = 1023


class InvalidJid(ValueError):
    """A string that is not a valid JID (RFC 7622)."""


class JID:
    """An immutable, normalised JID; `str()` gives the canonical form.

    JIDs are interned: while a JID is in use, constructing an equal one returns the same object.
    Two JIDs are therefore equal exactly when they are the same object, so they compare and hash
    by identity, in C: the message path looks JIDs up in dicts (sessions, rosters, caches)
    several times per stanza, and a `__hash__` or `__eq__` written in Python cost a call each
    time. `bare` is the JID without its resource, made with the JID (reading it is an
    attribute, not a call). Making a JID not in use takes a lock, so that two threads making the
    same one at once get one object.
    """

    __slots__ = ("local", "domain", "resource", "bare", "text", "__weakref__")

    local: str | None
    domain: str
    resource: str | None
    bare: JID
    text: str              # the canonical form, as str() gives it (an attribute: no call)

    def __new__(cls, local: str | None, domain: str, resource: str | None) -> JID:
        s = domain if local is None else f"{local}@{domain}"
        text = s if resource is None else f"{s}/{resource}"
        jid = _interned.get(text)
        if jid is not None:
            return jid
        bare = None if resource is None else JID(local, domain, None)
        with _interning:          # two threads making the same JID at once must get one object
            jid = _interned.get(text)
            if jid is None:
                jid = object.__new__(cls)
                jid.local = local
                jid.domain = domain
                jid.resource = resource
                jid.text = text
                jid.bare = jid if bare is None else bare
                _interned[text] = jid
        return jid

    def __reduce__(self) -> tuple[type, tuple[str | None, str, str | None]]:
        return (JID, (self.local, self.domain, self.resource))     # copies are the same object

    def __copy__(self) -> JID:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> JID:
        return self

    @property
    def is_bare(self) -> bool:
        return self.resource is None

    @property
    def is_domain(self) -> bool:
        return self.local is None and self.resource is None

    def with_resource(self, resource: str) -> JID:
        return JID(self.local, self.domain, resource)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"JID({self.text!r})"


# Every JID in use, by canonical form (see JID): an entry goes when its JID is no longer used.
_interned: weakref.WeakValueDictionary[str, JID] = weakref.WeakValueDictionary()
_interning = threading.Lock()     # held while a new JID is made and entered (JID.__new__)

_cache: dict[str, JID] = {}
_CACHE_MAX = 100_000


def parse_jid(text: str) -> JID:
    """Parse and normalise `text`; raises InvalidJid with a reason."""
    hit = _cache.get(text)
    if hit is not None:
        return hit
    jid = _parse(text)
    if len(_cache) >= _CACHE_MAX:
        _cache.clear()
    _cache[text] = jid
    return jid


def try_jid(text: str | None) -> JID | None:
    """Parse `text`, or None when it is absent or invalid."""
    if not text:
        return None
    hit = _cache.get(text)          # parse_jid's first step, here: one call less per address
    if hit is not None:
        return hit
    try:
        return parse_jid(text)
    except InvalidJid:
        return None


def _parse(text: str) -> JID:
    slash = text.find("/")
    if slash >= 0:
        rest, resource = text[:slash], text[slash + 1:]
    else:
        rest, resource = text, None
    at = rest.find("@")
    if at >= 0:
        local, domain = rest[:at], rest[at + 1:]
    else:
        local, domain = None, rest
    return JID(None if local is None else normalise_local(local), normalise_domain(domain),
               None if resource is None else normalise_resource(resource))


def normalise_local(local: str) -> str:
    if not local:
        raise InvalidJid("the localpart (before @) is empty")
    if _ASCII_LOCAL.fullmatch(local):
        return local.lower()
    if _LOCAL_FORBIDDEN & set(local):
        raise InvalidJid(f"the localpart {local!r} contains a character JIDs forbid (\" & ' / : < > @)")
    try:
        out = _LOCAL.enforce(local)
    except UnicodeError as exc:
        raise InvalidJid(f"the localpart {local!r} is not allowed: {exc.reason}") from None
    if len(out.encode()) > MAX_PART:
        raise InvalidJid("the localpart is longer than 1023 bytes")
    return out


def normalise_domain(domain: str) -> str:
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain:
        raise InvalidJid("the domain is empty")
    if (_ASCII_DOMAIN.fullmatch(domain) and "xn--" not in domain.lower()) or _IP6.fullmatch(domain):
        if len(domain) > 253:
            raise InvalidJid("the domain is longer than 253 characters")
        return domain.lower()
    try:
        ascii_form = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidJid(f"the domain {domain!r} is not a valid domain name") from None
    if not _ASCII_DOMAIN.fullmatch(ascii_form):
        raise InvalidJid(f"the domain {domain!r} is not a valid domain name")
    return ascii_form.encode("ascii").decode("idna").lower()


def normalise_resource(resource: str) -> str:
    if not resource:
        raise InvalidJid("the resource (after /) is empty")
    if resource.isascii() and resource.isprintable():
        if len(resource) > MAX_PART:
            raise InvalidJid("the resource is longer than 1023 bytes")
        return resource
    try:
        out = _RESOURCE.enforce(resource)
    except UnicodeError as exc:
        raise InvalidJid(f"the resource {resource!r} is not allowed: {exc.reason}") from None
    if len(out.encode()) > MAX_PART:
        raise InvalidJid("the resource is longer than 1023 bytes")
    return out
