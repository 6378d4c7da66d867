"""`attninf run`: the whole chain from one YAML file on a tiny model; a rerun
skips complete stages; a changed setting redoes only what depends on it."""
import json

import pyarrow.parquet as pq
from click.testing import CliRunner

from attninf.cli import main

from helpers import make_corpus


def _pipeline_yaml(path, model, workdir, corpus, detect="{num_probes: 1, context_tokens: 600, random_trials: 0, "
                   "top_frac: 0.1}", extra=""):
    """A pipeline file for the tiny model, CPU, float32, scoring in process."""
    path.write_text(f"model: {model}\ndtype: float32\ndevice: cpu\nworkdir: {workdir}\ncorpus: {corpus}\n"
                    f"detect: {detect}\nscore: {{max_tokens: 64, workers: 0}}\n{extra}")
    return path


def _run(cfg, *sets):
    res = CliRunner().invoke(main, ["run", str(cfg), "--quiet", *[a for s in sets for a in ("--set", s)]])
    assert res.exit_code == 0, res.output
    return res.output


def test_chain_and_stage_skipping(tmp_path, tiny_model_dir):
    corpus = make_corpus(tmp_path / "corpus", files=2, rows=10)
    cfg = _pipeline_yaml(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "work", corpus,
                         detect="{num_probes: 2, context_tokens: 800, random_trials: 1, top_frac: 0.1}",
                         extra="select: {frac: 0.3}\nmix: {repeat: 2, shard_rows: 7}\n")
    out = _run(cfg)
    work = tmp_path / "work"
    for stage in ("heads", "score", "select", "mix", "report"):
        assert f"[{stage}] done" in out
    assert (work / "report" / "index.html").exists() and "report:" in out
    sel = json.loads((work / "selected" / "manifest.json").read_text())
    mix = json.loads((work / "mixed" / ".manifest.json").read_text())
    assert mix["rows"] == 20 + 2 * sel["selected"]
    assert sum(len(pq.read_table(p)) for p in (work / "mixed").glob("*.parquet")) == mix["rows"]

    out = _run(cfg)  # nothing changed: every stage is skipped
    assert "done" not in out.replace("done in", "") and out.count("up to date") == 5

    out = _run(cfg, "select.frac=0.5")  # redo select and what follows, not heads or score
    assert "[heads] up to date" in out and "[score] up to date" in out
    assert "[select] done" in out and "[mix] done" in out and "[report] done" in out
    assert json.loads((work / "selected" / "manifest.json").read_text())["config"]["frac"] == 0.5

    out = _run(cfg, "select.frac=0.5", "mix.seed=7")  # only the mix depends on its seed
    assert "[select] up to date" in out and "[mix] done" in out and "[report] up to date" in out


def test_bad_pipeline_file(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("corpus: c\nscor: {}\n")
    res = CliRunner().invoke(main, ["run", str(cfg)])
    assert res.exit_code == 2 and "unknown key 'scor'" in res.output and "did you mean 'score'?" in res.output
    cfg.write_text("workdir: w\n")
    res = CliRunner().invoke(main, ["run", str(cfg)])
    assert res.exit_code == 2 and "corpus" in res.output


def test_corrupt_markers_redo_and_report_settings(tmp_path, tiny_model_dir):
    corpus = make_corpus(tmp_path / "corpus", files=2, rows=10)
    cfg = _pipeline_yaml(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "work", corpus)
    _run(cfg)
    stages = tmp_path / "work" / ".stages"
    (stages / "select.json").write_text("")  # a marker cut short by a crash
    (stages / "mix.json").write_text("[]")
    out = _run(cfg, "report.top=5")
    assert "[select] done" in out and "[mix] done" in out and "[report] done" in out
    page = (tmp_path / "work" / "report" / "index.html").read_text()
    assert page.count("<tr><td>top</td>") == 10  # 5 per domain, 2 domains
    res = CliRunner().invoke(main, ["run", str(cfg), "--quiet", "--set", "report.tops=5"])
    assert res.exit_code == 2 and "unknown key 'tops' in section report: did you mean 'top'?" in res.output


def test_copied_workdir_mixes(tmp_path, tiny_model_dir):
    """A workdir copied elsewhere (corpus inside it): `run` finds its stages
    done and a fresh `mix` over the copy agrees."""
    import shutil

    corpus = make_corpus(tmp_path / "a" / "corpus", files=2, rows=10)
    cfg = _pipeline_yaml(tmp_path / "a" / "p.yaml", tiny_model_dir, "work", "corpus")  # relative: the copy works
    import os

    here = os.getcwd()
    try:
        os.chdir(tmp_path / "a")
        _run(cfg)
        shutil.copytree(tmp_path / "a", tmp_path / "b")
        shutil.rmtree(tmp_path / "a" / "work")
        os.chdir(tmp_path / "b")
        out = _run(tmp_path / "b" / "p.yaml")
        assert out.count("up to date") == 5, out
        res = CliRunner().invoke(main, ["mix", "corpus", "--selected", "work/selected", "--out", "m2"])
        assert res.exit_code == 0, res.output
    finally:
        os.chdir(here)
    assert corpus.exists()


def test_phased_mix_and_compare_sections(tmp_path, tiny_model_dir, monkeypatch):
    """A `compare:` section adds proxy trainings after the mix; the report
    shows their verdict and links to them. A phased mix runs in the chain."""
    corpus = make_corpus(tmp_path / "corpus", files=2, rows=10)
    model = tmp_path / "m.yaml"
    model.write_text("hidden_size: 32\nintermediate_size: 64\nnum_hidden_layers: 2\nnum_attention_heads: 2\n"
                     "num_key_value_heads: 1\n")
    extra = ("select: {frac: 0.3}\nmix: {phases: 'stable,decay', decay_weight: 2}\n"
             f"compare: {{arms: 'full,attninf', seeds: 1, total_steps: 6, warmup_steps: 1, decay_steps: 2, "
             f"seq_len: 32, batch_size: 2, probes: 0, model_config: {model}, tokenizer: {tiny_model_dir}, "
             f"dtype: float32}}\n")
    cfg = _pipeline_yaml(tmp_path / "p.yaml", tiny_model_dir, tmp_path / "work", corpus, extra=extra)
    out = _run(cfg)
    work = tmp_path / "work"
    assert "[compare] done" in out and (work / "compare" / "summary.json").is_file()
    assert (work / "mixed" / "stable" / ".manifest.json").is_file() and (work / "mixed" / "decay").is_dir()
    page = (work / "report" / "index.html").read_text()
    assert "Proxy trainings" in page and "../compare/index.html" in page
    out = _run(cfg, "compare.seeds=1")
    assert "[compare] up to date" in out and "[report] up to date" in out
    # what the runs read beyond the settings changed (here the document rule): compare is redone, not skipped
    import attninf.docstart
    import attninf.streams

    rule = attninf.docstart.document_separators
    for module in (attninf.docstart, attninf.streams):  # where the rule is looked up, and where training packs
        monkeypatch.setattr(module, "document_separators",
                            lambda tok, eos=None, bos=None: rule(tok, None, "<|endoftext|>"))  # one before each too
    out = _run(cfg)
    assert "[compare] done" in out and "[report] done" in out
