"""XEP-0115: Entity Capabilities of the server itself, offered in the stream features.

After authentication the stream features carry

    <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://stockade.example/caps' ver='...'/>

(XEP-0115 section 6.3), so a client learns what the server supports without a disco#info round
trip when it has seen the same 'ver' before. The 'ver' is the verification string of section 5.1
over the server's own disco#info (identities, features and XEP-0128 forms of the HOST target). It
is computed once, when every module has registered its features (ServerStarted) and before the
listeners open; the set does not change while the server runs.

A client that has not seen the 'ver' asks disco#info with node '<node>#<ver>'; the answer is the
host's disco#info, which modules/disco.py gives once it accepts that node (see `caps_node`).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Iterable

from ..config.options import option
from ..core.hooks import ServerStarted
from ..core.iq import HOST
from ..core.module_api import ModuleAPI
from ..protocol import ns
from ..protocol.xml import Element


def _check_node(value: str) -> str | None:
    if not value or any(c.isspace() for c in value) or "#" in value:
        return "give a URI without spaces or '#', like https://stockade.example/caps"
    return None


@dataclass(frozen=True)
class Options:
    node: str = option("https://stockade.example/caps",
                       help="The XEP-0115 'node' the server names itself by (a URI identifying the software).",
                       check=_check_node)


def verification_string(identities: Iterable[tuple[str, str, str, str]], features: Iterable[str],
                        forms: Iterable[Element] = ()) -> str:
    """The string S of XEP-0115 section 5.1.

    `identities` are (category, type, xml:lang, name); `forms` are XEP-0128 <x type='result'/>
    forms, each with a hidden FORM_TYPE field. Raises ValueError for input section 5.4 calls
    ill-formed (a duplicate identity, feature or FORM_TYPE), which must never be advertised."""
    idents = list(identities)
    feats = list(features)
    if len(set(idents)) != len(idents):
        raise ValueError("the same disco identity is listed twice")
    if len(set(feats)) != len(feats):
        raise ValueError("the same disco feature is listed twice")
    parts = [f"{cat}/{type_}/{lang}/{name}<" for cat, type_, lang, name in sorted(idents)]
    parts += [f + "<" for f in sorted(feats)]
    by_type: dict[str, list[str]] = {}
    for form in forms:
        fields = list(form.elements("field", ns.DATA_FORMS))
        form_type = next((f for f in fields if f.get("var") == "FORM_TYPE"), None)
        if form_type is None or form_type.get("type") != "hidden":
            continue                     # 5.4: a form without a hidden FORM_TYPE is not hashed
        name = form_type.find_text("value", ns.DATA_FORMS) or ""
        if name in by_type:
            raise ValueError(f"two extended disco forms have the FORM_TYPE {name!r}")
        out = [name + "<"]
        for f in sorted((f for f in fields if f is not form_type), key=lambda f: f.get("var", "")):
            out.append(f.get("var", "") + "<")
            out += [v + "<" for v in sorted(v.text for v in f.elements("value", ns.DATA_FORMS))]
        by_type[name] = out
    for name in sorted(by_type):
        parts += by_type[name]
    return "".join(parts)


def compute_ver(identities: Iterable[tuple[str, str, str, str]], features: Iterable[str],
                forms: Iterable[Element] = ()) -> str:
    """The 'ver' attribute: base64 of the SHA-1 of the verification string (XEP-0115 5.1)."""
    digest = hashlib.sha1(verification_string(identities, features, forms).encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii")


def caps_node(node: str, ver: str) -> str:
    """The disco#info node a client asks about to learn what a 'ver' stands for."""
    return f"{node}#{ver}"


def setup(module: ModuleAPI) -> None:
    options: Options = module.options
    disco = module.ctx.disco
    module.add_feature(ns.CAPS)
    # The element is offered as is: its 'ver' is filled in before the first stream opens.
    feature = Element("c", ns.CAPS, {"hash": "sha-1", "node": options.node, "ver": ""})
    module.add_stream_feature(feature)

    async def server_started(event: ServerStarted) -> None:
        # disco.py answers without xml:lang, so every identity hashes with an empty lang.
        identities = [(cat, type_, "", name) for cat, type_, name in disco.identities[HOST]]
        # DiscoRegistry keeps no XEP-0128 forms for the host yet; none are advertised, none hashed.
        ver = compute_ver(identities, disco.features[HOST])
        feature.set("ver", ver)
        # disco#info on '<node>#<ver>' is answered with the host's own info.
        disco.add_info_node(HOST, caps_node(options.node, ver))
        module.log.debug("server capabilities: node %s ver %s", options.node, ver)

    module.on(ServerStarted, server_started)
