"""Feature modules, one file per feature. Loaded in this order (later ones use earlier services)."""

from __future__ import annotations

from types import ModuleType

from . import disco, offline, ping, presence, roster, vcard, version

DEFAULT_MODULES: dict[str, ModuleType] = {
    "roster": roster,
    "presence": presence,
    "offline": offline,
    "disco": disco,
    "ping": ping,
    "version": version,
    "vcard": vcard,
}
