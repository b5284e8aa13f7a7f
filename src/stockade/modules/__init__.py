"""Feature modules, one file (or folder) per feature, loaded in the order of DEFAULT_MODULES:
later modules use services that earlier ones provide."""

from __future__ import annotations

from types import ModuleType

# feature modules (one import line each)
from . import adhoc
from . import approved_clients
from . import blocking
from . import aup
from . import caps
from . import carbons
from . import csi
from . import disco
from . import extdisco
from . import mam
from . import muc
from . import offline
from . import pep
from . import ping
from . import presence
from . import private
from . import proxy65
from . import push
from . import roster
from . import shared_roster
from . import stream_management
from . import upload
from . import vcard
from . import version

DEFAULT_MODULES: dict[str, ModuleType] = {
    # registry (one line each; order matters)
    "roster": roster,
    "presence": presence,
    "offline": offline,
    "disco": disco,
    "ping": ping,
    "version": version,
    "vcard": vcard,
    "carbons": carbons,
    "csi": csi,
    "muc": muc,
    "stream_management": stream_management,
    "mam": mam,
    "blocking": blocking,
    "private": private,
    "pep": pep,
    "caps": caps,
    "upload": upload,
    "extdisco": extdisco,
    "proxy65": proxy65,
    "push": push,
    "approved_clients": approved_clients,
    "shared_roster": shared_roster,
    "adhoc": adhoc,
    "aup": aup,
}
