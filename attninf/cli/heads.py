"""`attninf heads`: look into a heads.json from detect-heads."""
from __future__ import annotations

import click

from ..errors import user_errors
from ..stability import BOOTSTRAP, DRAWS, THRESHOLD


@click.group("heads")
def heads() -> None:
    """Look into a heads.json from detect-heads."""


@heads.command("stability")
@click.argument("heads_json", type=click.Path(dir_okay=False))
@click.option("--bootstrap", default=BOOTSTRAP, show_default=True, type=click.IntRange(min=1),
              help="Resamples of the probes, with replacement.")
@click.option("--draws", default=DRAWS, show_default=True, type=click.IntRange(min=1),
              help="Draws of n probes, without replacement, per point of the probe-budget curve.")
@click.option("--threshold", default=THRESHOLD, show_default=True, type=click.FloatRange(0, 1),
              help="Mean Jaccard from which the selected set counts as settled.")
@click.option("--top-frac", type=float, default=None, help="Fraction of heads selected  [default: heads.json's]")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the resamples and draws.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the numbers here as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Redraw the heat map here, unstable heads marked.")
@user_errors
def stability(heads_json, bootstrap, draws, threshold, top_frac, seed, json_out, plot) -> None:
    """How stable the selected heads are, from heads.json's per-probe copy counts
    (no model runs).

    Bootstrap: the probes resampled with replacement --bootstrap times; each
    head's selection frequency, the share of resamples that select exactly the
    set of all probes, and their mean Jaccard with it. Selected heads chosen in
    fewer than 50% of resamples are unstable (dashed in --plot); other heads
    chosen in at least 20% are near misses (orange).

    Probe budget: for n = 2, 4, 8, ... probes (and all of them), --draws
    draws of n probes without replacement: their mean Jaccard with the set of
    all probes and the share identical to it. The set stops changing at the
    smallest n below the number of probes from which the mean Jaccard stays
    >= --threshold for every larger n; if there is none, not with the probes
    at hand.

    A heads.json made before per-probe counts were kept is refused: run
    detect-heads again.
    """
    from ..artifacts import Heads
    from ..stability import counts_from, stability as compute, table
    from ..storage import write_json

    h = Heads.read(heads_json)
    counts = counts_from(h.data, str(h.path))
    st = compute(counts, top_frac if top_frac is not None else h.data.get("top_frac", 0.05), bootstrap=bootstrap,
                 seed=seed, draws=draws, threshold=threshold)
    click.echo(f"heads      {h.path}: {len(h.heads)} heads of {h.data['num_layers']}x{h.data['num_heads']}, "
               f"copy rule {h.data.get('hit')}, {counts.num_probes} probes")
    if sorted(st["selected"]) != sorted(h.heads):
        click.echo(f"note       the top {st['top_frac']:.0%} of these counts is not heads.json's selection "
                   "(another --top-frac, or heads.json was edited)")
    click.echo(table(st))
    if json_out:
        write_json(st, json_out)
        click.echo(f"\nwrote {json_out}")
    if plot:
        from ..heads_plot import plot_heads

        plot_heads({**h.data, "heads": st["selected"], "top_frac": st["top_frac"], "stability": st}, plot)
        click.echo(f"wrote {plot}")
