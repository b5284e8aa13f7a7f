"""XEP-0004 data forms, as far as the chat service uses them: building forms and reading submissions."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...protocol import ns
from ...protocol.errors import StanzaError
from ...protocol.xml import Element

TRUE_VALUES = frozenset({"1", "true"})
FALSE_VALUES = frozenset({"0", "false"})


@dataclass
class Submission:
    """A submitted form: its type, FORM_TYPE and the values of each field (in order)."""
    type: str
    form_type: str | None
    values: dict[str, list[str]] = field(default_factory=dict)

    def single(self, var: str) -> str | None:
        """The value of a single-valued field, or None when absent; several values are refused."""
        values = self.values.get(var)
        if not values:
            return None if values is None else ""
        if len(values) > 1:
            raise StanzaError("bad-request", f"the field {var!r} takes one value, got {len(values)}")
        return values[0]

    def boolean(self, var: str) -> bool | None:
        value = self.single(var)
        if value is None:
            return None
        value = value.strip().lower()
        if value in TRUE_VALUES:
            return True
        if value in FALSE_VALUES:
            return False
        raise StanzaError("not-acceptable", f"the field {var!r} is a boolean: use 1 or 0, not {value!r}")


def read_submission(x: Element) -> Submission:
    """Read a `<x xmlns='jabber:x:data'/>` element; malformed forms are refused with bad-request."""
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


def new_form(form_type: str, type_: str = "form", title: str | None = None,
             instructions: str | None = None) -> Element:
    x = Element("x", ns.DATA_FORMS, {"type": type_})
    if title:
        x.add("title", text=title)
    if instructions:
        x.add("instructions", text=instructions)
    add_field(x, "FORM_TYPE", "hidden", [form_type])
    return x


def add_field(x: Element, var: str, type_: str | None, values: list[str] | tuple[str, ...] = (),
              label: str | None = None, options: list[tuple[str, str]] | None = None) -> Element:
    attrs = {"var": var}
    if type_:
        attrs["type"] = type_
    if label:
        attrs["label"] = label
    f = x.add("field", attrs=attrs)
    for value in values:
        f.add("value", text=value)
    for option_label, value in options or ():
        opt = f.add("option", attrs={"label": option_label})
        opt.add("value", text=value)
    return f


def boolean_text(value: bool) -> str:
    return "1" if value else "0"
