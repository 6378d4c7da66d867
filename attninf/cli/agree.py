"""`attninf agree`: how far two scorings of the same corpus agree."""
from __future__ import annotations

import click

from ..errors import user_errors


@click.command("agree")
@click.argument("a", type=click.Path(file_okay=False))
@click.argument("b", type=click.Path(file_okay=False), required=False)
@click.option("--a-column", default="score", show_default=True, help="The column of A's scores files to rank by.")
@click.option("--b-column", default="score", show_default=True,
              help="The column of B's scores files (e.g. score_top10pct of `score --head-fracs`).")
@click.option("--frac", type=float, default=0.2, show_default=True,
              help="The top fraction kept per domain, as `attninf select --frac`.")
@click.option("--show", type=int, default=10, show_default=True, metavar="N",
              help="Print the N rows that moved most between the two rankings (0: none).")
@click.option("--by", type=click.Choice(["domain", "global"]), default="domain", show_default=True,
              help="Rank within each domain (as select does when the scores have one) or over the whole corpus.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Also write OUT/agree.json and OUT/index.html (scatter, overlap per fraction, movers).")
@user_errors
def agree(a, b, a_column, b_column, frac, show, by, out) -> None:
    """How far two scorings of the SAME corpus agree: two score directories
    (two selectors, probe budgets, settings), or two columns of one (B left
    out: `attninf agree scores/ --b-column score_top10pct`).

    \b
    Rows are joined by (scores file, row); directories of different corpora
    (files, row counts, corpus signature, ids read from the same column) are
    refused; a side with a corpus file not scored yet is called unfinished.
    With --by domain both sides must group rows alike. Only rows whose
    status is ok on both sides and whose two values are finite count; the
    others are counted by reason. One line per domain and one for (all):
      n          rows counted
      Spearman   rank correlation of the two scorings (1: the same order,
                 0: unrelated, NaN: one side is constant or n < 2)
      Kendall    tau-b, the same question by pairs: the share of pairs the
                 two order alike minus the share they order oppositely
                 (ties adjusted); lower than Spearman for the same data
      overlap    of A's top --frac, the share B keeps too (as select would
                 keep it: ties by id); two random picks share about --frac
      Jaccard    shared / either's top
      thr A, B   the score at each side's cut
      A@B        where A's last kept row sits in B's ranking (top x%):
                 within --frac B keeps it too; far past it, B's cut would
                 have to move that far down to keep all A keeps
    (all): correlations over every counted row; overlap of the whole
    selections (the union of the domains' tops). Then the rows that moved
    most, by the share of their group ranked above them in A and in B:
    read them with `attninf explain --scores A --id ID`.

    \b
    What to do with it: a Spearman near 1 and an overlap near 1 at your
    --frac mean the cheaper setting selects the same data: use it. A high
    Spearman with a low overlap means the two agree on the whole corpus but
    not at the cut: the choice changes what you train on; measure which
    helps with proxy trainings (`attninf compare --scores` on each). An
    overlap near --frac means they disagree as much as two random picks.
    """
    from ..agree import agree as run_agree, to_json

    res = run_agree(a, b, a_column, b_column, frac=frac, by=by, show=show)
    for line in describe(res):
        click.echo(line)
    if out:
        from pathlib import Path

        from ..agree_page import write_page
        from ..storage import write_json

        write_json(to_json(res), Path(out) / "agree.json")
        write_page(res, Path(out))
        click.echo(f"wrote {out}/agree.json and {out}/index.html")


def describe(res: dict) -> list[str]:
    """The terminal's table and movers."""
    from ..agree_page import fmt

    a, b = res["a"], res["b"]
    top = f"top {fmt(100 * res['frac'], '.3g')}%"
    lines = [f"A: {a['path']} [{a['column']}]   B: {b['path']} [{b['column']}]",
             f"{res['counted']:,} of {res['rows']:,} rows counted; "
             f"ranked {'within each domain' if res['by'] == 'domain' else 'over the whole corpus'}"]
    lines += [f"note: {n}" for n in res["notes"]]
    lines.append(f"{'group':<16}{'n':>11}{'Spearman':>10}{'Kendall':>10}{top + ' overlap':>24}{'Jaccard':>9}"
                 f"{'thr A':>11}{'thr B':>11}{'A@B':>8}")
    for g, v in res["groups"].items():
        ov = f"{fmt(v['overlap'], '.3f')} ({v['shared']:,}/{v['k']:,})"
        lines.append(f"{g[:15]:<16}{v['n']:>11,}{fmt(v['spearman']):>10}{fmt(v['kendall']):>10}{ov:>24}"
                     f"{fmt(v['jaccard'], '.3f'):>9}{fmt(v['threshold_a'], '.5g'):>11}"
                     f"{fmt(v['threshold_b'], '.5g'):>11}{fmt(v['a_cut_in_b'], '.1%'):>8}")
    if res["movers"]:
        lines += ["", f"moved most (top % of its group in A -> in B): {len(res['movers'])}",
                  f"{'top% A':>7}{'top% B':>8}{'score A':>11}{'score B':>11}  {'domain':<12}{'id':<24}file:row"]
        for m in res["movers"]:
            lines.append(f"{fmt(100 * m['top_a'], '.1f'):>7}{fmt(100 * m['top_b'], '.1f'):>8}"
                         f"{fmt(m['score_a'], '.5g'):>11}{fmt(m['score_b'], '.5g'):>11}  {m['domain'][:11]:<12}"
                         f"{str(m['id'])[:23]:<24}{m['file']}:{m['row']}")
    return lines
