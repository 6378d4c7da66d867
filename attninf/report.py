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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifacts import (NO_DOMAIN, Scores, Selection, Status, combine_digests, corpus_text, corpus_texts, domain_name,
                        score_file_digest, write_text)
from .errors import AttninfError


@dataclass
class ReportConfig:
    scores: str = field(default="scores", metadata={"help": "Scores directory from `attninf score`."})
    out: str = field(default="report", metadata={"help": "Output directory (index.html and its PNGs)."})
    selected: str | None = field(default=None, metadata={"help": "Output of `attninf select`."})
    top: int = field(default=3, metadata={"help": "Top and bottom documents shown per domain."})
    token_maps: int = field(default=2, metadata={
        "help": "Top and bottom documents per domain shown token by token (loads the scoring model; 0: none)."})
    table_rows: int = field(default=2000, metadata={"help": "Selected documents listed in the sortable table."})


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
    if corpus is None or not (corpus / rel).exists():
        return "(corpus not available)"
    try:
        text = corpus_text(corpus, rel, row, text_col) or ""
    except Exception as e:  # noqa: BLE001 - the report still renders without this excerpt
        return f"(unreadable: {e})"
    text = " ".join(text.split())
    return text[:EXCERPT] + ("…" if len(text) > EXCERPT else "")


def _token_maps(scores: Scores, docs: list[tuple[str, int]]) -> tuple[dict, str]:
    """({(file, row): heat-map HTML}, a note) for these corpus rows, with the
    model, heads and windows the scores were made with; none (and why) when
    they are not at hand."""
    from .explain import explain_texts, heat_spans

    heads, corpus = scores.config.get("heads"), scores.corpus
    if not docs:
        return {}, ""
    if not heads or not Path(heads).is_file() or corpus is None or not corpus.is_dir():
        return {}, f"Token maps: off (the heads file {heads} or the corpus {corpus} is not at hand)."
    from .scoring import load_scorer

    c = scores.config
    scorer = load_scorer(c.get("model"), heads, dtype=c.get("dtype", "auto"), device="cpu",
                         max_tokens=c.get("max_tokens"), context_overlap=c.get("context_overlap"),
                         doc_prefix=c.get("doc_prefix"), truncate=bool(c.get("truncate")))
    by_file: dict[str, dict] = {}
    for rel in sorted({rel for rel, _ in docs}):
        by_file[rel] = corpus_texts(corpus, rel, [row for f, row in docs if f == rel], scores.column("text"))
    texts = [by_file[rel][row] or "" for rel, row in docs]
    maps = {doc: heat_spans(ti) for doc, ti in zip(docs, explain_texts(scorer, texts))}
    return maps, ""


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


def _extremes(d: dict, ok: np.ndarray, dom: str, n: int) -> list[tuple[str, int]]:
    """Indices of the n best and n worst ok documents of a domain, as ranked by select."""
    idx = np.nonzero(ok & (d["domain"] == dom))[0]
    order = idx[np.lexsort((d["id"][idx], -d["score"][idx]))]
    return [("top", i) for i in order[:n]] + [("bottom", i) for i in order[::-1][:n]]


def _excerpt_sections(d: dict, ok: np.ndarray, domains: list[str], scores: Scores, top: int,
                      maps: dict) -> str:
    """The top and bottom documents of each domain: excerpts, and the token
    map (expandable) where there is one."""
    e = html.escape
    corpus, text_col = scores.corpus, scores.column("text")
    sections = []
    for dom in domains:
        rows = []
        for label, i in _extremes(d, ok, dom, top):
            doc = (d["file"][i], int(d["row"][i]))
            heat = (f"<details><summary>token map</summary><pre class=heat>{maps[doc]}</pre></details>"
                    if doc in maps else "")
            rows.append(f"<tr><td>{label}</td><td>{d['score'][i]:.4f}</td><td>{int(d['n_tokens'][i])}</td>"
                        f"<td>{d['repetition'][i]:.2f}</td><td><code>{e(str(d['id'][i]))}</code></td>"
                        f"<td class=x>{e(_excerpt(corpus, text_col, *doc))}{heat}</td></tr>")
        sections.append(f"<h3>{e(dom)}</h3><div class=wrap><table><tr><th></th><th>score</th><th>tokens</th>"
                        f"<th>rep.</th><th>id</th><th>excerpt</th></tr>{''.join(rows)}</table></div>")
    return "".join(sections)


def _selected_rows_table(d: dict, chosen: np.ndarray, scores: Scores, limit: int) -> str:
    """The selected documents (the best `limit` by score) as a table that
    sorts on a click of its header and filters as you type."""
    e = html.escape
    idx = np.nonzero(chosen)[0]
    if not len(idx):
        return ""
    idx = idx[np.lexsort((d["id"][idx], -d["score"][idx]))][:limit]
    texts: dict[tuple[str, int], str] = {}
    corpus = scores.corpus
    for rel in sorted(set(d["file"][idx].tolist())):
        if corpus is not None and (corpus / rel).is_file():
            got = corpus_texts(corpus, rel, d["row"][idx][d["file"][idx] == rel], scores.column("text"))
            texts.update({(rel, r): " ".join((t or "").split())[:160] for r, t in got.items()})
    body = "".join(
        f"<tr><td>{e(str(d['domain'][i]))}</td><td>{d['score'][i]:.5f}</td><td>{int(d['n_tokens'][i])}</td>"
        f"<td>{d['repetition'][i]:.2f}</td><td><code>{e(str(d['id'][i]))}</code></td>"
        f"<td class=x>{e(texts.get((d['file'][i], int(d['row'][i])), ''))}</td></tr>" for i in idx)
    more = f" (the best {limit:,} of {int(chosen.sum()):,})" if chosen.sum() > limit else ""
    return (f"<h2>Selected documents{more}</h2><p><input id=filter placeholder='filter: domain, id or text' "
            "size=40> click a column to sort</p><div class=wrap><table id=selected><thead><tr>"
            "<th>domain</th><th data-num>score</th><th data-num>tokens</th><th data-num>rep.</th><th>id</th>"
            f"<th>excerpt</th></tr></thead><tbody>{body}</tbody></table></div>")


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
    m = sel.manifest
    settings = {**{k: v for k, v in m["config"].items() if k not in ("scores", "out")},
                "ranking": f"{m.get('by', '?')}: {m.get('by_why', '')}"}
    set_rows = "".join(f"<tr><td>{e(k)}</td><td>{e('-' if v is None else str(v))}</td></tr>"
                       for k, v in settings.items())
    return (f"<h2>Selection</h2><table class=settings>{set_rows}</table><div class=wrap><table><tr><th>domain</th>"
            "<th>documents</th><th>eligible</th><th>not ok</th><th>too repetitive</th><th>selected</th>"
            f"<th>tokens selected</th><th>tokens</th><th>threshold</th></tr>{rows}</table></div>")


HOW_TO_READ = """<p class=how><b>How to read this page.</b> A document's score is how much its mean
token loss rises, relatively, when the small model's retrieval heads attend uniformly:
(L_masked − L_base) / L_base. High scores mark text whose tokens the model predicts by
retrieving something from earlier in the same document (definitions used later, names that
come back, reasoning that refers back); select keeps the top of each domain. Check three things:
the histograms (a threshold inside a long tail is healthy), the length plot (selection favours
long documents), and the repetition plot (repeated boilerplate scores high for the wrong reason:
exclude it with <code>attninf select --max-repetition</code>). Open a token map to see which
tokens carry a score; <code>attninf explain --scores … --id …</code> shows the same for any
document.</p>"""

SCRIPT = """
(function () {
  var errors = 0;
  window.addEventListener("error", function () { errors += 1; document.body.setAttribute("data-errors", errors); });
  function sortBy(table, col, numeric) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var th = table.tHead.rows[0].cells[col], asc = th.getAttribute("data-dir") !== "asc";
    rows.sort(function (a, b) {
      var x = a.cells[col].textContent, y = b.cells[col].textContent;
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("data-dir"); });
    th.setAttribute("data-dir", asc ? "asc" : "desc");
  }
  var table = document.getElementById("selected");
  if (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () { sortBy(table, col, th.hasAttribute("data-num")); });
    });
    document.getElementById("filter").addEventListener("input", function (ev) {
      var q = ev.target.value.toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        r.style.display = r.textContent.toLowerCase().indexOf(q) >= 0 ? "" : "none";
      });
    });
  }
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
    document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
    document.body.setAttribute("data-errors", errors);
    var fits = document.documentElement.scrollWidth <= window.innerWidth + 1;
    document.body.setAttribute("data-fits", fits ? "yes" : "no");
    if (location.hash === "#selftest" && table) {  // the test suite clicks the score column twice
      var head = table.tHead.rows[0].cells[1], vals = function () {
        return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return parseFloat(r.cells[1].textContent); });
      };
      head.click();
      var up = vals(), upOk = up.every(function (v, i) { return i === 0 || up[i - 1] <= v; });
      head.click();
      var down = vals(), downOk = down.every(function (v, i) { return i === 0 || down[i - 1] >= v; });
      document.body.setAttribute("data-sort-ok", upOk && downOk && up.length > 1 ? "yes" : "no");
    }
  });
})();
"""


def _page(scores: Scores, sel: Selection | None, images: list, excerpts: str, selected_table: str,
          note: str) -> str:
    e = html.escape
    stat_rows = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in scores.summary.items()
                        if k != "failures")
    figs = "".join(f"<figure><img src='{name}' alt='{e(cap)}'><figcaption>{e(cap)}</figcaption></figure>"
                   for name, cap in images)
    from .explain import HEAT_KEY

    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>attninf report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 7px; vertical-align: top; text-align: left; }}
td.x {{ max-width: 700px; font-family: ui-monospace, monospace; font-size: 12px; }}
.wrap {{ overflow-x: auto; max-width: 100%; }}
#selected th {{ cursor: pointer; background: #f4f4f4; }}
#selected th[data-dir=asc]::after {{ content: " ▲"; }} #selected th[data-dir=desc]::after {{ content: " ▼"; }}
pre.heat {{ white-space: pre-wrap; font-size: 12px; line-height: 1.5; max-height: 30em; overflow-y: auto; }}
.key span {{ padding: 0 .4em; }} .how {{ background: #f7f7f2; padding: .7em 1em; border-left: 3px solid #bb9; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ color: #555; font-size: 13px; }}
code {{ word-break: break-all; }}
</style></head>
<body>
<h1>attninf report</h1>
<p>Scores: <code>{e(str(scores.root.resolve()))}</code> · corpus <code>{e(str(scores.corpus))}</code> ·
model fingerprint <code>{e(str(scores.fingerprint.get('model')))}</code>
{'· selection <code>' + e(str(sel.root.resolve())) + '</code>' if sel else ''}</p>
{HOW_TO_READ}
<h2>Scoring</h2><div class=wrap><table>{stat_rows}</table></div>
{_selection_table(sel)}
<h2>Plots</h2>{figs}
<h2>Top and bottom documents per domain</h2>{HEAT_KEY if "token map" in excerpts else ""}<p>{e(note)}</p>{excerpts}
{selected_table}
<script>{SCRIPT}</script>
</body></html>
"""


def run_report(cfg: ReportConfig) -> Path:
    return build_report(cfg.scores, cfg.out, cfg.selected, top=cfg.top, token_maps=cfg.token_maps,
                        table_rows=cfg.table_rows)


def build_report(scores: str | Path, out: str | Path, selected: str | Path | None = None, top: int = 3,
                 token_maps: int = 2, table_rows: int = 2000) -> Path:
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
    chosen = _chosen(sel, d)
    figures = _Figures(out, d, domains, plot_sample(d["domain"], ok, MAX_POINTS), chosen,
                       sel.thresholds() if sel else {})
    docs = [(d["file"][i], int(d["row"][i])) for dom in domains for _, i in _extremes(d, ok, dom, min(top, token_maps))]
    maps, note = _token_maps(sc, docs)
    page = _page(sc, sel, figures.draw_all(), _excerpt_sections(d, ok, domains, sc, top, maps),
                 _selected_rows_table(d, chosen, sc, table_rows), note)
    write_text(page, out / "index.html")
    return out / "index.html"
