"""`attninf compare` on a tiny corpus and model: the held-out documents
never reach a training mixture, every arm trains the same tokens, the random
arm adds the attninf arm's tokens per domain within one document, a stopped
comparison resumes to the same numbers, finished runs are not redone, and
bad input is a one-line error."""
import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from attninf.cli import main
from attninf.pipelines.compare import CompareConfig, run_compare

from helpers import make_scored_corpus


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("cmp")
    corpus, scores = make_scored_corpus(tmp, files=3, rows=40)
    model = tmp / "m.yaml"
    model.write_text("hidden_size: 32\nintermediate_size: 64\nnum_hidden_layers: 2\nnum_attention_heads: 2\n"
                     "num_key_value_heads: 1\nmax_position_embeddings: 1024\n")  # room for a retrieval probe
    return corpus, scores, model, tiny_model_dir


def _cfg(setup, out, **kw):
    corpus, scores, model, tok = setup
    base = dict(scores=str(scores), corpus=str(corpus), out=str(out), arms="full,attninf,random,decay", seeds=2,
                model_config=str(model), tokenizer=str(tok), seq_len=32, batch_size=2, total_steps=10,
                warmup_steps=2, decay_steps=4, lr=5e-3, dtype="float32", device="cpu", probes=2, eval_sequences=8)
    base.update(kw)
    return CompareConfig(**base)


def _ids(mix_dir):
    return [i for p in sorted(mix_dir.rglob("part-*.parquet")) for i in pq.read_table(p)["id"].to_pylist()]


def test_compare_end_to_end(setup, tmp_path):
    summary = run_compare(_cfg(setup, tmp_path / "c"), progress=False, say=lambda m: None)
    out = tmp_path / "c"
    held = set(pq.read_table(out / "data" / "heldout" / "heldout.parquet")["id"].to_pylist())
    corpus_ids = {i for p in setup[0].rglob("*.parquet") for i in pq.read_table(p)["id"].to_pylist()}
    assert held and held < corpus_ids
    for arm in ("full", "attninf", "random", "decay"):  # no held-out document in any mixture, any phase
        ids = _ids(out / "data" / f"mix-{arm}")
        assert ids and not held & set(ids), arm
    assert set(_ids(out / "data" / "mix-full")) == corpus_ids - held
    # equal tokens: every run's log ends at the same token count
    ends = {p.parent.name: list(open(p))[-1].split(",")[3] for p in (out / "runs").glob("*/log.csv")}
    assert len(ends) == 8 and len(set(ends.values())) == 1
    assert all(t == [10 * 2 * 32] * 2 for t in summary["tokens"].values())
    # the random arm: the attninf arm's tokens per domain, within one document
    sel, rnd = summary["data"]["selected"], summary["data"]["random"]
    longest = max(n for p in (out / "data" / "scores").rglob("*.parquet") for n in pq.read_table(p)["n_tokens"].to_pylist())
    for g in sel:
        assert 0 <= rnd[g]["tokens_selected"] - sel[g]["tokens_selected"] < longest
    # the decay arm read its decay stream in the decay phase only
    phases = json.loads((out / "runs" / "decay-s0" / "run.json").read_text())["phases"]
    assert [s["phase"] for s in phases] == ["stable", "decay"] and phases[1]["first_step"] == 7
    m = summary["stats"]["attninf"]
    assert {"copy loss (2nd occurrence)", "retrieval probe loss", "heldout loss (mean of domains)"} <= set(m)
    assert set(summary["paired"]) == {"full", "random"}
    page = (out / "index.html").read_text()
    assert "Paired differences" in page and (out / "curves.png").is_file()
    assert summary["diagnostics"]["per_domain"] and "over_represented" in summary["diagnostics"]


def test_compare_resumes_and_skips_finished_runs(setup, tmp_path):
    ref = run_compare(_cfg(setup, tmp_path / "ref", arms="full,attninf", seeds=1), progress=False, say=lambda m: None)
    cut = _cfg(setup, tmp_path / "cut", arms="full,attninf", seeds=1, max_steps_this_run=4)
    assert run_compare(cut, progress=False, say=lambda m: None) is None  # stopped inside the first run
    assert not (tmp_path / "cut" / "summary.json").exists()
    got = run_compare(_cfg(setup, tmp_path / "cut", arms="full,attninf", seeds=1), progress=False, say=lambda m: None)
    for arm in ("full", "attninf"):
        assert got["stats"][arm] == ref["stats"][arm]
    done = tmp_path / "cut" / "runs" / "full-s0" / "measures.json"
    before = done.stat().st_mtime_ns
    run_compare(_cfg(setup, tmp_path / "cut", arms="full,attninf", seeds=1), progress=False, say=lambda m: None)
    assert done.stat().st_mtime_ns == before  # not retrained, not remeasured


def test_compare_bad_input(setup, tmp_path):
    corpus, scores, model, tok = setup
    r = CliRunner()
    base = ["compare", "--scores", str(scores), "--corpus", str(corpus), "--out", str(tmp_path / "x"),
            "--model-config", str(model), "--tokenizer", str(tok)]
    res = r.invoke(main, base + ["--arms", "full,best"])
    assert res.exit_code != 0 and "unknown arm best" in res.output
    other, _ = make_scored_corpus(tmp_path / "other", files=3, rows=40, seed=5)
    for p in other.rglob("*.parquet"):  # same files and rows, other ids
        t = pq.read_table(p)
        pq.write_table(t.set_column(t.column_names.index("id"), "id", [[f"z{i}" for i in range(len(t))]]), p)
    res = r.invoke(main, ["compare", "--scores", str(scores), "--corpus", str(other), "--out", str(tmp_path / "y"),
                          "--model-config", str(model), "--tokenizer", str(tok)])
    assert res.exit_code != 0 and "is not the corpus" in res.output, res.output  # by the files' signature
    import shutil

    bare = tmp_path / "bare-scores"  # scores with no corpus signature: caught by the ids
    shutil.copytree(scores, bare)
    m = json.loads((bare / "manifest.json").read_text())
    del m["corpus_files"]
    (bare / "manifest.json").write_text(json.dumps(m))
    res = r.invoke(main, ["compare", "--scores", str(bare), "--corpus", str(other), "--out", str(tmp_path / "y"),
                          "--model-config", str(model), "--tokenizer", str(tok)])
    assert res.exit_code != 0 and "do not belong" in res.output and "'z0'" in res.output, res.output
    small, sscores = make_scored_corpus(tmp_path / "small", files=1, rows=1)
    res = r.invoke(main, ["compare", "--scores", str(sscores), "--corpus", str(small), "--out", str(tmp_path / "z"),
                          "--model-config", str(model), "--tokenizer", str(tok)])
    assert res.exit_code != 0 and "too few" in res.output, res.output
