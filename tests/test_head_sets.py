"""`score --head-fracs`: several head sets scored in one pass equal the same
sets scored one run each (the forked batch holds one masked row per set)."""
import json
import random
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from attninf.artifacts import Heads
from attninf.headsets import head_set_tag, head_sets
from attninf.cli import main
from attninf.errors import AttninfError
from attninf.heads import select_top
from attninf.model import load_model
from attninf.scoring import Scorer

from helpers import docs, make_corpus

# nested by rank as --head-fracs makes them, with different lowest layers (the fork is at the lowest of all)
SETS = {"a": [[2, 0], [3, 3]], "b": [[1, 2], [2, 0], [3, 3]], "c": [[0, 5], [1, 2], [2, 0], [3, 3], [3, 1]]}


@pytest.fixture(scope="module")
def tiny32(tiny_model_dir):
    return load_model(str(tiny_model_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def texts():
    return docs(random.Random(3), 14) + ["", "x"]


@pytest.mark.parametrize("layered", [True, False])
def test_sets_in_one_pass_equal_one_run_each(tiny32, texts, layered):
    kw = dict(max_tokens=48, batch_tokens=160, layered=layered, doc_prefix="none")
    together = Scorer(tiny32, SETS["a"], more_heads={"b": SETS["b"], "c": SETS["c"]}, **kw)
    assert together.first_masked == 0 and together.layered == layered
    res = together.score_texts(texts)
    for tag, heads in SETS.items():
        alone = Scorer(tiny32, heads, **kw).score_texts(texts)
        score = res["score"] if tag == "a" else res[f"score_{tag}"]
        masked = res["loss_masked"] if tag == "a" else res[f"loss_masked_{tag}"]
        ok = alone["status"] == "ok"
        assert (res["status"] == alone["status"]).all() and ok.sum() >= 12
        np.testing.assert_allclose(res["loss_base"][ok], alone["loss_base"][ok], rtol=0, atol=1e-6)
        np.testing.assert_allclose(masked[ok], alone["loss_masked"][ok], rtol=0, atol=1e-6)
        np.testing.assert_allclose(score[ok], alone["score"][ok], rtol=0, atol=1e-6)
        assert np.isnan(score[~ok]).all()
    # the sets differ, so the test sees a set scored with another's heads
    assert np.abs(res["score_c"] - res["score"])[ok].max() > 1e-3


def test_token_nll_has_a_row_per_set(tiny32, texts):
    kw = dict(max_tokens=48, batch_tokens=160, doc_prefix="none")
    _, _, per = Scorer(tiny32, SETS["a"], more_heads={"c": SETS["c"]}, **kw).token_nll(texts[:3])
    _, _, alone = Scorer(tiny32, SETS["c"], **kw).token_nll(texts[:3])
    for p, q in zip(per, alone):
        assert p.shape[0] == 3
        np.testing.assert_allclose(p[2], q[1], rtol=0, atol=1e-6, equal_nan=True)


def _heads_with_scores(heads_file, tmp_path):
    """heads_file with a retrieval score per head: a known ranking."""
    data = json.loads(heads_file.read_text())
    rng = np.random.default_rng(0)
    data["scores"] = rng.permutation(24).reshape(4, 6).astype(float).tolist()
    p = tmp_path / "heads.json"
    p.write_text(json.dumps(data))
    return p, np.array(data["scores"])


def test_head_sets_are_the_top_of_the_ranking(heads_file, tmp_path):
    p, scores = _heads_with_scores(heads_file, tmp_path)
    heads = Heads.read(p)
    sets = head_sets([0.1, 0.05, 0.25], heads)
    assert [t for t, _ in sets] == [None, "top5pct", "top25pct"]
    order = sorted(range(24), key=lambda i: -scores.flat[i])  # distinct scores: no ties
    for (_, hs), k in zip(sets, (2, 1, 6)):
        assert hs == sorted([i // 6, i % 6] for i in order[:k])
    assert set(map(tuple, sets[1][1])) <= set(map(tuple, sets[0][1])) <= set(map(tuple, sets[2][1]))
    assert head_sets(None, heads) == [(None, heads.heads)]
    assert head_set_tag(0.025) == "top2p5pct"
    with pytest.raises(AttninfError, match=r"in \(0, 1\]"):
        head_sets([0.05, 0], heads)
    with pytest.raises(AttninfError, match="twice"):
        head_sets([0.05, 0.050], heads)
    with pytest.raises(AttninfError, match="no retrieval scores"):
        head_sets([0.05], Heads.read(heads_file))


def _score(corpus, heads, out, *extra):
    args = ["score", corpus, "--heads", heads, "--out", out, "--workers", "0", "--max-tokens", "64",
            "--batch-tokens", "256", "--dtype", "float32", "--quiet", *extra]
    return CliRunner().invoke(main, [str(a) for a in args])


def test_score_command_writes_a_column_per_set(heads_file, tmp_path):
    heads, scores = _heads_with_scores(heads_file, tmp_path)
    corpus = make_corpus(tmp_path / "corpus", files=2, rows=7)
    res = _score(corpus, heads, tmp_path / "all", "--head-fracs", "0.1,0.05,0.25")
    assert res.exit_code == 0, res.output
    assert "score_top25pct = top 0.25 (6 heads)" in res.output
    for frac, col in ((0.1, "score"), (0.05, "score_top5pct"), (0.25, "score_top25pct")):
        out = tmp_path / f"alone{frac}"
        r = _score(corpus, heads, out, "--head-fracs", str(frac))
        assert r.exit_code == 0, r.output
        for f in sorted(out.rglob("part-*.parquet")):
            alone = pq.read_table(f).to_pydict()
            both = pq.read_table(tmp_path / "all" / f.relative_to(out)).to_pydict()
            assert both["id"] == alone["id"]
            a = np.array(both[col], dtype=float)
            np.testing.assert_allclose(a, np.array(alone["score"], dtype=float), rtol=0, atol=1e-6)
            masked = "loss_masked" if col == "score" else col.replace("score_", "loss_masked_")
            np.testing.assert_allclose(np.array(both[masked], dtype=float),
                                       np.array(alone["loss_masked"], dtype=float), rtol=0, atol=1e-6)
    # explain re-scores a document with the set `score` was made with (the first), not heads.json's own heads
    doc = pq.read_table(next((tmp_path / "all").rglob("part-*.parquet"))).to_pydict()
    i = next(k for k, st in enumerate(doc["status"]) if st == "ok")
    ex = CliRunner().invoke(main, ["explain", "--scores", str(tmp_path / "all"), "--id", str(doc["id"][i]),
                                   "--dtype", "float32", "--no-color"])
    assert ex.exit_code == 0, ex.output
    got = float(re.search(r"^score (\S+) =", ex.output, re.M).group(1))
    assert got == pytest.approx(doc["score"][i], abs=1e-4)
    assert abs(got - doc["score_top25pct"][i]) > 1e-3  # another set would show
    # the next stage reads `score`
    sel = CliRunner().invoke(main, ["select", str(tmp_path / "all"), "--out", str(tmp_path / "sel")])
    assert sel.exit_code == 0, sel.output
    # another list of sets is another run: refused without --overwrite, not reused
    again = _score(corpus, heads, tmp_path / "all", "--head-fracs", "0.1,0.05")
    assert again.exit_code != 0 and "head_sets" in again.output
    # the same sets in another order are other columns in another order: another run, not a resume
    again = _score(corpus, heads, tmp_path / "all", "--head-fracs", "0.1,0.25,0.05")
    assert again.exit_code != 0 and "head_sets" in again.output
    assert select_top(scores, 0.1) != select_top(scores, 0.05)


@pytest.mark.slow
def test_sets_in_one_pass_equal_one_run_each_on_smollm2(smollm2_dir):
    """The offline default model, float32: three nested sets in one pass
    against one Scorer each."""
    from attninf.scoring import Scorer as S

    lm = load_model(str(smollm2_dir), dtype="float32", device="cpu")
    rng = random.Random(0)
    texts = [" ".join(docs(rng, 4))[:rng.randrange(200, 900)] for _ in range(6)]
    sets = {"a": [[12, 3], [20, 5]], "b": [[8, 1], [12, 3], [20, 5]], "c": [[3, 0], [8, 1], [12, 3], [20, 5], [25, 7]]}
    kw = dict(max_tokens=256, batch_tokens=1024)
    res = S(lm, sets["a"], more_heads={"b": sets["b"], "c": sets["c"]}, **kw).score_texts(texts)
    assert res["status"].tolist() == ["ok"] * len(texts)
    for tag, heads in sets.items():
        alone = S(lm, heads, **kw).score_texts(texts)
        score = res["score"] if tag == "a" else res[f"score_{tag}"]
        np.testing.assert_allclose(score, alone["score"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(res["loss_base"], alone["loss_base"], rtol=0, atol=1e-6)


def test_sets_rank_by_the_exact_counts(heads_file, tmp_path):
    """Two heads whose mean copy rates differ past the sixth decimal tie in
    heads.json's rounded scores; with per-probe counts the sets rank by the
    exact means, as detect-heads selected, so --head-fracs at heads.json's own
    fraction gives its heads."""
    data = json.loads(heads_file.read_text())
    L, H, A = 4, 6, 10_000_000
    hits = [0] * (L * H)
    hits[0], hits[1] = 3_333_331, 3_333_332  # rates 0.3333331 and 0.3333332: both 0.333333 rounded
    data.update(scores=[[round(h / A, 6) for h in hits[r * H:(r + 1) * H]] for r in range(L)],
                per_probe={"answer_tokens": [A], "hits": [hits]}, top_frac=1 / 24, heads=[[0, 1]])
    p = tmp_path / "exact.json"
    p.write_text(json.dumps(data))
    assert select_top(np.array(data["scores"]), 1 / 24) == [[0, 0]]  # the rounded scores tie: lower index
    assert head_sets([1 / 24], Heads.read(p))[0][1] == [[0, 1]]


def test_head_fracs_from_yaml(tmp_path):
    from attninf.config import load_stage
    from attninf.pipelines.score_config import ScoreConfig

    y = tmp_path / "p.yaml"
    y.write_text("score:\n  head_fracs: [5e-2, 0.1, 3]\n")  # 5e-2 is a string to YAML 1.1
    assert load_stage(ScoreConfig, y, "score", {}).head_fracs == [0.05, 0.1, 3]
    y.write_text("score:\n  head_fracs: [0.05, top]\n")
    with pytest.raises(AttninfError, match="a list of numbers"):
        load_stage(ScoreConfig, y, "score", {})
