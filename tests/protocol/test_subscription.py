"""RFC 6121 presence subscriptions: the tables against Appendix A, then whole conversations.

The expectations below are typed in again from the RFC, with the RFC's own state names and
ROUTE?/DELIVER? words, so that a typo in `subscription.py` shows up as a disagreement.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.protocol.subscription import (
    INBOUND,
    ITEM_FIELDS,
    OUTBOUND,
    SUBSCRIPTION_TYPES,
    Outcome,
    PresenceAction,
    RosterFields,
    SubState,
    inbound,
    item_fields,
    outbound,
    removal_stanzas,
    state_from_item,
)

SAME = "no state change"

# Appendix A.2 and A.3, one tuple per table line:
#   (existing state, ROUTE?/DELIVER?, new state, roster push?)
# The push column comes from the prose of section 3: 3.1.2 (push with ask), 3.1.5, 3.1.6, 3.2.2,
# 3.2.3, 3.3.2, 3.3.3 (push the updated item) and 3.1.3 (no roster item for a mere request).
RFC_ROWS: dict[tuple[str, str], list[tuple[str, str, str, bool]]] = {
    ("outbound", "subscribe"): [  # Table 2
        ("None",                  "MUST", "None + Pending Out",    True),
        ("None + Pending Out",    "MUST", SAME,                    False),
        ("None + Pending In",     "MUST", "None + Pending Out+In", True),
        ("None + Pending Out+In", "MUST", SAME,                    False),
        ("To",                    "MUST", SAME,                    False),
        ("To + Pending In",       "MUST", SAME,                    False),
        ("From",                  "MUST", "From + Pending Out",    True),
        ("From + Pending Out",    "MUST", SAME,                    False),
        ("Both",                  "MUST", SAME,                    False),
    ],
    ("outbound", "unsubscribe"): [  # Table 3
        ("None",                  "MUST", SAME,                    False),
        ("None + Pending Out",    "MUST", "None",                  True),
        ("None + Pending In",     "MUST", SAME,                    False),
        ("None + Pending Out+In", "MUST", "None + Pending In",     True),
        ("To",                    "MUST", "None",                  True),
        ("To + Pending In",       "MUST", "None + Pending In",     True),
        ("From",                  "MUST", SAME,                    False),
        ("From + Pending Out",    "MUST", "From",                  True),
        ("Both",                  "MUST", "From",                  True),
    ],
    ("outbound", "subscribed"): [  # Table 4; "pre-approval [1]" rows are checked separately
        ("None + Pending In",     "MUST", "From",                  True),
        ("None + Pending Out+In", "MUST", "From + Pending Out",    True),
        ("To + Pending In",       "MUST", "Both",                  True),
        ("From",                  "M.N.", SAME,                    False),
        ("From + Pending Out",    "M.N.", SAME,                    False),
        ("Both",                  "M.N.", SAME,                    False),
    ],
    ("outbound", "unsubscribed"): [  # Table 5
        ("None",                  "S.N.", SAME,                    False),
        ("None + Pending Out",    "S.N.", SAME,                    False),
        # A denied request never made a roster item (3.1.3), and 'ask' is untouched: no push.
        ("None + Pending In",     "MUST", "None",                  False),
        ("None + Pending Out+In", "MUST", "None + Pending Out",    False),
        ("To",                    "S.N.", SAME,                    False),
        ("To + Pending In",       "MUST", "To",                    False),
        ("From",                  "MUST", "None",                  True),
        ("From + Pending Out",    "MUST", "None + Pending Out",    True),
        ("Both",                  "MUST", "To",                    True),
    ],
    ("inbound", "subscribe"): [  # Table 6
        ("None",                  "MUST", "None + Pending In",     False),
        ("None + Pending Out",    "MUST", "None + Pending Out+In", False),
        ("None + Pending In",     "S.N.", SAME,                    False),
        ("None + Pending Out+In", "S.N.", SAME,                    False),
        ("To",                    "MUST", "To + Pending In",       False),
        ("To + Pending In",       "S.N.", SAME,                    False),
        ("From",                  "S.N.", SAME,                    False),
        ("From + Pending Out",    "S.N.", SAME,                    False),
        ("Both",                  "S.N.", SAME,                    False),
    ],
    ("inbound", "unsubscribe"): [  # Table 7
        ("None",                  "S.N.", SAME,                    False),
        ("None + Pending Out",    "S.N.", SAME,                    False),
        ("None + Pending In",     "MUST", "None",                  False),
        ("None + Pending Out+In", "MUST", "None + Pending Out",    False),
        ("To",                    "S.N.", SAME,                    False),
        ("To + Pending In",       "MUST", "To",                    False),
        ("From",                  "MUST", "None",                  True),
        ("From + Pending Out",    "MUST", "None + Pending Out",    True),
        ("Both",                  "MUST", "To",                    True),
    ],
    ("inbound", "subscribed"): [  # Table 8
        ("None",                  "S.N.", SAME,                    False),
        ("None + Pending Out",    "MUST", "To",                    True),
        ("None + Pending In",     "S.N.", SAME,                    False),
        ("None + Pending Out+In", "MUST", "To + Pending In",       True),
        ("To",                    "S.N.", SAME,                    False),
        ("To + Pending In",       "S.N.", SAME,                    False),
        ("From",                  "S.N.", SAME,                    False),
        ("From + Pending Out",    "MUST", "Both",                  True),
        ("Both",                  "S.N.", SAME,                    False),
    ],
    ("inbound", "unsubscribed"): [  # Table 9
        ("None",                  "S.N.", SAME,                    False),
        ("None + Pending Out",    "MUST", "None",                  True),
        ("None + Pending In",     "S.N.", SAME,                    False),
        ("None + Pending Out+In", "MUST", "None + Pending In",     True),
        ("To",                    "MUST", "None",                  True),
        ("To + Pending In",       "MUST", "None + Pending In",     True),
        ("From",                  "S.N.", SAME,                    False),
        ("From + Pending Out",    "MUST", "From",                  True),
        ("Both",                  "MUST", "From",                  True),
    ],
}

# Section 3.4 (pre-approval), 3.2.2 rule 2 and Table 6 note [1]:
#   (direction, type, existing state, routed/delivered?, new state, push?, auto-reply)
PREAPPROVAL_ROWS = [
    # 3.4.2 rule 3: set 'approved', push, MUST NOT route.
    ("outbound", "subscribed", "None",                "M.N.", "None + Pre-Approved",               True, None),
    ("outbound", "subscribed", "None + Pending Out",  "M.N.", "None + Pending Out + Pre-Approved", True, None),
    ("outbound", "subscribed", "To",                  "M.N.", "To + Pre-Approved",                 True, None),
    # Already pre-approved: nothing more to note, still nothing to route.
    ("outbound", "subscribed", "None + Pre-Approved",               "M.N.", SAME, False, None),
    ("outbound", "subscribed", "None + Pending Out + Pre-Approved", "M.N.", SAME, False, None),
    ("outbound", "subscribed", "To + Pre-Approved",                 "M.N.", SAME, False, None),
    # 3.4.2: MUST NOT deliver "subscribe", MUST answer "subscribed"; the contact now has "from".
    ("inbound", "subscribe", "None + Pre-Approved",               "M.N.", "From",               True, "subscribed"),
    ("inbound", "subscribe", "None + Pending Out + Pre-Approved", "M.N.", "From + Pending Out", True, "subscribed"),
    ("inbound", "subscribe", "To + Pre-Approved",                 "M.N.", "Both",               True, "subscribed"),
    # 3.2.2 rule 2: MUST remove the pre-approval and MUST NOT route; 3.4.2 note: push it.
    ("outbound", "unsubscribed", "None + Pre-Approved",               "M.N.", "None",               True, None),
    ("outbound", "unsubscribed", "None + Pending Out + Pre-Approved", "M.N.", "None + Pending Out", True, None),
    ("outbound", "unsubscribed", "To + Pre-Approved",                 "M.N.", "To",                 True, None),
]

# Table 6 note [2] and Table 7 note [1]: the server answers for the user.
AUTO_REPLIES = {
    ("subscribe", "From"): "subscribed",
    ("subscribe", "From + Pending Out"): "subscribed",
    ("subscribe", "Both"): "subscribed",
    ("unsubscribe", "None + Pending In"): "unsubscribed",
    ("unsubscribe", "None + Pending Out+In"): "unsubscribed",
    ("unsubscribe", "To + Pending In"): "unsubscribed",
    ("unsubscribe", "From"): "unsubscribed",
    ("unsubscribe", "From + Pending Out"): "unsubscribed",
    ("unsubscribe", "Both"): "unsubscribed",
    **{("subscribe", name): "subscribed" for name in
       ("None + Pre-Approved", "None + Pending Out + Pre-Approved", "To + Pre-Approved")},
}

PRE_APPROVED_BASE = {
    SubState("None + Pre-Approved"): SubState("None"),
    SubState("None + Pending Out + Pre-Approved"): SubState("None + Pending Out"),
    SubState("To + Pre-Approved"): SubState("To"),
}


def _lookup(direction: str, state: SubState, stanza_type: str) -> Outcome:
    return outbound(state, stanza_type) if direction == "outbound" else inbound(state, stanza_type)


RFC_CASES = [
    pytest.param(direction, stanza_type, *row, id=f"{direction}-{stanza_type}-{row[0]}")
    for (direction, stanza_type), rows in RFC_ROWS.items() for row in rows
]


@pytest.mark.parametrize("direction, stanza_type, existing, word, new, push", RFC_CASES)
def test_table_row_matches_appendix_a(direction, stanza_type, existing, word, new, push):
    outcome = _lookup(direction, SubState(existing), stanza_type)
    assert outcome.new_state == SubState(existing if new == SAME else new)
    assert outcome.deliver is (word == "MUST")
    assert outcome.push is push
    expected_reply = AUTO_REPLIES.get((stanza_type, existing)) if direction == "inbound" else None
    assert outcome.reply == expected_reply


@pytest.mark.parametrize("direction, stanza_type, existing, word, new, push, reply", PREAPPROVAL_ROWS)
def test_preapproval_rows_follow_section_3_4(direction, stanza_type, existing, word, new, push, reply):
    outcome = _lookup(direction, SubState(existing), stanza_type)
    assert (outcome.new_state, outcome.deliver, outcome.push, outcome.reply) == \
        (SubState(existing if new == SAME else new), word == "MUST", push, reply)


def test_every_rfc_row_was_transcribed():
    """72 RFC lines: Table 4's three "pre-approval [1]" lines are in PREAPPROVAL_ROWS."""
    assert sum(len(rows) for rows in RFC_ROWS.values()) == 8 * 9 - 3


def test_tables_cover_every_state_and_type():
    keys = {(state, t) for state in SubState for t in SUBSCRIPTION_TYPES}
    assert set(OUTBOUND) == keys
    assert set(INBOUND) == keys
    assert len(SubState) == 12


@pytest.mark.parametrize("approved, base", PRE_APPROVED_BASE.items(), ids=lambda s: s.value)
@pytest.mark.parametrize("direction, stanza_type", [
    ("outbound", "subscribe"), ("outbound", "unsubscribe"), ("inbound", "unsubscribe"),
    ("inbound", "subscribed"), ("inbound", "unsubscribed"),
])
def test_preapproval_rides_along_where_section_3_4_says_nothing(approved, base, direction, stanza_type):
    """Stanzas that neither use nor cancel a pre-approval behave as in the base state and keep it."""
    plain, kept = _lookup(direction, base, stanza_type), _lookup(direction, approved, stanza_type)
    assert (kept.deliver, kept.push, kept.reply, kept.presence) == \
        (plain.deliver, plain.push, plain.reply, plain.presence)
    assert item_fields(kept.new_state) == item_fields(plain.new_state)._replace(approved=True)


ALL_ROWS = [pytest.param(table, key, id=f"{name}-{key[1]}-{key[0].value}")
            for name, table in (("out", OUTBOUND), ("in", INBOUND)) for key in table]


@pytest.mark.parametrize("table, key", ALL_ROWS)
def test_push_exactly_when_the_visible_item_changes(table, key):
    old, outcome = key[0], table[key]
    assert outcome.push is (_visible(old) != _visible(outcome.new_state))


def _visible(state: SubState) -> tuple[str, str | None, bool]:
    """What a roster push shows: subscription, ask, approved (not the stored request)."""
    fields = item_fields(state)
    return (fields.subscription, fields.ask, fields.approved)


@pytest.mark.parametrize("table, key", ALL_ROWS)
def test_presence_follows_access(table, key):
    """Current presence whenever access is granted (3.1.5), unavailable when it ends (3.2.2, 3.3.3)."""
    old, outcome = key[0], table[key]
    granted = outcome.new_state.has_from and (not old.has_from or outcome.reply == "subscribed")
    revoked = old.has_from and not outcome.new_state.has_from
    expected = PresenceAction.CURRENT if granted else PresenceAction.UNAVAILABLE if revoked else None
    assert outcome.presence is expected


def test_without_preapproval_support_subscribed_is_ignored():
    for name in ("None", "None + Pending Out", "To"):
        state = SubState(name)
        assert outbound(state, "subscribed", preapproval=False) == Outcome(state, False, False)
    assert outbound(SubState("None + Pending In"), "subscribed", preapproval=False).new_state == SubState.FROM


def test_non_subscription_types_are_refused():
    with pytest.raises(ValueError, match="'probe' is not a subscription type"):
        inbound(SubState.NONE, "probe")


@pytest.mark.parametrize("state", list(SubState), ids=lambda s: s.value)
def test_item_fields_round_trip(state):
    assert state_from_item(*item_fields(state)) is state


def test_item_fields_match_a1():
    assert state_from_item() is SubState.NONE  # no 'subscription' attribute means "none"
    assert state_from_item("none", "subscribe") is SubState("None + Pending Out")
    assert state_from_item("none", "subscribe", pending_in=True) is SubState("None + Pending Out+In")
    assert state_from_item("to", pending_in=True) is SubState("To + Pending In")
    assert state_from_item("from", "subscribe") is SubState("From + Pending Out")
    assert item_fields(SubState.NONE_APPROVED) == RosterFields("none", None, True, False)


@pytest.mark.parametrize("fields", [
    ("both", "subscribe", False, False), ("to", "subscribe", False, False),
    ("from", None, True, False), ("both", None, False, True), ("remove", None, False, False),
    ("none", None, True, True),
])
def test_impossible_items_are_refused(fields):
    with pytest.raises(ValueError, match="no subscription state has"):
        state_from_item(*fields)


# -- conversations: two accounts, each server applying the tables --------------------------------

ROMEO, JULIET = "romeo@example.net", "juliet@example.com"


class Pair:
    """romeo and juliet, each seen by their own server; `drop` decides whether a stanza is lost."""

    def __init__(self, preapproval: bool = True, drop=lambda: False) -> None:
        self.state = {ROMEO: SubState.NONE, JULIET: SubState.NONE}
        self.received: dict[str, list[str]] = {ROMEO: [], JULIET: []}
        self.pushed: dict[str, list[RosterFields]] = {ROMEO: [], JULIET: []}
        self.presence: list[tuple[str, PresenceAction]] = []  # (sender, what)
        self.preapproval, self.drop = preapproval, drop

    @staticmethod
    def peer(user: str) -> str:
        return JULIET if user == ROMEO else ROMEO

    def sends(self, user: str, stanza_type: str) -> None:
        outcome = outbound(self.state[user], stanza_type, preapproval=self.preapproval)
        self._apply(user, outcome)
        if outcome.deliver:
            self._arrives(self.peer(user), stanza_type)

    def removes(self, user: str) -> None:
        stanzas = removal_stanzas(self.state[user])
        self.state[user] = SubState.NONE
        for stanza_type in stanzas:
            self._arrives(self.peer(user), stanza_type)

    def _arrives(self, user: str, stanza_type: str) -> None:
        if self.drop():
            return
        outcome = inbound(self.state[user], stanza_type)
        self._apply(user, outcome)
        if outcome.deliver:
            self.received[user].append(stanza_type)
        if outcome.reply:
            self._arrives(self.peer(user), outcome.reply)

    def _apply(self, user: str, outcome: Outcome) -> None:
        self.state[user] = outcome.new_state
        if outcome.push:
            self.pushed[user].append(item_fields(outcome.new_state))
        if outcome.presence:
            self.presence.append((user, outcome.presence))


def test_handshake_gives_to_and_from_then_both():
    pair = Pair()
    # romeo sends <presence to='juliet@example.com' type='subscribe'/>
    pair.sends(ROMEO, "subscribe")
    assert pair.pushed[ROMEO] == [RosterFields("none", "subscribe", False, False)]
    assert pair.received[JULIET] == ["subscribe"] and pair.pushed[JULIET] == []
    # juliet approves: <presence to='romeo@example.net' type='subscribed'/>
    pair.sends(JULIET, "subscribed")
    assert pair.state == {ROMEO: SubState.TO, JULIET: SubState.FROM}
    assert pair.received[ROMEO] == ["subscribed"]
    assert pair.presence == [(JULIET, PresenceAction.CURRENT)]
    # and the reverse direction
    pair.sends(JULIET, "subscribe")
    assert pair.state == {ROMEO: SubState.TO_IN, JULIET: SubState.FROM_OUT}
    pair.sends(ROMEO, "subscribed")
    assert pair.state == {ROMEO: SubState.BOTH, JULIET: SubState.BOTH}
    assert pair.pushed[ROMEO][-1].subscription == pair.pushed[JULIET][-1].subscription == "both"


def test_unsubscribe_and_unsubscribed_cancel_both_directions():
    pair = Pair()
    pair.state = {ROMEO: SubState.BOTH, JULIET: SubState.BOTH}
    # romeo stops watching juliet; juliet's server answers "unsubscribed" for her (Table 7 [1])
    pair.sends(ROMEO, "unsubscribe")
    assert pair.state == {ROMEO: SubState.FROM, JULIET: SubState.TO}
    assert pair.received == {ROMEO: [], JULIET: ["unsubscribe"]}
    assert pair.presence == [(JULIET, PresenceAction.UNAVAILABLE)]
    # romeo revokes juliet's access to him
    pair.sends(ROMEO, "unsubscribed")
    assert pair.state == {ROMEO: SubState.NONE, JULIET: SubState.NONE}
    assert pair.received[JULIET] == ["unsubscribe", "unsubscribed"]
    assert pair.presence[-1] == (ROMEO, PresenceAction.UNAVAILABLE)


def test_denied_request_clears_pending_on_both_sides():
    pair = Pair()
    pair.sends(ROMEO, "subscribe")
    pair.sends(JULIET, "unsubscribed")
    assert pair.state == {ROMEO: SubState.NONE, JULIET: SubState.NONE}
    assert pair.received[ROMEO] == ["unsubscribed"]
    assert pair.presence == []  # a denial reveals no resources


def test_preapproval_then_subscribe_is_auto_approved():
    pair = Pair()
    pair.sends(JULIET, "subscribed")  # pre-approves romeo; nothing leaves juliet's server
    assert pair.received[ROMEO] == [] and pair.state[JULIET] is SubState.NONE_APPROVED
    assert pair.pushed[JULIET] == [RosterFields("none", None, True, False)]
    pair.sends(ROMEO, "subscribe")
    assert pair.received[JULIET] == []  # never shown to juliet
    assert pair.state == {ROMEO: SubState.TO, JULIET: SubState.FROM}
    assert pair.received[ROMEO] == ["subscribed"]


def test_preapproval_is_cancelled_by_unsubscribed():
    pair = Pair()
    pair.sends(JULIET, "subscribed")
    pair.sends(JULIET, "unsubscribed")
    assert pair.state[JULIET] is SubState.NONE and pair.received[ROMEO] == []
    pair.sends(ROMEO, "subscribe")
    assert pair.received[JULIET] == ["subscribe"] and pair.state[JULIET] is SubState.NONE_IN


def test_duplicate_subscribe_while_pending_is_delivered_once():
    pair = Pair()
    for _ in range(3):
        pair.sends(ROMEO, "subscribe")
    assert pair.received[JULIET] == ["subscribe"]
    assert len(pair.pushed[ROMEO]) == 1


def test_removing_the_item_tells_the_contact():
    pair = Pair()
    pair.state = {ROMEO: SubState.BOTH, JULIET: SubState.BOTH}
    assert removal_stanzas(SubState.BOTH) == ("unsubscribe", "unsubscribed")
    pair.removes(JULIET)
    assert pair.state == {ROMEO: SubState.NONE, JULIET: SubState.NONE}
    assert removal_stanzas(SubState.NONE_APPROVED) == ()


# -- properties ----------------------------------------------------------------------------------

ACTIONS = st.lists(st.tuples(st.sampled_from([ROMEO, JULIET]),
                             st.sampled_from([*SUBSCRIPTION_TYPES, "remove"])), max_size=40)


def _run(pair: Pair, actions) -> None:
    for user, action in actions:
        pair.removes(user) if action == "remove" else pair.sends(user, action)
        for state in pair.state.values():
            assert isinstance(state, SubState)
            fields = item_fields(state)
            assert state_from_item(fields.subscription, fields.ask, fields.approved, fields.pending_in) is state
            assert item_fields(state_from_item(*fields)) == fields


def _mirrored(state: SubState) -> tuple[bool, bool, bool, bool]:
    return (state.has_from, state.has_to, state.has_pending_in, state.has_pending_out)


def _core(state: SubState) -> tuple[bool, bool, bool, bool]:
    return (state.has_to, state.has_from, state.has_pending_out, state.has_pending_in)


@settings(max_examples=300)
@given(actions=ACTIONS, preapproval=st.booleans())
def test_lossless_links_keep_both_rosters_in_agreement(actions, preapproval):
    """With every stanza delivered, romeo's "to" is juliet's "from", his Pending Out her Pending In."""
    pair = Pair(preapproval=preapproval)
    _run(pair, actions)
    assert _core(pair.state[ROMEO]) == _mirrored(pair.state[JULIET])
    assert all(not state.is_approved or not state.has_from for state in pair.state.values())


@settings(max_examples=300)
@given(actions=ACTIONS, data=st.data())
def test_lost_stanzas_never_produce_an_invalid_state(actions, data):
    pair = Pair(drop=lambda: data.draw(st.booleans(), label="lost"))
    _run(pair, actions)
    assert all(state in ITEM_FIELDS for state in pair.state.values())
