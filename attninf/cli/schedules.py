"""`attninf schedules show|plot`: look at a learning-rate schedule (WSD, WSD-S,
power, cosine) before a run uses it; formulas in attninf/schedules.py."""
from __future__ import annotations

import click

from ..errors import user_errors
from ..schedules import DECAYS, SCHEDULES, Schedule


def _schedule_options(fn):
    opts = [
        click.option("--schedule", "schedules_", multiple=True, default=["wsd"], show_default=True,
                     type=click.Choice(SCHEDULES),
                     help="Schedule (repeat the flag in `plot` to compare several)."),
        click.option("--total-steps", type=int, default=1000, show_default=True),
        click.option("--warmup-steps", type=int, default=0, show_default=True),
        click.option("--decay-steps", type=int, default=None, help="WSD decay length  [default: 10% of total]"),
        click.option("--decay-frac", type=float, default=None, help="WSD / WSD-S decay as a fraction of the total "
                                                                   "(of each budget for WSD-S)  [default: 0.1]"),
        click.option("--decay", type=click.Choice(DECAYS),
                     default="linear", show_default=True),
        click.option("--min-lr-ratio", type=float, default=0.0, show_default=True),
        click.option("--half-life", type=float, default=None, help="Exponential decay half-life in steps."),
        click.option("--budgets", default=None, help="WSD-S budgets in steps, comma-separated, e.g. 200,500,1000."),
        click.option("--cycle-steps", type=int, default=None, help="Cyclic cosine cycle length."),
        click.option("--lr-max", type=float, default=0.02, show_default=True, help="Power: the LR cap."),
        click.option("--tokens-per-step", type=float, default=1.0, show_default=True,
                     help="Power: tokens per step (n = step x this)."),
        click.option("--batch-size", type=int, default=1, show_default=True, help="Power: batch size (beta)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _schedule_fn(name, budgets, **kw):
    """The step -> multiplier function `attninf train` would use for these settings."""
    try:
        steps = tuple(int(b) for b in budgets.split(",")) if budgets else None
    except ValueError as e:
        raise click.BadParameter(f"{budgets!r}: steps, comma-separated, e.g. 200,500,1000",
                                 param_hint="--budgets") from e
    return Schedule(name=name, budgets=steps, **kw).fn()


@click.group()
def schedules() -> None:
    """See learning-rate schedules before you launch (WSD, WSD-S, power, cosine)."""


@schedules.command("show")
@_schedule_options
@click.option("--csv", "as_csv", is_flag=True, help="Print step,lr_multiplier for every step.")
@user_errors
def schedules_show(schedules_, as_csv, **kw) -> None:
    """Print a schedule's LR multiplier at every step (a table, or CSV)."""
    fn = _schedule_fn(schedules_[0], **kw)
    total = kw["total_steps"]
    if as_csv:
        click.echo("step,lr_multiplier")
        for s in range(total):
            click.echo(f"{s},{fn(s):.6f}")
        return
    marks = sorted({0, kw["warmup_steps"], total - 1} | {round(total * f) for f in (0.25, 0.5, 0.75, 0.9, 0.95)})
    click.echo(f"{'step':>8}  lr_multiplier")
    for s in marks:
        if 0 <= s < total:
            click.echo(f"{s:>8}  {fn(s):.6f}  {'#' * round(40 * fn(s))}")


@schedules.command("plot")
@_schedule_options
@click.option("--out", default="lr.png", show_default=True, type=click.Path(dir_okay=False))
@user_errors
def schedules_plot(schedules_, out, **kw) -> None:
    """Draw one or several schedules against steps into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    steps = range(kw["total_steps"])
    for name in schedules_:
        fn = _schedule_fn(name, **kw)
        ax.plot(list(steps), [fn(s) for s in steps], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("LR multiplier")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    click.echo(f"wrote {out}")
