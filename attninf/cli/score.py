"""`attninf score`: every document of a corpus gets its score."""
from __future__ import annotations

import sys

import click

from ..errors import user_errors
from ..pipelines.score import ScoreConfig
from ._common import say, stage_config, stage_options


@click.command("score")
@stage_options(ScoreConfig, "score", arguments=("corpus",))
@click.option("--limit", type=int, default=None,
              help="Dry run: score the first N documents here, write nothing, project the full run's time.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@user_errors
def score(**kw) -> None:
    """Give every document of a corpus its AttentionInfluence score.

    CORPUS: a folder, a URL (s3://bucket/corpus) or a glob over either, of
    .parquet, .jsonl, .jsonl.gz, .jsonl.zst (.json.gz, .json.zst) files.
    score = (L_masked - L_base) / L_base: how much the document's mean token
    loss rises when the retrieval heads of heads.json attend uniformly.
    Writes OUT/<same relative path> per input file (.parquet appended to a
    JSON Lines name; rows in input order: id, score, loss_base, loss_masked,
    n_tokens, status, repetition, domain) and OUT/manifest.json; OUT may be a URL. Interrupted? Run the same command again:
    finished files are kept, the rest is scored. Exits 1 if any file failed.
    """
    from ..pipelines.score import dry_run, run_score

    cfg, own = stage_config(ScoreConfig, "score", kw)
    if own["limit"] is not None:
        _dry_run(cfg, own["limit"], dry_run)
        return
    s = run_score(cfg, progress=not own["quiet"], say=say)
    click.echo(f"scored {s['documents']:,} documents ({s['ok']:,} ok, {s['empty']:,} empty, "
               f"{s['too_short']:,} too short), {s['tokens']:,} tokens, in {s['wall_s']:.1f}s "
               f"({s['tokens_per_s']:,.0f} tokens/s, {s['workers'] or 'no'} Dask worker(s)); "
               f"{s['units_scored_now']} unit(s) scored now, {s['files_skipped']} file(s) already done")
    if s["duplicate_ids"]:
        click.echo(f"warning: {s['duplicate_ids']} duplicate or missing id(s) within files", err=True)
    if s["failures"]:
        click.echo(f"{len(s['failures'])} unit(s) or file(s) FAILED (run the command again to redo them):",
                   err=True)
        for rel, err in s["failures"].items():
            click.echo(f"  {rel}: {err}", err=True)
        sys.exit(1)
    click.echo(f"wrote {cfg.out}")


def _dry_run(cfg: ScoreConfig, limit: int, dry_run) -> None:
    r = dry_run(cfg, limit, say)
    click.echo(f"dry run: {r['documents']} documents, {r['tokens']} tokens in {r['seconds']}s "
               f"({r['tokens_per_s']:,.0f} tokens/s); statuses {r['statuses']}")
    click.echo(f"projected for the whole corpus ({r['corpus_documents']:,} documents in {r['units']:,} unit(s), "
               f"{r['workers']} worker(s)): {r['projected_hours']:.2f} h")
