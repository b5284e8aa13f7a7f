"""Node configuration forms and publish-options preconditions (XEP-0060 7.1.5 and 16.4)."""

from __future__ import annotations

import pytest

from stockade.modules.pep.config import ConfigChange, NodeConfig, config_form, parse_max_items
from stockade.modules.pep.forms import Submission
from stockade.protocol.errors import StanzaError


def change(values: dict[str, list[str]], *, is_precondition: bool = False) -> ConfigChange:
    return ConfigChange.parse(Submission("submit", None, values), 100, is_precondition=is_precondition)


def test_a_form_is_read_into_typed_values():
    c = change({"pubsub#access_model": ["open"], "pubsub#persist_items": ["1"], "pubsub#max_items": ["max"],
                "pubsub#notify_retract": ["false"], "pubsub#roster_groups_allowed": ["A", "B"]})
    config = c.apply(NodeConfig())
    assert config.access_model == "open" and config.persist_items is True and config.max_items == 100
    assert config.notify_retract is False and config.roster_groups_allowed == ("A", "B")


def test_preconditions_compare_with_the_node():
    node = NodeConfig(access_model="whitelist", max_items=100)
    assert change({"pubsub#access_model": ["whitelist"], "pubsub#max_items": ["max"]}).mismatch(node) is None
    why = change({"pubsub#access_model": ["open"]}).mismatch(node)
    assert why is not None and "access_model" in why and "'whitelist'" in why


def test_max_items_beyond_the_limit_means_the_limit():
    assert parse_max_items("max", 50) == 50
    assert parse_max_items("10000", 50) == 50
    assert parse_max_items("7", 50) == 7
    for bad in ("0", "-1", "many"):
        with pytest.raises(StanzaError) as info:
            parse_max_items(bad, 50)
        assert info.value.condition == "not-acceptable"


def test_unknown_options_are_refused_not_ignored():
    with pytest.raises(StanzaError) as info:
        change({"pubsub#item_expire": ["60"]})
    assert info.value.condition == "not-acceptable"
    with pytest.raises(StanzaError) as info:
        change({"pubsub#item_expire": ["60"]}, is_precondition=True)
    assert info.value.condition == "conflict"
    assert info.value.app_condition is not None and info.value.app_condition.name == "precondition-not-met"


def test_bad_values_are_refused():
    for values in ({"pubsub#persist_items": ["maybe"]}, {"pubsub#send_last_published_item": ["always"]},
                   {"pubsub#notification_type": ["chat"]}, {"pubsub#publish_model": ["open"]}):
        with pytest.raises(StanzaError):
            change(values)
    with pytest.raises(StanzaError) as info:
        change({"pubsub#access_model": ["authorize"]})
    assert info.value.app_condition.name == "unsupported-access-model"
    with pytest.raises(StanzaError) as info:
        change({"pubsub#title": ["a", "b"]})
    assert info.value.condition == "bad-request"


def test_the_form_round_trips():
    config = NodeConfig(access_model="open", max_items=5, title="News", roster_groups_allowed=("A",))
    form = config_form(config)
    values = {f.get("var"): [v.text for v in f.elements("value")] for f in form.elements("field")}
    values.pop("FORM_TYPE")
    assert change(values).apply(NodeConfig()) == config
    assert NodeConfig.from_json(config.to_json(), NodeConfig()) == config
