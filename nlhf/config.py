"""Typed, validated configuration: params.yaml (+ a profile overlay) -> dataclasses.

Each pipeline section has a dataclass that lives next to the code that uses it (TRL style: one config per
trainer, defaults documented there). This module only composes them and validates generically:

* unknown keys fail with their full path (``params.yaml: sft.lr_typo: unknown key; known: ...``);
* values of the wrong type fail with their path and the expected type;
* a section's ``__post_init__`` checks ranges and raises ``ValueError("field: message")``; the loader prefixes
  the section path so the message always names the key.

Profiles: ``params.yaml`` holds the default (CPU) profile. Its top-level ``profile`` key (or the environment
variable ``NLHF_PROFILE``) names an overlay ``profiles/<name>.yaml`` that is deep-merged on top.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad value or key in params; the message starts with the key's path."""


def check(cond: bool, field: str, msg: str) -> None:
    """Range check for ``__post_init__``: raise ``ValueError("field: msg")`` when ``cond`` is false."""
    if not cond:
        raise ValueError(f"{field}: {msg}")


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and (not args or all(_type_ok(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def from_dict(cls: type, data: dict | None, path: str) -> Any:
    """Build dataclass ``cls`` from ``data``, validating keys, types and ranges; errors name ``path.key``."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'params'}: expected a mapping, got {type(data).__name__} ({data!r})")
    join = (lambda k: f"{path}.{k}") if path else (lambda k: k)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{join(unknown[0])}: unknown key; known keys: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = join(name)
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, key)
        elif typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            sub = typing.get_args(tp)[1]
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of name -> {sub.__name__}")
            kwargs[name] = {k: from_dict(sub, v, f"{key}.{k}") for k, v in value.items()}
        else:
            if not _type_ok(value, tp):
                tname = getattr(tp, "__name__", str(tp))
                raise ConfigError(f"{key}: expected {tname}, got {type(value).__name__} ({value!r})")
            if tp is float and isinstance(value, int):
                value = float(value)
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except ValueError as e:  # range checks from __post_init__: "field: message"
        raise ConfigError(join(str(e))) from None


def deep_merge(base: dict, over: dict) -> dict:
    """Recursively merge ``over`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_params(params_path: str | os.PathLike = "params.yaml", profile: str | None = None) -> dict:
    """Read params.yaml and merge the profile overlay (``profile`` arg > $NLHF_PROFILE > ``profile:`` key)."""
    params_path = Path(params_path)
    if not params_path.exists():
        raise FileNotFoundError(f"params file not found: {params_path}")
    raw = yaml.safe_load(params_path.read_text()) or {}
    name = profile or os.environ.get("NLHF_PROFILE") or raw.get("profile", "cpu")
    raw["profile"] = name
    overlay = params_path.parent / "profiles" / f"{name}.yaml"
    if name != "cpu":
        if not overlay.exists():
            raise ConfigError(f"profile: unknown profile {name!r}; no file {overlay}")
        raw = deep_merge(raw, yaml.safe_load(overlay.read_text()) or {})
    return raw
