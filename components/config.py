"""Typed configuration: dataclasses loaded from YAML plus dotted command-line overrides.

Every config class is a dataclass whose fields carry a `help` text in their
metadata. Unknown keys are an error at every level, naming the full dotted
key, so a typo never passes silently. Overrides look like
`mixing.weights.okvqa=2.0` or `templates.templates_per_sample=3`; the value is
parsed as YAML (so `true`, `3`, `[a, b]` and `{x: 1}` work).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, TypeVar

import fsspec
import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


def doc(text: str, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING,
        validate: bool = True) -> Any:
    """A dataclass field with a help text (shown by `iblip <stage> --show-config`).

    validate=False: a nested section that is not checked on loading (its owner's `validate`
    checks it once it has filled in what the section lacks, e.g. the workflow's stage paths).
    """
    kwargs: dict[str, Any] = {"metadata": {"help": text, "validate": validate}}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, validate: bool = True) -> Any:
    """Check/convert a YAML value against a field's annotated type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, validate)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=key, validate=validate)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} ({value!r})")
        return [_coerce(v, args[0] if args else Any, f"{key}[{i}]", validate) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} ({value!r})")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, f"{key} key"): _coerce(v, vt, f"{key}.{k}", validate) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _WORD_BOOLEANS:
            return _WORD_BOOLEANS[value.lower()]
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-5 as a string; whoever writes it means the number
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


# YAML 1.1's other words for booleans, which `_ConfigLoader` leaves strings: still booleans for a boolean
# setting, and text for a string setting (`model.tiny_cache=off` means the word)
_WORD_BOOLEANS = {"yes": True, "on": True, "y": True, "no": False, "off": False, "n": False}


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans: only true and false (in any of YAML's cases)."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def _load_yaml(text):
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


# a number in exponent notation that YAML 1.1 leaves a string: no dot in the mantissa or no sign in the
# exponent ("1e-5", "1.0e5", "5E3")
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "", validate: bool = True) -> T:
    """Build dataclass `cls` from a mapping; unknown keys raise ConfigError naming them.

    validate: call the object's (and its sections') `validate()`; sections declared with
    `doc(..., validate=False)` are never validated here.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key {dotted!r} (known at this level: {', '.join(sorted(fields))})")
        factory = fields[key].default_factory
        if isinstance(value, dict) and factory is not dataclasses.MISSING:
            # a nested section given in part keeps this field's own defaults for the rest
            default = factory()
            if dataclasses.is_dataclass(default):
                value = _deep_merge(to_dict(default), value)
            elif isinstance(default, dict):
                # so does a mapping setting: `mixing.weights.okvqa=3` keeps aokvqa's default weight
                value = {**default, **value}
        kwargs[key] = _coerce(value, hints[key], dotted, validate and fields[key].metadata.get("validate", True))
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required config key(s): {', '.join(f'{prefix}.{m}' if prefix else m for m in missing)}")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if validate and callable(check):
        check()
    return obj


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def to_dict(obj: Any) -> Any:
    """A config object as plain YAML-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one `a.b.c=value` override to a nested mapping in place."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key.path=value")
    path, raw = override.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {override!r} has an empty key")
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML: {exc}") from exc
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def read_yaml(uri: str) -> dict[str, Any]:
    """Read a YAML mapping from a path or fsspec URI."""
    try:
        with fsspec.open(uri, "r", encoding="utf-8") as fh:
            data = _load_yaml(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {uri}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {uri} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {uri} must hold a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | None = None, overrides: list[str] | None = None, base: dict | None = None) -> T:
    """Load `cls` from defaults <- `base` mapping <- YAML file <- dotted overrides.

    Raises:
        ConfigError: unknown key, wrong type, bad YAML or missing file, naming what is wrong.
    """
    data: dict[str, Any] = dict(base or {})
    if path:
        _merge(data, read_yaml(path))
    for override in overrides or []:
        apply_override(data, override)
    return from_dict(cls, data)


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def describe(cls: type, prefix: str = "", defaults: Any = None) -> list[str]:
    """One line per config key: dotted name, type, default and help (for --show-config).

    `defaults` is an instance whose values are shown (a nested section's own defaults can differ
    from its class's, e.g. a schedule tuned for this stage).
    """
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"{name}:  {f.metadata.get('help', '')}")
            nested = getattr(defaults, f.name) if defaults is not None else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            )
            lines.extend(describe(tp, prefix=f"{name}.", defaults=nested))
            continue
        if defaults is not None:
            default = getattr(defaults, f.name)
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        lines.append(f"{name} = {to_dict(default)!r}  [{_type_name(tp)}]  {f.metadata.get('help', '')}")
    return lines
