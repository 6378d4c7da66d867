"""`attninf select`: the top documents of each domain by score."""
from __future__ import annotations

import click

from ..errors import user_errors
from ..pipelines.select import SelectConfig
from ._common import stage_config, stage_options


@click.command("select")
@stage_options(SelectConfig, "select", arguments=("scores",))
@click.option("--show", type=int, default=0, metavar="N",
              help="Print the N best and N worst documents of each domain with a one-line excerpt.")
@user_errors
def select(**kw) -> None:
    """Keep the top documents of each domain by AttentionInfluence score.

    Exact: the cut is found over all scores, partition by partition; ties are
    broken by id. Documents whose status is not ok never qualify. Writes
    OUT/<file>.parquet (row, id, domain, score, n_tokens of the kept rows)
    and OUT/manifest.json (threshold, documents and tokens kept per domain).
    """
    from ..pipelines.select import ranking_line, run_select

    cfg, own = stage_config(SelectConfig, "select", kw)
    m = run_select(cfg)
    click.echo(f"attninf: {ranking_line(m)}", err=m["by"] == "global")
    click.echo(f"{'domain':<16}{'documents':>10}{'eligible':>10}{'kept':>8}{'tokens kept':>13}  threshold")
    for g, v in m["groups"].items():
        thr = "-" if v["threshold"] is None else f"{v['threshold']:.5f}"
        click.echo(f"{g:<16}{v['documents']:>10,}{v['candidates']:>10,}{v['selected']:>8,}"
                   f"{v['tokens_selected']:>13,}  {thr}")
    click.echo(f"wrote {cfg.out} ({m['selected']:,} documents, {m['tokens_selected']:,} tokens)")
    if own["show"] > 0:
        _show(cfg, own["show"], m["by"] == "domain")


def _show(cfg: SelectConfig, n: int, by_domain: bool) -> None:
    """The best and worst documents of each group, to read before opening a browser."""
    from ..artifacts import Scores
    from ..corpus import corpus_text
    from ..pipelines.select import extremes

    scores = Scores.read(cfg.scores)

    def excerpt(rel: str, row: int) -> str:
        if scores.corpus is None or not scores.corpus.has(rel):
            return "(corpus not available)"
        text = " ".join((corpus_text(scores.corpus, rel, row, scores.column("text")) or "").split())
        return text[:100] + ("…" if len(text) > 100 else "")

    for group, ends in extremes(cfg, n, by_domain).items():
        for label in ("top", "bottom"):
            click.echo(f"\n{group}: {label} {len(ends[label])}")
            click.echo(f"{'score':>9} {'tokens':>7}  {'id':<20} excerpt")
            for score, doc_id, rel, row, ntok in ends[label]:
                click.echo(f"{score:>9.5f} {ntok:>7,}  {str(doc_id)[:20]:<20} {excerpt(rel, row)}")
