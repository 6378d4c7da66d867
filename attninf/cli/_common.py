"""What every command shares: how it talks, and how its config is resolved
(dataclass defaults <- the --config YAML's section <- flags)."""
from __future__ import annotations

from typing import Any, TypeVar

import click

from ..config import config_options, load_stage, split_options

T = TypeVar("T")


def say(msg: str) -> None:
    """Progress and warnings go to stderr; results to stdout."""
    click.echo(f"attninf: {msg}", err=True)


def stage_options(cls, section: str, *, arguments: tuple[str, ...] = (), skip: tuple[str, ...] = ()):
    """cls's fields as the command's arguments and options, plus --config."""
    def wrap(fn):
        fn = config_options(cls, arguments=arguments, skip=skip)(fn)
        return click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                            help=f"YAML file whose `{section}:` section (and top-level model, dtype, device, "
                                 "seed) sets these options; flags override it.")(fn)
    return wrap


def stage_config(cls: type[T], section: str, kwargs: dict[str, Any]) -> tuple[T, dict[str, Any]]:
    """(the resolved config, the command's own options) from a command's kwargs."""
    path = kwargs.pop("config_path", None)
    fields, own = split_options(cls, kwargs)
    return load_stage(cls, path, section, fields), own
