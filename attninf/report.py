"""`attninf report`: one HTML page (with PNG plots) that shows what was
scored and selected, before anyone spends GPU-months on it:

* score histogram per domain, with the selection threshold drawn;
* token length of all vs selected documents (the method favours long ones);
* score against repetition (repeated text inflates the score);
* the top and bottom documents of each domain, as short excerpts;
* the numbers of the scores and selection manifests.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifacts import (NO_DOMAIN, Scores, Selection, Status, combine_digests, domain_name, score_file_digest,
                        write_text)
from .errors import AttninfError


@dataclass
class ReportConfig:
    scores: str = field(default="scores", metadata={"help": "Scores directory from `attninf score`."})
    out: str = field(default="report", metadata={"help": "Output directory (index.html and its PNGs)."})
    selected: str | None = field(default=None, metadata={"help": "Output of `attninf select`."})
    top: int = field(default=3, metadata={"help": "Top and bottom documents shown per domain."})


MAX_POINTS = 200_000  # rows kept for the plots (a uniform sample beyond this)
EXCERPT = 400


def _load_scores(scores: Scores):
    """Every scores row as columns (numpy), with its file and row."""
    import pyarrow.parquet as pq

    files = [scores.root / rel for rel in scores.files()]
    cols = {"id": [], "score": [], "n_tokens": [], "status": [], "repetition": [], "domain": [], "file": [], "row": []}
    for p in files:
        t = pq.read_table(p)
        n = len(t)
        for c in ("id", "score", "n_tokens", "status", "repetition", "domain"):
            cols[c].extend(t[c].to_pylist() if c in t.column_names else [None] * n)
        cols["file"].extend([p.relative_to(scores.root).as_posix()] * n)
        cols["row"].extend(range(n))
    d = {k: np.array(v, dtype=object) for k, v in cols.items()}
    d["id"] = np.array([str(x) for x in d["id"]], dtype=object)
    d["domain"] = np.array([domain_name(x) for x in d["domain"]], dtype=object)
    d["score"] = np.array([np.nan if x is None else x for x in d["score"]], dtype=float)
    d["repetition"] = np.array([np.nan if x is None else x for x in d["repetition"]], dtype=float)
    d["n_tokens"] = d["n_tokens"].astype(float)
    return d


def _check_selection(sel: Selection, scores: Path, d: dict) -> None:
    """A selection shown over other scores than it was made from would draw
    wrong thresholds and mark wrong documents: refused. Digests the scores
    already loaded (d), no second read."""
    want = sel.manifest.get("scores", {}).get("digest")
    got = combine_digests({f: score_file_digest(d["score"][d["file"] == f]) for f in sel.files})
    if want and got != want:
        raise AttninfError(f"{sel.root} was not selected from the scores now in {scores} (rescored since?): "
                           "run `attninf select` again")


def _chosen(sel: Selection | None, d: dict) -> np.ndarray:
    """Which loaded rows the selection kept."""
    chosen = np.zeros(len(d["score"]), dtype=bool)
    if sel is None:
        return chosen
    key = {(f, r): i for i, (f, r) in enumerate(zip(d["file"], d["row"]))}
    for f in sel.files:
        for r in sel.rows(f).tolist():
            chosen[key[(f, r)]] = True
    return chosen


def _excerpt(corpus: Path | None, text_col: str, rel: str, row: int) -> str:
    import pyarrow.parquet as pq

    if corpus is None or not (corpus / rel).exists():
        return "(corpus not available)"
    try:
        t = pq.read_table(corpus / rel, columns=[text_col]).slice(row, 1)
        text = t[text_col][0].as_py() or ""
    except Exception as e:  # noqa: BLE001 - the report still renders without this excerpt
        return f"(unreadable: {e})"
    text = " ".join(text.split())
    return text[:EXCERPT] + ("…" if len(text) > EXCERPT else "")


def plot_sample(domain: np.ndarray, ok: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ~limit ok rows for the plots, drawn per domain
    in proportion to its size but never fewer than min(its size, limit / 100):
    a small domain is never sampled away."""
    idx = np.nonzero(ok)[0]
    if len(idx) <= limit:
        return idx
    rng = np.random.default_rng(seed)
    floor = max(1, limit // 100)
    parts = []
    for dom in sorted(set(domain[idx].tolist())):
        rows = idx[domain[idx] == dom]
        k = min(len(rows), max(floor, int(round(limit * len(rows) / len(idx)))))
        parts.append(rows if k == len(rows) else rng.choice(rows, k, replace=False))
    return np.sort(np.concatenate(parts))


class _Figures:
    """PNG figures of one panel per domain, drawn from a sample of the rows."""

    def __init__(self, out: Path, d: dict, domains: list[str], plot_idx: np.ndarray, chosen: np.ndarray,
                 thresholds: dict):
        self.out, self.d, self.domains, self.plot_idx = out, d, domains, plot_idx
        self.chosen, self.thresholds = chosen, thresholds
        self.images: list[tuple[str, str]] = []

    def figure(self, name: str, caption: str, draw) -> None:
        """One panel per domain: draw(ax, domain, rows of that domain in the sample)."""
        import matplotlib.pyplot as plt

        cols = min(3, len(self.domains))
        nrows = -(-len(self.domains) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
        for ax, dom in zip(axes.flat, self.domains):
            draw(ax, dom, self.plot_idx[self.d["domain"][self.plot_idx] == dom])
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(self.domains):]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(self.out / name, dpi=100)
        plt.close(fig)
        self.images.append((name, caption))

    def scores(self, ax, dom, m):
        d, chosen = self.d, self.chosen
        ax.hist(d["score"][m], bins=40, color="#4c72b0", alpha=0.85, label="all")
        if chosen.any():
            ax.hist(d["score"][m][chosen[m]], bins=40, color="#dd8452", alpha=0.8, label="selected")
        thr = self.thresholds.get(dom, self.thresholds.get("(all)"))
        if thr is not None:
            ax.axvline(thr, color="crimson", ls="--", lw=1.4, label=f"threshold {thr:.4f}")
        ax.set_title(f"{dom} ({len(m):,} docs)", fontsize=10)
        ax.set_xlabel("score (L_masked − L_base) / L_base")

    def lengths(self, ax, dom, m):
        if len(m) == 0:
            ax.set_title(f"{dom} (no scored document)", fontsize=10)
            return
        lens = np.maximum(self.d["n_tokens"][m], 1)
        bins = np.logspace(0, np.log10(max(lens.max(), 10)), 30)
        ax.hist(lens, bins=bins, alpha=0.6, density=True, color="#4c72b0", label=f"all (median {np.median(lens):.0f})")
        if self.chosen[m].any():
            sl = lens[self.chosen[m]]
            ax.hist(sl, bins=bins, alpha=0.6, density=True, color="#dd8452",
                    label=f"selected (median {np.median(sl):.0f})")
        ax.set_xscale("log")
        ax.set_title(dom, fontsize=10)
        ax.set_xlabel("tokens per document")

    def repetition(self, ax, dom, m):
        d, c = self.d, self.chosen[m]
        ax.scatter(d["repetition"][m], d["score"][m], s=6, alpha=0.5, color="#4c72b0", label="all")
        if c.any():
            ax.scatter(d["repetition"][m][c], d["score"][m][c], s=8, alpha=0.7, color="#dd8452", label="selected")
        ax.set_title(dom, fontsize=10)
        ax.set_xlabel("repetition (repeated word 4-grams)")
        ax.set_ylabel("score")

    def draw_all(self) -> list[tuple[str, str]]:
        self.figure("scores.png", "Score distribution per domain, with the selection threshold", self.scores)
        self.figure("lengths.png", "Document length, all vs selected (the method favours long documents)",
                    self.lengths)
        self.figure("repetition.png", "Score against repetition: repeated text inflates the score "
                                      "(exclude it with `attninf select --max-repetition`)", self.repetition)
        return self.images


def _excerpt_sections(d: dict, ok: np.ndarray, domains: list[str], scores: Scores, top: int) -> str:
    """The top and bottom documents of each domain, as HTML tables of excerpts."""
    e = html.escape
    corpus, text_col = scores.corpus, scores.column("text")
    sections = []
    for dom in domains:
        idx = np.nonzero(ok & (d["domain"] == dom))[0]
        order = idx[np.lexsort((d["id"][idx], -d["score"][idx]))]
        rows = []
        for label, pick in (("top", order[:top]), ("bottom", order[::-1][:top])):
            for i in pick:
                rows.append(f"<tr><td>{label}</td><td>{d['score'][i]:.4f}</td><td>{int(d['n_tokens'][i])}</td>"
                            f"<td>{d['repetition'][i]:.2f}</td><td><code>{e(str(d['id'][i]))}</code></td>"
                            f"<td class=x>{e(_excerpt(corpus, text_col, d['file'][i], int(d['row'][i])))}</td></tr>")
        sections.append(f"<h3>{e(dom)}</h3><table><tr><th></th><th>score</th><th>tokens</th><th>rep.</th>"
                        f"<th>id</th><th>excerpt</th></tr>{''.join(rows)}</table>")
    return "".join(sections)


def _selection_table(sel: Selection | None) -> str:
    if sel is None:
        return ""
    e = html.escape

    def row(g, v):
        thr = "-" if v["threshold"] is None else f"{v['threshold']:.5f}"
        return (f"<tr><td>{e(g)}</td><td>{v['documents']:,}</td><td>{v['candidates']:,}</td>"
                f"<td>{v['not_ok']:,}</td><td>{v['repetitive']:,}</td><td>{v['selected']:,}</td>"
                f"<td>{v['tokens_selected']:,}</td><td>{v['tokens_total']:,}</td><td>{thr}</td></tr>")

    rows = "".join(row(g, v) for g, v in sel.groups.items())
    return (f"<h2>Selection</h2><p>{e(json.dumps(sel.manifest['config']))}</p><table><tr><th>domain</th>"
            "<th>documents</th><th>eligible</th><th>not ok</th><th>too repetitive</th><th>selected</th>"
            f"<th>tokens selected</th><th>tokens</th><th>threshold</th></tr>{rows}</table>")


def _page(scores: Scores, sel: Selection | None, images: list, excerpts: str) -> str:
    e = html.escape
    stat_rows = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in scores.summary.items()
                        if k != "failures")
    figs = "".join(f"<figure><img src='{name}' alt='{e(cap)}'><figcaption>{e(cap)}</figcaption></figure>"
                   for name, cap in images)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>attninf report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 7px; vertical-align: top; text-align: left; }}
td.x {{ max-width: 700px; font-family: ui-monospace, monospace; font-size: 12px; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ color: #555; font-size: 13px; }}
</style></head>
<body>
<h1>attninf report</h1>
<p>Scores: <code>{e(str(scores.root.resolve()))}</code> · corpus <code>{e(str(scores.corpus))}</code> ·
model fingerprint <code>{e(str(scores.fingerprint.get('model')))}</code>
{'· selection <code>' + e(str(sel.root.resolve())) + '</code>' if sel else ''}</p>
<h2>Scoring</h2><table>{stat_rows}</table>
{_selection_table(sel)}
<h2>Plots</h2>{figs}
<h2>Top and bottom documents per domain</h2>{excerpts}
<script>
window.addEventListener("load", function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
}});
</script>
</body></html>
"""


def run_report(cfg: ReportConfig) -> Path:
    return build_report(cfg.scores, cfg.out, cfg.selected, top=cfg.top)


def build_report(scores: str | Path, out: str | Path, selected: str | Path | None = None, top: int = 3) -> Path:
    """Write out/index.html and its PNGs; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    sc, out = Scores.read(scores), Path(out)
    sel = Selection.read(selected) if selected is not None else None
    if top < 0:
        raise AttninfError(f"report: top must be 0 or more, got {top}")
    d = _load_scores(sc)
    if sel is not None:
        _check_selection(sel, sc.root, d)
    ok = (d["status"] == Status.OK.value) & ~np.isnan(d["score"])
    domains = sorted(set(d["domain"][ok].tolist())) or [NO_DOMAIN]
    out.mkdir(parents=True, exist_ok=True)
    figures = _Figures(out, d, domains, plot_sample(d["domain"], ok, MAX_POINTS), _chosen(sel, d),
                       sel.thresholds() if sel else {})
    page = _page(sc, sel, figures.draw_all(), _excerpt_sections(d, ok, domains, sc, top))
    write_text(page, out / "index.html")
    return out / "index.html"
