"""XEP-0004 data forms as the PEP service uses them: reading a submitted form and writing one.

(The chat service has its own copy in modules/muc/forms.py; both belong in protocol/ once a third
user appears.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...protocol import ns
from ...protocol.errors import StanzaError
from ...protocol.xml import Element

TRUE_VALUES = frozenset({"1", "true"})
FALSE_VALUES = frozenset({"0", "false"})


@dataclass
class Submission:
    """A submitted form: its type, its FORM_TYPE and the values of each field."""
    type: str
    form_type: str | None
    values: dict[str, list[str]] = field(default_factory=dict)


def read_submission(x: Element) -> Submission:
    """Read `<x xmlns='jabber:x:data'/>`; a malformed form is refused with <bad-request/>."""
    form_type = None
    values: dict[str, list[str]] = {}
    for f in x.elements("field", ns.DATA_FORMS):
        var = f.get("var")
        if not var:
            if f.get("type") == "fixed":
                continue
            raise StanzaError("bad-request", "every field of a submitted form needs a 'var'")
        found = [v.text for v in f.elements("value", ns.DATA_FORMS)]
        if var == "FORM_TYPE":
            form_type = found[0].strip() if found else None
            continue
        if var in values:
            raise StanzaError("bad-request", f"the field {var!r} appears twice in the form")
        values[var] = found
    return Submission(x.get("type", "form") or "form", form_type, values)


def parse_bool(var: str, value: str) -> bool:
    text = value.strip().lower()
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise StanzaError("not-acceptable", f"{var} is a boolean: use true or false, not {value!r}")


class FormBuilder:
    """Builds `<x xmlns='jabber:x:data'/>` field by field."""

    def __init__(self, type_: str, form_type: str | None = None) -> None:
        self.x = Element("x", ns.DATA_FORMS, {"type": type_})
        if form_type is not None:
            self.field("FORM_TYPE", "hidden", [form_type])

    def field(self, var: str, type_: str, values: list[str], label: str = "",
              options: tuple[str, ...] = ()) -> Element:
        attrs = {"var": var, "type": type_}
        if label:
            attrs["label"] = label
        f = self.x.add("field", attrs=attrs)
        for option in options:
            f.add("option").add("value", text=option)
        for value in values:
            f.add("value", text=value)
        return f
