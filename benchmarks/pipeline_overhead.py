"""python benchmarks/pipeline_overhead.py [--tiny-docs 2000] [--smol-docs 12] [--out benchmarks/RESULTS.md]

What the scoring pipeline costs on top of the bare engine. The same corpus
is scored, each way in its own process (so peak memory is its own):

* bare: load_scorer + read the texts + Scorer.score_texts in batches, nothing
  written (the least any pipeline could do);
* `attninf score` in this process (--workers 0, the default on CPU): units,
  parts, assembly, manifest, lock;
* `attninf score --workers 1` and `--workers 2`: a local Dask cluster.

Two scorers: a tiny random-weight Llama (built from a config, with a
2,000-token BPE trained on the probe sentences: so the pipeline's own cost
shows) and SmolLM2-135M on a
small corpus (where the model's cost dominates). Reports docs/s, tokens/s,
the pipeline's cost per document against bare (ms) and as a share, and the
peak RSS of the process (and of its largest worker).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import append_results  # this folder: the scripts run from it

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def small_tokenizer(vocab: int = 2000):
    """A byte-level BPE of `vocab` tokens trained on the probe sentences: a
    cheap LM head, so that the pipeline's own cost shows."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from attninf.probes import sentences

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(list(sentences()), trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def tiny_model(dir_: Path) -> Path:
    """A 4-layer random Llama with a 2,000-token BPE, saved with its heads.json."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from attninf.artifacts import HEADS_VERSION, HIT_RULE
    from attninf.model import model_fingerprint

    tok = small_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=96, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=6, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                      tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(dir_, safe_serialization=True)
    tok.save_pretrained(dir_)
    fp = model_fingerprint(str(dir_))
    heads = dir_ / "heads.json"
    heads.write_text(json.dumps({"model": {**fp, "name": str(dir_)}, "heads": [[1, 2], [2, 0], [3, 3]],
                                 "num_layers": 4, "num_heads": 6, "heads_version": HEADS_VERSION, "hit": HIT_RULE,
                                 "doc_prefix": {"ids": [0], "tokens": ["<|endoftext|>"], "rule": "separator"}}))
    return heads


def write_corpus(docs: list[dict], root: Path, files: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for f in range(files):
        rows = docs[f::files]
        dom = rows[0]["domain"] if rows else "prose"
        (root / dom).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({k: [d[k] for d in rows] for k in ("id", "domain", "text")}),
                       root / dom / f"part-{f}.parquet", row_group_size=64)


def bare(corpus: str, heads: str, result: str) -> None:
    """Child process: the engine alone, as little around it as possible."""
    import pyarrow.parquet as pq

    from attninf.scoring import load_scorer

    t = time.perf_counter()
    scorer = load_scorer(None, heads)
    texts = []
    for p in sorted(Path(corpus).rglob("*.parquet")):
        texts.extend(pq.read_table(p, columns=["text"])["text"].to_pylist())
    tokens = 0
    for i in range(0, len(texts), 256):
        tokens += int(scorer.score_texts(texts[i:i + 256])["n_tokens"].sum())
    Path(result).write_text(json.dumps({"seconds": time.perf_counter() - t, "tokens": tokens, "docs": len(texts)}))


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds of a command and the peak RSS (MiB) of its largest process
    (the command itself or one of its workers), sampled every 0.1 s."""
    import psutil

    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    peak = 0
    proc = psutil.Process(p.pid)
    while p.poll() is None:
        try:
            for q in [proc, *proc.children(recursive=True)]:
                peak = max(peak, q.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    el = time.perf_counter() - t
    if p.returncode:
        raise subprocess.CalledProcessError(p.returncode, cmd)
    return el, peak / 2**20


def measure(name: str, corpus: Path, heads: str, tmp: Path) -> list[dict]:
    rows = []
    res = tmp / f"{name}-bare.json"
    el, rss = run([sys.executable, __file__, "--_bare", str(corpus), heads, str(res)])
    b = json.loads(res.read_text())
    rows.append({"scorer": name, "mode": "bare engine (load, read, score; writes nothing)", "seconds": el,
                 "rss": rss, **b})
    exe = str(Path(sys.executable).parent / "attninf")
    for workers in (0, 1, 2):
        out = tmp / f"{name}-w{workers}"
        el, rss = run([exe, "score", str(corpus), "--heads", heads, "--out", str(out), "--workers", str(workers),
                       "--quiet"])
        summ = json.loads((out / "manifest.json").read_text())["summary"]
        mode = "`attninf score` in this process (default)" if workers == 0 else \
            f"`attninf score --workers {workers}` (Dask)"
        rows.append({"scorer": name, "mode": mode, "seconds": el, "rss": rss, "tokens": summ["tokens"],
                     "docs": summ["documents"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny-docs", type=int, default=2000)
    ap.add_argument("--tiny-chars", type=int, default=500, help="documents cut to this many characters for "
                                                                   "the tiny model")
    ap.add_argument("--smol-docs", type=int, default=12)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--heads", default=None, help="heads.json for smollm2-135m (default: detect a quick one)")
    ap.add_argument("--_bare", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._bare:
        return bare(*args._bare)

    import torch

    from score_cpu import build_corpus

    tmp = Path(tempfile.mkdtemp(prefix="attninf-overhead-"))
    t0 = time.perf_counter()
    tiny_heads = tiny_model(tmp / "tiny")
    rng = random.Random(0)
    docs = build_corpus(max(args.tiny_docs, args.smol_docs))
    rng.shuffle(docs)
    short = [{**d, "text": d["text"][:args.tiny_chars]} for d in docs[:args.tiny_docs]]
    write_corpus(short, tmp / "corpus-tiny", files=8)
    write_corpus(docs[:args.smol_docs], tmp / "corpus-smol", files=2)
    smol_heads = args.heads
    if smol_heads is None:
        smol_heads = str(tmp / "heads.json")
        subprocess.run([sys.executable, "-m", "attninf.cli", "detect-heads", "--config",
                        str(ROOT / "configs" / "quick.yaml"), "--random-trials", "0", "--out", smol_heads, "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
    rows = measure("tiny random Llama", tmp / "corpus-tiny", str(tiny_heads), tmp)
    rows += measure("SmolLM2-135M", tmp / "corpus-smol", smol_heads, tmp)

    lines = [f"## Scoring pipeline overhead over the bare engine ({dt.date.today()}, "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{time.perf_counter() - t0:.0f}s)", "",
             "Each row is a whole process timed from outside (imports and model load included, as a user runs it).",
             "", "| scorer | mode | docs | tokens | seconds | docs/s | tokens/s | cost/doc vs bare (ms) | vs bare | "
             "peak RSS MiB (largest process) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next(b for b in rows if b["scorer"] == r["scorer"] and b["mode"].startswith("bare"))
        extra = (r["seconds"] - base["seconds"]) / r["docs"] * 1000
        share = 100 * (r["seconds"] / base["seconds"] - 1)
        cost = "-" if r is base else f"{extra:+.2f}"
        rel = "-" if r is base else f"{share:+.1f}%"
        lines.append(f"| {r['scorer']} | {r['mode']} | {r['docs']:,} | {r['tokens']:,} | {r['seconds']:.1f} | "
                     f"{r['docs'] / r['seconds']:,.1f} | {r['tokens'] / r['seconds']:,.0f} | {cost} | {rel} | "
                     f"{r['rss']:,.0f} |")
    append_results(lines, args.out)


if __name__ == "__main__":
    main()
