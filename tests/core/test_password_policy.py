"""The password policy: length, common passwords, the user name, and no reuse of recent ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.app import module_options
from stockade.config import ConfigError, config_from_dict
from stockade.core.accounts import AccountError, AccountService
from stockade.core.password_policy import (HISTORY_STORE, PasswordPolicy, PasswordRejected, PasswordRules,
                                           check_rules, common_passwords, is_common)
from stockade.storage import Storage


def config(**doc):
    return config_from_dict(doc, "(test)", Path("."), module_options())


# -- rules that need no stored data --------------------------------------------------------------
def test_the_shipped_list_holds_thousands_of_lowercase_entries():
    common = common_passwords()
    assert len(common) > 5000
    assert {"123456", "password", "qwerty", "letmein", "iloveyou", "dragon"} <= common
    assert all(p == p.lower() for p in common)


@pytest.mark.parametrize("password", ["password", "Password1!", "p@ssw0rd", "Dragon2024!", "qwerty123456",
                                      "Summer2023", "1q2w3e4r5t", "iloveyou!!", "Welcome123"])
def test_common_passwords_and_their_usual_variants_are_refused(password):
    assert is_common(password)
    with pytest.raises(PasswordRejected) as refused:
        check_rules(PasswordRules(), "alice", password)
    assert refused.value.rule in ("common", "length")


@pytest.mark.parametrize("password", ["correct horse battery staple", "alice-pw-1", "Tr0ub4dor&3x",
                                      "vN7#kq2!Lm", "purple-gravel-tuesday"])
def test_uncommon_passwords_pass(password):
    assert not is_common(password)
    check_rules(PasswordRules(), "bob", password)


def test_each_refusal_names_its_rule_and_what_to_do():
    with pytest.raises(PasswordRejected, match=r"too short: use at least 12 characters") as short:
        check_rules(PasswordRules(min_length=12), "alice", "uncommon-1")
    assert short.value.rule == "length"
    with pytest.raises(PasswordRejected, match=r"too common.*choose a passphrase") as common:
        check_rules(PasswordRules(), "alice", "monkey12345")
    assert common.value.rule == "common"
    with pytest.raises(PasswordRejected, match="contains the user name") as named:
        check_rules(PasswordRules(reject_username=True), "alice", "xx-Alice-9137")
    assert named.value.rule == "username"
    check_rules(PasswordRules(reject_username=False), "alice", "xx-Alice-9137")     # off by default
    check_rules(PasswordRules(reject_common=False), "alice", "monkey12345")


# -- configuration: [auth] defaults, [[hosts]] overrides -------------------------------------------
def test_a_host_overrides_the_auth_defaults_and_unset_keys_inherit():
    cfg = config(auth={"min_password_length": 10, "password_history": 3, "reject_username_in_password": True},
                 hosts=[{"domain": "example.com"},
                        {"domain": "strict.example.com", "min_password_length": 16, "password_history": 10}])
    assert PasswordRules.for_host(cfg, "example.com") == PasswordRules(10, True, True, 3)
    assert PasswordRules.for_host(cfg, "strict.example.com") == PasswordRules(16, True, True, 10)


def test_defaults_reject_common_passwords_and_remember_five():
    assert PasswordRules.for_host(config(), "localhost") == PasswordRules(8, True, False, 5)


@pytest.mark.parametrize("doc, key", [
    ({"auth": {"password_history": -1}}, "auth.password_history"),
    ({"hosts": [{"domain": "example.com", "min_password_length": 0}]}, "hosts[0].min_password_length"),
    ({"hosts": [{"domain": "example.com", "reject_common_passwords": "yes"}]}, "hosts[0].reject_common_passwords"),
])
def test_a_bad_policy_value_is_a_configuration_error_naming_the_key(doc, key):
    with pytest.raises(ConfigError) as bad:
        config(**doc)
    assert bad.value.key == key


# -- history, through the account service -----------------------------------------------------------
@pytest.fixture
async def accounts(tmp_path):
    storage = await Storage.open(f"sqlite:///{tmp_path / 'stockade.db'}")
    policy = PasswordPolicy({"example.com": PasswordRules(8, True, False, 2)}, storage.keyval(HISTORY_STORE))
    try:
        yield AccountService(storage, {"example.com"}, policy=policy)
    finally:
        await storage.close()


async def test_the_last_passwords_cannot_be_used_again_and_older_ones_can(accounts):
    await accounts.create("example.com", "alice", "first-secret-1")
    with pytest.raises(AccountError, match="used before: the last 2 password"):
        await accounts.set_password("example.com", "alice", "first-secret-1")       # the current one
    await accounts.set_password("example.com", "alice", "second-secret-2")
    with pytest.raises(AccountError, match="used before"):
        await accounts.set_password("example.com", "alice", "first-secret-1")       # one back
    await accounts.set_password("example.com", "alice", "third-secret-3")
    await accounts.set_password("example.com", "alice", "first-secret-1")           # two back: forgotten


async def test_the_history_keeps_scram_verifiers_never_the_password(accounts):
    await accounts.create("example.com", "alice", "first-secret-1")
    await accounts.set_password("example.com", "alice", "second-secret-2")
    entries = await accounts.storage.keyval(HISTORY_STORE).get("example.com", "alice")
    assert len(entries) == 2
    assert set(entries[0]) == {"hash", "salt", "iterations", "stored_key"}
    assert "secret" not in repr(entries)


async def test_account_service_enforces_every_rule_on_create_and_on_change(accounts):
    with pytest.raises(AccountError, match="too common"):
        await accounts.create("example.com", "alice", "Password123")
    with pytest.raises(AccountError, match="too short"):
        await accounts.create("example.com", "alice", "x7#q")
    await accounts.create("example.com", "alice", "first-secret-1")
    with pytest.raises(AccountError, match="too common"):
        await accounts.set_password("example.com", "alice", "letmein2024!")
