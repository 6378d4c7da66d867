"""`attninf report`: one HTML page (with PNG plots) that shows what was
scored and selected, before anyone spends GPU-months on it:

* score histogram per domain, with the selection threshold drawn;
* token length of all vs selected documents (the method favours long ones);
* score against repetition (repeated text inflates the score);
* with `score --save-token-stats`, how much of each score its top 1% of
  tokens carry (one copied block scores high for the wrong reason);
* length and token-share diagnostics per domain, as a table;
* the top and bottom documents of each domain, as short excerpts with their
  token maps; the selected documents in a table that sorts and filters;
* the numbers of the scores and selection manifests.

Memory stays bounded however many rows the scores hold: attninf.scorestats
reads them in batches.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifacts import HELDOUT, NO_DOMAIN, CompareSummary, Scores, Selection
from .paths import shown
from .corpus import corpus_text, corpus_texts
from .storage import write_text
from .stores import RemotePath, is_url, location
from .errors import AttninfError
from .report_figures import Figures
from .scorestats import ONE_BLOCK, DomainStats, Kept, collect


@dataclass
class ReportConfig:
    scores: str = field(default="scores", metadata={"help": "Scores directory from `attninf score`."})
    out: str = field(default="report", metadata={"help": "Output directory (index.html and its PNGs)."})
    selected: str | None = field(default=None, metadata={"help": "Output of `attninf select`."})
    top: int = field(default=3, metadata={"help": "Top and bottom documents shown per domain."})
    token_maps: int = field(default=2, metadata={
        "help": "Top and bottom documents per domain shown token by token (loads the scoring model; 0: none)."})
    table_rows: int = field(default=2000, metadata={"help": "Selected documents listed in the sortable table."})
    compare: str | None = field(default=None, metadata={
        "help": "Output of `attninf compare`: its headline numbers and a link on the page."})


EXCERPT = 400


def _excerpt(corpus, text_col: str, rel: str, row: int) -> str:
    if corpus is None or not corpus.has(rel):
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
    if not heads or not Path(heads).is_file() or corpus is None or not corpus.exists():
        return {}, (f"Token maps: off (the heads file {shown(heads)} or the corpus "
                    f"{shown(corpus.spec if corpus else None)} is not at hand).")
    from .scoring import load_scorer

    c = scores.config
    scorer = load_scorer(c.get("model"), heads, dtype=c.get("dtype", "auto"), device="cpu",
                         max_tokens=c.get("max_tokens"), context_overlap=c.get("context_overlap"),
                         doc_prefix=c.get("doc_prefix"), truncate=bool(c.get("truncate")),
                         head_fracs=(c.get("head_fracs") or [])[:1])  # `score`'s set
    by_file: dict[str, dict] = {}
    for rel in sorted({rel for rel, _ in docs}):
        by_file[rel] = corpus_texts(corpus, rel, [row for f, row in docs if f == rel], scores.column("text"))
    texts = [by_file[rel][row] or "" for rel, row in docs]
    maps = {doc: heat_spans(ti) for doc, ti in zip(docs, explain_texts(scorer, texts))}
    return maps, ""


def _doc_row(label: str, k: Kept, i: int, excerpt: str) -> str:
    e = html.escape
    return (f"<tr><td>{label}</td><td>{k.score[i]:.4f}</td><td>{int(k.n_tokens[i])}</td>"
            f"<td>{k.repetition[i]:.2f}</td><td><code>{e(str(k.id[i]))}</code></td><td class=x>{excerpt}</td></tr>")


def _excerpt_sections(domains: list[DomainStats], scores: Scores, maps: dict) -> str:
    """The top and bottom documents of each domain: excerpts, and the token
    map (expandable) where there is one."""
    e = html.escape
    corpus, text_col = scores.corpus, scores.column("text")
    sections = []
    for ds in domains:
        rows = []
        for label, k in (("top", ds.top), ("bottom", ds.bottom)):
            for i in range(len(k)):
                doc = (k.file[i], int(k.row[i]))
                heat = (f"<details><summary>token map</summary><pre class=heat>{maps[doc]}</pre></details>"
                        if doc in maps else "")
                rows.append(_doc_row(label, k, i, e(_excerpt(corpus, text_col, *doc)) + heat))
        sections.append(f"<h3>{e(ds.name)}</h3><div class=wrap><table><tr><th></th><th>score</th><th>tokens</th>"
                        f"<th>rep.</th><th>id</th><th>excerpt</th></tr>{''.join(rows)}</table></div>")
    return "".join(sections)


def _selected_rows_table(best: Kept, selected: int, scores: Scores, limit: int) -> str:
    """The selected documents (the best `limit` by score) as a table that
    sorts on a click of its header and filters as you type."""
    e = html.escape
    if not len(best):
        return ""
    texts: dict[tuple[str, int], str] = {}
    corpus = scores.corpus
    for rel in sorted(set(best.file.tolist())):
        if corpus is not None and corpus.has(rel):
            got = corpus_texts(corpus, rel, best.row[best.file == rel], scores.column("text"))
            texts.update({(rel, r): " ".join((t or "").split())[:160] for r, t in got.items()})
    body = "".join(
        f"<tr><td>{e(str(best.domain[i]))}</td><td>{best.score[i]:.5f}</td><td>{int(best.n_tokens[i])}</td>"
        f"<td>{best.repetition[i]:.2f}</td><td><code>{e(str(best.id[i]))}</code></td>"
        f"<td class=x>{e(texts.get((best.file[i], int(best.row[i])), ''))}</td></tr>" for i in range(len(best)))
    more = f" (the best {limit:,} of {selected:,})" if selected > limit else ""
    return (f"<h2>Selected documents{more}</h2><p><input id=filter placeholder='filter: domain, id or text' "
            "size=40> click a column to sort</p><div class=wrap><table id=selected><thead><tr>"
            "<th>domain</th><th data-num>score</th><th data-num>tokens</th><th data-num>rep.</th><th>id</th>"
            f"<th>excerpt</th></tr></thead><tbody>{body}</tbody></table></div>")


def _pct(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.0%}"


def _num(x: float, fmt: str = ".0f") -> str:
    return "-" if np.isnan(x) else format(x, fmt)


def _diagnostics(domains: list[DomainStats], with_selection: bool) -> str:
    """Length and token-share diagnostics per domain, all vs selected."""
    e = html.escape
    stats = any(ds.has_token_stats for ds in domains)
    kinds = ("all", "selected") if with_selection else ("all",)
    nonfinite = any(ds.non_finite for ds in domains)
    head = ["domain", "documents"] + (["non-finite score (not ranked)"] if nonfinite else [])
    head += ["selected", "tokens selected"] if with_selection else []
    head += [f"median tokens ({k})" for k in kinds]
    if stats:
        head += [f"median top-1% share ({k})" for k in kinds] + [f"score from one block ({k})" for k in kinds]
        head += [f"mean score 1st / 2nd half ({k})" for k in kinds]
    rows = []
    for ds in domains:
        cells = [e(ds.name), f"{ds.ok:,}"] + ([f"{ds.non_finite:,}"] if nonfinite else [])
        if with_selection:
            tok = ds.tokens["selected"] / ds.tokens["all"] if ds.tokens["all"] else float("nan")
            cells += [f"{ds.selected:,} ({_pct(ds.selected / ds.ok if ds.ok else np.nan)})",
                      _pct(tok)]
        cells += [_num(ds.median_tokens(k)) for k in kinds]
        if stats:
            cells += [_num(ds.share[k].median(), ".2f") for k in kinds] + [_pct(ds.one_block(k)) for k in kinds]
            cells += [" / ".join(_num(x, ".4f") for x in ds.mean_halves(k)) for k in kinds]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    why = ("" if stats else " Score with <code>--save-token-stats</code> to see here how much of each score its "
           "top 1% of tokens carry.")
    return (f"<h2>Diagnostics per domain</h2><p>Length: the method favours long documents (the paper: the top "
            f"20% of documents held ~30% of tokens). Share: a document whose top 1% of tokens carry "
            f"{ONE_BLOCK:.0%} or more of its loss rise scores from one block, often copied text.{why}</p>"
            f"<div class=wrap><table><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr>{''.join(rows)}</table></div>")


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
          note: str, diagnostics: str) -> str:
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
<p>Scores: <code>{e(shown(scores.root))}</code> · corpus <code>{e(shown(scores.corpus.spec if scores.corpus else None))}</code> ·
model fingerprint <code>{e(str(scores.fingerprint.get('model')))}</code>
{'· selection <code>' + e(shown(sel.root)) + '</code>' if sel else ''}</p>
{HOW_TO_READ}
<h2>Scoring</h2><div class=wrap><table>{stat_rows}</table></div>
{_selection_table(sel)}
<h2>Plots</h2>{figs}
{diagnostics}
<h2>Top and bottom documents per domain</h2>{HEAT_KEY if "token map" in excerpts else ""}<p>{e(note)}</p>{excerpts}
{selected_table}
<script>{SCRIPT}</script>
</body></html>
"""


def _compare_section(compare: str | Path | None, out: Path) -> str:
    """The comparison's verdicts on held-out loss, and a link to its page."""
    if compare is None:
        return ""
    import os

    e = html.escape
    summary = CompareSummary.read(compare)
    s, key = summary.manifest, HELDOUT
    rows = "".join(f"<tr><td>{e(a)}</td><td>{_num(s['stats'][a][key]['mean'], '.4f')} ± "
                   f"{_num(s['stats'][a][key]['sd'], '.4f')}</td></tr>" for a in s["arms"] if key in s["stats"][a])
    verdicts = "".join(f"<li>{e(arm)} − {e(ref)}: {ms[key]['mean']:+.4f} ({e(ms[key]['verdict'])})</li>"
                       for ref, per in s["paired"].items() for arm, ms in per.items() if key in ms)
    page = summary.page
    link = str(page) if is_url(page) or is_url(out) else os.path.relpath(page.resolve(), out.resolve())
    return (f"<h2>Proxy trainings</h2><p>Held-out loss after equal tokens, {len(s['seeds'])} seed(s) per arm "
            f"(<a href='{e(link)}'>the comparison</a>):</p><table><tr><th>arm</th><th>{e(key)}</th></tr>{rows}"
            f"</table><ul>{verdicts}</ul>")


def run_report(cfg: ReportConfig):
    """Write cfg.out/index.html and its PNGs; returns the page's path. Reads
    the scores in batches (attninf.scorestats): memory does not grow with rows.
    A report on a store is made in a local folder, then uploaded, the page last."""
    import tempfile

    target = location(cfg.out)
    if not isinstance(target, RemotePath):
        return _write_report(cfg, target)
    with tempfile.TemporaryDirectory(prefix=".attninf-report-") as d:
        _write_report(cfg, Path(d))
        for f in sorted(Path(d).iterdir(), key=lambda p: p.name == "index.html"):
            (target / f.name).upload(f)
    return target / "index.html"


def _write_report(cfg: ReportConfig, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    sc = Scores.read(cfg.scores)
    sel = Selection.read(cfg.selected) if cfg.selected is not None else None
    top, table_rows = cfg.top, cfg.table_rows
    if top < 0:
        raise AttninfError(f"report: top must be 0 or more, got {top}")
    stats = collect(sc, sel, top, table_rows)
    domains = list(stats.domains.values()) or [DomainStats(NO_DOMAIN, 0, np.nan, np.nan, 0, 0)]
    out.mkdir(parents=True, exist_ok=True)
    figures = Figures(out, domains, sel.thresholds() if sel else {})
    n_maps = min(top, cfg.token_maps)
    docs = [(k.file[i], int(k.row[i])) for ds in domains for k in (ds.top, ds.bottom) for i in range(min(len(k), n_maps))]
    maps, note = _token_maps(sc, docs)
    page = _page(sc, sel, figures.draw_all(), _excerpt_sections(domains, sc, maps),
                 _selected_rows_table(stats.best_selected, stats.selected, sc, table_rows), note,
                 _diagnostics(domains, sel is not None) + _compare_section(cfg.compare, location(cfg.out)))
    write_text(page, out / "index.html")
    return out / "index.html"
