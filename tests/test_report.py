"""`attninf report`: the page renders in headless Chromium with every image,
and shows the numbers of the manifests and excerpts of the corpus."""
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from attninf.cli import main
from attninf.pipelines.select import SelectConfig, run_select

from helpers import make_scored_corpus

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_report_renders_with_images(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus, scores = make_scored_corpus(tmp_path, files=3, rows=50)
    rng = np.random.default_rng(0)
    for p in scores.rglob("*.parquet"):  # as `score --save-token-stats` leaves them
        t = pq.read_table(p)
        for c in ("top1_share", "score_first_half", "score_second_half"):
            t = t.append_column(c, pa.array(rng.random(len(t))))
        pq.write_table(t, p)
    m = run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel"), frac=0.2))
    res = CliRunner().invoke(main, ["report", str(scores), "--selected", str(tmp_path / "sel"),
                                    "--out", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    page = tmp_path / "report" / "index.html"
    text = page.read_text()
    for png in ("scores.png", "lengths.png", "repetition.png", "token_share.png"):
        assert (tmp_path / "report" / png).read_bytes()[:4] == b"\x89PNG"
        assert f"src='{png}'" in text
    for g, v in m["groups"].items():  # the selection's numbers are on the page
        assert f"<td>{g}</td>" in text and f"{v['threshold']:.5f}" in text
    assert "text of d0-" in text  # excerpts come from the corpus
    body = text.split("<table id=selected>")[1].split("<tbody>")[1].split("</tbody>")[0]
    assert body.count("<tr>") == m["selected"]  # every selected document listed, best first
    scores_listed = [float(r.split("</td><td>")[1]) for r in body.split("<tr>")[1:]]
    assert scores_listed == sorted(scores_listed, reverse=True)
    assert "How to read this page" in text and "{&quot;" not in text  # settings as a table, not raw JSON
    assert "Diagnostics per domain" in text and "median top-1% share" in text
    if CHROMIUM is None:
        pytest.skip("no Chromium here (make test installs it)")
    for width in (1280, 420):  # a desktop window and a narrow one
        out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                              "--no-first-run", "--disable-background-networking", "--disable-component-update",
                              "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}",
                              "--allow-file-access-from-files", f"--window-size={width},900",
                              "--virtual-time-budget=5000", "--dump-dom", page.as_uri() + "#selftest"],
                             capture_output=True, text=True, timeout=120)
        loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', out.stdout)
        assert loaded, out.stderr[-2000:]
        assert loaded.group(1) == loaded.group(2) == "4"
        assert 'data-errors="0"' in out.stdout, "JavaScript errors on the page"
        assert 'data-sort-ok="yes"' in out.stdout, "the selected table did not sort on a click"
        assert 'data-fits="yes"' in out.stdout, f"the page overflows a {width}px window"


def test_report_without_selection(tmp_path):
    _, scores = make_scored_corpus(tmp_path, files=1, rows=20)
    res = CliRunner().invoke(main, ["report", str(scores), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")])
    assert res.exit_code == 2 and "not a scores directory" in res.output


def test_small_domain_survives_the_plot_sample(tmp_path, monkeypatch):
    """Beyond SAMPLE rows the scatter plot draws a sample; a domain of one
    document used to vanish from it and crash the length plot."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import attninf.scorestats as ss
    from attninf.artifacts import Scores

    monkeypatch.setattr(ss, "SAMPLE", 500)
    monkeypatch.setattr(ss, "BATCH_ROWS", 1000)
    scores = tmp_path / "scores"
    scores.mkdir()
    n = 5000
    rng = np.random.default_rng(0)
    dom = ["big"] * (n - 1) + ["tiny"]
    pq.write_table(pa.table({"id": [f"i{i}" for i in range(n)], "score": rng.random(n), "n_tokens": rng.integers(5, 99, n),
                             "status": ["ok"] * n, "repetition": np.zeros(n), "domain": dom}), scores / "f.parquet")
    (scores / "manifest.json").write_text(json.dumps({"fingerprint": {"model": "x"}}))
    res = CliRunner().invoke(main, ["report", str(scores), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    stats = ss.collect(Scores.read(scores), None, top=1, table_rows=0, sample=500)
    assert len(stats.domains["tiny"].points["score"]) == 1
    assert len(stats.domains["big"].points["score"]) == 500  # round(500 * 4999 / 5000)


def test_null_domain_has_one_name(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    scores = tmp_path / "scores"
    scores.mkdir()
    n = 20
    pq.write_table(pa.table({"id": [f"i{i}" for i in range(n)], "score": [i / n for i in range(n)],
                             "n_tokens": [10] * n, "status": ["ok"] * n, "repetition": [0.0] * n,
                             "domain": pa.array(["web", None] * (n // 2), pa.string())}), scores / "f.parquet")
    (scores / "manifest.json").write_text(json.dumps({"fingerprint": {"model": "x"}}))
    m = run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel"), frac=0.2))
    assert set(m["groups"]) == {"web", "(none)"}
    res = CliRunner().invoke(main, ["report", str(scores), "--selected", str(tmp_path / "sel"), "--out",
                                    str(tmp_path / "r"), "--top", "4"])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r" / "index.html").read_text()
    assert "<td>(none)</td>" in page and "<h3>(none)</h3>" in page and "<td>None</td>" not in page
    assert page.count("<tr><td>top</td>") == 8  # --top reaches the page: 4 per domain


def test_page_shows_paths_relative_to_where_it_was_made(tmp_path, monkeypatch):
    """The page names the scores, corpus and selection as the user sees them
    from the workdir, not as this machine's absolute paths."""
    corpus, scores = make_scored_corpus(tmp_path, files=1, rows=20)
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel")))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["report", str(scores), "--selected", "sel", "--out", "r"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == "report: r/index.html"
    page = (tmp_path / "r" / "index.html").read_text()
    head = page[page.index("<h1>"):page.index("<h2>")]
    assert str(tmp_path) not in page
    assert f"<code>{scores.relative_to(tmp_path)}</code>" in head and "<code>sel</code>" in head
    assert f"<code>{corpus.relative_to(tmp_path)}</code>" in head
