"""OUT/index.html of `attninf agree`: the table, the scatter of A's ranking
against B's (a deterministic sample of at most agree.SAMPLE points), the
overlap of the two tops at each fraction per group, and the movers. One
self-contained file: the figures are base64 PNGs."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from .artifacts import ALL
from .storage import write_text


def fmt(x, spec: str = ".4f") -> str:
    """A number for the table: NaN (undefined) and None (not applicable) spelled out."""
    if x is None:
        return "-"
    if isinstance(x, float) and x != x:
        return "NaN"
    return format(x, spec)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _scatter(result: dict) -> str:
    import matplotlib.pyplot as plt

    xa, xb, grp = result["_sample"]
    fig, ax = plt.subplots(figsize=(5.6, 5.2))
    for g in sorted(set(grp.tolist())):
        m = grp == g
        ax.scatter(100 * xa[m], 100 * xb[m], s=4, alpha=0.5, lw=0, label=f"{g} ({int(m.sum()):,})")
    f = 100 * result["frac"]
    ax.axvline(f, color="k", lw=0.7, ls=":")
    ax.axhline(f, color="k", lw=0.7, ls=":")
    ax.plot([0, 100], [0, 100], color="#888", lw=0.7)
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="top % in A (0 = best)", ylabel="top % in B (0 = best)")
    if len(xa):
        ax.legend(fontsize=7, markerscale=3, loc="lower right")
    ax.set_title(f"{len(xa):,} rows drawn at random; dotted: the top {fmt(f, '.3g')}%", fontsize=9)
    return _png(fig)


def _curves(result: dict) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    fr = result["fracs"]
    for g, per in result["overlap_by_frac"].items():
        ys = [per[str(f)]["overlap"] for f in fr]
        ax.plot([100 * f for f in fr], [float("nan") if y is None else y for y in ys], marker="o", ms=3,
                lw=2 if g == ALL else 1, label=g)
    ax.plot([100 * f for f in fr], fr, color="#888", ls="--", lw=0.8, label="two random picks")
    ax.set(xscale="log", xlabel="top % kept", ylabel="|A ∩ B| / |A's top|", ylim=(0, 1.02))
    ax.set_xticks([100 * f for f in fr], [fmt(100 * f, ".3g") for f in fr])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    return _png(fig)


def write_page(result: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    e = html.escape
    groups = result["groups"]
    frac = result["frac"]
    rows = "".join(
        f"<tr><td>{e(g)}</td><td>{v['n']:,}</td><td>{fmt(v['spearman'])}</td><td>{fmt(v['kendall'])}</td>"
        f"<td>{fmt(v['overlap'], '.3f')} ({v['shared']:,} of {v['k']:,})</td><td>{fmt(v['jaccard'], '.3f')}</td>"
        f"<td>{fmt(v['threshold_a'], '.5g')}</td><td>{fmt(v['threshold_b'], '.5g')}</td>"
        f"<td>{fmt(v['a_cut_in_b'], '.1%')}</td><td>{fmt(v['b_cut_in_a'], '.1%')}</td></tr>"
        for g, v in groups.items())
    fr = result["fracs"]
    curve = "".join(f"<tr><td>{e(g)}</td>" + "".join(f"<td>{fmt(per[str(f)]['overlap'], '.3f')}</td>" for f in fr)
                    + "</tr>" for g, per in result["overlap_by_frac"].items())
    movers = "".join(
        f"<tr><td>{e(str(m['id']))}</td><td>{e(m['domain'])}</td><td>{e(m['file'])}</td><td>{m['row']}</td>"
        f"<td>{fmt(m['score_a'], '.5g')}</td><td>{fmt(m['score_b'], '.5g')}</td><td>{fmt(m['top_a'], '.1%')}</td>"
        f"<td>{fmt(m['top_b'], '.1%')}</td></tr>" for m in result["movers"])
    a, b = result["a"], result["b"]
    notes = "".join(f"<p>{e(n)}</p>" for n in result["notes"])
    from .compare_page import page_head

    page = page_head("attninf agree") + f"""
<p><b>A</b>: <code>{e(a['path'])}</code> column <code>{e(a['column'])}</code><br>
<b>B</b>: <code>{e(b['path'])}</code> column <code>{e(b['column'])}</code><br>
{result['counted']:,} of {result['rows']:,} rows counted; ranked {'within each domain' if result['by'] == 'domain'
                                                                   else 'over the whole corpus'}.</p>
{notes}
<p class=how>Spearman and Kendall (tau-b) say how alike the two orderings of a group are: 1 the same, 0 unrelated,
NaN where one side gives every row the same value. The overlap is the share of A's top {fmt(100 * frac, '.3g')}% that
is in B's too (two random picks would share about {fmt(frac, '.2f')}); Jaccard divides by the union instead. The
cut columns place the last row A keeps in B's ranking (and B's in A's): above {fmt(frac, '.0%')} it would be kept by
both. A low overlap with a high Spearman means the two agree on the whole but not at the cut: which selection you
train on matters more than the correlation suggests.</p>
<h2>Agreement, top {fmt(100 * frac, '.3g')}%</h2>
<table><tr><th>group</th><th>rows</th><th>Spearman</th><th>Kendall tau-b</th><th>overlap (shared of A's top)</th>
<th>Jaccard</th><th>threshold A</th><th>threshold B</th><th>A's cut in B</th><th>B's cut in A</th></tr>{rows}</table>
<h2>A's ranking against B's</h2><img alt="scatter of the top % in A against B" src="data:image/png;base64,{_scatter(result)}">
<h2>Overlap of the tops at each fraction</h2>
<img alt="overlap per fraction kept" src="data:image/png;base64,{_curves(result)}">
<table><tr><th>group</th>{''.join(f'<th>top {fmt(100 * f, ".3g")}%</th>' for f in fr)}</tr>{curve}</table>
<h2>The rows that moved most</h2>
<p>By the share of their group ranked above them in A and in B; look at one with
<code>attninf explain --scores A --id ID</code>.</p>
<table><tr><th>id</th><th>domain</th><th>file</th><th>row</th><th>score A</th><th>score B</th><th>top % in A</th>
<th>top % in B</th></tr>{movers}</table>
</body></html>
"""
    path = Path(out) / "index.html"
    write_text(page, path)
    return path
