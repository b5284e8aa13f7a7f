"""XEP-0045: Multi-User Chat.

One chat service per served domain, on `<subdomain>.<domain>` (conference.example.com), with
mediated invitations (XEP-0045 7.8.2; XEP-0249 direct invitations are ordinary messages the
router delivers), a XEP-0313 archive per logged room with XEP-0359 stanza ids, and XEP-0410
self-ping. The service is an in-process component: the router hands it every stanza for its
domain, and it routes what the rooms send like any other server-generated stanza.

Where things are:
    roles.py      roles and affiliations: the XEP's privilege and transition tables
    config.py     the muc#roomconfig form and the disco features it implies
    room.py       a room, its occupants and their presence (enter, change, exit, removal)
    messages.py   groupchat, subject, private messages, invitations and declines
    admin.py      muc#admin (roles, affiliations) and muc#owner (configuration, destruction)
    history.py    discussion history on entering, with its limits
    archive.py    the room archive (XEP-0313) and who may read it
    mam_query.py  XEP-0313/XEP-0059 query parsing and paging over an archive store
    store.py      persistent rooms in a map store
    service.py    the service: routing into rooms, disco, creation, life of rooms
"""

from __future__ import annotations

from dataclasses import dataclass

from ...config.options import option
from ...core.hooks import ServerStopping
from ...core.module_api import ModuleAPI
from ...protocol.jid import InvalidJid, normalise_domain
from .archive import RoomArchive
from .service import MucService
from .store import RoomStore


def _check_subdomain(value: str) -> str | None:
    if not value or "." in value:
        return "give one DNS label, like conference (the service is <label>.<domain>)"
    try:
        normalise_domain(value + ".example.com")
    except InvalidJid as exc:
        return str(exc)
    return None if value == value.lower() else "write the label in lower case"


@dataclass(frozen=True)
class Options:
    subdomain: str = option("conference", help="The chat service of each served domain is <subdomain>.<domain>.",
                            check=_check_subdomain)
    max_rooms: int = option(1000, help="Rooms one chat service keeps at most; creating more is refused with <not-allowed/>.",
                            min=1, max=1_000_000)
    max_occupants: int = option(200, help="Occupants one room takes at most (an owner may set a lower limit); "
                                          "admins and owners may always enter.", min=2, max=100_000)
    history_max: int = option(20, help="Messages a room keeps in memory to send to those who enter (0: none).",
                              min=0, max=1000)
    max_nick_length: int = option(64, help="Longest room nickname accepted, in characters.", min=1, max=1023)
    log_by_default: bool = option(False, help="New rooms keep an archive (XEP-0313) until their owner turns "
                                              "muc#roomconfig_enablelogging off.")
    archive_page_max: int = option(100, help="Most archived messages returned for one XEP-0313 query page.",
                                   min=1, max=1000)


def setup(module: ModuleAPI) -> None:
    options: Options = module.options
    rooms = RoomStore(module.open_store("muc_rooms", "map"))
    archive = RoomArchive(module.open_store("muc_archive", "archive"), options.archive_page_max)
    for host in sorted(module.ctx.domains):
        domain = f"{options.subdomain}.{host}"
        service = MucService(module, domain, host, options, rooms, archive)
        module.router.components[domain] = service
        module.add_disco_item(host, domain, "Chatrooms")
        module.on(ServerStopping, service.stopping)
