"""`attninf report`: a page that shows what was scored and chosen."""
from __future__ import annotations

import click

from ..errors import user_errors
from ..paths import shown
from ..report import ReportConfig
from ._common import stage_config, stage_options


@click.command("report")
@stage_options(ReportConfig, "report", arguments=("scores",))
@user_errors
def report(**kw) -> None:
    """Write an HTML report (with PNG plots) of the scores and the selection:
    score histograms with thresholds, lengths of selected vs all documents,
    score against repetition, top and bottom documents per domain."""
    from ..report import run_report

    cfg, _ = stage_config(ReportConfig, "report", kw)
    click.echo(f"report: {shown(run_report(cfg))}")
