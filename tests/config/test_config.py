"""Configuration: one TOML file, typed, bounded; every mistake names the file, key and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from stockade.app import module_options
from stockade.config import ConfigError, load_config
from stockade.config.docs import render

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stockade.toml"
    path.write_text(text)
    return path


def test_defaults_serve_localhost_with_tls_required():
    config = load_config(None, module_options())
    assert config.domains == ["localhost"]
    assert config.c2s.require_tls and config.c2s.port == 5222 and config.c2s.direct_tls_port == 5223
    assert config.c2s.max_stanza_size == 262144
    assert config.modules["offline"].max_messages == 1000


def test_a_full_file_is_read(tmp_path):
    config = load_config(write(tmp_path, """
[[hosts]]
domain = "example.com"
[[hosts]]
domain = "research.example.com"
[c2s]
port = 15222
[modules.offline]
max_messages = 20
"""), module_options())
    assert config.domains == ["example.com", "research.example.com"]
    assert config.c2s.port == 15222 and config.modules["offline"].max_messages == 20
    assert config.base_dir == str(tmp_path)


@pytest.mark.parametrize("text, key, reason", [
    ("[c2s]\nport = 70000\n", "c2s.port", "above the maximum"),
    ("[c2s]\nport = 'x'\n", "c2s.port", "expected an integer"),
    ("[c2s]\nprot = 1\n", "c2s.prot", "unknown option"),
    ("[nonsense]\n", "nonsense", "unknown section"),
    ("[server]\nlog_level = 'loud'\n", "server.log_level", "not one of"),
    ("[[hosts]]\ndomain = 'Example.com'\n", "hosts[0].domain", "normalised form"),
    ("[[hosts]]\ndomain = 'a b'\n", "hosts[0].domain", "not a valid domain"),
    ("[[hosts]]\ndomain = 'x.org'\n[[hosts]]\ndomain = 'x.org'\n", "hosts[1].domain", "listed twice"),
    ("[c2s]\ninterfaces = ['0.0.0.0']\nrequire_tls = false\n", "c2s.require_tls", "loopback"),
    ("[modules.offline]\nmax_messages = 0\n", "modules.offline.max_messages", "below the minimum"),
    ("[modules.nope]\n", "modules.nope", "unknown module"),
    ("[tls]\ncert_path = 'a.pem'\n", "tls.key_path", "set both"),
    ("[[components]]\ndomain = 'bot.x.org'\nsecret = 'short'\n", "components[0].secret", "at least 8"),
    ("[c2s\n", "(syntax)", "not valid TOML"),
    ("[server]\nworkers = 0\n", "server.workers", "below the minimum"),
])
def test_mistakes_are_reported_with_file_key_and_reason(tmp_path, text, key, reason):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, module_options())
    assert exc.value.key == key
    assert reason in exc.value.reason
    assert str(path) in str(exc.value)


def test_plaintext_is_allowed_only_on_loopback(tmp_path):
    config = load_config(write(tmp_path, "[c2s]\ninterfaces = ['127.0.0.1', '::1']\nrequire_tls = false\n"),
                         module_options())
    assert not config.c2s.require_tls


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.toml", module_options())
    assert "cannot read" in exc.value.reason


def test_configuration_reference_is_in_sync_with_the_code():
    expected = render(module_options())
    actual = (ROOT / "docs" / "configuration.md").read_text()
    assert actual == expected, "run: python -m stockade.config.docs > docs/configuration.md"


def test_modules_can_be_disabled_but_not_the_core_ones(tmp_path):
    config = load_config(write(tmp_path, "[server]\ndisabled_modules = ['mam', 'carbons']\n"), module_options())
    assert config.server.disabled_modules == ["mam", "carbons"]
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, "[server]\ndisabled_modules = ['roster']\n"), module_options())
    assert "cannot be disabled" in exc.value.reason


def test_an_unknown_disabled_module_stops_startup(tmp_path):
    from stockade.testing.server import RunningServer
    with pytest.raises(ConfigError) as exc:
        RunningServer(["example.com"], config={"server": {"disabled_modules": ["nonsense"]}}).start()
    assert "unknown module" in exc.value.reason
