"""`attninf agree` against independent references: scipy's spearmanr and
kendalltau (tau-b) for the correlations, a plain sort-everything Python
reference of select's top-frac rule (and `attninf select` itself) for the
overlaps; the refusals, two columns of one directory, the CLI and its page."""
import contextlib
import json
import math
import random
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from scipy import stats

import attninf.agree as ag
from attninf import rankstats
from attninf.agree import agree
from attninf.artifacts import ALL, NO_DOMAIN, Scores, scores_table
from attninf.cli.agree import agree as agree_cmd

FILES = ("a/p0.parquet", "a/p1.parquet", "b/p2.parquet")


def write_dir(root, rows_per_file, values, extra=None, sig=None, row_group_size=None):
    """A scores directory as `attninf score` leaves it: per file, rows of
    (id, status, domain) and the score column from values[file]; extra:
    {column: values per file}."""
    for rel, rows in rows_per_file.items():
        n = len(rows)
        result = {"score": np.array(values[rel], dtype=float), "loss_base": np.ones(n), "loss_masked": np.ones(n),
                  "n_tokens": np.full(n, 7), "status": np.array([r["status"] for r in rows], dtype=object),
                  "repetition": np.zeros(n)}
        t = scores_table(pa.array([r["id"] for r in rows], pa.string()), result,
                         pa.array([r["domain"] for r in rows], pa.string()))
        for col, per_file in (extra or {}).items():
            t = t.append_column(col, pa.array(per_file[rel], pa.float64()))
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, root / rel, row_group_size=row_group_size)
    Scores.write_manifest(root, {"fingerprint": {"model": "x"}, "config": {},
                                 "corpus_files": sig or {rel: [1000, len(r), "sha"] for rel, r in
                                                         rows_per_file.items()}})
    return root


def make_rows(seed=0, sizes=(40, 33, 27), domains=("web", "code", None), not_ok=0.1):
    rng = random.Random(seed)
    return {rel: [{"id": f"x{rng.randrange(10 ** 6):06d}", "domain": rng.choice(domains),
                   "status": "too_short" if rng.random() < not_ok else "ok"} for _ in range(n)]
            for rel, n in zip(FILES, sizes)}


def make_values(rows, seed, levels=6, nan=0.05):
    """Scores with many ties (levels distinct values), some NaN."""
    rng = random.Random(seed)
    return {rel: [float("nan") if rng.random() < nan else float(rng.randrange(levels)) for _ in rs]
            for rel, rs in rows.items()}


def reference(rows, va, vb, frac, by_domain=True):
    """Per group: the counted rows, both value lists, select's top sets (by id, file, row)."""
    out = {}
    for rel, rs in rows.items():
        for i, r in enumerate(rs):
            x, y = va[rel][i], vb[rel][i]
            if r["status"] != "ok" or not (math.isfinite(x) and math.isfinite(y)):
                continue
            g = (NO_DOMAIN if r["domain"] is None else r["domain"]) if by_domain else ALL
            out.setdefault(g, []).append((x, y, r["id"], rel, i))
    return out


def top_set(items, k_of, side):
    ranked = sorted(items, key=lambda t: (-t[side], t[2], t[3], t[4]))
    return {(t[3], t[4]) for t in ranked[:k_of(len(items))]}, ranked


def close(x, want):
    if want is None or (isinstance(want, float) and math.isnan(want)):
        return x is None or (isinstance(x, float) and math.isnan(x))
    return x == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 17, 200, 2500])
@pytest.mark.parametrize("levels", [1, 2, 5, None])
def test_correlations_match_scipy(n, levels):
    rng = np.random.default_rng(n * 10 + (levels or 0))
    x = rng.integers(0, levels, n).astype(float) if levels else rng.normal(size=n)
    y = np.round(x + rng.normal(size=n), 0 if levels else 6)
    for a, b in ((x, y), (y, x), (x, x), (x, -x), (x, np.zeros(n))):
        if n < 2:
            assert math.isnan(rankstats.spearman(a, b)) and math.isnan(rankstats.kendall_tau_b(a, b))
            continue
        with _quiet():
            rho, tau = stats.spearmanr(a, b).statistic, stats.kendalltau(a, b, variant="b").statistic
        assert close(rankstats.spearman(a, b), rho) and close(rankstats.kendall_tau_b(a, b), tau), (a, b)


@contextlib.contextmanager
def _quiet():
    """scipy warns on a constant input; its NaN is what is compared."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_inversions_and_ranks_in_slices(monkeypatch):
    """The merge in slices of block pairs and, past CHUNK, one pair in slices
    of queries; average ranks written CHUNK rows and about CHUNK tied rows at a time."""
    monkeypatch.setattr(rankstats, "CHUNK", 8)
    rng = np.random.default_rng(3)
    for n in (1, 2, 9, 64, 100, 513):
        for levels in (1, 3, 40, 10 ** 6):
            x = rng.integers(0, levels, n).astype(float)
            assert np.array_equal(rankstats.average_ranks(x), stats.rankdata(x))
        y = rng.integers(0, 7, n)
        want = sum(int(y[i] > y[j]) for i in range(n) for j in range(i + 1, n))
        r, m, _ = rankstats.dense_ranks(y)
        assert rankstats.inversions(r, m) == want
        x = rng.integers(0, 4, n).astype(float)
        if n > 2:
            assert close(rankstats.kendall_tau_b(x, y.astype(float)), stats.kendalltau(x, y).statistic)


@pytest.mark.parametrize("by", ["domain", "global"])
def test_agree_per_domain_against_references(tmp_path, monkeypatch, by):
    monkeypatch.setattr(ag, "BATCH", 7)  # A's and B's batches cut across row groups of other sizes
    rows = make_rows()
    va, vb = make_values(rows, 1), make_values(rows, 2)
    a = write_dir(tmp_path / "A", rows, va, row_group_size=5)
    b = write_dir(tmp_path / "B", {rel: [{**r, "status": "ok"} if i % 9 == 0 else r for i, r in enumerate(rs)]
                                   for rel, rs in rows.items()}, vb, row_group_size=11)
    fracs = (0.05, 0.1, 0.2, 0.5, 1.0)
    res = agree(a, b, frac=0.2, by=by, show=5, fracs=fracs)
    ref = reference(rows, va, vb, 0.2, by_domain=by == "domain")
    assert set(res["groups"]) == set(ref) | {ALL}
    for g, items in ref.items():
        x, y = np.array([t[0] for t in items]), np.array([t[1] for t in items])
        got = res["groups"][g]
        assert got["n"] == len(items)
        with _quiet():
            assert close(got["spearman"], stats.spearmanr(x, y).statistic if len(x) > 1 else None)
            assert close(got["kendall"], stats.kendalltau(x, y).statistic if len(x) > 1 else None)
        for f in fracs:
            k_of = lambda n: math.floor(f * n + 0.5)  # noqa: E731
            ta, ra = top_set(items, k_of, 0)
            tb, rb = top_set(items, k_of, 1)
            k, inter = k_of(len(items)), len(ta & tb)
            o = res["overlap_by_frac"][g][str(float(f))]
            assert (o["k"], o["shared"]) == (k, inter)
            assert close(o["overlap"], inter / k if k else None) and close(o["jaccard"], len(ta & tb) / len(ta | tb)
                                                                         if k else None)
            if f == 0.2 and k:
                assert got["threshold_a"] == ra[k - 1][0] and got["threshold_b"] == rb[k - 1][1]
                y = ra[k - 1][1]  # B's value of A's cut row: the share of B above it, ties counted half
                share = (sum(t[1] > y for t in items) + sum(t[1] == y for t in items) / 2) / len(items)
                assert got["a_cut_in_b"] == pytest.approx(share)
    whole = res["groups"][ALL]
    pooled = [t for items in ref.values() for t in items]
    with _quiet():
        assert close(whole["spearman"], stats.spearmanr([t[0] for t in pooled], [t[1] for t in pooled]).statistic)
        assert close(whole["kendall"], stats.kendalltau([t[0] for t in pooled], [t[1] for t in pooled]).statistic)
    k_of = lambda n: math.floor(0.2 * n + 0.5)  # noqa: E731
    sel_a = set().union(*(top_set(items, k_of, 0)[0] for items in ref.values()))
    sel_b = set().union(*(top_set(items, k_of, 1)[0] for items in ref.values()))
    assert (whole["shared"], whole["k"]) == (len(sel_a & sel_b), len(sel_a))
    assert close(whole["jaccard"], len(sel_a & sel_b) / len(sel_a | sel_b))
    # left out, by reason: not ok in A; ok in A, not in B; then NaN in A, in B
    lo = res["left_out"]
    assert res["counted"] + sum(lo.values()) == res["rows"] == sum(len(r) for r in rows.values())
    assert lo["status not ok in A"] == sum(r["status"] != "ok" for rs in rows.values() for r in rs)
    assert lo["status not ok in B (ok in A)"] == 0 and lo["A's value not finite"] > 0
    assert any("rows left out" in n for n in res["notes"])


def test_movers_are_the_largest_rank_moves(tmp_path):
    rows = make_rows(seed=5, not_ok=0.0, domains=("web", "code"))
    rng = random.Random(9)
    va = {rel: [rng.random() for _ in rs] for rel, rs in rows.items()}
    vb = {rel: [v + rng.gauss(0, 0.3) for v in vs] for rel, vs in va.items()}
    res = agree(write_dir(tmp_path / "A", rows, va), write_dir(tmp_path / "B", rows, vb), show=4)
    ref = reference(rows, va, vb, 0.2)
    moves = []
    for g, items in ref.items():
        n = len(items)
        for t in items:  # share of the group ranked above: (rank from the top - 0.5) / n, no ties here
            pa_ = (sum(u[0] > t[0] for u in items) + 0.5) / n
            pb = (sum(u[1] > t[1] for u in items) + 0.5) / n
            moves.append((abs(pa_ - pb), t[3], t[4], t[2], g, pa_, pb))
    moves.sort(key=lambda m: (-m[0], m[1], m[2]))
    assert [(m["file"], m["row"], m["id"], m["domain"]) for m in res["movers"]] == [m[1:5] for m in moves[:4]]
    assert all(m["top_a"] == pytest.approx(w[5]) and m["top_b"] == pytest.approx(w[6])
               for m, w in zip(res["movers"], moves))


def test_top_sets_are_selects(tmp_path):
    """With no row left out, agree's tops are `attninf select`'s selections, ties by id included."""
    from attninf.pipelines.select import SelectConfig, run_select

    rows = make_rows(seed=2, not_ok=0.0, sizes=(60, 45, 30))
    va, vb = make_values(rows, 3, levels=4, nan=0), make_values(rows, 4, levels=4, nan=0)
    a, b = write_dir(tmp_path / "A", rows, va), write_dir(tmp_path / "B", rows, vb)
    picked = []
    for side in (a, b):
        run_select(SelectConfig(scores=str(side), out=str(side) + "-sel", frac=0.3, by="domain"),
                   scheduler="sync")
        picked.append({(rel, int(r)) for rel in FILES for r in
                       pq.read_table(f"{side}-sel/{rel}", columns=["row"])["row"].to_pylist()})
    res = agree(a, b, frac=0.3)
    assert res["groups"][ALL]["k"] == len(picked[0])
    assert res["groups"][ALL]["shared"] == len(picked[0] & picked[1])


def test_small_and_constant_groups(tmp_path):
    rows = {FILES[0]: [{"id": "a", "domain": "one", "status": "ok"}, {"id": "b", "domain": "two", "status": "ok"},
                       {"id": "c", "domain": "two", "status": "ok"}, {"id": "d", "domain": "flat", "status": "ok"},
                       {"id": "e", "domain": "flat", "status": "ok"}, {"id": "f", "domain": "flat", "status": "ok"}]}
    a = write_dir(tmp_path / "A", rows, {FILES[0]: [1.0, 2.0, 3.0, 5.0, 5.0, 5.0]})
    b = write_dir(tmp_path / "B", rows, {FILES[0]: [4.0, 9.0, 1.0, 1.0, 2.0, 3.0]})
    res = agree(a, b, frac=0.5)
    one, two, flat = (res["groups"][g] for g in ("one", "two", "flat"))
    assert one["n"] == 1 and math.isnan(one["spearman"]) and math.isnan(one["kendall"])  # nothing to rank
    assert two["spearman"] == -1.0 and two["kendall"] == -1.0 and two["overlap"] == 0.0
    assert math.isnan(flat["spearman"]) and math.isnan(flat["kendall"])  # A is constant there
    assert flat["k"] == 2 and flat["threshold_a"] == 5.0  # the tie at 5.0 broken by id: d, e
    assert flat["shared"] == 1  # B's top 2 of three: f (3.0), e (2.0)
    out = tmp_path / "out"
    res = CliRunner().invoke(agree_cmd, [str(a), str(b), "--frac", "0.5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("flat"))
    assert line.split()[2:4] == ["NaN", "NaN"]
    saved = json.loads((out / "agree.json").read_text())  # strict JSON: NaN written as null
    assert saved["groups"]["one"]["spearman"] is None and saved["groups"]["two"]["spearman"] == -1.0


def test_two_columns_of_one_directory(tmp_path):
    rows = make_rows(seed=4)
    va, vb = make_values(rows, 5), make_values(rows, 6)
    root = write_dir(tmp_path / "S", rows, va, extra={"score_top10pct": vb})
    res = agree(root, None, "score", "score_top10pct", frac=0.1)
    ref = reference(rows, va, vb, 0.1)
    for g, items in ref.items():
        with _quiet():
            assert close(res["groups"][g]["spearman"],
                         stats.spearmanr([t[0] for t in items], [t[1] for t in items]).statistic)
    assert res["b"] == {"path": str(root), "column": "score_top10pct"}
    same = agree(root, root, "score", "score", frac=0.1)["groups"][ALL]
    assert same["spearman"] == 1.0 and same["overlap"] == 1.0


def _refused(args):
    res = CliRunner().invoke(agree_cmd, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attninf: error: "), res.stderr
    return lines[0]


def test_refusals_are_one_line(tmp_path):
    rows = make_rows(seed=7)
    va = make_values(rows, 1)
    a = write_dir(tmp_path / "A", rows, va)
    assert "has no column 'score_top3pct'" in _refused([a, "--b-column", "score_top3pct"])
    fewer = {rel: rs[:-1] if rel == FILES[1] else rs for rel, rs in rows.items()}
    b = write_dir(tmp_path / "B", fewer, {rel: v[:len(fewer[rel])] for rel, v in va.items()},
                  sig={rel: [1000, len(r), "sha"] for rel, r in rows.items()})
    assert f"{FILES[1]} has 33 rows in A and 32 in B" in _refused([a, b])
    c = write_dir(tmp_path / "C", rows, va, sig={rel: [1001, len(r), "sha"] for rel, r in rows.items()})
    assert "were scored from different corpora" in _refused([a, c])
    d = write_dir(tmp_path / "D", {rel: rs for rel, rs in rows.items() if rel != FILES[2]}, va)
    assert "not scorings of the same corpus" in _refused([a, d])
    other = {rel: [{**r, "id": r["id"] + "!"} if i == 3 else r for i, r in enumerate(rs)] for rel, rs in rows.items()}
    e = write_dir(tmp_path / "E", other, va)
    assert f"{FILES[0]} row 3 has id" in _refused([a, e])
    moved = {rel: [{**r, "domain": "elsewhere"} if i == 5 else r for i, r in enumerate(rs)]
             for rel, rs in rows.items()}
    assert "grouped differently" in _refused([a, write_dir(tmp_path / "F", moved, va)])
    assert "--frac must be in [0, 1]" in _refused([a, "--frac", "2"])


def test_cli_table_and_page(tmp_path):
    rows = make_rows(seed=8, sizes=(300, 200, 100))
    va, vb = make_values(rows, 1, levels=50), make_values(rows, 2, levels=50)
    a, b = write_dir(tmp_path / "A", rows, va), write_dir(tmp_path / "B", rows, vb)
    out = tmp_path / "page"
    res = CliRunner().invoke(agree_cmd, [str(a), str(b), "--show", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith(f"A: {a} [score]") and "Spearman" in res.output and "top 20% overlap" in res.output
    assert [ln.split()[0] for ln in lines if ln.split() and ln.split()[0] in ("code", "web", NO_DOMAIN, ALL)] == \
        [NO_DOMAIN, "code", "web", ALL]
    saved = json.loads((out / "agree.json").read_text())
    assert len(saved["movers"]) == 3 and all(m["id"] in res.output for m in saved["movers"])
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and saved["movers"][0]["id"] in page
    assert "<img" in page and 'src="' not in page.replace('src="data:', "")  # nothing outside the file
    assert "Kendall" in CliRunner().invoke(agree_cmd, ["--help"]).output


def test_unfinished_scores_and_other_settings(tmp_path):
    """A side whose run has not written a file of its corpus yet is called
    unfinished, not another corpus; two runs of one corpus with another
    --domain-from (by global) or another --id-column are compared, joined by row."""
    import json

    rows = make_rows(seed=8)
    va = make_values(rows, 2)
    a = write_dir(tmp_path / "A", rows, va)
    part = write_dir(tmp_path / "P", {rel: rs for rel, rs in rows.items() if rel != FILES[2]}, va,
                     sig={rel: [1000, len(r), "sha"] for rel, r in rows.items()})
    assert "B's scores" in _refused([a, part]) and "not finished" in _refused([a, part])
    nodomain = {rel: [{**r, "domain": None} for r in rs] for rel, rs in rows.items()}
    g = write_dir(tmp_path / "G", nodomain, va)
    res = CliRunner().invoke(agree_cmd, [str(a), str(g), "--by", "global"])
    assert res.exit_code == 0, res.output
    assert "grouped differently" in _refused([a, g])  # per domain they are not comparable
    other_ids = {rel: [{**r, "id": f"{rel}:{i}"} for i, r in enumerate(rs)] for rel, rs in rows.items()}
    h = write_dir(tmp_path / "H", other_ids, va)
    assert "has id" in _refused([a, h])  # the same id column, other ids: another corpus
    man = json.loads((h / "manifest.json").read_text())
    (h / "manifest.json").write_text(json.dumps({**man, "config": {"id_column": "doc_id"}}))
    res = CliRunner().invoke(agree_cmd, [str(a), str(h)])
    assert res.exit_code == 0, res.output
