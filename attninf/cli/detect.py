"""`attninf detect-heads`: find and check a model's retrieval heads."""
from __future__ import annotations

import click

from ..errors import user_errors
from ..heads import DetectConfig
from ._common import say, stage_config, stage_options


@click.command("detect-heads")
@click.option("--out", default="heads.json", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write heads.json.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a layer x head heatmap PNG here  [default: beside --out]")
@stage_options(DetectConfig, "detect")
@click.option("--allow-pickle", is_flag=True, help="Allow .bin (pickle) weights; they can run code.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own Python code.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def detect_heads(**kw) -> None:
    """Find the retrieval heads of a model and check them by ablation.

    Builds synthetic key/value retrieval probes, scores every attention head by
    how often it copies the answer from the context (teacher forcing), keeps
    the top --top-frac of all heads, and reports probe accuracy with no mask,
    with those heads masked (uniform attention) and with as many random heads
    masked. Writes heads.json (scores, selected heads, ablation, model
    fingerprint) and a heatmap PNG.

    Quick CPU run: attninf detect-heads --config configs/quick.yaml
    """
    from pathlib import Path

    from ..heads import run_detect, summary_table

    cfg, own = stage_config(DetectConfig, "detect", kw)
    plot_path = own["plot"] or str(Path(own["out"]).with_suffix(".png"))
    result = run_detect(cfg, own["out"], plot_path, progress=not own["quiet"], say=say,
                        allow_pickle=own["allow_pickle"], trust_remote_code=own["trust_remote_code"])
    click.echo(summary_table(result))
    click.echo(f"\nwrote {own['out']} and {plot_path}")
