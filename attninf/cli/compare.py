"""`attninf compare`: proxy trainings, arm against arm, at equal tokens."""
from __future__ import annotations

import click

from ..artifacts import COMPARE_SUMMARY
from ..errors import user_errors
from ..pipelines.compare import CompareConfig
from ._common import say, stage_config, stage_options


@click.command("compare")
@stage_options(CompareConfig, "compare")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def compare(**kw) -> None:
    """Does the selection help on this corpus? Train small proxy models, arm
    against arm, at equal tokens and seeds, and compare held-out loss.

    \b
    Arms: full (the corpus), attninf (+ the selected top --frac, --repeat
    more times), random (+ random documents with the same tokens per
    domain), decay (the selection in the decay phase only). A --heldout-frac
    of each domain is set aside first and never trained on. Takes the
    training options of `attninf train`. Resumable: finished runs are kept.
    Writes OUT/summary.json and OUT/index.html.
    """
    from ..pipelines.compare import describe, run_compare

    cfg, own = stage_config(CompareConfig, "compare", kw)
    summary = run_compare(cfg, progress=not own["quiet"], say=say)
    for line in describe(summary):
        click.echo(line)
    click.echo(f"wrote {cfg.out}/index.html and {cfg.out}/{COMPARE_SUMMARY}")
