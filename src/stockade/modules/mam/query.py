"""XEP-0313 section 4: reading an archive query (data form and RSM) and XEP-0082 time stamps.

A query is `<query xmlns='urn:xmpp:mam:2' queryid?>` with an optional XEP-0004 form (FORM_TYPE
urn:xmpp:mam:2; fields with, start, end and the #extended before-id, after-id, ids), an optional
XEP-0059 `<set/>` and an optional `<flip-page/>`. `parse_query` turns it into a `MamQuery` or
refuses it with the stanza error the XEP names: an unknown field is <feature-not-implemented/>
(4.1.5), a malformed form, date or number <bad-request/>, a bad JID <jid-malformed/>.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from ...protocol import ns
from ...protocol.errors import StanzaError
from ...protocol.jid import JID, try_jid
from ...protocol.xml import Element
from ..rsm import RsmRequest, parse_rsm

NS_MAM = "urn:xmpp:mam:2"
NS_MAM_EXTENDED = "urn:xmpp:mam:2#extended"
NS_FORWARD = "urn:xmpp:forward:0"
NS_SID = "urn:xmpp:sid:0"
NS_XDATA_VALIDATE = "http://jabber.org/protocol/xdata-validate"

SINGLE_FIELDS = ("with", "start", "end", "before-id", "after-id")
MAX_IDS = 1000          # ids in one 'ids' field: a bound on the work one query can ask for

# XEP-0082 DateTime: CCYY-MM-DDThh:mm:ss[.sss]TZD, the time zone required.
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})")


@dataclass(frozen=True, slots=True)
class MamQuery:
    """A parsed query. Times are unix seconds; ids are archive ids as clients see them."""
    queryid: str | None = None
    with_jid: JID | None = None
    start: float | None = None
    end: float | None = None
    after_id: str | None = None
    before_id: str | None = None
    ids: tuple[str, ...] | None = None
    rsm: RsmRequest | None = None
    is_flipped: bool = False


def parse_stamp(text: str, field: str) -> float:
    """A XEP-0082 DateTime as unix seconds; anything else is refused with bad-request."""
    value = text.strip()
    match = _DATETIME.fullmatch(value)
    if match is None:
        raise StanzaError("bad-request", f"'{field}' must be a XEP-0082 date and time such as "
                                         f"2024-05-01T12:00:00Z, not {text!r}")
    fraction = match.group(1)
    if fraction is not None and len(fraction) > 6:      # Python reads at most microseconds
        value = value.replace("." + fraction, "." + fraction[:6], 1)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise StanzaError("bad-request", f"'{field}' is not a valid date and time: {exc}") from None


def format_stamp(when: float) -> str:
    """Unix seconds as a XEP-0082 DateTime in UTC with milliseconds."""
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _read_form(x: Element) -> dict[str, list[str]]:
    """The submitted fields of a jabber:x:data form, FORM_TYPE checked and left out."""
    form_type = x.get("type")
    if form_type not in (None, "submit"):
        raise StanzaError("bad-request", f"the query form must be of type 'submit', not {form_type!r}")
    values: dict[str, list[str]] = {}
    for field in x.elements("field", ns.DATA_FORMS):
        var = field.get("var")
        if not var:
            raise StanzaError("bad-request", "every field of the query form needs a 'var'")
        if var in values:
            raise StanzaError("bad-request", f"the field {var!r} appears twice in the query form")
        values[var] = [v.text for v in field.elements("value", ns.DATA_FORMS)]
    form_type_values = values.pop("FORM_TYPE", None)
    if form_type_values is not None and form_type_values != [NS_MAM]:
        raise StanzaError("bad-request", f"the query form must have FORM_TYPE {NS_MAM}")
    return values


def parse_query(query: Element) -> MamQuery:
    """Read `<query xmlns='urn:xmpp:mam:2'/>` (an IQ set). Raises StanzaError."""
    if query.get("node") is not None:
        raise StanzaError("item-not-found", "a user archive has no nodes (the 'node' attribute is for pubsub archives)")
    single: dict[str, str] = {}
    ids: tuple[str, ...] | None = None
    forms = list(query.elements("x", ns.DATA_FORMS))
    if len(forms) > 1:
        raise StanzaError("bad-request", "a query carries at most one data form")
    if forms:
        for var, values in _read_form(forms[0]).items():
            if var == "ids":
                ids = tuple(v.strip() for v in values if v.strip())
                if len(ids) > MAX_IDS:
                    raise StanzaError("not-acceptable", f"at most {MAX_IDS} ids can be fetched in one query")
                continue
            if var not in SINGLE_FIELDS:
                raise StanzaError("feature-not-implemented",
                                  f"the query field {var!r} is not supported "
                                  f"(supported: {', '.join(SINGLE_FIELDS)}, ids)")
            if len(values) > 1:
                raise StanzaError("bad-request", f"the field {var!r} takes one value, got {len(values)}")
            if values and values[0].strip():
                single[var] = values[0].strip()
    with_jid = None
    if "with" in single:
        with_jid = try_jid(single["with"])
        if with_jid is None:
            raise StanzaError("jid-malformed", f"'with' is not a valid JID: {single['with']!r}")
    start = parse_stamp(single["start"], "start") if "start" in single else None
    end = parse_stamp(single["end"], "end") if "end" in single else None
    if start is not None and end is not None and end < start:
        raise StanzaError("bad-request", "'end' is earlier than 'start'")
    return MamQuery(query.get("queryid"), with_jid, start, end, single.get("after-id"),
                    single.get("before-id"), ids, parse_rsm(query),
                    query.find("flip-page", NS_MAM) is not None)


def query_form() -> Element:
    """The fields a query may use (XEP-0313 4.1.5), returned for an IQ get on <query/>."""
    query = Element("query", NS_MAM)
    x = query.add("x", ns.DATA_FORMS, {"type": "form"})
    form_type = x.add("field", attrs={"var": "FORM_TYPE", "type": "hidden"})
    form_type.add("value", text=NS_MAM)
    for var, type_ in (("with", "jid-single"), ("start", "text-single"), ("end", "text-single"),
                       ("before-id", "text-single"), ("after-id", "text-single")):
        x.add("field", attrs={"var": var, "type": type_})
    ids = x.add("field", attrs={"var": "ids", "type": "list-multi"})
    # The list of possible ids is open (and far too long to send): XEP-0122 <open/>.
    validate = ids.add("validate", NS_XDATA_VALIDATE, {"datatype": "xs:string"})
    validate.add("open")
    return query
