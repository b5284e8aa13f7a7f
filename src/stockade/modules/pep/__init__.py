"""XEP-0163: Personal Eventing Protocol, every account a XEP-0060 pubsub service, with XEP-0223
private nodes, XEP-0402/XEP-0411 bookmarks, XEP-0084/XEP-0398/XEP-0153 avatars and the
XEP-0384 (OMEMO) device lists and bundles that clients publish with open access.

Where things are:
    config.py     node configuration, publish-options preconditions, pubsub errors
    store.py      nodes (map store) and items (archive store), in memory for non-persistent nodes
    access.py     access models: presence (default), open, roster, whitelist
    caps.py       XEP-0115: which nodes each session wants ('+notify'), verified 'ver' cache
    notify.py     who gets event notifications; the last published item on presence
    service.py    the XEP-0060 use cases on one account's nodes
    handlers.py   the pubsub IQ requests
    bookmarks.py  XEP-0402 <-> XEP-0048 (private XML storage and PEP) conversion
    avatar.py     XEP-0084 <-> vCard PHOTO conversion, XEP-0153 hash in presence
"""

from __future__ import annotations

from dataclasses import dataclass

from ...config.options import option
from ...core.hooks import AccountRemoved, MessageToLocal, PresenceFromClient, ServerStopping, SessionAvailable, SessionClosed
from ...core.iq import ACCOUNT
from ...core.module_api import ModuleAPI
from ...protocol.jid import JID
from ..roster import RosterService
from . import avatar, bookmarks, handlers
from .access import AccessControl
from .caps import CapsTracker
from .config import NS_PUBSUB, NodeConfig
from .notify import Notifier
from .service import Limits, PepService
from .store import NodeStore

# Presence and session hooks run before the presence module (DEFAULT) so that they see the stanza
# as the client sent it and cannot be cut off by a handler that ends the chain; they always return
# None, so the presence module still handles everything.
BEFORE_PRESENCE = 100

FEATURES = ("access-open", "access-presence", "access-roster", "access-whitelist", "auto-create",
            "auto-subscribe", "config-node", "create-and-configure", "create-nodes", "delete-items",
            "delete-nodes", "filtered-notifications", "item-ids", "last-published", "member-affiliation",
            "modify-affiliations", "outcast-affiliation", "persistent-items", "presence-notifications",
            "presence-subscribe", "publish", "publish-options", "purge-nodes", "retract-items",
            "retrieve-affiliations", "retrieve-default", "retrieve-items", "retrieve-subscriptions",
            "subscribe")


@dataclass(frozen=True)
class Options:
    max_items: int = option(1000, help="Most items one PEP node keeps; what pubsub#max_items 'max' means.", min=1, max=100_000)
    default_max_items: int = option(1, help="Items a new PEP node keeps unless its configuration says otherwise.", min=1, max=100_000)
    max_nodes: int = option(200, help="Most PEP nodes one account may have.", min=1, max=100_000)
    max_item_size: int = option(262144, help="Largest PEP item payload accepted, in bytes (avatars are the big ones).", min=1024, max=16 * 1024 * 1024)
    max_subscribers: int = option(1000, help="Most explicit subscriptions plus affiliations per PEP node.", min=1, max=1_000_000)
    caps_timeout: float = option(10.0, help="Seconds to wait for a client's answer about its capabilities (XEP-0115).", min=0.5, max=300)
    caps_cache_size: int = option(10000, help="Verified capability hashes remembered.", min=10, max=10_000_000)


def setup(module: ModuleAPI) -> None:
    options: Options = module.options or Options()
    roster = module.service(RosterService)
    limits = Limits(max_items=options.max_items, default_max_items=min(options.default_max_items, options.max_items),
                    max_nodes=options.max_nodes, max_item_size=options.max_item_size,
                    max_subscribers=options.max_subscribers)
    store = NodeStore(module, NodeConfig(max_items=limits.default_max_items))
    access = AccessControl(roster)
    notifier: Notifier

    async def on_interests(session, nodes):          # type: ignore[no-untyped-def]
        await notifier.newly_interested(session, nodes)

    caps = CapsTracker(module, on_interests, timeout=options.caps_timeout, cache_size=options.caps_cache_size)
    notifier = Notifier(module, store, access, roster, caps)
    service = PepService(module, limits, store, access, notifier)
    module.provide(service)
    handlers.register(module, service)

    module.add_identity("pubsub", "pep", "", target=ACCOUNT)
    for feature in FEATURES:
        module.add_feature(f"{NS_PUBSUB}#{feature}", target=ACCOUNT)

    module.on(PresenceFromClient, caps.presence_from_client, BEFORE_PRESENCE)
    module.on(SessionAvailable, caps.session_available, BEFORE_PRESENCE)
    module.on(SessionClosed, caps.session_closed, BEFORE_PRESENCE)

    async def session_closed(event: SessionClosed) -> None:
        if not module.sessions.is_online(event.session.bare):
            store.forget(event.session.bare)

    async def account_removed(event: AccountRemoved) -> None:
        await store.remove_account(JID(event.username, event.host, None))

    async def stopping(event: ServerStopping) -> None:
        caps.stop()

    module.on(SessionClosed, session_closed, BEFORE_PRESENCE)
    if module.router.partition is not None:      # several worker processes: see Notifier.to_account
        module.on(MessageToLocal, notifier.to_account)
    module.on(AccountRemoved, account_removed)
    module.on(ServerStopping, stopping)

    bookmarks.setup(module, service)
    avatar.setup(module, service, BEFORE_PRESENCE)
