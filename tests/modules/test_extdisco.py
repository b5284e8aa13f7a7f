"""XEP-0215 options: services are a TOML list of tables, validated like every other option."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from stockade.app import module_options
from stockade.config import ConfigError, config_from_dict
from stockade.modules.extdisco import Service

TOML = """
[[hosts]]
domain = "example.com"

[modules.extdisco]
secret = "a-long-shared-turn-secret"
credential_ttl = 3600

[[modules.extdisco.services]]
type = "stun"
host = "stun.example.com"

[[modules.extdisco.services]]
type = "turns"
host = "192.0.2.7"
port = 5349
transport = "tcp"
restricted = true
name = "Office relay"
"""


def load(text: str):
    return config_from_dict(tomllib.loads(text), "stockade.toml", Path("."), module_options())


def test_a_list_of_tables_becomes_a_list_of_services():
    options = load(TOML).modules["extdisco"]
    assert options.services == [
        Service(type="stun", host="stun.example.com"),
        Service(type="turns", host="192.0.2.7", port=5349, transport="tcp", restricted=True, name="Office relay"),
    ]
    assert options.services[0].port == 3478 and options.services[0].transport == "udp"
    assert options.credential_ttl == 3600


def test_without_a_table_there_are_no_services():
    assert load('[[hosts]]\ndomain = "example.com"\n').modules["extdisco"].services == []


@pytest.mark.parametrize("service, key, reason", [
    ('type = "ftp"\nhost = "a.example.com"', "modules.extdisco.services[0].type", "not one of"),
    ('type = "turn"', "modules.extdisco.services[0].host", "required"),
    ('type = "turn"\nhost = "a.example.com"\nport = 70000', "modules.extdisco.services[0].port", "above the maximum"),
    ('type = "turn"\nhost = "a.example.com"\nport = "3478"', "modules.extdisco.services[0].port", "expected an integer"),
    ('type = "turn"\nhost = "a.example.com"\ntransport = "sctp"', "modules.extdisco.services[0].transport", "not one of"),
    ('type = "turn"\nhost = "a.example.com"\nrestricted = "yes"', "modules.extdisco.services[0].restricted", "true or false"),
    ('type = "turn"\nhost = "a.example.com"\nsecret = "x"', "modules.extdisco.services[0].secret", "unknown option"),
    ('type = "turn"\nhost = "turn server"', "modules.extdisco.services[0].host", "host name"),
])
def test_a_bad_service_names_its_key(service, key, reason):
    text = f'[[hosts]]\ndomain = "example.com"\n[[modules.extdisco.services]]\n{service}\n'
    with pytest.raises(ConfigError) as err:
        load(text)
    assert err.value.key == key and reason in err.value.reason


def test_a_short_secret_is_refused():
    with pytest.raises(ConfigError) as err:
        load('[[hosts]]\ndomain = "example.com"\n[modules.extdisco]\nsecret = "short"\n')
    assert err.value.key == "modules.extdisco.secret"


def test_a_restricted_service_needs_the_secret():
    text = ('[[hosts]]\ndomain = "example.com"\n[[modules.extdisco.services]]\n'
            'type = "turn"\nhost = "turn.example.com"\nrestricted = true\n')
    with pytest.raises(ConfigError) as err:
        load(text)
    assert err.value.key == "modules.extdisco.secret" and "restricted service" in err.value.reason
