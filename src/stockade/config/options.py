"""Typed, bounded, documented options: the `option()` field helper and the dataclass loader.

Every configuration section is a frozen dataclass whose fields are declared with `option()`: a
default, help text and bounds. `load_section()` turns a TOML table into that dataclass and refuses
an unknown key, a wrong type or a value out of bounds with a `ConfigError` that names the file,
the key and the reason. The same metadata generates docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration problem, stated as: where (file, key), what is wrong, what is accepted."""

    def __init__(self, where: str, key: str, reason: str) -> None:
        super().__init__(f"{where}: {key}: {reason}")
        self.where, self.key, self.reason = where, key, reason


def option(default: Any = MISSING, *, help: str, min: float | None = None, max: float | None = None,
           choices: tuple[Any, ...] | None = None, check: Callable[[Any], str | None] | None = None,
           factory: Callable[[], Any] | None = None) -> Any:
    """A documented option. `check(value)` returns an error text or None."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}"
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "table"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and type(None) in typing.get_args(tp):
            return None
        return _coerce(value, args[0], where, key)
    if origin in (list, tuple):
        (item_tp, *_rest) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(where, key, f"expected a list, got {type(value).__name__}")
        items = [_coerce(v, item_tp, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(where, key, f"expected a table, got {type(value).__name__}")
        return load_section(tp, value, where, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(where, key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(where, key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(where, key, f"unsupported option type {tp!r}")


def check_value(f: dataclasses.Field, value: Any, where: str, key: str) -> None:
    meta = f.metadata
    if value is None:
        return
    lo, hi, choices, check = meta.get("min"), meta.get("max"), meta.get("choices"), meta.get("check")
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if lo is not None and v < lo:
                raise ConfigError(where, key, f"{v} is below the minimum {lo}")
            if hi is not None and v > hi:
                raise ConfigError(where, key, f"{v} is above the maximum {hi}")
        if choices is not None and v not in choices:
            raise ConfigError(where, key, f"{v!r} is not one of {', '.join(map(repr, choices))}")
    if check is not None:
        problem = check(value)
        if problem:
            raise ConfigError(where, key, problem)


def load_section(cls: type[T], table: dict[str, Any], where: str, prefix: str = "") -> T:
    """Build `cls` from a TOML table, refusing unknown keys, wrong types and out-of-bound values."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}.{name}" if prefix else name
        f = fields.get(name)
        if f is None:
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(where, key, f"unknown option (known here: {known})")
        coerced = _coerce(value, hints[name], where, key)
        check_value(f, coerced, where, key)
        kwargs[name] = coerced
    try:
        return cls(**kwargs)
    except TypeError as exc:   # a required option is missing
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is MISSING
                   and f.default_factory is MISSING]
        raise ConfigError(where, f"{prefix}.{missing[0]}" if prefix and missing else (missing[0] if missing else prefix),
                          "this option is required") from exc


def defaults(cls: type[T]) -> T:
    """The section with every option at its default (a section with required options has none)."""
    return cls()


__all__ = ["ConfigError", "option", "load_section", "defaults", "dataclass"]
