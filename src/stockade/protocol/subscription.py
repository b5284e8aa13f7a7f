"""RFC 6121 section 3 and Appendix A: presence subscription states, as transition tables.

Theory of operation
-------------------
Every (user, contact) pair has one subscription state, seen from the user's side. This module
only says what a subscription stanza does to that state; it stores nothing, sends nothing and
never looks at availability. The caller loads the state, asks `outbound()` or `inbound()`, then
carries out the returned `Outcome` (persist, route or deliver, push, reply, send presence).

States (A.1). The nine RFC states, plus three "pre-approved" variants (3.4): a pre-approval is
the 'approved' flag, and it can only exist while the contact is not subscribed to the user and
has no request pending, i.e. on "None", "None + Pending Out" and "To". `ITEM_FIELDS` shows how
each state appears in the roster item (2.1.2): 'subscription', 'ask' (Pending Out),
'approved', and `pending_in`, which is not an item attribute: an unanswered inbound request is
kept as the stored request stanza (3.1.3), and no roster item is created for it.

Tables. `OUTBOUND` is Appendix A.2 (Tables 2-5): stanzas the user sends to the contact, which
manage the user's subscription to the contact (subscribe, unsubscribe) and the contact's
access to the user (subscribed, unsubscribed). `INBOUND` is Appendix A.3 (Tables 6-9): stanzas
the contact sends to the user. Each has one row per (existing state, stanza type), twelve
states by four types, in the order of the RFC tables. The first nine rows of each block match
the RFC table line by line; the three pre-approved rows follow, from section 3.4.

What an `Outcome` means:
- `new_state`: the state after the stanza ("no state change" rows repeat the old state).
- `deliver`: outbound, route the stanza (stamped with the user's bare JID) to the contact;
  inbound, deliver it to the user. An inbound "subscribe" goes to the available resources, or
  when there are none it is stored as the pending request and delivered at next login (3.1.3).
  False covers the RFC's "M.N." and "S.N." alike: this server follows the SHOULD NOTs.
- `push`: send a roster push to the interested resources. A push happens exactly when the
  item's visible attributes (subscription, ask, approved) change; a change only to
  `pending_in` causes none (the user has no roster item for a mere request, 3.1.3).
- `reply`: a subscription stanza the server sends to the contact on the user's behalf, from
  the user's bare JID, without passing it through `OUTBOUND` again (the state already moved).
- `presence`: presence the server sends from the user's available resources to the contact:
  CURRENT after the contact gains access (3.1.5), UNAVAILABLE when the contact loses it (3.2.2,
  3.3.3).

Order of effects. Outbound: send UNAVAILABLE presence first, then route (3.2.2 "while the user
is still subscribed"), then push. Inbound: deliver first, then push (3.1.6, 3.2.3, 3.3.3 "MUST
occur before sending the roster push"), then reply and presence.

Choices where the RFC leaves room:
- Pre-approval is supported (3.4) unless the caller passes `preapproval=False`, in which case
  an outbound "subscribed" that would create one is ignored. An auto-approved "subscribe"
  consumes the pre-approval (3.4.2 leaves keeping the record to local policy).
- Inbound "subscribe" while pre-approved is answered automatically (3.4.2 MUST; Table 6 [1]).
- An auto-reply "subscribed" also sends CURRENT presence: it is an approval like any other.
- Denying a request (outbound "unsubscribed" in a Pending In state) sends no unavailable
  presence: the requester never had access, and unavailable per resource would leak which
  resources are online.
- Inbound "unsubscribed" follows Table 9, which also clears a Pending Out; section 3.2.3's
  check names only 'to' and 'both', but then a denied request would stay pending forever.
- An inbound "unsubscribed" never cancels a pre-approval (4.3.2: a probe answered with
  "unsubscribed" "MUST NOT result in cancellation of a subscription pre-approval").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal, NamedTuple

SubscriptionType = Literal["subscribe", "subscribed", "unsubscribe", "unsubscribed"]
SUBSCRIBE: SubscriptionType = "subscribe"
SUBSCRIBED: SubscriptionType = "subscribed"
UNSUBSCRIBE: SubscriptionType = "unsubscribe"
UNSUBSCRIBED: SubscriptionType = "unsubscribed"
SUBSCRIPTION_TYPES: tuple[SubscriptionType, ...] = (SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBED, UNSUBSCRIBED)


class SubState(Enum):
    """A subscription state from the user's side; the values are the RFC's names (A.1)."""

    NONE = "None"
    NONE_OUT = "None + Pending Out"
    NONE_IN = "None + Pending In"
    NONE_OUT_IN = "None + Pending Out+In"
    TO = "To"
    TO_IN = "To + Pending In"
    FROM = "From"
    FROM_OUT = "From + Pending Out"
    BOTH = "Both"
    # Section 3.4: the user has sent "subscribed" before any request arrived.
    NONE_APPROVED = "None + Pre-Approved"
    NONE_OUT_APPROVED = "None + Pending Out + Pre-Approved"
    TO_APPROVED = "To + Pre-Approved"

    @property
    def has_to(self) -> bool:
        """The user is subscribed to the contact's presence."""
        return ITEM_FIELDS[self].subscription in ("to", "both")

    @property
    def has_from(self) -> bool:
        """The contact is subscribed to the user's presence."""
        return ITEM_FIELDS[self].subscription in ("from", "both")

    @property
    def has_pending_out(self) -> bool:
        return ITEM_FIELDS[self].ask == "subscribe"

    @property
    def has_pending_in(self) -> bool:
        return ITEM_FIELDS[self].pending_in

    @property
    def is_approved(self) -> bool:
        return ITEM_FIELDS[self].approved


class RosterFields(NamedTuple):
    """How a state is stored: the roster item's attributes plus the pending-request flag."""

    subscription: str  # "none" | "to" | "from" | "both"
    ask: str | None  # "subscribe" while Pending Out (2.1.2.2)
    approved: bool  # pre-approval (2.1.2.1)
    pending_in: bool  # an unanswered inbound request is stored (not an item attribute)


class PresenceAction(Enum):
    """Presence the server sends, from each of the user's available resources, to the contact."""

    CURRENT = "the user's current presence"  # the contact was just granted access (3.1.5)
    UNAVAILABLE = "unavailable presence"  # the contact just lost access (3.2.2, 3.3.3)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the server does with one subscription stanza; see the module docstring."""

    new_state: SubState
    deliver: bool
    push: bool
    reply: SubscriptionType | None = None
    presence: PresenceAction | None = None


# Short names so that each table row fits on one line.
NONE, NONE_OUT, NONE_IN = SubState.NONE, SubState.NONE_OUT, SubState.NONE_IN
NONE_OUT_IN, TO, TO_IN = SubState.NONE_OUT_IN, SubState.TO, SubState.TO_IN
FROM, FROM_OUT, BOTH = SubState.FROM, SubState.FROM_OUT, SubState.BOTH
NONE_APPROVED, NONE_OUT_APPROVED, TO_APPROVED = (
    SubState.NONE_APPROVED, SubState.NONE_OUT_APPROVED, SubState.TO_APPROVED)
CURRENT, UNAVAILABLE = PresenceAction.CURRENT, PresenceAction.UNAVAILABLE

# A.1: "this is reflected in the user's roster by ...".
ITEM_FIELDS: dict[SubState, RosterFields] = {
    #                            subscription  ask          approved  pending_in
    NONE:              RosterFields("none",    None,        False,    False),
    NONE_OUT:          RosterFields("none",    "subscribe", False,    False),
    NONE_IN:           RosterFields("none",    None,        False,    True),
    NONE_OUT_IN:       RosterFields("none",    "subscribe", False,    True),
    TO:                RosterFields("to",      None,        False,    False),
    TO_IN:             RosterFields("to",      None,        False,    True),
    FROM:              RosterFields("from",    None,        False,    False),
    FROM_OUT:          RosterFields("from",    "subscribe", False,    False),
    BOTH:              RosterFields("both",    None,        False,    False),
    NONE_APPROVED:     RosterFields("none",    None,        True,     False),
    NONE_OUT_APPROVED: RosterFields("none",    "subscribe", True,     False),
    TO_APPROVED:       RosterFields("to",      None,        True,     False),
}
_STATE_BY_FIELDS: dict[RosterFields, SubState] = {fields: state for state, fields in ITEM_FIELDS.items()}

# A.2, from the user's side. "route" is the RFC's ROUTE? column.
OUTBOUND: dict[tuple[SubState, SubscriptionType], Outcome] = {
    # Table 2: outbound "subscribe" (3.1.2). MUST route in every state.
    #  existing state                       new state          route  push
    (NONE,              SUBSCRIBE):   Outcome(NONE_OUT,          True,  True),
    (NONE_OUT,          SUBSCRIBE):   Outcome(NONE_OUT,          True,  False),
    (NONE_IN,           SUBSCRIBE):   Outcome(NONE_OUT_IN,       True,  True),
    (NONE_OUT_IN,       SUBSCRIBE):   Outcome(NONE_OUT_IN,       True,  False),
    (TO,                SUBSCRIBE):   Outcome(TO,                True,  False),
    (TO_IN,             SUBSCRIBE):   Outcome(TO_IN,             True,  False),
    (FROM,              SUBSCRIBE):   Outcome(FROM_OUT,          True,  True),
    (FROM_OUT,          SUBSCRIBE):   Outcome(FROM_OUT,          True,  False),
    (BOTH,              SUBSCRIBE):   Outcome(BOTH,              True,  False),
    (NONE_APPROVED,     SUBSCRIBE):   Outcome(NONE_OUT_APPROVED, True,  True),
    (NONE_OUT_APPROVED, SUBSCRIBE):   Outcome(NONE_OUT_APPROVED, True,  False),
    (TO_APPROVED,       SUBSCRIBE):   Outcome(TO_APPROVED,       True,  False),
    # Table 3: outbound "unsubscribe" (3.3.2). MUST route in every state.
    (NONE,              UNSUBSCRIBE): Outcome(NONE,              True,  False),
    (NONE_OUT,          UNSUBSCRIBE): Outcome(NONE,              True,  True),
    (NONE_IN,           UNSUBSCRIBE): Outcome(NONE_IN,           True,  False),
    (NONE_OUT_IN,       UNSUBSCRIBE): Outcome(NONE_IN,           True,  True),
    (TO,                UNSUBSCRIBE): Outcome(NONE,              True,  True),
    (TO_IN,             UNSUBSCRIBE): Outcome(NONE_IN,           True,  True),
    (FROM,              UNSUBSCRIBE): Outcome(FROM,              True,  False),
    (FROM_OUT,          UNSUBSCRIBE): Outcome(FROM,              True,  True),
    (BOTH,              UNSUBSCRIBE): Outcome(FROM,              True,  True),
    (NONE_APPROVED,     UNSUBSCRIBE): Outcome(NONE_APPROVED,     True,  False),
    (NONE_OUT_APPROVED, UNSUBSCRIBE): Outcome(NONE_APPROVED,     True,  True),
    (TO_APPROVED,       UNSUBSCRIBE): Outcome(NONE_APPROVED,     True,  True),
    # Table 4: outbound "subscribed" (3.1.5, 3.4.2). Where there is no request, a pre-approval.
    #  existing state                       new state          route  push   reply  presence
    (NONE,              SUBSCRIBED):  Outcome(NONE_APPROVED,     False, True),
    (NONE_OUT,          SUBSCRIBED):  Outcome(NONE_OUT_APPROVED, False, True),
    (NONE_IN,           SUBSCRIBED):  Outcome(FROM,              True,  True,  None,  CURRENT),
    (NONE_OUT_IN,       SUBSCRIBED):  Outcome(FROM_OUT,          True,  True,  None,  CURRENT),
    (TO,                SUBSCRIBED):  Outcome(TO_APPROVED,       False, True),
    (TO_IN,             SUBSCRIBED):  Outcome(BOTH,              True,  True,  None,  CURRENT),
    (FROM,              SUBSCRIBED):  Outcome(FROM,              False, False),
    (FROM_OUT,          SUBSCRIBED):  Outcome(FROM_OUT,          False, False),
    (BOTH,              SUBSCRIBED):  Outcome(BOTH,              False, False),
    (NONE_APPROVED,     SUBSCRIBED):  Outcome(NONE_APPROVED,     False, False),
    (NONE_OUT_APPROVED, SUBSCRIBED):  Outcome(NONE_OUT_APPROVED, False, False),
    (TO_APPROVED,       SUBSCRIBED):  Outcome(TO_APPROVED,       False, False),
    # Table 5: outbound "unsubscribed" (3.2.2). S.N. route without a subscription or request;
    # in a pre-approved state it cancels the pre-approval and MUST NOT be routed.
    (NONE,              UNSUBSCRIBED): Outcome(NONE,             False, False),
    (NONE_OUT,          UNSUBSCRIBED): Outcome(NONE_OUT,         False, False),
    (NONE_IN,           UNSUBSCRIBED): Outcome(NONE,             True,  False),
    (NONE_OUT_IN,       UNSUBSCRIBED): Outcome(NONE_OUT,         True,  False),
    (TO,                UNSUBSCRIBED): Outcome(TO,               False, False),
    (TO_IN,             UNSUBSCRIBED): Outcome(TO,               True,  False),
    (FROM,              UNSUBSCRIBED): Outcome(NONE,             True,  True,  None,  UNAVAILABLE),
    (FROM_OUT,          UNSUBSCRIBED): Outcome(NONE_OUT,         True,  True,  None,  UNAVAILABLE),
    (BOTH,              UNSUBSCRIBED): Outcome(TO,               True,  True,  None,  UNAVAILABLE),
    (NONE_APPROVED,     UNSUBSCRIBED): Outcome(NONE,             False, True),
    (NONE_OUT_APPROVED, UNSUBSCRIBED): Outcome(NONE_OUT,         False, True),
    (TO_APPROVED,       UNSUBSCRIBED): Outcome(TO,               False, True),
}

# A.3, from the user's side: the contact sent the stanza. "deliver" is the RFC's DELIVER? column.
INBOUND: dict[tuple[SubState, SubscriptionType], Outcome] = {
    # Table 6: inbound "subscribe" (3.1.3). [2]: already subscribed, SHOULD auto-reply.
    #  existing state                       new state          deliver push   reply         presence
    (NONE,              SUBSCRIBE):   Outcome(NONE_IN,           True,  False),
    (NONE_OUT,          SUBSCRIBE):   Outcome(NONE_OUT_IN,       True,  False),
    (NONE_IN,           SUBSCRIBE):   Outcome(NONE_IN,           False, False),
    (NONE_OUT_IN,       SUBSCRIBE):   Outcome(NONE_OUT_IN,       False, False),
    (TO,                SUBSCRIBE):   Outcome(TO_IN,             True,  False),
    (TO_IN,             SUBSCRIBE):   Outcome(TO_IN,             False, False),
    (FROM,              SUBSCRIBE):   Outcome(FROM,              False, False, SUBSCRIBED,   CURRENT),
    (FROM_OUT,          SUBSCRIBE):   Outcome(FROM_OUT,          False, False, SUBSCRIBED,   CURRENT),
    (BOTH,              SUBSCRIBE):   Outcome(BOTH,              False, False, SUBSCRIBED,   CURRENT),
    # [1] and 3.4.2: pre-approved, so MUST NOT deliver; approve on the user's behalf instead.
    (NONE_APPROVED,     SUBSCRIBE):   Outcome(FROM,              False, True,  SUBSCRIBED,   CURRENT),
    (NONE_OUT_APPROVED, SUBSCRIBE):   Outcome(FROM_OUT,          False, True,  SUBSCRIBED,   CURRENT),
    (TO_APPROVED,       SUBSCRIBE):   Outcome(BOTH,              False, True,  SUBSCRIBED,   CURRENT),
    # Table 7: inbound "unsubscribe" (3.3.3). [1]: on a state change, SHOULD auto-reply.
    (NONE,              UNSUBSCRIBE): Outcome(NONE,              False, False),
    (NONE_OUT,          UNSUBSCRIBE): Outcome(NONE_OUT,          False, False),
    (NONE_IN,           UNSUBSCRIBE): Outcome(NONE,              True,  False, UNSUBSCRIBED),
    (NONE_OUT_IN,       UNSUBSCRIBE): Outcome(NONE_OUT,          True,  False, UNSUBSCRIBED),
    (TO,                UNSUBSCRIBE): Outcome(TO,                False, False),
    (TO_IN,             UNSUBSCRIBE): Outcome(TO,                True,  False, UNSUBSCRIBED),
    (FROM,              UNSUBSCRIBE): Outcome(NONE,              True,  True,  UNSUBSCRIBED, UNAVAILABLE),
    (FROM_OUT,          UNSUBSCRIBE): Outcome(NONE_OUT,          True,  True,  UNSUBSCRIBED, UNAVAILABLE),
    (BOTH,              UNSUBSCRIBE): Outcome(TO,                True,  True,  UNSUBSCRIBED, UNAVAILABLE),
    (NONE_APPROVED,     UNSUBSCRIBE): Outcome(NONE_APPROVED,     False, False),
    (NONE_OUT_APPROVED, UNSUBSCRIBE): Outcome(NONE_OUT_APPROVED, False, False),
    (TO_APPROVED,       UNSUBSCRIBE): Outcome(TO_APPROVED,       False, False),
    # Table 8: inbound "subscribed" (3.1.6). Only a pending outbound request changes anything.
    (NONE,              SUBSCRIBED):  Outcome(NONE,              False, False),
    (NONE_OUT,          SUBSCRIBED):  Outcome(TO,                True,  True),
    (NONE_IN,           SUBSCRIBED):  Outcome(NONE_IN,           False, False),
    (NONE_OUT_IN,       SUBSCRIBED):  Outcome(TO_IN,             True,  True),
    (TO,                SUBSCRIBED):  Outcome(TO,                False, False),
    (TO_IN,             SUBSCRIBED):  Outcome(TO_IN,             False, False),
    (FROM,              SUBSCRIBED):  Outcome(FROM,              False, False),
    (FROM_OUT,          SUBSCRIBED):  Outcome(BOTH,              True,  True),
    (BOTH,              SUBSCRIBED):  Outcome(BOTH,              False, False),
    (NONE_APPROVED,     SUBSCRIBED):  Outcome(NONE_APPROVED,     False, False),
    (NONE_OUT_APPROVED, SUBSCRIBED):  Outcome(TO_APPROVED,       True,  True),
    (TO_APPROVED,       SUBSCRIBED):  Outcome(TO_APPROVED,       False, False),
    # Table 9: inbound "unsubscribed" (3.2.3). Denies a pending request or cancels "to".
    (NONE,              UNSUBSCRIBED): Outcome(NONE,             False, False),
    (NONE_OUT,          UNSUBSCRIBED): Outcome(NONE,             True,  True),
    (NONE_IN,           UNSUBSCRIBED): Outcome(NONE_IN,          False, False),
    (NONE_OUT_IN,       UNSUBSCRIBED): Outcome(NONE_IN,          True,  True),
    (TO,                UNSUBSCRIBED): Outcome(NONE,             True,  True),
    (TO_IN,             UNSUBSCRIBED): Outcome(NONE_IN,          True,  True),
    (FROM,              UNSUBSCRIBED): Outcome(FROM,             False, False),
    (FROM_OUT,          UNSUBSCRIBED): Outcome(FROM,             True,  True),
    (BOTH,              UNSUBSCRIBED): Outcome(FROM,             True,  True),
    (NONE_APPROVED,     UNSUBSCRIBED): Outcome(NONE_APPROVED,    False, False),
    (NONE_OUT_APPROVED, UNSUBSCRIBED): Outcome(NONE_APPROVED,    True,  True),
    (TO_APPROVED,       UNSUBSCRIBED): Outcome(NONE_APPROVED,    True,  True),
}


def _check_type(stanza_type: str) -> SubscriptionType:
    for known in SUBSCRIPTION_TYPES:
        if stanza_type == known:
            return known
    raise ValueError(
        f"presence type {stanza_type!r} is not a subscription type, so the subscription tables "
        f"do not apply; expected one of {', '.join(SUBSCRIPTION_TYPES)} (other presence is "
        "routed by RFC 6121 section 4)"
    )


def outbound(state: SubState, stanza_type: str, *, preapproval: bool = True) -> Outcome:
    """What the user's server does when the user sends `stanza_type` to the contact (A.2).

    With `preapproval=False` (the server does not advertise pre-approval, 3.4), a "subscribed"
    that would only create a pre-approval is ignored: not routed, no state change, no push.
    """
    outcome = OUTBOUND[(state, _check_type(stanza_type))]
    if not preapproval and outcome.new_state.is_approved and not state.is_approved:
        return Outcome(state, deliver=False, push=False)
    return outcome


def inbound(state: SubState, stanza_type: str) -> Outcome:
    """What the user's server does when the contact's `stanza_type` arrives for the user (A.3).

    A contact not in the roster and with no stored request is in state NONE (A.1 note).
    """
    return INBOUND[(state, _check_type(stanza_type))]


def state_from_item(
    subscription: str | None = "none",
    ask: str | None = None,
    approved: bool = False,
    pending_in: bool = False,
) -> SubState:
    """The state stored as a roster item's attributes and the pending-request flag.

    A missing 'subscription' means "none" (2.1.2.5). "remove" is an operation, not a state, and
    combinations no state has (such as ask='subscribe' with subscription='both') are refused:
    they mean the stored roster is corrupt.
    """
    fields = RosterFields(subscription or "none", ask or None, approved, pending_in)
    state = _STATE_BY_FIELDS.get(fields)
    if state is None:
        raise ValueError(
            f"no subscription state has subscription={fields.subscription!r}, ask={fields.ask!r}, "
            f"approved={approved}, pending_in={pending_in} (RFC 6121 A.1); the stored roster item "
            "is inconsistent and needs repairing"
        )
    return state


def item_fields(state: SubState) -> RosterFields:
    """How `state` is stored and shown: roster item attributes plus the pending-request flag."""
    return ITEM_FIELDS[state]


def removal_stanzas(state: SubState) -> tuple[SubscriptionType, ...]:
    """Stanzas the server sends to the contact when the user removes the item (2.5.2).

    The RFC requires "unsubscribe" if the user is subscribed and "unsubscribed" if the contact
    is. A pending request in either direction is withdrawn or denied the same way, so that the
    contact's server does not keep it. A pre-approval simply disappears with the item. The state
    afterwards is NONE, and the stored inbound request (if any) is deleted.
    """
    stanzas: list[SubscriptionType] = []
    if state.has_to or state.has_pending_out:
        stanzas.append(UNSUBSCRIBE)
    if state.has_from or state.has_pending_in:
        stanzas.append(UNSUBSCRIBED)
    return tuple(stanzas)
