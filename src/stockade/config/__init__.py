"""Configuration: one TOML file, typed and validated; a bad value stops startup naming file and key.

    config = load_config(Path("stockade.toml"), module_options={"offline": offline.Options, ...})

`module_options` maps each module name to its Options dataclass; the `[modules.<name>]` tables
are validated by those classes and stored, as dataclass instances, in `config.modules`.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from .options import ConfigError, load_section, option
from .schema import LIST_SECTIONS, SECTIONS, ServerConfig, _is_loopback

__all__ = ["ConfigError", "ServerConfig", "load_config", "config_from_dict", "option"]


def load_config(path: Path | None, module_options: dict[str, type] | None = None) -> ServerConfig:
    """Read and validate the file at `path` (None: the embedded defaults)."""
    if path is None:
        return config_from_dict({}, "(defaults)", Path.cwd(), module_options)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), "(file)", f"cannot read the configuration file: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "(syntax)", f"not valid TOML: {exc}") from None
    return config_from_dict(data, str(path), path.resolve().parent, module_options)


def config_from_dict(data: dict[str, Any], where: str, base_dir: Path,
                     module_options: dict[str, type] | None = None) -> ServerConfig:
    """Validate an already parsed TOML document."""
    module_options = module_options or {}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(where, key, "expected a table like [" + key + "]")
            kwargs[key] = load_section(SECTIONS[key], value, where, key)
        elif key in LIST_SECTIONS:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(where, key, f"expected a list of tables like [[{key}]]")
            kwargs[key] = [load_section(LIST_SECTIONS[key], v, where, f"{key}[{i}]") for i, v in enumerate(value)]
        elif key == "modules":
            kwargs[key] = _load_modules(value, where, module_options)
        else:
            known = ", ".join(sorted([*SECTIONS, *LIST_SECTIONS, "modules"]))
            raise ConfigError(where, key, f"unknown section (known: {known})")
    modules = kwargs.get("modules", {})
    for name, cls in module_options.items():
        modules.setdefault(name, cls())
    kwargs["modules"] = modules
    config = ServerConfig(**kwargs, source=where, base_dir=str(base_dir))
    _check_whole(config, where)
    return config


def _load_modules(value: Any, where: str, module_options: dict[str, type]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(where, "modules", "expected a table like [modules.offline]")
    out: dict[str, Any] = {}
    for name, table in value.items():
        cls = module_options.get(name)
        if cls is None:
            known = ", ".join(sorted(module_options)) or "none"
            raise ConfigError(where, f"modules.{name}", f"unknown module (known: {known})")
        if not isinstance(table, dict):
            raise ConfigError(where, f"modules.{name}", "expected a table")
        out[name] = load_section(cls, table, where, f"modules.{name}")
    return out


def _check_whole(config: ServerConfig, where: str) -> None:
    """Rules that span several options."""
    if not config.hosts:
        raise ConfigError(where, "hosts", "serve at least one domain ([[hosts]] domain = \"example.com\")")
    seen: set[str] = set()
    for i, host in enumerate(config.hosts):
        if host.domain in seen:
            raise ConfigError(where, f"hosts[{i}].domain", f"{host.domain!r} is listed twice")
        seen.add(host.domain)
    for i, comp in enumerate(config.components):
        if comp.domain in seen:
            raise ConfigError(where, f"components[{i}].domain", f"{comp.domain!r} is already a host or component")
        seen.add(comp.domain)
    if not config.c2s.require_tls and not all(_is_loopback(a) for a in config.c2s.interfaces):
        raise ConfigError(where, "c2s.require_tls",
                          "may be false only when every c2s interface is a loopback address; "
                          "clients on the network must use TLS")
    if bool(config.tls.cert_path) != bool(config.tls.key_path):
        raise ConfigError(where, "tls.key_path" if config.tls.cert_path else "tls.cert_path",
                          "set both cert_path and key_path, or neither for a self-signed certificate")


def resolve_path(config: ServerConfig, value: str) -> Path:
    """A path option, relative to the configuration file's folder."""
    p = Path(value)
    return p if p.is_absolute() else Path(config.base_dir) / p


def replace(config: ServerConfig, **sections: Any) -> ServerConfig:
    """A copy with some sections replaced (tests)."""
    return dataclasses.replace(config, **sections)
