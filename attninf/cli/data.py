"""`attninf select|mix|report`: from scores to a training mixture, and a
page that shows what was chosen."""
from __future__ import annotations

import click

from ..errors import user_errors
from ..pipelines.mix import MixConfig
from ..pipelines.select import SelectConfig
from ..report import ReportConfig
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
    from ..artifacts import Scores, corpus_text
    from ..pipelines.select import extremes

    scores = Scores.read(cfg.scores)

    def excerpt(rel: str, row: int) -> str:
        if scores.corpus is None or not (scores.corpus / rel).is_file():
            return "(corpus not available)"
        text = " ".join((corpus_text(scores.corpus, rel, row, scores.column("text")) or "").split())
        return text[:100] + ("…" if len(text) > 100 else "")

    for group, ends in extremes(cfg, n, by_domain).items():
        for label in ("top", "bottom"):
            click.echo(f"\n{group}: {label} {len(ends[label])}")
            click.echo(f"{'score':>9} {'tokens':>7}  {'id':<20} excerpt")
            for score, doc_id, rel, row, ntok in ends[label]:
                click.echo(f"{score:>9.5f} {ntok:>7,}  {str(doc_id)[:20]:<20} {excerpt(rel, row)}")


@click.command("mix")
@stage_options(MixConfig, "mix", arguments=("corpus",))
@user_errors
def mix(**kw) -> None:
    """Write the training mixture: the whole corpus plus the selected documents.

    Every corpus row appears once (source=base) and every selected document
    --repeat more times (source=selected), shuffled by --seed, in Parquet
    shards with columns text, id, domain, source. Load it with
    datasets.load_dataset("parquet", data_dir=OUT), streaming or not.

    --phases stable,decay writes OUT/stable (the corpus alone) and OUT/decay
    (selected documents --decay-weight more times) for a schedule whose decay
    phase reads the selection (MiniCPM); `attninf train --data OUT` switches
    between them at the right steps.
    """
    from ..pipelines.mix import run_mix

    cfg, _ = stage_config(MixConfig, "mix", kw)
    m = run_mix(cfg)
    for phase, part in (m.get("parts") or {"": m}).items():
        _print_mix(part, f"{cfg.out}/{phase}".rstrip("/"), phase)
    if m.get("parts"):
        click.echo(f"phased mixture {cfg.out}: train with `attninf train --data {cfg.out}` and a schedule that "
                   "decays (wsd, wsd-s, power)")


def _print_mix(m: dict, out: str, phase: str) -> None:
    if phase:
        click.echo(f"-- {phase} phase")
    click.echo(f"{'domain':<16}{'base rows':>10}{'+selected':>10}{'tokens':>12}{'weight':>8}{'(corpus)':>10}")
    for d, e in m["domains"].items():
        click.echo(f"{d:<16}{e['base_rows']:>10,}{e['selected_rows']:>10,}"
                   f"{e['base_tokens'] + e['selected_tokens']:>12,}{e['weight']:>8.3f}{e['base_weight']:>10.3f}")
    click.echo(f"wrote {out}: {m['rows']:,} rows in {m['shards']} shard(s); manifest {out}/.manifest.json")


@click.command("report")
@stage_options(ReportConfig, "report", arguments=("scores",))
@user_errors
def report(**kw) -> None:
    """Write an HTML report (with PNG plots) of the scores and the selection:
    score histograms with thresholds, lengths of selected vs all documents,
    score against repetition, top and bottom documents per domain."""
    from ..report import run_report

    cfg, _ = stage_config(ReportConfig, "report", kw)
    click.echo(f"report: {run_report(cfg).resolve()}")
