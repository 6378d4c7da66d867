"""python benchmarks/big_model_cpu.py [--docs 4] [--probes 2] [--context 512] [--out benchmarks/RESULTS.md]

The paper's selector size on CPU: a ~1.3B Llama-style model (16 layers,
hidden 2560, 20 query heads sharing 10 KV heads, 4,096-token context, SmolLM2's
49,152-token vocabulary, tied embeddings), random weights built from a config
(no download). Runs detect-heads (a few short probes, the ablation included)
and the scorer on a few real documents, and reports peak RSS and tokens/s.
It shows that nothing in attninf assumes a small model; the numbers are a
floor for CPU and say nothing about a GPU (see the README for GPU settings).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import sys
import time
from pathlib import Path

from results import append_results  # this folder: the scripts run from it

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=4)
    ap.add_argument("--probes", type=int, default=2)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from attninf.heads import DetectConfig, detect_heads
    from attninf.model import LoadedModel, pull_model
    from attninf.scoring import Scorer
    from score_cpu import build_corpus

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(pull_model("smollm2-135m", quiet=True))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=2560, intermediate_size=6912, num_hidden_layers=16,
                      num_attention_heads=20, num_key_value_heads=10, head_dim=128, max_position_embeddings=4096,
                      tie_word_embeddings=True, rope_theta=10000.0)
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = LlamaForCausalLM(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    lm = LoadedModel(model, tok, "random-1.3b", "(built from a config)", {"fingerprint": "random-1.3b"})
    t_build = time.perf_counter() - t0
    rss_build = rss_mib()

    t = time.perf_counter()
    det = detect_heads(lm, DetectConfig(num_probes=args.probes, context_tokens=args.context, random_trials=1,
                                        top_frac=0.05), progress=False, log=lambda *a: None)
    t_detect = time.perf_counter() - t
    pr = det["probes"]
    probe_tokens = (pr["min_tokens"] + pr["max_tokens"]) / 2 * args.probes  # per pass over the probes
    rss_detect = rss_mib()

    texts = [d["text"] for d in build_corpus(args.docs)]
    scorer = Scorer(lm, det["heads"], max_tokens=min(4096, args.context * 4))
    t = time.perf_counter()
    res = scorer.score_texts(texts)
    t_score = time.perf_counter() - t
    tokens = int(res["n_tokens"].sum())
    rss_score = rss_mib()

    lines = [f"## A 1.3B-shaped selector on CPU ({dt.date.today()}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__})", "",
             f"Random-weight Llama: {params / 1e9:.2f}B parameters, 16 layers x 20 query heads (10 KV heads), "
             f"hidden 2560, float32; {len(det['heads'])} heads selected (first masked layer {scorer.first_masked}).",
             "", "| step | what | seconds | tokens/s | peak RSS MiB |", "|---|---|---|---|---|",
             f"| build | model from a config, random weights | {t_build:.1f} | - | {rss_build:,.0f} |",
             f"| detect-heads | {args.probes} probes under {args.context} tokens, copy scores + ablation "
             f"(base, selected, 1 random) | {t_detect:.1f} | "
             f"{3 * probe_tokens / t_detect:,.1f} (3 passes) | {rss_detect:,.0f} |",
             f"| score | {args.docs} documents, {tokens:,} tokens, default batch | {t_score:.1f} | "
             f"{tokens / t_score:,.1f} | {rss_score:,.0f} |", ""]
    append_results(lines, args.out)


if __name__ == "__main__":
    main()
