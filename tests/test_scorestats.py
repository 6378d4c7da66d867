"""The report's statistics, read batch by batch (attninf.scorestats), equal
the same numbers computed over every row at once with plain numpy: exact
histograms, medians, sums, the top and bottom documents, the best selected
ones; a uniform sample of the promised size; and a selection made from other
scores is refused."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import attninf.scorestats as ss
from attninf.artifacts import Scores, Selection
from attninf.errors import AttninfError
from attninf.pipelines.select import SelectConfig, run_select


def write_scores(root, files=3, rows=400, seed=0):
    """Scores files with every awkward case: statuses other than ok, NaN
    scores, null domains, tied scores, token stats with NaN."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for f in range(files):
        n = rows + 17 * f
        score = np.round(rng.normal(0.05, 0.02, n), 3)  # rounded: many ties
        status = rng.choice(["ok"] * 8 + ["empty", "too_short"], n)
        score[status != "ok"] = np.nan
        domain = rng.choice(["web", "code", None, "math"], n, p=[0.5, 0.3, 0.15, 0.05])
        share = rng.beta(2, 3, n)
        share[rng.random(n) < 0.05] = np.nan
        pq.write_table(pa.table({
            "id": [f"f{f}-{i:05d}" for i in rng.permutation(n)], "score": pa.array(score, from_pandas=True),
            "loss_base": np.ones(n), "loss_masked": np.ones(n), "n_tokens": rng.integers(1, 3000, n),
            "status": status, "repetition": rng.random(n), "domain": pa.array(domain.tolist(), pa.string()),
            "top1_share": pa.array(share, from_pandas=True), "score_first_half": rng.normal(0.05, 0.02, n),
            "score_second_half": rng.normal(0.04, 0.02, n)}), root / f"part-{f}.parquet")
    (root / "manifest.json").write_text(json.dumps({"fingerprint": {"model": "x"}}))
    return root


def everything(scores: Scores, sel: Selection | None):
    """Every row at once, with whether it was selected (the reference)."""
    parts = []
    for rel in scores.files():
        t = pq.read_table(scores.root / rel).to_pandas()
        t["file"], t["row"] = rel, np.arange(len(t))
        chosen = set(sel.rows(rel).tolist()) if sel else set()
        t["chosen"] = [r in chosen for r in range(len(t))]
        parts.append(t)
    import pandas as pd

    d = pd.concat(parts, ignore_index=True)
    d["domain"] = d["domain"].fillna("(none)")
    return d[(d["status"] == "ok") & d["score"].notna()]


@pytest.fixture
def scored(tmp_path):
    scores = write_scores(tmp_path / "scores")
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel"), frac=0.2))
    return Scores.read(scores), Selection.read(tmp_path / "sel")


@pytest.mark.parametrize("batch", [37, 1 << 20])
def test_batched_statistics_equal_a_whole_table_reference(scored, monkeypatch, batch):
    monkeypatch.setattr(ss, "BATCH_ROWS", batch)
    scores, sel = scored
    stats = ss.collect(scores, sel, top=5, table_rows=30)
    ref = everything(scores, sel)
    assert sorted(stats.domains) == sorted(ref["domain"].unique())
    assert stats.selected == int(ref["chosen"].sum()) > 0
    for dom, ds in stats.domains.items():
        r = ref[ref["domain"] == dom]
        assert ds.ok == len(r)
        edges = np.linspace(r["score"].min(), r["score"].max(), ss.SCORE_BINS + 1)
        np.testing.assert_allclose(ds.scores["all"].edges, edges)
        np.testing.assert_array_equal(ds.scores["all"].counts, np.histogram(r["score"], edges)[0])
        rs = r[r["chosen"]]
        np.testing.assert_array_equal(ds.scores["selected"].counts, np.histogram(rs["score"], edges)[0])
        assert ds.median_tokens("all") == np.median(r["n_tokens"])
        assert ds.median_tokens("selected") == (np.median(rs["n_tokens"]) if len(rs) else ds.median_tokens("selected"))
        assert ds.tokens["all"] == r["n_tokens"].sum() and ds.tokens["selected"] == rs["n_tokens"].sum()
        shares = r["top1_share"].dropna()
        assert abs(ds.share["all"].median() - np.median(shares)) <= 1 / ss.SHARE_BINS
        assert ds.one_block("all") == pytest.approx((shares >= ss.ONE_BLOCK).mean())
        halves = r[["score_first_half", "score_second_half"]].dropna()
        np.testing.assert_allclose(ds.mean_halves("all"), halves.mean().to_numpy())
        # the top and bottom documents: score descending, then id; the bottom ones worst first
        order = r.sort_values(["score", "id"], ascending=[False, True])
        assert ds.top.id.tolist() == order["id"].head(5).tolist()
        assert ds.bottom.id.tolist() == order["id"][::-1].head(5).tolist()
        assert ds.top.row.tolist() == order["row"].head(5).tolist()
        assert len(ds.points["score"]) == ds.ok  # under SAMPLE rows: every point
    best = ref[ref["chosen"]].sort_values(["score", "id"], ascending=[False, True]).head(30)
    assert stats.best_selected.id.tolist() == best["id"].tolist()


def test_sample_is_bounded_uniform_and_keeps_small_domains(scored, monkeypatch):
    monkeypatch.setattr(ss, "BATCH_ROWS", 50)
    scores, _ = scored
    stats = ss.collect(scores, None, top=0, table_rows=0, sample=100)
    ref = everything(scores, None)
    sizes = ss.sample_sizes(ref["domain"].value_counts().to_dict(), 100)
    assert sizes["math"] >= 1 and sum(sizes.values()) <= 100 + len(sizes)
    for dom, ds in stats.domains.items():
        pts = ds.points["score"]
        assert len(pts) == sizes[dom]
        assert np.isin(pts, ref[ref["domain"] == dom]["score"].to_numpy()).all()  # real rows of that domain
    # uniform: the sample's mean score is within a few standard errors of the domain's
    r, ds = ref[ref["domain"] == "web"], stats.domains["web"]
    se = r["score"].std() / np.sqrt(len(ds.points["score"]))
    assert abs(ds.points["score"].mean() - r["score"].mean()) < 5 * se


def test_a_selection_from_other_scores_is_refused(scored):
    scores, sel = scored
    p = scores.root / "part-1.parquet"
    t = pq.read_table(p)
    s = t["score"].to_numpy(zero_copy_only=False).copy()
    s[np.nanargmax(s)] += 1.0
    pq.write_table(t.set_column(1, "score", pa.array(s, from_pandas=True)), p)
    with pytest.raises(AttninfError, match="changed since .* was selected from them"):
        ss.collect(scores, sel, top=1, table_rows=1)


def test_median_of_counts():
    from collections import Counter

    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 100, 101):
        x = rng.integers(0, 20, n)
        assert ss.median_of_counts(Counter(x.tolist())) == np.median(x)
