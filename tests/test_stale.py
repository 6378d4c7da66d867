"""Reruns never exit 0 with numbers of other settings or inputs: each test
here is a case that once did (a changed corpus, changed training settings, a
changed domain column, a model with scaled logits, YAML keys read two ways, a
mix folder holding an older mix, non-finite scores in the report, help that
named another default, a lock that locked nothing)."""
import dataclasses
import json
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from attninf.cli import main

from helpers import make_corpus, make_scored_corpus


def _invoke(*args):
    return CliRunner().invoke(main, [*map(str, args)])


# ------------------------------------------------- 1. run keys on the corpus

def _pipeline(tmp_path, model, corpus, extra=""):
    p = tmp_path / "p.yaml"
    p.write_text(f"model: {model}\ndtype: float32\ndevice: cpu\nworkdir: {tmp_path / 'work'}\ncorpus: {corpus}\n"
                 "detect: {num_probes: 1, context_tokens: 600, random_trials: 0, top_frac: 0.1}\n"
                 "score: {max_tokens: 64, workers: 0}\nselect: {frac: 0.3}\n" + extra)
    return p


def _run(cfg):
    res = CliRunner().invoke(main, ["run", str(cfg), "--quiet"])
    assert res.exit_code == 0, res.output
    return res.output


def _rows(d):
    return sum(pq.ParquetFile(p).metadata.num_rows for p in d.rglob("*.parquet") if "_stats" not in p.parts)


def test_run_redoes_what_a_corpus_change_touches(tmp_path, tiny_model_dir):
    corpus = make_corpus(tmp_path / "corpus", files=3, rows=9)
    third = corpus / "prose" / "part-2.parquet"
    shutil.move(third, tmp_path / "part-2.parquet")  # the corpus starts with 2 files, 18 documents
    cfg = _pipeline(tmp_path, tiny_model_dir, corpus)
    work = tmp_path / "work"
    _run(cfg)
    assert _rows(work / "scores") == 18

    shutil.move(tmp_path / "part-2.parquet", third)  # a file added: scored, selected, mixed
    out = _run(cfg)
    assert "[heads] up to date" in out and "[score] done" in out and "[mix] done" in out
    assert _rows(work / "scores") == 27
    assert json.loads((work / "mixed" / ".manifest.json").read_text())["base_rows"] == 27

    # a file rewritten with other texts, same size class and the same row count: redone
    t = pq.read_table(third)
    texts = t["text"].to_pylist()
    pq.write_table(t.set_column(0, "text", pa.array(texts[::-1])), third, row_group_size=4)
    out = _run(cfg)
    assert "[score] done" in out and "changed since they were scored" in out
    mixed = {r["id"]: r["text"] for p in (work / "mixed").glob("*.parquet") for r in pq.read_table(p).to_pylist()
             if r["source"] == "base"}
    ids = t["id"].to_pylist()
    assert [mixed[i] for i in ids] == texts[::-1]  # the mixture carries the new texts

    third.unlink()  # a file removed: its scores go, and the mixture no longer has its rows
    out = _run(cfg)
    assert "no longer in the corpus" in out
    assert _rows(work / "scores") == 18
    assert json.loads((work / "mixed" / ".manifest.json").read_text())["base_rows"] == 18
    assert _run(cfg).count("up to date") == 5


def test_run_redoes_stages_after_an_output_is_rewritten_outside(tmp_path, tiny_model_dir):
    """`attninf select` run by hand into the workdir: the stages after it see a new selection."""
    corpus = make_corpus(tmp_path / "corpus", files=2, rows=9)
    cfg = _pipeline(tmp_path, tiny_model_dir, corpus)
    _run(cfg)
    work = tmp_path / "work"
    res = _invoke("select", work / "scores", "--out", work / "selected", "--frac", "0.6")
    assert res.exit_code == 0, res.output
    out = _run(cfg)  # select's own settings say 0.3: it is redone
    assert "[select] done" in out
    sel = json.loads((work / "selected" / "manifest.json").read_text())
    assert sel["config"]["frac"] == 0.3
    mix = json.loads((work / "mixed" / ".manifest.json").read_text())  # made from that selection
    assert mix["rows"] == mix["base_rows"] + sel["selected"]

    res = _invoke("mix", corpus, "--selected", work / "selected", "--out", work / "mixed", "--repeat", "3")
    assert res.exit_code == 0, res.output
    out = _run(cfg)  # a mix rewritten by hand: redone with the pipeline's settings, and the report after it
    assert "[select] up to date" in out and "[mix] done" in out
    mix = json.loads((work / "mixed" / ".manifest.json").read_text())
    assert mix["rows"] == mix["base_rows"] + sel["selected"]


# ------------------------------------------- 2. compare keys each run on what makes it

def test_compare_retrains_runs_whose_settings_or_data_changed(tmp_path, tiny_model_dir):
    from attninf.pipelines.compare import CompareConfig, run_compare

    corpus, scores = make_scored_corpus(tmp_path, files=2, rows=30)
    model = tmp_path / "m.yaml"
    model.write_text("hidden_size: 32\nintermediate_size: 64\nnum_hidden_layers: 2\nnum_attention_heads: 2\n"
                     "num_key_value_heads: 1\n")
    base = dict(scores=str(scores), corpus=str(corpus), out=str(tmp_path / "c"), arms="full,attninf", seeds=1,
                model_config=str(model), tokenizer=str(tiny_model_dir), seq_len=32, batch_size=2, total_steps=4,
                warmup_steps=1, decay_steps=2, lr=5e-3, dtype="float32", device="cpu", probes=0,
                eval_sequences=4)
    said = []
    s1 = run_compare(CompareConfig(**base), progress=False, say=said.append)
    assert all(t == [4 * 2 * 32] for t in s1["tokens"].values())

    said.clear()
    s2 = run_compare(CompareConfig(**{**base, "total_steps": 8, "lr": 1e-2, "frac": 0.5}), progress=False,
                     say=said.append)
    assert all(t == [8 * 2 * 32] for t in s2["tokens"].values())  # not the 4-step runs
    for arm in ("full", "attninf"):
        run = json.loads((tmp_path / "c" / "runs" / f"{arm}-s0" / "run.json").read_text())
        assert run["step"] == 8
    assert s2["data"]["selected"] != s1["data"]["selected"]

    said.clear()  # nothing changed: nothing trained
    run_compare(CompareConfig(**{**base, "total_steps": 8, "lr": 1e-2, "frac": 0.5}), progress=False,
                say=said.append)
    assert not any("training" in m for m in said)

    model.write_text(model.read_text().replace("hidden_size: 32", "hidden_size: 48"))  # same path, new content
    said.clear()
    run_compare(CompareConfig(**{**base, "total_steps": 8, "lr": 1e-2, "frac": 0.5}), progress=False,
                say=said.append)
    assert sum("training" in m for m in said) == 2
    cfg = json.loads((tmp_path / "c" / "runs" / "full-s0" / "checkpoints" / "step-0000008" / "config.json")
                     .read_text())
    assert cfg["hidden_size"] == 48


# --------------------------------------------- 3. the domain column is in the fingerprint

def test_score_domain_column_changes_the_fingerprint(tmp_path, heads_file):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    n = 6
    pq.write_table(pa.table({"text": [f"document number {i} " * (i + 2) for i in range(n)],
                             "id": [f"d{i}" for i in range(n)], "domain": ["a"] * n,
                             "topic": ["x", "y"] * (n // 2)}), corpus / "f.parquet")
    out = tmp_path / "scores"
    common = ["--heads", heads_file, "--out", out, "--workers", "0", "--max-tokens", "32", "--dtype", "float32",
              "--quiet"]
    assert _invoke("score", corpus, *common).exit_code == 0
    res = _invoke("score", corpus, *common, "--domain-column", "topic")
    assert res.exit_code == 2 and "differs in: domain_column" in res.output and "--overwrite" in res.output
    res = _invoke("score", corpus, *common, "--domain-column", "topic", "--overwrite")
    assert res.exit_code == 0, res.output
    assert pq.read_table(out / "f.parquet")["domain"].to_pylist() == ["x", "y"] * (n // 2)

    # a scores directory from before domain_column was a key resumes when it is the same column
    man = json.loads((out / "manifest.json").read_text())
    del man["fingerprint"]["domain_column"]
    (out / "manifest.json").write_text(json.dumps(man))
    res = _invoke("score", corpus, *common, "--domain-column", "topic")
    assert res.exit_code == 0 and "1 of 1 files already scored" in res.output


# ---------------------------------------------- 4. scaled logits: the model's own loss

def _tiny(cls_name, tiny_tokenizer, **kw):
    import transformers

    cfg_cls = getattr(transformers, cls_name.replace("ForCausalLM", "Config"))
    cfg = cfg_cls(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **kw)
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(cfg).eval()


@pytest.mark.parametrize("arch,kw", [("GraniteForCausalLM", {"logits_scaling": 4.0}),
                                     ("CohereForCausalLM", {"logit_scale": 0.25})])
def test_scaled_logits_give_the_models_own_loss(tiny_tokenizer, arch, kw):
    """The plain loss attninf scores with equals the one of the model's own
    eager forward (its logits, cross-entropy in float64) on the same tokens."""
    from attninf.model import LoadedModel
    from attninf.scoring import Scorer

    model = _tiny(arch, tiny_tokenizer, **kw)
    text = "the quick brown fox jumps over the lazy dog and then " * 6
    scorer = Scorer(LoadedModel(model=model, tokenizer=tiny_tokenizer, name=arch, path=""), [[1, 0]],
                    max_tokens=256)
    ids = torch.tensor([scorer.encode([text])[0]])
    model.set_attn_implementation("eager")
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].double()
    scorer.model.set_attn_implementation("attninf")
    want = torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()
    got = scorer.score_texts([text])["loss_base"][0]
    assert got == pytest.approx(want, rel=1e-5)


def test_an_output_layer_the_fused_loss_does_not_reproduce_is_refused(tiny_tokenizer):
    from transformers import LlamaForCausalLM

    from attninf.errors import AttninfError
    from attninf.model import LoadedModel
    from attninf.scoring import Scorer

    from conftest import tiny_llama_config

    class Tempered(LlamaForCausalLM):  # an architecture that bends its logits in its own forward
        def forward(self, *a, **kw):
            out = super().forward(*a, **kw)
            out.logits = out.logits / 3.0
            return out

    torch.manual_seed(0)
    model = Tempered(tiny_llama_config(len(tiny_tokenizer))).eval()
    with pytest.raises(AttninfError, match="differs from the model's own"):
        Scorer(LoadedModel(model=model, tokenizer=tiny_tokenizer, name="t", path=""), [[1, 0]], max_tokens=64)


# ---------------------------------------- 5. one rule for the YAML's top-level keys

def test_run_and_config_read_the_same_yaml_the_same_way(tmp_path, tiny_model_dir):
    from attninf.config import SHARED_KEYS, load_stage
    from attninf.runner import Runner, load_pipeline

    corpus = make_corpus(tmp_path / "corpus", files=2, rows=4)
    p = tmp_path / "p.yaml"
    p.write_text(f"model: {tiny_model_dir}\ndtype: float32\ndevice: cpu\nseed: 7\nworkdir: {tmp_path / 'w'}\n"
                 f"corpus: {corpus}\nmix: {{repeat: 2}}\nselect: {{frac: 0.4}}\n"
                 "compare: {seeds: 1}\ndemo_corpus: {docs_per_domain: 3}\n")
    stages = {s.name: s.settings for s in Runner(load_pipeline(p)).stages()}
    assert stages["mix"].seed == 7 and stages["mix"].repeat == 2
    sections = {"corpus": "demo_corpus", "heads": "detect"}
    for name, settings in stages.items():
        if not dataclasses.is_dataclass(settings):
            settings = stages[name] = None
            continue
        alone = load_stage(type(settings), p, sections.get(name, name), {})
        for key in SHARED_KEYS:
            if hasattr(settings, key):
                assert getattr(settings, key) == getattr(alone, key), (name, key)


# ------------------------------------------ 6. an output folder holds only the output

def test_plain_mix_replaces_a_phased_one_whole(tmp_path):
    import datasets

    corpus, scores = make_scored_corpus(tmp_path, files=2, rows=20)
    assert _invoke("select", scores, "--out", tmp_path / "sel", "--frac", "0.3").exit_code == 0
    out = tmp_path / "mixed"
    res = _invoke("mix", corpus, "--selected", tmp_path / "sel", "--out", out, "--phases", "stable,decay")
    assert res.exit_code == 0, res.output
    assert (out / "stable").is_dir()
    res = _invoke("mix", corpus, "--selected", tmp_path / "sel", "--out", out)
    assert res.exit_code == 0, res.output
    assert not (out / "stable").exists() and not (out / "decay").exists()
    rows = json.loads((out / ".manifest.json").read_text())["rows"]
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert len(ds) == rows
    assert not list(tmp_path.glob(".mixed.*"))  # no temporary folder left beside it

    (out / "notes.txt").write_text("mine")  # a folder holding what no mix wrote is never replaced
    res = _invoke("mix", corpus, "--selected", tmp_path / "sel", "--out", out)
    assert res.exit_code == 2 and "notes.txt" in res.output and (out / "notes.txt").exists()
    res = _invoke("mix", corpus, "--selected", tmp_path / "sel", "--out", tmp_path)
    assert res.exit_code == 2 and "overlap" in res.output and corpus.is_dir()


# ------------------------------------------- 7. non-finite scores in the report

def test_report_counts_non_finite_scores_and_never_bins_them(tmp_path):
    from attninf.artifacts import Scores
    from attninf.scorestats import collect

    corpus, scores = make_scored_corpus(tmp_path, files=1, rows=10)
    rel = "a/part-0.parquet"
    t = pq.read_table(scores / rel)
    s = t["score"].to_numpy().copy()
    s[0], s[1] = np.inf, -np.inf
    t = t.set_column(t.schema.get_field_index("score"), "score", pa.array(s))
    pq.write_table(t, scores / rel)
    res = _invoke("report", scores, "--out", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    stats = collect(Scores.read(scores), None, top=3, table_rows=0)
    dom = t["domain"].to_pylist()
    for name, ds in stats.domains.items():
        finite = [x for x, d in zip(s, dom) if d == name and np.isfinite(x)]
        assert ds.scores["all"].counts.sum() == len(finite) == ds.ok
        assert ds.non_finite == sum(1 for x, d in zip(s, dom) if d == name and not np.isfinite(x))
        assert np.isfinite(ds.scores["all"].edges).all()
        assert ds.scores["all"].edges[0] == pytest.approx(min(finite))
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "non-finite score (not ranked)" in page


# -------------------------------------------------- 8. help shows the defaults used

def _commands():
    """{command: (click command, its config class)} for every command built from a config class."""
    from attninf.cli import main as group
    from attninf.export import ExportConfig
    from attninf.heads import DetectConfig
    from attninf.pipelines.compare import CompareConfig
    from attninf.pipelines.mix import MixConfig
    from attninf.pipelines.score import ScoreConfig
    from attninf.pipelines.select import SelectConfig
    from attninf.report import ReportConfig
    from attninf.train import TrainConfig

    classes = {"score": ScoreConfig, "detect-heads": DetectConfig, "select": SelectConfig, "mix": MixConfig,
               "report": ReportConfig, "compare": CompareConfig, "train": TrainConfig, "export": ExportConfig}
    with_config = {name for name, cmd in group.commands.items()
                   if any(p.name == "config_path" for p in getattr(cmd, "params", []))}
    assert with_config == set(classes), with_config ^ set(classes)
    return {name: (group.commands[name], cls) for name, cls in classes.items()}


def _runtime_defaults():
    """The defaults computed at run time, as this machine (no GPU) resolves
    them, each with what its help must then say."""
    from attninf.pipelines.score import ScoreConfig, chunk_docs
    from attninf.pipelines.executors import default_workers

    return {
        ("ScoreConfig", "workers"): f"[default: {default_workers('auto')} (in this process)",
        ("ScoreConfig", "chunk_docs"): f"[default: {chunk_docs(ScoreConfig(device='cpu'))} on CPU",
        ("ScoreConfig", "batch_tokens"): f"[default: {_cpu_batch_tokens()} on CPU",
        ("ScoreConfig", "max_tokens"): "[default: min(context, 4096)]",  # test_scoring: max_tokens default
        ("ScoreConfig", "head_fracs"): "[default: the heads heads.json selected, one set]",  # test_head_sets
        ("ScoreConfig", "context_overlap"): "[default: half of --max-tokens]",
        ("ScoreConfig", "threads"): "[default: torch's own (the cores) in this process",
        ("ScoreConfig", "model"): "[default: the one heads.json names]",
        ("ScoreConfig", "doc_prefix"): "[default: the one heads.json's probes used]",
        ("DetectConfig", "doc_prefix"): "[default: what the tokenizer adds by itself",
        ("MixConfig", "phases"): "[default: one mixture",
        ("ExportConfig", "workers"): "[default: the cores]",
        # test_export checks each of these in use: the separators, the val split, the file sets
        ("ExportConfig", "eos"): "[default: the document separator, e.g. <|endoftext|> for SmolLM2]",
        ("ExportConfig", "bos"): "[default: what the tokenizer puts first by itself",
        ("ExportConfig", "val_frac"): f"[default: {_export_val_default()} for llmc and nanogpt",
        ("ExportConfig", "max_tokens_per_file"): "[default: one file per mixture shard and split]",
        ("TrainConfig", "decay_steps"): "[default: 10% of the total]",
        ("CompareConfig", "decay_steps"): "[default: 10% of the total]",
        ("CompareConfig", "corpus"): "[default: required]",
    }


def _export_val_default():
    from attninf.export import ExportConfig, _val_frac

    return _val_frac(ExportConfig(format="nanogpt"))


def _cpu_batch_tokens():
    from attninf.windows import default_batch_tokens

    return default_batch_tokens(torch.nn.Linear(1, 1))


def test_help_defaults_are_the_defaults_used():
    """Every option whose help shows a default: a static one is the config
    field's default; one computed at run time is listed above with what it
    resolves to here, so a new one cannot go unchecked."""
    runtime = _runtime_defaults()
    seen = set()
    for name, (cmd, cls) in _commands().items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for p in cmd.params:
            text = getattr(p, "help", None) or ""
            m = re.search(r"\[default: (.*)\]$", text)
            if not m or p.name not in fields:
                continue
            f = fields[p.name]
            if "default_help" in f.metadata:
                key = (cls.__name__, p.name)
                assert key in runtime, f"{name} --{p.name}: a default computed at run time the test does not know"
                assert runtime[key] in text, (name, p.name, text)
                seen.add(key)
            else:
                shown = ",".join(map(str, f.default)) if isinstance(f.default, list) else str(f.default)
                assert m.group(1) == shown, (name, p.name, text)
    assert seen == set(runtime), set(runtime) - seen


def test_zero_row_file_has_the_token_stats_columns(tmp_path, heads_file):
    from attninf.artifacts import TOKEN_STATS

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(pa.table({"text": ["a document with a few words in it"] * 3, "id": ["a", "b", "c"]}),
                   corpus / "full.parquet")
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "id": pa.array([], pa.string())}),
                   corpus / "empty.parquet")
    out = tmp_path / "scores"
    res = _invoke("score", corpus, "--heads", heads_file, "--out", out, "--workers", "0", "--max-tokens", "32",
                  "--dtype", "float32", "--save-token-stats", "--quiet")
    assert res.exit_code == 0, res.output
    full, empty = pq.read_schema(out / "full.parquet"), pq.read_schema(out / "empty.parquet")
    assert set(TOKEN_STATS) <= set(full.names)
    assert empty.names == full.names


# ------------------------------------------------------------- 9. the lock

def test_runlock_as_a_context_manager_holds_the_lock(tmp_path):
    from attninf.errors import AttninfError
    from attninf.pipelines.lock import LOCK, RunLock

    with RunLock(tmp_path) as lock:
        assert (tmp_path / LOCK).exists() and lock.note is None
        with pytest.raises(AttninfError, match="being written by another"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK).exists()


# --------------------- found going through every stage's inputs (the closing note's list)

def test_export_replaces_its_folder_whole(tmp_path, tiny_model_dir):
    """An export of a phased mixture, then of a plain one into the same
    folder: no stable/ or decay/ shards are left for a trainer to glob."""
    corpus, scores = make_scored_corpus(tmp_path, files=2, rows=20)
    assert _invoke("select", scores, "--out", tmp_path / "sel", "--frac", "0.3").exit_code == 0
    for out, phases in (("phased", ["--phases", "stable,decay"]), ("plain", [])):
        res = _invoke("mix", corpus, "--selected", tmp_path / "sel", "--out", tmp_path / out, *phases)
        assert res.exit_code == 0, res.output
    tokens = tmp_path / "tokens"
    for mix in ("phased", "plain"):
        res = _invoke("export", tmp_path / mix, "--tokenizer", tiny_model_dir, "--out", tokens)
        assert res.exit_code == 0, res.output
    assert not (tokens / "stable").exists() and not (tokens / "decay").exists()
    man = json.loads((tokens / ".manifest.json").read_text())
    assert sorted(p.name for p in tokens.glob("*.bin")) == sorted(e["files"]["data"]
                                                                  for e in man["phases"]["main"]["files"])


def test_train_refuses_to_resume_on_a_rewritten_mixture(tmp_path, tiny_model_dir):
    from attninf.errors import AttninfError
    from attninf.train import TrainConfig, train

    corpus, scores = make_scored_corpus(tmp_path, files=2, rows=20)
    assert _invoke("select", scores, "--out", tmp_path / "sel", "--frac", "0.3").exit_code == 0
    mix = tmp_path / "mixed"
    assert _invoke("mix", corpus, "--selected", tmp_path / "sel", "--out", mix).exit_code == 0
    model = tmp_path / "m.yaml"
    model.write_text("hidden_size: 32\nintermediate_size: 64\nnum_hidden_layers: 1\nnum_attention_heads: 2\n"
                     "num_key_value_heads: 1\n")
    cfg = TrainConfig(data=str(mix), out=str(tmp_path / "run"), model_config=str(model), tokenizer=str(tiny_model_dir),
                      seq_len=32, batch_size=2, total_steps=6, warmup_steps=1, save_every=2, max_steps_this_run=2,
                      dtype="float32", device="cpu", eval_data=None)
    train(cfg, progress=False, say=lambda m: None)
    assert _invoke("mix", corpus, "--selected", tmp_path / "sel", "--out", mix, "--repeat", "3").exit_code == 0
    with pytest.raises(AttninfError, match="another mixture"):
        train(cfg, progress=False, say=lambda m: None)


def test_a_new_document_rule_is_a_new_run(tmp_path, tiny_model_dir, monkeypatch):
    """The separators the stream packs with are part of what a run reads:
    after they change (a new attninf, another rule), a checkpoint made with
    the old ones is not resumed, and compare does not reuse its run."""
    import attninf.docstart
    from attninf.errors import AttninfError
    from attninf.pipelines.compare import run_key
    from attninf.train import TrainConfig, train

    corpus, scores = make_scored_corpus(tmp_path, files=2, rows=20)
    assert _invoke("select", scores, "--out", tmp_path / "sel", "--frac", "0.3").exit_code == 0
    assert _invoke("mix", corpus, "--selected", tmp_path / "sel", "--out", tmp_path / "mixed").exit_code == 0
    model = tmp_path / "m.yaml"
    model.write_text("hidden_size: 32\nintermediate_size: 64\nnum_hidden_layers: 1\nnum_attention_heads: 2\n"
                     "num_key_value_heads: 1\n")
    cfg = TrainConfig(data=str(tmp_path / "mixed"), out=str(tmp_path / "run"), model_config=str(model),
                      tokenizer=str(tiny_model_dir), seq_len=32, batch_size=2, total_steps=6, warmup_steps=1,
                      save_every=2, max_steps_this_run=2, dtype="float32", device="cpu")
    train(cfg, progress=False, say=lambda m: None)
    key = run_key(cfg, 0)
    rule = attninf.docstart.document_separators
    monkeypatch.setattr(attninf.docstart, "document_separators", lambda tok, eos=None, bos=None: rule(tok, "none"))
    assert run_key(cfg, 0) != key
    with pytest.raises(AttninfError, match="document separators"):
        train(cfg, progress=False, say=lambda m: None)


def test_run_redoes_a_stage_whose_code_version_changed(tmp_path, tiny_model_dir, monkeypatch):
    import attninf.identity

    corpus = make_corpus(tmp_path / "corpus", files=2, rows=6)
    cfg = _pipeline(tmp_path, tiny_model_dir, corpus)
    _run(cfg)
    monkeypatch.setattr(attninf.identity, "SCORING_VERSION", attninf.identity.SCORING_VERSION + 1)
    out = _run(cfg)
    assert "[heads] up to date" in out and "[score] done" in out
