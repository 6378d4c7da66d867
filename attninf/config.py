"""Stage configs: one dataclass per stage, help text on each field, loaded from
YAML, overridden by CLI flags, written back next to the outputs.

A pipeline YAML holds shared keys at the top (model, dtype, device, ...) and
one section per stage (`detect:`, `score:`, ...); a stage reads the shared
keys it knows and its own section, which wins.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from .errors import AttninfError

T = TypeVar("T")

SHARED_KEYS = ("model", "dtype", "device", "seed")


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise AttninfError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise AttninfError(f"{p} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise AttninfError(f"{p} must hold a mapping of settings, not {type(data).__name__}")
    return data


def load_stage(cls: type[T], path: str | Path | None, section: str, overrides: dict[str, Any]) -> T:
    """cls defaults <- YAML shared keys <- YAML section <- overrides (None = not given)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
        for k in SHARED_KEYS:
            if k in data and k in names:
                values[k] = data[k]
        sect = data.get(section) or {}
        if not isinstance(sect, dict):
            raise AttninfError(f"{path}: section {section!r} must be a mapping")
        unknown = sorted(set(sect) - names)
        if unknown:
            raise AttninfError(f"{path}: unknown {section} setting(s) {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(names))}")
        values.update(sect)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls(**values)
    except TypeError as e:
        raise AttninfError(f"bad {section} settings: {e}") from e
