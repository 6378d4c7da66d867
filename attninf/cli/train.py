"""`attninf train`: pretrain a small model on a mixture."""
from __future__ import annotations

import click

from ..errors import user_errors
from ..train import TrainConfig
from ._common import say, stage_config, stage_options


@click.command("train")
@stage_options(TrainConfig, "train")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def train(**kw) -> None:
    """Pretrain a small Llama-style model on a mixed dataset with a WSD-family schedule.

    Streams the shards, packs tokens into --seq-len sequences, AdamW with
    gradient clipping, bf16 autocast where the CPU runs it fast. Checkpoints
    (Hugging Face format) under OUT/checkpoints; run the same command after
    a kill to resume with the same data order. Writes OUT/log.csv and
    OUT/loss.png.
    """
    from ..train import train as run_train

    cfg, own = stage_config(TrainConfig, "train", kw)
    r = run_train(cfg, progress=not own["quiet"], say=say)
    click.echo(f"trained to step {r['step']} at {r['tokens_per_s']:,.0f} tokens/s; log {cfg.out}/log.csv")
    for d, v in (r.get("eval_loss") or {}).items():
        click.echo(f"eval loss {d}: {v:.4f}")
