"""`attninf train`: a tiny model on a tiny mixed dataset learns, follows the
schedule exactly, saves loadable checkpoints, and resumes after SIGKILL to
the same final weights."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from attninf.errors import AttninfError
from attninf.probes import sentences
from attninf.schedules import wsd, wsd_s
from attninf.train import TrainConfig, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixed")
    pool = list(sentences())[:400]
    texts = [" ".join(pool[i:i + 4]) for i in range(0, 400, 4)]
    pq.write_table(pa.table({"text": texts[:60], "domain": ["plays"] * 60}), d / "part-00000-of-00002.parquet")
    pq.write_table(pa.table({"text": texts[60:], "domain": ["plays"] * 40}), d / "part-00001-of-00002.parquet")
    _manifest(d, 2)
    return d


def _manifest(d, shards):
    """What a finished `attninf mix` writes last."""
    import json

    names = [f"part-{i:05d}-of-{shards:05d}.parquet" for i in range(shards)]
    (d / ".manifest.json").write_text(json.dumps({"shards": shards, "files": names}))


@pytest.fixture(scope="module")
def model_yaml(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "m.yaml"
    p.write_text("hidden_size: 32\nintermediate_size: 64\nnum_hidden_layers: 2\nnum_attention_heads: 2\n"
                 "num_key_value_heads: 1\n")
    return p


def _cfg(data, model_yaml, tiny_model_dir, out, **kw):
    base = dict(data=str(data), model_config=str(model_yaml), out=str(out), tokenizer=str(tiny_model_dir),
                seq_len=32, batch_size=4, total_steps=40, lr=5e-3, warmup_steps=4, decay_steps=10,
                decay="1-sqrt", save_every=10, dtype="float32")
    base.update(kw)
    return TrainConfig(**base)


def _log(out):
    return list(csv.DictReader(open(Path(out) / "log.csv")))


def test_trains_and_follows_schedule(data, model_yaml, tiny_model_dir, tmp_path):
    cfg = _cfg(data, model_yaml, tiny_model_dir, tmp_path / "run", eval_data=str(data))
    r = train(cfg, progress=False)
    rows = _log(tmp_path / "run")
    assert [int(x["step"]) for x in rows] == list(range(1, 41))
    for x in rows:  # the LR used at step s (1-based) is the schedule's value at s - 1
        assert float(x["lr"]) == pytest.approx(5e-3 * wsd(int(x["step"]) - 1, 40, 4, 10, decay="1-sqrt"), rel=1e-6)
    losses = [float(x["loss"]) for x in rows]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5  # it learns
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "checkpoints" / "step-0000040")
    assert m.config.num_hidden_layers == 2
    assert (tmp_path / "run" / "loss.png").exists()
    assert set(r["eval_loss"]) == {"plays"} and r["eval_loss"]["plays"] < losses[0]


def test_wsd_s_keeps_budget_checkpoints(data, model_yaml, tiny_model_dir, tmp_path):
    cfg = _cfg(data, model_yaml, tiny_model_dir, tmp_path / "run", schedule="wsd-s", budgets=[12, 30],
               decay_frac=0.25, total_steps=34, save_every=100, keep_last=1)
    train(cfg, progress=False)
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert kept == ["step-0000012", "step-0000030", "step-0000034"]
    rows = _log(tmp_path / "run")
    for x in rows:
        assert float(x["lr"]) == pytest.approx(5e-3 * wsd_s(int(x["step"]) - 1, [12, 30], 0.25, 4, decay="1-sqrt"), rel=1e-6)


@pytest.mark.heavy
def test_kill_and_resume_same_weights(data, model_yaml, tiny_model_dir, tmp_path):
    common = ["--data", str(data), "--model-config", str(model_yaml), "--tokenizer", str(tiny_model_dir),
              "--seq-len", "32", "--batch-size", "4", "--total-steps", "60", "--lr", "5e-3", "--warmup-steps", "4",
              "--decay-steps", "10", "--save-every", "5", "--quiet"]
    cmd = [sys.executable, "-m", "attninf.cli", "train"]
    subprocess.run(cmd + common + ["--out", str(tmp_path / "ref")], check=True, capture_output=True)
    out = tmp_path / "killed"
    p = subprocess.Popen(cmd + common + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "step-0000010").exists():
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert not (out / "checkpoints" / "step-0000060").exists(), "the run ended before the kill"
    subprocess.run(cmd + common + ["--out", str(out)], check=True, capture_output=True)
    a = load_file(tmp_path / "ref" / "checkpoints" / "step-0000060" / "model.safetensors")
    b = load_file(out / "checkpoints" / "step-0000060" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["step"] for r in _log(out)] == [str(s) for s in range(1, 61)]
    assert [r["loss"] for r in _log(out)] == [r["loss"] for r in _log(tmp_path / "ref")]


def test_eval_token_budget_spans_files(model_yaml, tiny_model_dir, tmp_path):
    """5 files of one long document each, a budget of 32 tokens: one document
    is evaluated, not one per file."""
    from transformers import AutoTokenizer

    from attninf.train import build_model, evaluate

    long_doc = " ".join(list(sentences())[:40])
    for i in range(5):
        pq.write_table(pa.table({"text": [long_doc], "domain": [f"d{i}"]}), tmp_path / f"e{i}.parquet")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = build_model(str(model_yaml), len(tok), 32, 0)
    got = evaluate(model, tok, str(tmp_path), seq_len=32, n_seq=1)
    assert list(got) == ["d0"]


def test_max_steps_this_run_saves_and_progresses(data, model_yaml, tiny_model_dir, tmp_path):
    cfg = _cfg(data, model_yaml, tiny_model_dir, tmp_path / "run", save_every=50, max_steps_this_run=6)
    assert train(cfg, progress=False)["step"] == 6
    assert train(cfg, progress=False)["step"] == 12  # the second call goes on from step 6
    assert [int(r["step"]) for r in _log(tmp_path / "run")] == list(range(1, 13))


def test_no_text_is_an_error_not_a_hang(model_yaml, tiny_model_dir, tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    pq.write_table(pa.table({"text": pa.array([None, "", None], pa.string())}), d / "part-00000-of-00001.parquet")
    _manifest(d, 1)
    with pytest.raises(AttninfError, match="no text in column 'text'"):
        train(_cfg(d, model_yaml, tiny_model_dir, tmp_path / "run"), progress=False)


def test_reads_only_a_finished_mixture(data, model_yaml, tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "mixed"
    shutil.copytree(data, d)
    (d / ".manifest.json").unlink()
    with pytest.raises(AttninfError, match="no .manifest.json: not a finished `attninf mix` output"):
        train(_cfg(d, model_yaml, tiny_model_dir, tmp_path / "run"), progress=False)
    # a killed mix's unfinished pieces sit in a hidden folder: never read
    _manifest(d, 2)
    (d / ".pieces" / "00000").mkdir(parents=True)
    pq.write_table(pa.table({"text": ["zzzz " * 50] * 30}), d / ".pieces" / "00000" / "x.parquet")
    from attninf.artifacts import Mixture

    assert [p.name for p in Mixture.read(d).shards()] == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    (d / "part-00001-of-00002.parquet").unlink()
    with pytest.raises(AttninfError, match="1 shard\\(s\\) its manifest lists are missing"):
        Mixture.read(d).shards()


@pytest.fixture(scope="module")
def phased(tmp_path_factory):
    """A phased mixture as `attninf mix --phases stable,decay` leaves it:
    stable/ and decay/ with different texts, and the top manifest."""
    import json

    d = tmp_path_factory.mktemp("phased")
    pool = list(sentences())
    for phase, lo in (("stable", 0), ("decay", 600)):
        (d / phase).mkdir()
        texts = [" ".join(pool[i:i + 4]) for i in range(lo, lo + 200, 4)]
        pq.write_table(pa.table({"text": texts, "domain": ["plays"] * len(texts)}),
                       d / phase / "part-00000-of-00001.parquet")
        _manifest(d / phase, 1)
    (d / ".manifest.json").write_text(json.dumps({"phases": {"stable": {"path": "stable"}, "decay": {"path": "decay"}}}))
    return d


def _position(run, step):
    return torch.load(Path(run) / "checkpoints" / f"step-{step:07d}" / "trainer_state.pt", weights_only=False)["phases"]


def test_phased_mixture_switches_at_the_decay(phased, model_yaml, tiny_model_dir, tmp_path):
    """WSD: the decay stream from the first decay step (total - decay_steps)
    on; the stable stream does not move while the decay one is read."""
    import json

    cfg = _cfg(phased, model_yaml, tiny_model_dir, tmp_path / "run", keep_last=10)
    train(cfg, progress=False)
    rows = _log(tmp_path / "run")
    assert [r["phase"] for r in rows] == ["stable"] * 30 + ["decay"] * 10  # steps 31..40 train at steps 30..39
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["phases"] == [{"phase": "stable", "first_step": 1, "last_step": 30},
                             {"phase": "decay", "first_step": 31, "last_step": 40}]
    s30, s40 = _position(tmp_path / "run", 30), _position(tmp_path / "run", 40)
    assert s30["decay"] == {"file": 0, "row": 0, "buffer": [], "epoch": 0}  # untouched before the decay
    assert s40["stable"] == s30["stable"] and s40["decay"] != s30["decay"]


def test_phased_mixture_wsd_s_goes_back_to_stable(phased, model_yaml, tiny_model_dir, tmp_path):
    from attninf.schedules import wsd_s_decays

    cfg = _cfg(phased, model_yaml, tiny_model_dir, tmp_path / "run", schedule="wsd-s", budgets=[12, 30],
               decay_frac=0.25, total_steps=34, save_every=100)
    train(cfg, progress=False)
    windows = wsd_s_decays([12, 30], 0.25)
    want = ["decay" if any(a <= s - 1 < b for a, b in windows) else "stable" for s in range(1, 35)]
    assert [r["phase"] for r in _log(tmp_path / "run")] == want
    assert want[8] == "stable" and want[9:12] == ["decay"] * 3 and want[12] == "stable"  # 0-based steps 9..11


@pytest.mark.parametrize("stops", [(25, 5), (33, 4)])  # stopped in the stable phase, in the decay phase
def test_phased_resume_is_bit_identical(phased, model_yaml, tiny_model_dir, tmp_path, stops):
    ref = _cfg(phased, model_yaml, tiny_model_dir, tmp_path / "ref", save_every=7)
    train(ref, progress=False)
    first, more = stops
    train(_cfg(phased, model_yaml, tiny_model_dir, tmp_path / "cut", save_every=7, max_steps_this_run=first),
          progress=False)
    train(_cfg(phased, model_yaml, tiny_model_dir, tmp_path / "cut", save_every=7, max_steps_this_run=more),
          progress=False)
    train(_cfg(phased, model_yaml, tiny_model_dir, tmp_path / "cut", save_every=7), progress=False)
    a = load_file(tmp_path / "ref" / "checkpoints" / "step-0000040" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoints" / "step-0000040" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [(r["loss"], r["phase"]) for r in _log(tmp_path / "cut")] == \
        [(r["loss"], r["phase"]) for r in _log(tmp_path / "ref")]


def test_power_schedule_in_training(data, model_yaml, tiny_model_dir, tmp_path):
    from attninf.schedules import power

    cfg = _cfg(data, model_yaml, tiny_model_dir, tmp_path / "run", schedule="power", lr=0.02, power_a=0.05,
               total_steps=30)
    train(cfg, progress=False)
    tps = 4 * 32
    for r in _log(tmp_path / "run"):
        s = int(r["step"]) - 1
        want = power(s * tps, 0.02, a=0.05, b=-0.51, batch_size=4, warmup_tokens=4 * tps, decay_tokens=10 * tps,
                     total_tokens=30 * tps, decay="exponential", final_ratio=0.01)
        assert float(r["lr"]) == pytest.approx(0.02 * want, rel=1e-6)
    lrs = [float(r["lr"]) for r in _log(tmp_path / "run")]
    assert lrs[4] < 0.02 and lrs[19] < lrs[4] and lrs[-1] < lrs[19] / 5  # under the cap, falling, then decaying


def test_phased_mixture_needs_a_decaying_schedule(phased, model_yaml, tiny_model_dir, tmp_path):
    with pytest.raises(AttninfError, match="needs a schedule with a decay phase"):
        train(_cfg(phased, model_yaml, tiny_model_dir, tmp_path / "run", schedule="cosine"), progress=False)


def test_train_device_option(data, model_yaml, tiny_model_dir, tmp_path):
    import json

    train(_cfg(data, model_yaml, tiny_model_dir, tmp_path / "run", device="cpu", total_steps=16, decay_steps=4),
          progress=False)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["device"] == "cpu" and run["autocast"] is None and run["phases"][0]["phase"] == "main"
    if not torch.cuda.is_available():
        with pytest.raises(AttninfError, match="no CUDA GPU"):
            train(_cfg(data, model_yaml, tiny_model_dir, tmp_path / "gpu", device="cuda"), progress=False)


def test_packing_ends_documents_with_the_document_separator_not_a_chat_token(data, tiny_model_dir):
    """Training packs with the rule export writes (attninf.docstart): a
    tokenizer whose eos is a chat turn's end (<|im_end|>, as SmolLM2-Instruct's)
    still separates documents with <|endoftext|>."""
    from transformers import AutoTokenizer

    from attninf.artifacts import Mixture
    from attninf.streams import PackedStream

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.add_special_tokens({"eos_token": "<|im_end|>"})
    sep, chat = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")
    files = Mixture.read(data).shards()
    stream = PackedStream(files, tok, seq_len=63)
    got = [t for _ in range(20) for t in stream.next()]
    texts = pq.read_table(files[0])["text"].to_pylist()
    want = [t for x in texts for t in tok(x, add_special_tokens=False)["input_ids"] + [sep]][:len(got)]
    assert got == want and chat not in got
