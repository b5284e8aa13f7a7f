"""Generate docs/configuration.md from the option declarations (so the reference cannot drift).

    python -m stockade.config.docs > docs/configuration.md
"""

from __future__ import annotations

import dataclasses
import typing

from .options import _type_name
from .schema import LIST_SECTIONS, SECTIONS, DirectorySection, FeatureGroupsSection, PermissionsSection

INTRO = """# Configuration reference

Stockade reads one TOML file: `stockade --config stockade.toml serve`. Without `--config` it runs on
the embedded defaults below (domain `localhost`, data in `./var`, SQLite, a self-signed certificate).
An unknown key, a wrong type or a value out of bounds stops startup with the file, the key and the
reason, for example:

    stockade: configuration error: stockade.toml: c2s.port: 70000 is above the maximum 65535

Relative paths are relative to the folder of the configuration file.
This page is generated from the code (`python -m stockade.config.docs`); a test keeps it in sync.

A small example:

```toml
[[hosts]]
domain = "example.com"

[[hosts]]
domain = "research.example.com"

[c2s]
interfaces = ["0.0.0.0"]

[tls]
cert_path = "/etc/stockade/example.com.pem"
key_path = "/etc/stockade/example.com.key"

[storage]
url = "postgresql://stockade:secret@db.internal:5432/stockade"

[modules.offline]
max_messages = 500
```
"""


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "(required)"
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`' if value else '`""`'
    if isinstance(value, list):
        return "`[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]`"
    return f"`{value}`"


def _bounds(f: dataclasses.Field) -> str:
    meta = f.metadata
    parts = []
    if meta.get("min") is not None:
        parts.append(f"min {meta['min']:g}" if isinstance(meta["min"], float) else f"min {meta['min']}")
    if meta.get("max") is not None:
        parts.append(f"max {meta['max']:g}" if isinstance(meta["max"], float) else f"max {meta['max']}")
    if meta.get("choices"):
        parts.append("one of " + ", ".join(f"`{c}`" for c in meta["choices"]))
    return "; ".join(parts)


def section_table(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    lines = ["| key | type | default | bounds | meaning |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        lines.append(f"| `{f.name}` | {_type_name(hints[f.name])} | {_default(f)} | {_bounds(f)} | "
                     f"{f.metadata.get('help', '')} |")
    return lines


def render(module_options: dict[str, type]) -> str:
    out = [INTRO]
    for name, cls in SECTIONS.items():
        out += [f"## [{name}]", "", *section_table(cls), ""]
    for name, cls in LIST_SECTIONS.items():
        note = ("Default: one host, `localhost`." if name == "hosts" else "Default: none.")
        out += [f"## [[{name}]]", "", f"A list: repeat the table for each entry. {note}", "",
                *section_table(cls), ""]
    out += ["## [hosts.directory]", "", "Inside a `[[hosts]]` entry: that host's corporate directory (LDAP sync, "
            "LDAP logins, groups); see docs/directory.md.", "", *section_table(DirectorySection), ""]
    out += ["## [hosts.permissions]", "", "Inside a `[[hosts]]` entry: which groups may use which features; "
            "see docs/permissions.md.", "", *section_table(PermissionsSection), "",
            "## [hosts.permissions.deny] and [hosts.permissions.allow_only]", "",
            "The same keys in both tables: a list of group names per feature. A member of a group in `deny` "
            "may not use the feature; with `allow_only` set for a feature, only members of those groups may.",
            "", *section_table(FeatureGroupsSection), ""]
    # [hosts.policy.files] (policy/files.py); [malware] is a top-level section, listed above.
    from .schema import FilesPolicySection
    out += ["## [hosts.policy.files]", "", "Inside a `[[hosts]]` entry: what uploaded files may really be (judged "
            "by their content) and how large; see docs/policy.md, \"Files and malware\".", "",
            *section_table(FilesPolicySection), ""]
    # [hosts.policy.dlp] and [hosts.policy.links] (policy/dlp.py, policy/links.py).
    from .schema import DlpRuleSection, DlpSection, LinksSection
    out += ["## [hosts.policy.dlp]", "", "Inside a `[[hosts]]` entry: data loss prevention; see docs/policy.md.", "",
            *section_table(DlpSection), "",
            "## [[hosts.policy.dlp.rules]]", "", "A list: repeat the table for each rule. A malformed rule (bad "
            "regex, unknown kind or action) stops startup naming the rule.", "", *section_table(DlpRuleSection), "",
            "## [hosts.policy.links]", "", "Inside a `[[hosts]]` entry: link policy; see docs/policy.md.", "",
            *section_table(LinksSection), ""]
    # [hosts.retention] and [hosts.compliance] (compliance/retention.py, modules/aup.py).
    from .schema import ComplianceSection, RetentionGroupSection, RetentionSection
    out += ["## [hosts.retention]", "", "Inside a `[[hosts]]` entry: how long records are kept; legal holds "
            "override it. See docs/compliance.md, \"Retention and legal hold\".", "",
            *section_table(RetentionSection), "",
            "## [[hosts.retention.groups]]", "", "A list: one entry per group with a longer retention.", "",
            *section_table(RetentionGroupSection), "",
            "## [hosts.compliance]", "", "Inside a `[[hosts]]` entry: the archive notice and the acceptable-use "
            "policy. See docs/compliance.md, \"Notice and acceptable use\".", "",
            *section_table(ComplianceSection), ""]
    for name, cls in sorted(module_options.items()):
        doc = (cls.__module__ and __import__(cls.__module__, fromlist=["x"]).__doc__ or "").strip().splitlines()
        out += [f"## [modules.{name}]", "", doc[0] if doc else "", "", *section_table(cls), ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    from ..app import module_options
    print(render(module_options()), end="")
