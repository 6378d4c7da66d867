"""`attninf run PIPELINE.yaml`: the whole chain from one file."""
from __future__ import annotations

import click

from ..errors import user_errors
from ._common import say


@click.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a setting of the file, e.g. --set score.max_tokens=1024 --set workdir=out2.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@user_errors
def run(config, sets, quiet) -> None:
    """Run the whole chain from one YAML file: heads -> score -> select -> mix -> report.

    Each stage is skipped when its output is complete and its settings (and
    those of the stages before it) are unchanged; a changed setting redoes
    that stage and the ones after it. An unknown key is an error. See
    configs/demo.yaml.
    """
    from ..runner import Runner, load_pipeline

    cfg = load_pipeline(config, list(sets))
    r = Runner(cfg, say=say, progress=not quiet).run()
    if r["times"]:
        click.echo("stage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in r["times"].items()))
    click.echo(f"report: {r['report']}")
