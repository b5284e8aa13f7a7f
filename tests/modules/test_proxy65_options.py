"""XEP-0065 proxy options that depend on each other fail while the file is read."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from stockade.app import module_options
from stockade.config import ConfigError, config_from_dict


def load(table: str):
    text = f'[[hosts]]\ndomain = "example.com"\n[modules.proxy65]\n{table}\n'
    return config_from_dict(tomllib.loads(text), "stockade.toml", Path("."), module_options())


def test_off_by_default():
    assert load("").modules["proxy65"].enabled is False


def test_listening_everywhere_needs_the_address_clients_use():
    with pytest.raises(ConfigError) as err:
        load('enabled = true\ninterfaces = ["0.0.0.0"]')
    assert err.value.key == "modules.proxy65.public_host"
    options = load('enabled = true\ninterfaces = ["0.0.0.0"]\npublic_host = "proxy.example.com"').modules["proxy65"]
    assert options.public_host == "proxy.example.com"


@pytest.mark.parametrize("table, key", [
    ('subdomain = "proxy.example"', "modules.proxy65.subdomain"),
    ('interfaces = ["eth0"]', "modules.proxy65.interfaces"),
    ("activation_timeout = 0.0", "modules.proxy65.activation_timeout"),
    ("max_transfers_per_user = 0", "modules.proxy65.max_transfers_per_user"),
])
def test_bad_values_name_their_key(table, key):
    with pytest.raises(ConfigError) as err:
        load(table)
    assert err.value.key == key
