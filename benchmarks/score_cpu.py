"""python benchmarks/score_cpu.py [--docs 48] [--heads heads.json] [--out benchmarks/RESULTS.md]

Scores the same small real corpus three ways, each in its own process so
that peak memory is its own, and prints a table:

* cli: `attninf score corpus/ --heads ... --out ...` with default flags, the
  whole process timed from outside (imports, model load, reading, writing);
* engine: attninf.scoring.Scorer in a process (shared prefix, packed
  windows, fused loss, default settings), the scoring call timed;
* naive: two full forward passes per document (plain, then retrieval heads
  masked), one document at a time, full fp32 logits and cross-entropy.

Reports doc-tokens/s, the ratio to naive, peak RSS, achieved FLOP/s against
this machine's measured matmul peak in the same dtype, where the engine's
time goes (torch profiler, by kind of op), and how well the scores agree
with the fp32 naive ones (max abs difference, Spearman).

The corpus is real text available offline: prose from Shakespeare's plays
(the probe sentences, joined into paragraphs) and Python source files of the
standard library, cut to at most ~1,500 tokens. Needs the offline default
model (attninf model pull) and a heads.json for it (attninf detect-heads).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from results import append_results  # this folder: the scripts run from it

ROOT = Path(__file__).resolve().parents[1]


def build_corpus(n_docs: int, seed: int = 0) -> list[dict]:
    """Half prose, half code; lengths spread from a few dozen to ~1,500 tokens."""
    from attninf.probes import sentences

    rng = random.Random(seed)
    pool = list(sentences())
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code_files = sorted(p for p in stdlib.glob("*.py") if 2_000 < p.stat().st_size)
    docs = []
    for i in range(n_docs):
        if i % 2 == 0:
            start = rng.randrange(len(pool))
            k = rng.choice([3, 8, 20, 40, 80])
            text = " ".join(pool[start:start + k])
            docs.append({"id": f"prose-{i}", "domain": "prose", "text": text})
        else:
            src = rng.choice(code_files).read_text(errors="replace")
            a = rng.randrange(max(1, len(src) - 6000))
            docs.append({"id": f"code-{i}", "domain": "code", "text": src[a:a + rng.choice([400, 1500, 3000, 6000])]})
    return docs


def matmul_peak(dtype_name: str) -> float:
    """FLOP/s of a large square matmul in this dtype on this machine."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(2048, 2048, dtype=dtype)
    b = torch.randn(2048, 2048, dtype=dtype)
    for _ in range(2):
        a @ b
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < 2.0:
        a @ b
        n += 1
    return 2 * 2048 ** 3 * n / (time.perf_counter() - t)


def flops_per_token(config, shared_frac: float) -> float:
    """Matmul FLOPs of one token through the model, two branches, the first
    `shared_frac` of layers counted once; attention scores excluded (small at
    these lengths) and the LM head counted per branch."""
    H, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    hd = getattr(config, "head_dim", None) or H // config.num_attention_heads
    kv = config.num_key_value_heads * hd
    layer = 2 * (H * H + 2 * H * kv + H * H + 3 * H * I)  # q, k, v, o, gate/up/down
    head = 2 * H * config.vocab_size
    layers = L * layer * (shared_frac + 2 * (1 - shared_frac))
    return layers + 2 * head


def run_mode(mode: str, corpus_file: str, heads_file: str, result_file: str) -> None:
    """Child process: score with one mode and write the timings and scores."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from attninf.artifacts import Heads
    from attninf.model import load_model
    from attninf.plugin import install, masked_heads
    from attninf.scoring import Scorer

    docs = json.loads(Path(corpus_file).read_text())
    texts = [d["text"] for d in docs]
    heads = Heads.read(heads_file).heads
    if mode == "engine":
        lm = load_model("smollm2-135m", dtype="auto")
        scorer = Scorer(lm, heads)
        scorer.score_texts(texts[:2])  # warm-up
        t = time.perf_counter()
        res = scorer.score_texts(texts)
        el = time.perf_counter() - t
        t = time.perf_counter()  # score --save-token-stats: every token's NLL kept, summarised per document
        with_stats = scorer.score_texts(texts, token_stats=True)
        el_stats = time.perf_counter() - t
        assert np.array_equal(with_stats["score"], res["score"], equal_nan=True)
        out = {"score": res["score"].tolist(), "n_tokens": res["n_tokens"].tolist(), "seconds_token_stats": el_stats,
               "dtype": str(next(lm.model.parameters()).dtype).replace("torch.", ""),
               "first_masked": scorer.first_masked, "layers": lm.config.num_hidden_layers,
               "batch_tokens": scorer.batch_tokens, "profile": profile_engine(scorer, texts[:8])}
    else:
        lm = load_model("smollm2-135m", dtype="float32")
        install(lm.model)
        from attninf.docstart import resolve_doc_prefix

        start = list(resolve_doc_prefix(lm.tokenizer).ids)  # the engine's document start
        enc = [start + lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

        def losses(ids):
            x = torch.tensor(ids).view(1, -1)
            logits = lm.model(x).logits[0, :-1].float()  # full (tokens x vocab) fp32 logits
            return F.cross_entropy(logits, x[0, 1:], reduction="mean").item()

        scores, n_tokens = [], []
        with torch.inference_mode():
            losses(enc[0][:64])
            t = time.perf_counter()
            for ids in enc:
                ids = ids[:4096]
                base = losses(ids)
                with masked_heads(lm.model, heads):
                    masked = losses(ids)
                scores.append((masked - base) / base)
                n_tokens.append(len(ids) - 1)
            el = time.perf_counter() - t
        out = {"score": scores, "n_tokens": n_tokens, "dtype": "float32"}
    out["seconds"] = el
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(result_file).write_text(json.dumps(out))
    del np


KINDS = [("matmul (linear layers, LM head)", ("aten::mm", "aten::addmm", "aten::bmm")),
         ("attention (per document)", ("scaled_dot_product", "flash_attention")),
         ("loss (log-softmax, NLL)", ("log_softmax", "nll_loss", "cross_entropy")),
         ("copies (cat, copy, index)", ("aten::cat", "aten::copy_", "aten::index", "aten::repeat")),
         ("elementwise (norms, SiLU, rotary, masks)", ("aten::",))]


def profile_engine(scorer, texts) -> dict:
    """Seconds by kind of op while the engine scores `texts` (self CPU time of
    the ops; the rest of the wall time is Python, tokenization, packing)."""
    from torch.profiler import ProfilerActivity, profile

    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        scorer.score_texts(texts)
    wall = time.perf_counter() - t
    out = {name: 0.0 for name, _ in KINDS}
    for ev in prof.key_averages():
        kind = next((name for name, keys in KINDS if any(k in ev.key for k in keys)), None)
        if kind is not None:
            out[kind] += ev.self_cpu_time_total / 1e6
    out["python, tokenizer, packing (the rest of the wall time)"] = max(0.0, wall - sum(out.values()))
    out["total"] = wall
    return out


def run_cli(docs: list[dict], heads: str, tmp: Path) -> dict:
    """`attninf score` as a user runs it, on the corpus as Parquet (prose/, code/)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = tmp / "corpus"
    for dom in ("prose", "code"):
        (corpus / dom).mkdir(parents=True, exist_ok=True)
        rows = [d for d in docs if d["domain"] == dom]
        pq.write_table(pa.table({k: [d[k] for d in rows] for k in ("id", "domain", "text")}),
                       corpus / dom / "part-0.parquet")
    exe = Path(sys.executable).parent / "attninf"
    t = time.perf_counter()
    subprocess.run([str(exe), "score", str(corpus), "--heads", heads, "--out", str(tmp / "scores"), "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    el = time.perf_counter() - t
    got = {}
    for dom in ("prose", "code"):
        t = pq.read_table(tmp / "scores" / dom / "part-0.parquet").to_pydict()
        got.update(zip(t["id"], zip(t["score"], t["n_tokens"])))
    return {"seconds": el, "score": [got[d["id"]][0] for d in docs], "n_tokens": [got[d["id"]][1] for d in docs],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def spearman(a, b) -> float:
    import numpy as np

    ra = np.argsort(np.argsort(a))
    rb = np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=48)
    ap.add_argument("--heads", default=None, help="heads.json for smollm2-135m (default: detect a quick one)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--_mode", help=argparse.SUPPRESS)
    ap.add_argument("--_files", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._mode:
        return run_mode(args._mode, *args._files)

    import numpy as np
    import torch
    import transformers

    tmp = Path(tempfile.mkdtemp(prefix="attninf-bench-"))
    heads = args.heads
    if heads is None:
        heads = str(tmp / "heads.json")
        subprocess.run([sys.executable, "-m", "attninf.cli", "detect-heads", "--config",
                        str(ROOT / "configs" / "quick.yaml"), "--random-trials", "0", "--out", heads, "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
    docs = build_corpus(args.docs)
    (tmp / "corpus.json").write_text(json.dumps(docs))
    res = {"cli": run_cli(docs, heads, tmp)}  # first: RUSAGE_CHILDREN's peak is then its own
    for mode in ("engine", "naive"):
        out = tmp / f"{mode}.json"
        subprocess.run([sys.executable, __file__, "--_mode", mode, "--_files", str(tmp / "corpus.json"), heads,
                        str(out)], check=True, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
        res[mode] = json.loads(out.read_text())
    from attninf.model import load_model

    config = load_model("smollm2-135m").config
    e, n, c = res["engine"], res["naive"], res["cli"]
    assert e["n_tokens"] == n["n_tokens"] == c["n_tokens"], "the modes scored different tokens"
    tokens = sum(e["n_tokens"])
    shared = e["first_masked"] / e["layers"]
    peak_e, peak_n = matmul_peak(e["dtype"]), matmul_peak("float32")
    fl_e = flops_per_token(config, shared) * tokens / e["seconds"]
    fl_n = flops_per_token(config, 0.0) * tokens / n["seconds"]
    diff = float(np.nanmax(np.abs(np.array(e["score"], float) - np.array(n["score"], float))))
    rho = spearman(np.array(e["score"], float), np.array(n["score"], float))
    diff_c = float(np.nanmax(np.abs(np.array(c["score"], float) - np.array(n["score"], float))))
    bound = flops_per_token(config, 0.0) / flops_per_token(config, shared)
    prof = e["profile"]

    rows = [
        f"## Scoring on CPU: engine vs naive two-pass baseline ({dt.date.today()})",
        "",
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"transformers {transformers.__version__}; SmolLM2-135M, {len(docs)} documents "
        f"(prose + Python), {tokens:,} tokens; {len(json.loads(Path(heads).read_text())['heads'])} heads masked, "
        f"first masked layer {e['first_masked']} of {e['layers']}",
        "",
        "| mode | dtype | seconds | doc-tokens/s | ratio | peak RSS MiB | achieved GFLOP/s | matmul peak GFLOP/s | % of peak |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| naive (2 full passes, 1 doc at a time, fp32 logits) | float32 | {n['seconds']:.1f} | "
        f"{tokens / n['seconds']:,.0f} | 1.00 | {n['peak_rss_mib']:,.0f} | {fl_n / 1e9:,.0f} | {peak_n / 1e9:,.0f} | "
        f"{100 * fl_n / peak_n:.0f}% |",
        f"| engine in a process (shared prefix, packed {e['batch_tokens']}-token rows, fused loss) | {e['dtype']} | "
        f"{e['seconds']:.1f} | {tokens / e['seconds']:,.0f} | {n['seconds'] / e['seconds']:.2f} | "
        f"{e['peak_rss_mib']:,.0f} | {fl_e / 1e9:,.0f} | {peak_e / 1e9:,.0f} | {100 * fl_e / peak_e:.0f}% |",
        f"| `attninf score` default flags, whole process | {e['dtype']} | {c['seconds']:.1f} | "
        f"{tokens / c['seconds']:,.0f} | {n['seconds'] / c['seconds']:.2f} | {c['peak_rss_mib']:,.0f} | "
        f"{flops_per_token(config, shared) * tokens / c['seconds'] / 1e9:,.0f} | {peak_e / 1e9:,.0f} | "
        f"{100 * flops_per_token(config, shared) * tokens / c['seconds'] / peak_e:.0f}% |",
        f"| engine with token stats (`--save-token-stats`), same process | {e['dtype']} | "
        f"{e['seconds_token_stats']:.1f} | {tokens / e['seconds_token_stats']:,.0f} | "
        f"{n['seconds'] / e['seconds_token_stats']:.2f} | - | - | - | - |",
        "",
        f"FLOP bound of the shared prefix on this model: {bound:.2f}x the naive passes. "
        f"Scores vs fp32 naive: engine max |difference| {diff:.2e}, Spearman {rho:.4f}; "
        f"`attninf score` max |difference| {diff_c:.2e}.",
        "",
        f"Where the engine's time goes (torch profiler, first 8 documents, {prof['total']:.1f} s wall under the profiler):",
        "",
        "| kind of op | seconds | share |",
        "|---|---|---|",
        *[f"| {k} | {v:.2f} | {100 * v / prof['total']:.0f}% |" for k, v in prof.items() if k != "total"],
        "",
    ]
    append_results(rows, args.out)


if __name__ == "__main__":
    main()
