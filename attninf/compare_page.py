"""OUT/index.html of `attninf compare`: the arms side by side, the paired
differences with a plain-words verdict, loss curves, and the selection
diagnostics. Plain HTML and one PNG; works from file://."""
from __future__ import annotations

import html
import math
from pathlib import Path

from .storage import write_text


def page_head(title: str) -> str:
    """The start of a one-file results page (compare's, agree's): its style and its title."""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; font-size: 13px; display: block; overflow-x: auto; }}
td, th {{ border: 1px solid #ccc; padding: 3px 7px; text-align: left; }}
img {{ max-width: 100%; }} .how {{ background: #f7f7f2; padding: .7em 1em; border-left: 3px solid #bb9; }}
</style></head><body>
<h1>{title}</h1>
"""


def _f(x: float, fmt: str = ".4f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _curves(summary: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(("full", "attninf", "random", "decay"), ("#4c72b0", "#dd8452", "#8c8c8c", "#55a868")))
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for name, pts in summary["curves"].items():
        arm = name.rsplit("-s", 1)[0]
        if pts:
            steps, loss = zip(*pts)
            ax.plot(steps, loss, color=colors.get(arm, "black"), alpha=0.7, lw=1,
                    label=arm if name.endswith("-s0") else None)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def write_page(summary: dict, out: Path) -> Path:
    e = html.escape
    arms, stats = summary["arms"], summary["stats"]
    head = "".join(f"<th>{e(a)}</th>" for a in arms)
    rows = "".join(
        f"<tr><td>{e(m)}</td>" + "".join(f"<td>{_f(stats[a][m]['mean'])} ± {_f(stats[a][m]['sd'])}</td>" for a in arms)
        + "</tr>" for m in summary["measures"])
    paired = ""
    for ref, per in summary["paired"].items():
        body = "".join(f"<tr><td>{e(arm)} − {e(ref)}</td><td>{e(m)}</td><td>{_f(d['mean'], '+.4f')}</td>"
                       f"<td>{_f(d['sd'])}</td><td>{e(d['verdict'])}</td></tr>"
                       for arm, ms in per.items() for m, d in ms.items())
        paired += (f"<h3>Against {e(ref)}</h3><table><tr><th>arms</th><th>measure</th><th>mean difference</th>"
                   f"<th>sd</th><th>verdict (paired t-test over seeds)</th></tr>{body}</table>")
    tokens = "".join(f"<tr><td>{e(a)}</td><td>{', '.join(f'{t:,}' for t in summary['tokens'][a])}</td></tr>"
                     for a in arms)
    diag = summary.get("diagnostics") or {}
    drows = "".join(
        f"<tr><td>{e(g)}</td><td>{_f(v.get('document_share'), '.1%')}</td><td>{_f(v.get('token_share'), '.1%')}</td>"
        f"<td>{_f(v.get('median_tokens_all'), '.0f')}</td><td>{_f(v.get('median_tokens_selected'), '.0f')}</td></tr>"
        for g, v in (diag.get("per_domain") or {}).items())
    over = "".join(f"<tr><td><code>{e(repr(r['token']))}</code></td><td>{r['selected']:,}</td><td>{r['all']:,}</td>"
                   f"<td>{r['ratio']:.2f}</td></tr>" for r in diag.get("over_represented") or [])
    _curves(summary, out / "curves.png")
    held = summary["data"].get("heldout", {})
    page = page_head("attninf compare") + f"""
<p class=how>Each arm trains the same model for the same steps and tokens with each seed; every measure is a
loss, lower is better. Held-out documents ({', '.join(f'{e(d)} {n}' for d, n in sorted(held.items()))}) were set
aside before anything was selected. <b>random</b> adds as many tokens of random documents as <b>attninf</b> adds
of selected ones: a gain of attninf over random is the selection's, a gain of both over full is repetition's.
With a few seeds only a large difference is significant; a proxy this small says little about a large model.</p>
{''.join(f"<p>Retrieval probes not measured: {e(n)}</p>" for n in summary.get("notes", []))}
<h2>Measures (mean ± sd over seeds)</h2><table><tr><th>measure</th>{head}</tr>{rows}</table>
<h2>Paired differences</h2>{paired}
<h2>Training loss</h2><img src="curves.png" alt="training loss per arm and seed">
<h2>Tokens trained per seed</h2><table><tr><th>arm</th><th>tokens</th></tr>{tokens}</table>
<h2>The selection</h2><table><tr><th>domain</th><th>documents selected</th><th>tokens selected</th>
<th>median tokens, all</th><th>median tokens, selected</th></tr>{drows}</table>
<h3>Tokens most over-represented in the selected documents</h3>
<table><tr><th>token</th><th>in selected</th><th>in all</th><th>frequency ratio</th></tr>{over}</table>
</body></html>
"""
    write_text(page, out / "index.html")
    return out / "index.html"
