"""Typed, validated configuration: params.yaml (+ a profile overlay) -> dataclasses.

Each pipeline section has a dataclass that lives next to the code that uses it (TRL style: one config per
trainer, defaults documented there). This module only composes them and validates generically:

* unknown keys fail with their full path (``params.yaml: sft.lr_typo: unknown key; known: ...``);
* values of the wrong type fail with their path and the expected type; so do NaN and infinite numbers;
* a key without a code default that is missing, or a section given as ``null``, fails with its path;
* a section's ``__post_init__`` checks ranges and raises ``ValueError("field: message")``; the loader prefixes
  the section path so the message always names the key.

Profiles: ``params.yaml`` holds the default (CPU) profile. Its top-level ``profile`` key names an overlay
``profiles/<name>.yaml`` that is deep-merged on top. That key is the only switch, because it is the one DVC
records: an environment variable ``NLHF_PROFILE`` that names another profile is an error, not an override.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
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


def _non_finite(value: Any) -> bool:
    """True if ``value`` is (or, for a list or mapping, holds) a NaN or infinite float."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _mapping(value: Any, key: str, cls: type) -> dict:
    if not isinstance(value, dict):
        got = "null (or nothing)" if value is None else f"{type(value).__name__} ({value!r})"
        raise ConfigError(f"{key}: expected a mapping of {cls.__name__} keys "
                          f"({', '.join(f.name for f in dataclasses.fields(cls) if f.init)}), got {got}")
    return value


def from_dict(cls: type, data: dict | None, path: str) -> Any:
    """Build dataclass ``cls`` from ``data``, validating keys, types and ranges; errors name ``path.key``.

    ``data=None`` at the top (an empty file) means "all defaults"; a nested section given as ``null`` is an error,
    and so is a missing key that has no code default."""
    data = {} if data is None and not path else data
    data = _mapping(data, path or "params", cls)
    join = (lambda k: f"{path}.{k}") if path else (lambda k: k)
    if hasattr(cls, "config_class"):  # a family of dataclasses, one chosen by a key of the entry (a method's kind)
        cls = cls.config_class(data, join)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"{join(unknown[0])}: unknown key; known keys: {', '.join(sorted(fields))}")
    missing = [n for n, f in fields.items() if _required(f) and n not in data]
    if missing:
        raise ConfigError(f"{join(missing[0])}: required key missing (no default; "
                          f"{cls.__name__} needs {', '.join(n for n, f in fields.items() if _required(f))})")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = join(name)
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, _mapping(value, key, tp), key)
        elif typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            sub = typing.get_args(tp)[1]
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of name -> {sub.__name__}")
            kwargs[name] = {k: from_dict(sub, _mapping(v, f"{key}.{k}", sub), f"{key}.{k}") for k, v in value.items()}
        else:
            if not _type_ok(value, tp):
                tname = getattr(tp, "__name__", str(tp))
                raise ConfigError(f"{key}: expected {tname}, got {type(value).__name__} ({value!r})")
            if _non_finite(value):
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            if tp is float and isinstance(value, int):
                value = float(value)
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except ValueError as e:  # range checks from __post_init__: "field: message"
        raise ConfigError(join(str(e))) from None
    except TypeError as e:  # a comparison in a range check on a value no type hint describes
        raise ConfigError(f"{path or 'params'}: {e}") from None


def deep_merge(base: dict, over: dict) -> dict:
    """Recursively merge ``over`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


PROFILE_ENV = "NLHF_PROFILE"


class YAML12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans and floats. Only true/false (in any case) are booleans, so ``no``,
    ``yes``, ``on`` and ``off`` stay strings: DVC writes params.yaml as YAML 1.2 (``dvc exp run -S`` rewrites the
    file and drops the quotes of ``mixed_precision: "no"``); read as YAML 1.1 that would become ``False``. A float
    needs no dot (``lr: 1e-4`` is 0.0001, as in YAML 1.2 and in DVC; YAML 1.1 reads it as the string "1e-4")."""


_YAML_BOOL, _YAML_FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
YAML12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_YAML_BOOL, _YAML_FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
YAML12Loader.add_implicit_resolver(_YAML_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
# the YAML 1.2 core schema's floats: digits with an optional fraction and exponent, and .inf / .nan
YAML12Loader.add_implicit_resolver(
    _YAML_FLOAT, re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
                            |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def load_yaml(text: str):
    """``text`` parsed as YAML 1.2 (:class:`YAML12Loader`), the way DVC reads and writes params files."""
    return yaml.load(text, Loader=YAML12Loader)


def _read_yaml(path: Path) -> dict:
    """A YAML mapping from ``path``; a syntax error, bad encoding or a non-mapping names the file."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not readable as YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


def read_params(params_path: str | os.PathLike = "params.yaml", profile: str | None = None) -> dict:
    """Read params.yaml and merge the profile overlay (``profile`` argument, else the file's ``profile:`` key).

    ``$NLHF_PROFILE``, when set, must name the same profile: DVC records the file's ``profile`` key (and this
    function's caller's argument is explicit), so a different profile taken from the environment would give
    results that ``dvc.lock`` attributes to another profile."""
    params_path = Path(params_path)
    if not params_path.exists():
        raise FileNotFoundError(f"params file not found: {params_path}")
    raw = _read_yaml(params_path)
    name = profile if profile is not None else raw.get("profile", "cpu")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise ConfigError(f"profile: expected the name of a file profiles/<name>.yaml (letters, digits, - and _), "
                          f"got {name!r}")
    env = os.environ.get(PROFILE_ENV)
    if env and env != name:
        raise ConfigError(f"profile: ${PROFILE_ENV}={env} disagrees with profile {name!r} "
                          f"({'the profile argument' if profile is not None else params_path.name}). The profile "
                          f"is selected in params.yaml only (DVC records it there): set `profile: {env}` in "
                          f"{params_path.name} or run `dvc exp run -S profile={env}`, and unset {PROFILE_ENV}")
    base, overlay = read_params_parts(params_path, name)
    return deep_merge(base, overlay)


def read_params_parts(params_path: str | os.PathLike, name: str) -> tuple[dict, dict]:
    """The params file (its ``profile`` set to ``name``) and profile ``name``'s overlay, unmerged."""
    raw = _read_yaml(Path(params_path))
    raw["profile"] = name
    overlay = profile_file(params_path, name)
    if not overlay.exists():
        raise ConfigError(f"profile: unknown profile {name!r}; no file {overlay}")
    return raw, _read_yaml(overlay)


def profile_file(params_path: str | os.PathLike, name: str) -> Path:
    """The overlay of profile ``name``: ``profiles/<name>.yaml`` beside the params file (``cpu.yaml`` is empty)."""
    return Path(params_path).parent / "profiles" / f"{name}.yaml"


def _leaves(d: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_leaves(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def shadowed_edits(params_path: str | os.PathLike = "params.yaml") -> list[str]:
    """Keys edited in params.yaml since the last commit (what ``dvc exp run -S key=value`` does) that the selected
    profile's overlay sets too, so the edit would be silently ignored; one message per key naming the profile file
    to set it in. Empty outside a git checkout or when params.yaml is not committed yet."""
    import subprocess

    params_path = Path(params_path).resolve()
    try:
        committed = subprocess.run(["git", "show", f"HEAD:./{params_path.name}"], cwd=params_path.parent,
                                   capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    base = load_yaml(committed) or {}
    now = _read_yaml(params_path)
    name = now.get("profile", "cpu")
    overlay_path = profile_file(params_path, name)
    if not isinstance(base, dict) or not overlay_path.exists():
        return []
    before, after = _leaves(base), _leaves(now)
    overlay = _leaves(_read_yaml(overlay_path))
    msgs = []
    for key in sorted(k for k in after if k != "profile" and before.get(k, object()) != after[k]):
        hits = [o for o in overlay if o == key or o.startswith(key + ".") or key.startswith(o + ".")]
        for o in hits:
            msgs.append(f"{key}: params.yaml now sets {after[key]!r}, but profile {name!r} overrides {o} with "
                        f"{overlay[o]!r} ({overlay_path.parent.name}/{overlay_path.name}), so the edit would be "
                        f"ignored; set it in the profile instead: `dvc exp run -S "
                        f"{overlay_path.parent.name}/{overlay_path.name}:{o}=<value>`")
    return msgs

