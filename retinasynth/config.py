"""Config helpers shared by every part: dataclass <-> dict, files (JSON/YAML) and `a.b=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from retinasynth.errors import ConfigError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """The config as JSON-native data (tuples become lists), equal to what config.json stores."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type[T], data: dict | None, where: str = "") -> T:
    """Build a (nested) frozen dataclass from a dict, rejecting unknown keys with the valid ones."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        hint = _did_you_mean(cls, unknown[0], where)
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                          f"valid in {where.rstrip('.') or 'top level'}: {', '.join(fields)}{hint}.")
    kwargs = {}
    for name, value in data.items():
        t = hints[name]
        if dataclasses.is_dataclass(t) and isinstance(value, dict):
            value = from_dict(t, value, f"{where}{name}.")
        else:
            _check_value(f"{where}{name}", t, value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"invalid config for {cls.__name__}: {e}") from None


def setting_paths(cls: type, where: str = "") -> dict[str, list[str]]:
    """Every leaf setting of a (nested) dataclass config: {key: [full dotted paths]}."""
    out: dict[str, list[str]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            for k, paths in setting_paths(t, f"{where}{f.name}.").items():
                out.setdefault(k, []).extend(paths)
        else:
            out.setdefault(f.name, []).append(where + f.name)
    return out


def _did_you_mean(cls: type, key: str, where: str) -> str:
    import difflib

    paths = setting_paths(cls, where)
    if key in paths:
        return f" (did you mean {' or '.join(paths[key])}?)"
    close = difflib.get_close_matches(key, list(paths), n=1)
    return f" (did you mean {paths[close[0]][0]}?)" if close else ""


def qualify_overrides(cls: type, overrides, prefix: str = "") -> list[str]:
    """``KEY=VALUE`` overrides with a bare key made ``SECTION.KEY`` where exactly one section of ``cls`` has
    it (``steps=5`` -> ``train.steps=5``); an ambiguous or unknown bare key is a one-line error naming the
    full keys. Dotted keys pass through unchanged. ``prefix`` is prepended to every key (e.g. 'bench.')."""
    paths = setting_paths(cls)
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.steps=2000.")
        key, value = item.split("=", 1)
        key = key.strip()
        if prefix and key.startswith(prefix):
            key = key[len(prefix):]
        if "." not in key:
            found = paths.get(key, [])
            if len(found) > 1:
                raise ConfigError(f"override {item!r}: {key!r} is a setting of several sections; write one of "
                                  f"{', '.join(found)} (e.g. -o {found[0]}={value.strip()}).")
            if not found:
                raise ConfigError(f"unknown config key {prefix}{key} in override {item!r}"
                                  f"{_did_you_mean(cls, key, prefix)}; `--help` lists the sections.")
            key = found[0]
        out.append(f"{prefix}{key}={value}")
    return out


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _check_value(key: str, hint: Any, value: Any) -> None:
    """Refuse NaN/inf anywhere, and values of the wrong kind for int, float and bool settings."""
    if not _finite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}; give a finite value.")
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if not kinds or not all(k in (int, float, bool, type(None)) for k in kinds):
        return  # strings, containers and the like are validated by the dataclass itself
    ok = ((value is None and type(None) in kinds)
          or (isinstance(value, bool) and bool in kinds)
          or (isinstance(value, int) and not isinstance(value, bool) and (int in kinds or float in kinds))
          or (isinstance(value, float) and float in kinds))
    if not ok:
        names = " or ".join("null" if k is type(None) else {int: "an integer", float: "a number",
                                                              bool: "true/false"}[k] for k in kinds)
        raise ConfigError(f"{key} must be {names}, got {value!r}; fix it in the config file or -o option.")


def load_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found.")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save the config as UTF-8 JSON or YAML.") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror}); check the path and its permissions.") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise ConfigError(f"{path}: cannot parse config ({type(e).__name__}: {e}); use JSON or YAML.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of sections (data, model, train).")
    if not _finite(data):
        raise ConfigError(f"{path}: holds NaN or infinity; give finite numbers.")
    return data


def parse_value(text: str) -> Any:
    """`100` -> 100, `0.5` -> 0.5, `true` -> True, `null` -> None, anything else -> the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` overrides to a nested dict (copy)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.steps=2000.")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section.")
        node[parts[-1]] = parse_value(value.strip())
    return out


def load_config_file(path: str | Path) -> tuple[dict, str | None]:
    """A config file's settings and the profile name it records (None if it names none).

    Besides a plain JSON/YAML config this reads what runs record: a fit run's ``config.json`` and a benchmark's
    ``results.json`` (both hold the resolved config under ``config``), so a past run is rebuilt from its folder.
    """
    data = load_file(path)
    if "format_version" in data and isinstance(data.get("config"), dict):
        data = dict(data["config"])
    profile = data.pop("profile", None)
    if profile is not None and not isinstance(profile, str):
        raise ConfigError(f"{path}: 'profile' must be a name, got {profile!r}.")
    return data, profile


def resolve_profile(kind: str, registry: dict, profile: str | None, recorded: str | None) -> tuple[dict, str]:
    """The base settings and the name to record: an explicit ``profile`` must be in ``registry``; without one, a
    config file's recorded profile (a retired name too: its file then holds every setting) or 'cpu'."""
    from retinasynth.profiles import RETIRED

    if profile is not None and profile not in registry:
        hint = f" ('{profile}' was retired: use {RETIRED[profile]})" if profile in RETIRED else ""
        if profile in RETIRED and RETIRED[profile].endswith(".json"):
            hint = f" ('{profile}' was retired: pass --config {RETIRED[profile]})"
        raise ConfigError(f"unknown {kind} profile {profile!r}{hint}; valid: {', '.join(registry)}.")
    name = profile or recorded or "cpu"
    return dict(registry.get(name, registry["cpu"])), name
