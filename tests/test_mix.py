"""`attninf mix`: row accounting, repeat, determinism by seed, shards, and
loading with `datasets` (streaming included)."""
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from attninf.cli import main
from attninf.pipelines.mix import MixConfig, run_mix
from attninf.pipelines.select import SelectConfig, run_select

from helpers import make_scored_corpus


def _mixed_rows(out: Path):
    rows = []
    for p in sorted(out.glob("part-*.parquet")):
        rows.extend(pq.read_table(p).to_pylist())
    return rows


@pytest.mark.parametrize("repeat", [0, 1, 3])
def test_row_accounting(tmp_path, repeat):
    corpus, scores = make_scored_corpus(tmp_path)
    sm = run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel"), frac=0.25))
    m = run_mix(MixConfig(corpus=str(corpus), selected=str(tmp_path / "sel"), out=str(tmp_path / "mix"),
                          repeat=repeat, shard_rows=25))
    rows = _mixed_rows(tmp_path / "mix")
    corpus_rows = [r for p in sorted(corpus.rglob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    chosen = {i for p in (tmp_path / "sel").rglob("*.parquet") for i in pq.read_table(p)["id"].to_pylist()}
    assert len(rows) == len(corpus_rows) + repeat * len(chosen) == m["rows"]
    assert len(chosen) == sm["selected"]
    c = Counter((r["id"], r["source"]) for r in rows)
    assert all(c[(r["id"], "base")] == 1 for r in corpus_rows)  # every corpus row once
    assert all(c[(i, "selected")] == repeat for i in chosen)
    assert sum(c.values()) == len(rows)  # nothing else
    text = {r["id"]: r["text"] for r in corpus_rows}
    assert all(r["text"] == text[r["id"]] for r in rows)
    assert m["shards"] == len(list((tmp_path / "mix").glob("part-*.parquet")))
    assert not (tmp_path / "mix" / ".pieces").exists()
    for dname, e in m["domains"].items():
        assert e["base_rows"] == sum(r["domain"] == dname for r in corpus_rows)
        assert e["selected_rows"] == repeat * sum(r["domain"] == dname and r["id"] in chosen for r in corpus_rows)
    assert sum(e["weight"] for e in m["domains"].values()) == pytest.approx(1.0)


def test_deterministic_by_seed_and_shuffled(tmp_path):
    corpus, scores = make_scored_corpus(tmp_path, with_ids=False)
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel")))
    orders = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run_mix(MixConfig(corpus=str(corpus), selected=str(tmp_path / "sel"), out=str(tmp_path / name), seed=seed,
                          shard_rows=1000))
        orders[name] = [(r["id"], r["source"]) for r in _mixed_rows(tmp_path / name)]
    assert orders["a"] == orders["b"]
    assert orders["a"] != orders["c"] and sorted(orders["a"]) == sorted(orders["c"])
    base = [i for i, s in orders["a"] if s == "base"]
    assert base != sorted(base, key=lambda x: (x.split(":")[0], int(x.split(":")[1])))  # not input order
    assert any(":" in i for i, _ in orders["a"])  # ids made by score for a corpus without an id column


def test_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    corpus, scores = make_scored_corpus(tmp_path)
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel")))
    m = run_mix(MixConfig(corpus=str(corpus), selected=str(tmp_path / "sel"), out=str(tmp_path / "mix"),
                          shard_rows=30))
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path / "mix"), split="train")
    assert len(ds) == m["rows"] and set(ds.column_names) == {"text", "id", "domain", "source"}
    stream = datasets.load_dataset("parquet", data_dir=str(tmp_path / "mix"), split="train", streaming=True)
    assert sum(1 for _ in stream) == m["rows"]


def test_mix_errors(tmp_path):
    corpus, scores = make_scored_corpus(tmp_path)
    res = CliRunner().invoke(main, ["mix", str(corpus), "--selected", str(tmp_path / "nope"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "not a selection" in res.output
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel")))
    other = tmp_path / "other"
    other.mkdir()
    res = CliRunner().invoke(main, ["mix", str(other), "--selected", str(tmp_path / "sel"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and f"{other} is not the corpus" in res.output and "is missing" in res.output
    res = CliRunner().invoke(main, ["mix", str(corpus), "--selected", str(tmp_path / "sel"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "m" / ".manifest.json").read_text())
    assert f"{m['rows']:,} rows in {m['shards']} shard(s)" in res.output


@pytest.mark.parametrize("seed", [-1, 2**64 + 5, 2**80])
def test_any_integer_seed(tmp_path, seed):
    corpus, scores = make_scored_corpus(tmp_path, files=1, rows=20)
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel")))
    res = CliRunner().invoke(main, ["mix", str(corpus), "--selected", str(tmp_path / "sel"), "--out",
                                    str(tmp_path / "m"), "--seed", str(seed)])
    assert res.exit_code == 0, res.output
    run_mix(MixConfig(corpus=str(corpus), selected=str(tmp_path / "sel"), out=str(tmp_path / "same"),
                      seed=seed % 2**64))
    assert _mixed_rows(tmp_path / "m") == _mixed_rows(tmp_path / "same")  # taken modulo 2**64


def test_selection_from_other_scores_is_refused(tmp_path):
    corpus, scores = make_scored_corpus(tmp_path, files=2, rows=20)
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel")))
    # rescored since: one score differs
    p = scores / "a" / "part-0.parquet"
    t = pq.read_table(p).to_pydict()
    t["score"][3] += 0.5
    pq.write_table(pa.table(t), p)
    res = CliRunner().invoke(main, ["mix", str(corpus), "--selected", str(tmp_path / "sel"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "changed since" in res.output and "attninf select" in res.output
    res = CliRunner().invoke(main, ["report", str(scores), "--selected", str(tmp_path / "sel"), "--out",
                                    str(tmp_path / "r")])
    assert res.exit_code == 2 and f"the scores in {scores} changed since" in res.output  # the same check as mix


def test_moved_workdir_and_corpus(tmp_path):
    """Scores and selection moved together, the corpus copied elsewhere: mix
    finds the scores beside the selection and knows the corpus by its files."""
    import shutil

    corpus, scores = make_scored_corpus(tmp_path / "old", files=2, rows=20)
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "old" / "sel")))
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    shutil.rmtree(tmp_path / "old")
    res = CliRunner().invoke(main, ["mix", str(tmp_path / "new" / "corpus"), "--selected",
                                    str(tmp_path / "new" / "sel"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    # a corpus file that changed is named
    p = tmp_path / "new" / "corpus" / "a" / "part-0.parquet"
    t = pq.read_table(p).to_pydict()
    pq.write_table(pa.table({k: v[:-1] for k, v in t.items()}), p)
    res = CliRunner().invoke(main, ["mix", str(tmp_path / "new" / "corpus"), "--selected",
                                    str(tmp_path / "new" / "sel"), "--out", str(tmp_path / "m2")])
    assert res.exit_code == 2 and "a/part-0.parquet changed since it was scored" in res.output


def test_phased_mixture(tmp_path):
    """--phases stable,decay: stable/ is the corpus alone, decay/ the corpus
    with the selection --decay-weight more times; each loads with datasets;
    the top manifest lists both with their weights and is what train reads."""
    import datasets

    from attninf.artifacts import Mixture

    corpus, scores = make_scored_corpus(tmp_path)
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel"), frac=0.25))
    out = tmp_path / "mix"
    res = CliRunner().invoke(main, ["mix", str(corpus), "--selected", str(tmp_path / "sel"), "--out", str(out),
                                    "--phases", "stable,decay", "--decay-weight", "2", "--shard-rows", "30"])
    assert res.exit_code == 0, res.output
    corpus_ids = Counter(i for p in sorted(corpus.rglob("*.parquet")) for i in pq.read_table(p)["id"].to_pylist())
    chosen = Counter(i for p in (tmp_path / "sel").rglob("*.parquet") for i in pq.read_table(p)["id"].to_pylist())
    stable, decay = _mixed_rows(out / "stable"), _mixed_rows(out / "decay")
    assert Counter(r["id"] for r in stable) == corpus_ids
    assert Counter(r["id"] for r in decay) == corpus_ids + Counter({i: 2 for i in chosen})
    mix = Mixture.read(out)
    assert set(mix.phases()) == {"stable", "decay"} and mix.manifest["rows"] == len(stable) + len(decay)
    w = mix.manifest["phases"]
    assert w["stable"]["repeat"] == 0 and w["decay"]["repeat"] == 2
    assert pytest.approx(sum(w["decay"]["weights"].values())) == 1.0
    for phase, rows in (("stable", stable), ("decay", decay)):
        ds = datasets.load_dataset("parquet", data_dir=str(out / phase), split="train")
        assert len(ds) == len(rows)
    with pytest.raises(Exception, match="phased mixture"):
        mix.shards()
    for bad, msg in ((["--phases", "decay"], "--phases must be"), (["--phases", "stable,decay", "--decay-weight", "0"],
                                                                   "--decay-weight")):
        res = CliRunner().invoke(main, ["mix", str(corpus), "--selected", str(tmp_path / "sel"),
                                        "--out", str(tmp_path / "bad"), *bad])
        assert res.exit_code != 0 and msg in res.output, res.output


@pytest.mark.parametrize("corpus", ["corpus", "corpus/**/*.parquet"])
def test_out_inside_the_corpus_is_refused_however_it_is_given(tmp_path, corpus):
    """mix replaces --out whole: inside the corpus folder it is refused, for
    the folder and for a glob over it alike (the glob slipped through)."""
    from attninf.errors import AttninfError

    (tmp_path / "corpus").mkdir()
    cfg = MixConfig(corpus=str(tmp_path / corpus), selected=str(tmp_path / "selected"),
                    out=str(tmp_path / "corpus" / "mixed"))
    with pytest.raises(AttninfError, match="overlap"):
        run_mix(cfg)
