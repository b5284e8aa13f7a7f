"""Access models of PEP nodes (XEP-0060 section 4.5, XEP-0163 section 7).

    owner       the account itself: always allowed
    outcast     an entity the owner banned from the node: never allowed
    open        anyone
    presence    contacts the owner shares presence with (roster subscription 'from' or 'both')
    roster      such contacts who are in one of pubsub#roster_groups_allowed
    whitelist   the owner and the entities the owner affiliated as 'member' (or 'publisher')

The refusals carry the error conditions XEP-0060 6.1.3 and 6.5.9 prescribe.
"""

from __future__ import annotations

from ...protocol.errors import StanzaError
from ...protocol.jid import JID
from ..roster import RosterService
from .config import pubsub_error
from .store import Node

MEMBER_AFFILIATIONS = frozenset({"member", "publisher"})


class AccessControl:
    def __init__(self, roster: RosterService) -> None:
        self.roster = roster

    async def refusal(self, owner: JID, node: Node, requester: JID) -> StanzaError | None:
        """Why `requester` may not see the node's items, or None when it may."""
        bare = requester.bare
        if bare == owner:
            return None
        affiliation = node.affiliations.get(str(bare))
        if affiliation == "outcast":
            return StanzaError("forbidden", "the owner of this node has blocked you from it")
        model = node.config.access_model
        if model == "open":
            return None
        if model == "whitelist":
            if affiliation in MEMBER_AFFILIATIONS:
                return None
            return pubsub_error("not-allowed", "closed-node", "this node is private to its owner")
        if bare.local is None:
            # Servers and services have no presence subscription to anyone.
            return pubsub_error("not-authorized", "presence-subscription-required",
                                "this node is shared with the owner's contacts only")
        if model == "presence":
            if await self.roster.shares_presence_with(owner, bare):
                return None
            return pubsub_error("not-authorized", "presence-subscription-required",
                                "this node is shared with the owner's contacts only")
        if model == "roster":
            roster = await self.roster.get(owner)
            item = roster.items.get(bare)
            allowed = set(node.config.roster_groups_allowed)
            if item is not None and item.subscription in ("from", "both") and allowed & set(item.groups):
                return None
            return pubsub_error("not-authorized", "not-in-roster-group",
                                "this node is shared with some roster groups of the owner only")
        return StanzaError("forbidden", f"unknown access model {model!r}")

    async def check(self, owner: JID, node: Node, requester: JID) -> None:
        error = await self.refusal(owner, node, requester)
        if error is not None:
            raise error

    async def allows(self, owner: JID, node: Node, requester: JID) -> bool:
        return await self.refusal(owner, node, requester) is None

    @staticmethod
    def is_private(node: Node) -> bool:
        """Only the owner can read the node (the XEP-0223 private storage profile)."""
        return node.config.access_model == "whitelist" and not any(
            a in MEMBER_AFFILIATIONS for a in node.affiliations.values())
