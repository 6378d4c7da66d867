"""Stage configs: one dataclass per stage is the single source of its
options, their defaults and help. The click options of a command and the
YAML loader are both built from it, and the resolved config is written back
next to the outputs.

Field metadata that the builders read:

    help          the option's help text (the default is appended)
    choices       allowed values (a click.Choice)
    flag          the option name when it is not --<field-name>
    default_help  how to show a default computed at run time
    envvar        an environment variable that sets it
    metavar       what the option's value looks like
    cli=False     not a command-line option (still a YAML key)

A pipeline YAML holds shared keys at the top (model, dtype, device, ...) and
one section per stage (`detect:`, `score:`, ...); a stage reads the shared
keys it knows and its own section, which wins. An unknown key is an error
that names the key, its section and the closest known key.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import AttninfError

T = TypeVar("T")

SHARED_KEYS = ("model", "dtype", "device", "seed")
MISSING = dataclasses.MISSING


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


def unknown_key(key: str, where: str, known) -> AttninfError:
    """The one-line error for a key nobody reads, with the closest known one."""
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
    return AttninfError(f"unknown key {key!r} in {where}: {hint}")


def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def from_mapping(cls: type[T], values: dict[str, Any], where: str, fixed: dict[str, Any] | None = None) -> T:
    """cls(**values) after checking every key is a field of cls and none is
    one the caller sets itself (fixed); a bad value is one line, too."""
    fixed = fixed or {}
    names = field_names(cls)
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if key in fixed:
            raise AttninfError(f"{key!r} cannot be set in {where}: the pipeline sets it ({fixed[key]})")
        if key not in names:
            raise unknown_key(key, where, names - set(fixed))
        values = {**values, key: _check_type(key, value, hints[key], where)}
    try:
        return cls(**{**values, **fixed})
    except (TypeError, ValueError) as e:
        raise AttninfError(f"bad settings in {where}: {e}") from e


def stage_values(cls, data: dict[str, Any], section: str, where: str | None = None,
                 fixed: tuple[str, ...] = ()) -> dict[str, Any]:
    """The one rule for what a pipeline file says to a stage, used by `attninf
    run` and by `--config` alike: the top-level shared keys (model, dtype,
    device, seed) that are fields of cls, then the stage's own section, which
    wins. A section key that is not a field is an error; shared keys the
    caller sets itself (fixed) are left to it."""
    names = field_names(cls)
    values = {k: data[k] for k in SHARED_KEYS if k in data and k in names and k not in fixed}
    sect = data.get(section) or {}
    if not isinstance(sect, dict):
        raise AttninfError(f"{where or 'the pipeline file'}: section {section!r} must be a mapping")
    for key in sect:
        if key not in names:
            raise unknown_key(key, f"section {section}" + (f" of {where}" if where else ""), names - set(fixed))
    values.update(sect)
    return values


def load_stage(cls: type[T], path: str | Path | None, section: str, overrides: dict[str, Any]) -> T:
    """cls defaults <- YAML shared keys <- YAML section <- overrides (None = not given)."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(stage_values(cls, read_yaml(path), section, str(path)))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_mapping(cls, values, f"the {section} settings")


_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _float_or_same(v):
    """A number written as text (3e-3, which YAML 1.1 reads as a string) as a float; else v."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    return v


def _check_type(key: str, value, tp, where: str):
    """YAML values are typed already: refuse one of the wrong type before any
    work starts. A float written as 3e-3 (a string to YAML 1.1) is read as one."""
    optional = type(None) in typing.get_args(tp)
    base = _base_type(tp)
    if value is None:
        if optional:
            return value
        raise AttninfError(f"{key!r} in {where} cannot be empty")
    if typing.get_origin(base) is list:
        elem = typing.get_args(base)[0]
        kinds = (int, float) if elem is float else (int,)
        if elem is float and isinstance(value, list):  # 5e-2 is a string to YAML 1.1
            value = [_float_or_same(v) for v in value]
        ok = isinstance(value, list) and all(isinstance(v, kinds) and not isinstance(v, bool) for v in value)
        want = "a list of integers" if elem is int else "a list of numbers"
    elif base is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), _WORDS[float]
    elif base in (int, str, bool):
        ok, want = isinstance(value, base) and (base is bool or not isinstance(value, bool)), _WORDS[base]
    else:
        return value
    if not ok:
        raise AttninfError(f"{key!r} in {where} must be {want}, got {value!r}")
    return value


# ------------------------------------------------------------------ click


def _list_type(elem: type):
    """A comma-separated list of integers (elem int) or numbers (elem float)
    on the command line (YAML: a list)."""
    import click

    class NumberList(click.ParamType):
        name = "N,N,..." if elem is int else "X,X,..."

        def convert(self, value, param, ctx):
            if isinstance(value, list):
                return value
            try:
                return [elem(x) for x in str(value).split(",") if x.strip()]
            except ValueError:
                what = "integers" if elem is int else "numbers"
                self.fail(f"{value!r} is not a comma-separated list of {what}", param, ctx)

    return NumberList()


def _base_type(tp):
    """int for int | None, list[int] for list[int] | None, ..."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _click_type(tp, meta):
    import click

    if meta.get("choices"):
        return click.Choice(list(meta["choices"]))
    if typing.get_origin(tp) is list:
        return _list_type(typing.get_args(tp)[0])
    return {int: int, float: float, str: str}.get(tp, str)


def _help(f: dataclasses.Field, show_default: bool = True) -> str:
    text = f.metadata.get("help", "")
    if not show_default:
        return text
    if "default_help" in f.metadata:
        shown = f.metadata["default_help"]
    elif f.default is MISSING or f.default is None or f.default is False:
        return text
    else:
        shown = ",".join(map(str, f.default)) if isinstance(f.default, list) else f.default
    return f"{text}  [default: {shown}]"


def _help_order(cls) -> list:
    """cls's fields, its own first: a config built on a shared base (TrainConfig
    and CompareConfig on TrainSettings) lists what is particular to it first."""
    own = cls.__dict__.get("__annotations__", {})
    fields = dataclasses.fields(cls)
    return [f for f in fields if f.name in own] + [f for f in fields if f.name not in own]


def config_options(cls, *, arguments: tuple[str, ...] = (), skip: tuple[str, ...] = ()):
    """A decorator adding cls's fields to a click command: `arguments` as
    positional arguments (in that order), every other field as --<name>
    with default None (= not given: the YAML or the dataclass decides)."""
    import click

    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    decorators = []
    for name in arguments:
        f = fields[name]
        decorators.append(click.argument(name, type=_click_type(_base_type(hints[name]), f.metadata)))
    for f in _help_order(cls):
        if f.name in arguments or f.name in skip or not f.metadata.get("cli", True):
            continue
        tp = _base_type(hints[f.name])
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        common = dict(default=None, help=_help(f, tp is not bool), envvar=f.metadata.get("envvar"),
                      metavar=f.metadata.get("metavar"))
        if tp is bool:
            decorators.append(click.option(flag, f.name, is_flag=True, **common))
        else:
            decorators.append(click.option(flag, f.name, type=_click_type(tp, f.metadata), **common))

    def wrap(fn):
        for d in reversed(decorators):
            fn = d(fn)
        return fn

    return wrap


def split_options(cls, kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A command's keyword arguments as (cls's fields, the command's own)."""
    names = field_names(cls)
    return ({k: v for k, v in kwargs.items() if k in names}, {k: v for k, v in kwargs.items() if k not in names})
