"""`attninf select` against a plain sort-everything reference: exact counts
per domain, ties broken by id, tiny domains, token budgets, exclusions; with
the histogram refinement forced through many rounds."""
import json
import math
import re
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import attninf.pipelines.select as sel
from attninf.cli import main
from attninf.pipelines.select import SelectConfig, run_select


def make_scores(root: Path, seed=0, files=4, rows=60, tie_values=None, domains=("web", "code", "math")):
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    allrows = []
    for f in range(files):
        data = {"id": [], "score": [], "loss_base": [], "loss_masked": [], "n_tokens": [], "status": [],
                "repetition": [], "domain": []}
        for i in range(rows):
            dom = rng.choice(domains)
            status = rng.choices(["ok", "empty", "too_short"], [0.9, 0.07, 0.03])[0]
            score = (rng.choice(tie_values) if tie_values else rng.gauss(0.1, 0.05)) if status == "ok" else None
            r = {"id": f"f{f}-{rng.randrange(10**6):06d}-{i}", "score": score, "loss_base": 1.0,
                 "loss_masked": 1.0, "n_tokens": rng.randint(1, 500) if status == "ok" else 0,
                 "status": status, "repetition": rng.random() * 0.5, "domain": dom}
            for k in data:
                data[k].append(r[k])
            allrows.append(r)
        pq.write_table(pa.table(data), root / f"part-{f}.parquet")
    # a tiny domain: two documents in the last file
    (root / "manifest.json").write_text(json.dumps({"fingerprint": {"model": "x"}, "corpus": "/c"}))
    return allrows


def reference(rows, frac=None, tokens=None, by_domain=True, max_rep=None):
    groups = {}
    for r in rows:
        if r["status"] != "ok" or r["score"] is None or (max_rep is not None and r["repetition"] > max_rep):
            continue
        groups.setdefault(r["domain"] if by_domain else "(all)", []).append(r)
    chosen = set()
    for g, rs in groups.items():
        rs.sort(key=lambda r: (-r["score"], r["id"]))
        if tokens is None:
            k = math.floor(frac * len(rs) + 0.5)
            chosen |= {r["id"] for r in rs[:k]}
        else:
            cum = 0
            for r in rs:
                if cum + r["n_tokens"] > tokens:
                    break
                cum += r["n_tokens"]
                chosen.add(r["id"])
    return chosen


def selected_ids(out: Path):
    ids = set()
    for p in out.rglob("*.parquet"):
        t = pq.read_table(p).to_pydict()
        ids |= set(t["id"])
    return ids


@pytest.fixture(params=[False, True], ids=["direct", "many-rounds"])
def rounds(request, monkeypatch):
    if request.param:  # tiny bins and gather limit: the interval must be narrowed round after round
        monkeypatch.setattr(sel, "BINS", 4)
        monkeypatch.setattr(sel, "GATHER", 3)


@pytest.mark.parametrize("frac", [0.2, 0.5, 0.01, 1.0, 0.0])
def test_frac_per_domain_exact(tmp_path, rounds, frac):
    rows = make_scores(tmp_path / "s", seed=int(frac * 100))
    m = run_select(SelectConfig(scores=str(tmp_path / "s"), out=str(tmp_path / "o"), frac=frac))
    assert selected_ids(tmp_path / "o") == reference(rows, frac=frac)
    assert m["by"] == "domain" and set(m["groups"]) == {"web", "code", "math"}
    for g, v in m["groups"].items():
        cands = [r for r in rows if r["domain"] == g and r["status"] == "ok"]
        assert v["candidates"] == len(cands)
        assert v["selected"] == math.floor(frac * len(cands) + 0.5)
        assert v["not_ok"] == sum(r["domain"] == g and r["status"] != "ok" for r in rows)


def test_ties_broken_by_id(tmp_path, rounds):
    rows = make_scores(tmp_path / "s", seed=3, tie_values=[0.1, 0.2, 0.2, 0.3])
    run_select(SelectConfig(scores=str(tmp_path / "s"), out=str(tmp_path / "o"), frac=0.3))
    assert selected_ids(tmp_path / "o") == reference(rows, frac=0.3)


def test_tiny_domains_and_global(tmp_path, rounds):
    rows = make_scores(tmp_path / "s", seed=5, files=2, rows=7, domains=("a", "b", "c", "d", "e", "f"))
    for by, ref_by in (("domain", True), ("global", False)):
        out = tmp_path / f"o-{by}"
        m = run_select(SelectConfig(scores=str(tmp_path / "s"), out=str(out), frac=0.25, by=by))
        assert selected_ids(out) == reference(rows, frac=0.25, by_domain=ref_by)
    assert list(m["groups"]) == ["(all)"]


@pytest.mark.parametrize("budget", [0, 50, 1000, 10**9])
def test_token_budget(tmp_path, rounds, budget):
    rows = make_scores(tmp_path / "s", seed=7)
    m = run_select(SelectConfig(scores=str(tmp_path / "s"), out=str(tmp_path / "o"), tokens=budget))
    assert selected_ids(tmp_path / "o") == reference(rows, tokens=budget)
    assert all(v["tokens_selected"] <= budget for v in m["groups"].values())


def test_max_repetition_excluded_and_counted(tmp_path, rounds):
    rows = make_scores(tmp_path / "s", seed=9)
    m = run_select(SelectConfig(scores=str(tmp_path / "s"), out=str(tmp_path / "o"), frac=0.2, max_repetition=0.3))
    assert selected_ids(tmp_path / "o") == reference(rows, frac=0.2, max_rep=0.3)
    assert sum(v["repetitive"] for v in m["groups"].values()) == sum(
        r["status"] == "ok" and r["repetition"] > 0.3 for r in rows)


def test_selected_rows_point_into_the_scores(tmp_path):
    make_scores(tmp_path / "s", seed=11, files=2)
    run_select(SelectConfig(scores=str(tmp_path / "s"), out=str(tmp_path / "o")))
    for p in (tmp_path / "o").glob("*.parquet"):
        chosen = pq.read_table(p).to_pydict()
        src = pq.read_table(tmp_path / "s" / p.name).to_pydict()
        assert chosen["row"] == sorted(chosen["row"])
        assert [src["id"][r] for r in chosen["row"]] == chosen["id"]
        assert [src["score"][r] for r in chosen["row"]] == chosen["score"]


def test_select_cli_errors(tmp_path):
    res = CliRunner().invoke(main, ["select", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not a scores directory" in res.output
    make_scores(tmp_path / "s")
    res = CliRunner().invoke(main, ["select", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--frac", "1.5"])
    assert res.exit_code == 2 and "--frac" in res.output
    res = CliRunner().invoke(main, ["select", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--tokens", "-1"])
    assert res.exit_code == 2 and "--tokens cannot be negative" in res.output and not (tmp_path / "o").exists()
    res = CliRunner().invoke(main, ["select", str(tmp_path / "s"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    groups = json.loads((tmp_path / "o" / "manifest.json").read_text())["groups"]
    for g, v in groups.items():  # each group's row: its name, its counts and its cut
        assert re.search(rf"^{re.escape(g)}\s+{v['documents']:,}\s+{v['candidates']:,}\s+{v['selected']:,}\s+"
                         rf"{v['tokens_selected']:,}\s+{v['threshold']:.5f}$", res.output, re.M), (g, res.output)


def _write(root: Path, name: str, scores, ids=None, domain="absent", status=None):
    root.mkdir(parents=True, exist_ok=True)
    n = len(scores)
    data = {"id": ids or [f"{name}-{i}" for i in range(n)], "score": scores, "n_tokens": [10] * n,
            "status": status or ["ok"] * n, "repetition": [0.0] * n}
    if domain != "absent":
        data["domain"] = pa.array(domain if isinstance(domain, list) else [domain] * n, pa.string())
    pq.write_table(pa.table(data), root / f"{name}.parquet")
    if not (root / "manifest.json").exists():
        (root / "manifest.json").write_text(json.dumps({"fingerprint": {"model": "x"}, "corpus": "/c"}))


def _brute(scores, frac):
    """Sort-everything reference over the finite scores: (score desc, position asc)."""
    finite = [(s, i) for i, s in enumerate(scores) if math.isfinite(s)]
    finite.sort(key=lambda t: (-t[0], t[1]))
    return {i for _, i in finite[:math.floor(frac * len(finite) + 0.5)]}


def test_minus_inf_never_ranked(tmp_path, rounds):
    _write(tmp_path / "s", "a", [1.0, float("-inf"), float("-inf")], domain=None)
    m = run_select(SelectConfig(scores=str(tmp_path / "s"), out=str(tmp_path / "o"), frac=0.67))
    assert selected_ids(tmp_path / "o") == {"a-0"}  # 1 of the 1 finite score
    g = m["groups"]["(all)"]
    assert g["candidates"] == 1 and g["non_finite"] == 2


@pytest.mark.parametrize("special", [float("-inf"), float("inf"), float("nan"), "range"])
def test_non_finite_and_huge_range_large_group(tmp_path, special):
    """Above GATHER rows the histogram refinement runs: -inf used to give NaN
    edges (0 kept), +inf or a range of +-1.7e308 never ended."""
    rng = random.Random(1)
    scores = [rng.gauss(0, 1) for _ in range(30_000)]
    for i in range(0, 30_000, 7):
        scores[i] = (rng.choice([-1.7e308, 1.7e308]) if special == "range" else special)
    _write(tmp_path / "s", "a", scores, domain=None)
    m = run_select(SelectConfig(scores=str(tmp_path / "s"), out=str(tmp_path / "o"), frac=0.2))
    assert selected_ids(tmp_path / "o") == {f"a-{i}" for i in _brute(scores, 0.2)}
    assert m["groups"]["(all)"]["non_finite"] == (0 if special == "range" else len(range(0, 30_000, 7)))


def test_duplicate_id_and_score_at_the_cut(tmp_path, rounds):
    _write(tmp_path / "s", "a", [0.9, 0.5, 0.5, 0.1], ids=["x", "d", "d", "y"], domain=None)
    m = run_select(SelectConfig(scores=str(tmp_path / "s"), out=str(tmp_path / "o"), frac=0.5))
    t = pq.read_table(tmp_path / "o" / "a.parquet").to_pydict()
    assert t["row"] == [0, 1] and m["selected"] == 2  # not 3: the tie goes on to file and row


def test_duplicate_ids_across_files(tmp_path, rounds):
    _write(tmp_path / "s", "b", [0.5, 0.2], ids=["d", "e"], domain="web")
    _write(tmp_path / "s", "a", [0.5, 0.1], ids=["d", "f"], domain="web")
    m = run_select(SelectConfig(scores=str(tmp_path / "s"), out=str(tmp_path / "o"), frac=0.25))
    assert m["selected"] == 1
    assert pq.read_table(tmp_path / "o" / "a.parquet").to_pydict()["row"] == [0]  # file a before file b
    assert pq.read_table(tmp_path / "o" / "b.parquet").num_rows == 0


def test_domain_column_in_some_files_only_is_an_error(tmp_path):
    _write(tmp_path / "s", "a", [0.5, 0.2])  # first file: no domain column
    _write(tmp_path / "s", "b", [0.4, 0.3], domain="web")
    res = CliRunner().invoke(main, ["select", str(tmp_path / "s"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "a.parquet has no domain column but b.parquet has" in res.output


def test_global_ranking_is_said_and_recorded(tmp_path):
    _write(tmp_path / "s", "a", [0.5, 0.2, 0.1, 0.3], domain=None)
    res = CliRunner().invoke(main, ["select", str(tmp_path / "s"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "ranking globally: no document has a domain" in res.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["by"] == "global" and "no document has a domain" in m["by_why"]


def test_null_domains_are_their_own_group(tmp_path, rounds):
    _write(tmp_path / "s", "a", [0.5, 0.2, 0.9, 0.3], domain=["web", None, "web", None])
    m = run_select(SelectConfig(scores=str(tmp_path / "s"), out=str(tmp_path / "o"), frac=0.5))
    assert m["by"] == "domain" and set(m["groups"]) == {"web", "(none)"}
    assert selected_ids(tmp_path / "o") == {"a-2", "a-3"}
