"""python benchmarks/gpu_check.py [--smoke] [--out benchmarks/RESULTS.md]

Everything attninf runs on a GPU, checked and timed in one go (under 8
minutes on one H200), as one Markdown report whose last table has a row per
check (exit status 1 when a check fails):

Sections 1-4 (the kernels) are in gpu_kernels.py, 5-7 (the models) here:

1. the kernels as the driver loaded them: registers and spills per launch
   (Triton fills n_regs / n_spills only on a real GPU), beside what
   kernels/aot.py's ahead-of-time compile reported for the same launch;
2. correctness on the GPU against float64 references: masked_attention in
   bf16 and fp16 (GQA, packed documents, masked heads, per-row masks), fp32
   (which the dispatcher routes to the torch path), token_nll in bf16/fp32;
3. masked_attention against torch SDPA (flash) at 1.3B-model shapes, with
   0%, 5% and 50% of heads masked;
4. token_nll against logits + cross-entropy: time and peak memory;
5. the scorer end to end (score_texts on offline texts: code and prose): tokens/s
   and model FLOP utilisation for SmolLM2-135M's shape and a 1.3B shape
   (random weights), against the bf16 matmul peak measured in this run;
6. bf16 against fp32 scores of the same documents: max |delta| and Spearman;
7. `attninf train` for a few steps on the GPU: tokens/s.

--smoke runs every section on tiny shapes on the CPU under the Triton
interpreter: CI runs it (tests/test_gpu_check.py) so the script cannot rot.
Appends the report to --out and prints it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_kernels.py beside this file

from gpu_kernels import (_bench, _sync, section_attention_speed, section_compiled,  # noqa: E402
                         section_correctness, section_nll_speed)
SUMMARY: list[tuple[str, str, str]] = []  # (check, measured, verdict): the one table printed last


def note(check: str, measured: str, verdict: str = "") -> None:
    SUMMARY.append((check, measured, verdict))


# ------------------------------------------------------------------ helpers


def _spearman(a, b) -> float:
    import numpy as np

    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _tokenizer(vocab: int):
    """A byte-level BPE trained on the probe sentences (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from attninf.probes import sentences

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(sentences())[:3000], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def _texts(n: int) -> list[str]:
    """Documents that need nothing from the network: half Python standard-
    library code (the demo corpus's code domain), half prose of 4 to 60
    sentences from attninf's own probe text."""
    import random

    from attninf.democorpus import code_blocks
    from attninf.probes import sentences

    rng = random.Random(0)
    pool = list(sentences())
    prose = []
    for _ in range(n - n // 2):
        k = rng.choice([4, 10, 25, 60])
        i = rng.randrange(len(pool) - k)
        prose.append(" ".join(pool[i:i + k]))
    return code_blocks(rng, n // 2) + prose


# ------------------------------------------------------------------ sections


def _matmul_peak(device, smoke) -> float:
    """bf16 matmul FLOP/s measured here (the MFU denominator)."""
    import torch

    n = 256 if smoke else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    b = torch.randn(n, n, device=device, dtype=a.dtype)
    t = _bench(lambda: a @ b, device, 3 if smoke else 20, warmup=1 if smoke else 5)
    return 2 * n ** 3 / t


SHAPES = {  # name: LlamaConfig sizes
    "SmolLM2-135M shape": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                               num_key_value_heads=3, head_dim=64, vocab_size=49152),
    "1.3B shape": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
                       num_key_value_heads=16, head_dim=128, vocab_size=49152),
    "tiny (smoke)": dict(hidden_size=96, intermediate_size=128, num_hidden_layers=4, num_attention_heads=6,
                         num_key_value_heads=2, head_dim=16, vocab_size=1000),
}


def _scorer(name: str, device: str, dtype, tok):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from attninf.model import LoadedModel
    from attninf.scoring import Scorer

    sizes = SHAPES[name]
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**sizes, max_position_embeddings=4096, tie_word_embeddings=True,
                                             initializer_range=0.02)).to(dtype).eval()
    model.config._attn_implementation = "sdpa"
    L, H = sizes["num_hidden_layers"], sizes["num_attention_heads"]
    heads = [[int(L * 0.6), 0], [int(L * 0.6), H // 2], [int(L * 0.7), 1], [int(L * 0.8), H - 1]]
    lm = LoadedModel(model=model, tokenizer=tok, name=name, path="-")
    return Scorer(lm, heads, max_tokens=64 if device != "cuda" else 4096), model


def _executed_flops(model, scorer, tokens: int) -> float:
    """Matmul FLOPs the scorer executes for `tokens` tokens: the layers below
    the first masked one once, the rest twice, and the LM head twice
    (attention's S x S work left out: a lower bound)."""
    cfg = model.config
    layer = sum(p.numel() for p in model.model.layers[0].parameters() if p.dim() == 2)
    head = cfg.vocab_size * cfg.hidden_size
    L, f = cfg.num_hidden_layers, scorer.first_masked if scorer.layered else 0
    return 2 * tokens * (layer * (f + 2 * (L - f)) + 2 * head)


def section_scorer(device, smoke, say, texts, tok) -> dict:
    import torch

    say("### 5. The scorer end to end (score_texts, bf16, offline code and prose, random weights)")
    say()
    peak = _matmul_peak(device, smoke)
    say(f"bf16 matmul peak measured here: {peak / 1e12:.1f} TFLOP/s" if device == "cuda" else
        f"(smoke: fp32 matmul {peak / 1e9:.1f} GFLOP/s on the CPU)")
    say()
    say("| model | path | documents | tokens | s | tokens/s | executed TFLOP/s | MFU |")
    say("|---|---|---|---|---|---|---|---|")
    names = ["tiny (smoke)"] if smoke else ["SmolLM2-135M shape", "1.3B shape"]
    kept = {}
    for name in names:
        scorer, model = _scorer(name, device, torch.bfloat16 if device == "cuda" else torch.float32, tok)
        scorer.score_texts(texts[:2])  # compile and warm up
        _sync(device)
        t = time.perf_counter()
        res = scorer.score_texts(texts)
        _sync(device)
        secs = time.perf_counter() - t
        tokens = int(res["n_tokens"].sum())
        fl = _executed_flops(model, scorer, tokens) / secs
        say(f"| {name} | {'shared prefix' if scorer.layered else 'two passes'} | {len(texts)} | {tokens:,} | "
            f"{secs:.2f} | {tokens / secs:,.0f} | {fl / 1e12:.2f} | {fl / peak:.1%} |")
        note(f"scorer {name}: tokens/s, MFU", f"{tokens / secs:,.0f}, {fl / peak:.1%}")
        kept[name] = (scorer, model, res)
    say()
    return kept


def section_agreement(device, smoke, say, texts, tok) -> None:
    import numpy as np
    import torch

    say("### 6. bf16 against fp32 scores of the same documents (same random weights)")
    say()
    say("| model | documents | max abs delta | mean abs delta | Spearman |")
    say("|---|---|---|---|---|")
    name = "tiny (smoke)" if smoke else "SmolLM2-135M shape"
    scores = {}
    for dtype in (torch.float32, torch.bfloat16):
        scorer, _model = _scorer(name, device, dtype, tok)
        scores[dtype] = scorer.score_texts(texts)["score"]
    a, b = scores[torch.float32], scores[torch.bfloat16]
    ok = np.isfinite(a) & np.isfinite(b)
    d = np.abs(a[ok] - b[ok])
    rho = _spearman(a[ok], b[ok])
    say(f"| {name} | {int(ok.sum())} | {d.max():.2e} | {d.mean():.2e} | {rho:.4f} |")
    note(f"bf16 vs fp32 scores ({name}): max abs delta, Spearman", f"{d.max():.1e}, {rho:.4f}")
    say()


def section_train(device, smoke, say, texts, tok) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from attninf.train import TrainConfig, train

    say("### 7. `attninf train` on the device (WSD, bf16 autocast)")
    say()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "mixed"
        d.mkdir()
        pq.write_table(pa.table({"text": texts, "domain": ["demo"] * len(texts)}), d / "part-00000-of-00001.parquet")
        (d / ".manifest.json").write_text(json.dumps({"shards": 1, "files": ["part-00000-of-00001.parquet"]}))
        tokdir = Path(tmp) / "tok"
        tok.save_pretrained(tokdir)
        cfg_yaml = Path(tmp) / "m.yaml"
        cfg_yaml.write_text("hidden_size: 512\nintermediate_size: 1536\nnum_hidden_layers: 8\nnum_attention_heads: 8\n"
                            "num_key_value_heads: 8\n" if not smoke else
                            "hidden_size: 32\nintermediate_size: 64\nnum_hidden_layers: 2\nnum_attention_heads: 2\n"
                            "num_key_value_heads: 1\n")
        steps = 4 if smoke else 60
        cfg = TrainConfig(data=str(d), model_config=str(cfg_yaml), out=str(Path(tmp) / "run"), tokenizer=str(tokdir),
                          seq_len=32 if smoke else 1024, batch_size=4 if smoke else 16, total_steps=steps,
                          warmup_steps=1 if smoke else 6, save_every=steps, device=device, dtype="auto")
        r = train(cfg, progress=False, say=lambda s: None)
        run = json.loads((Path(tmp) / "run" / "run.json").read_text())
    say("| steps | tokens/step | device | autocast | tokens/s |")
    say("|---|---|---|---|---|")
    say(f"| {r['step']} | {cfg.tokens_per_step:,} | {run['device']} | {run['autocast']} | {r['tokens_per_s']:,.0f} |")
    note(f"train {r['step']} steps on {run['device']}: tokens/s", f"{r['tokens_per_s']:,.0f}",
         "ok" if r["step"] == steps else "STOPPED EARLY")
    say()


# --------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU under the Triton interpreter")
    ap.add_argument("--skip", default="", help="comma-separated section numbers to leave out")
    args = ap.parse_args(argv)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    sys.path.insert(0, str(ROOT))
    from attninf import kernels

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check.py: no CUDA GPU visible (use --smoke to check the script on the CPU)", file=sys.stderr)
        return 2
    if args.smoke:
        kernels.set_backend("triton")  # the kernels on CPU tensors, through the interpreter
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    import triton
    import transformers

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    gpu = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or "cpu")
    say(f"## gpu_check on {gpu}" + (" (SMOKE: CPU, Triton interpreter)" if args.smoke else ""))
    say()
    say(f"{dt.date.today()}, torch {torch.__version__}, triton {triton.__version__}, "
        f"transformers {transformers.__version__}, commit {commit or '?'}")
    say()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    t0 = time.perf_counter()
    tok = _tokenizer(1000)
    # smoke: a few short texts, the interpreter runs every kernel call in Python
    texts = [t[:240] for t in _texts(4)] if args.smoke else _texts(400)
    sections = {
        "1": lambda: None if args.smoke else section_compiled(device, say, note),
        "2": lambda: section_correctness(device, args.smoke, say, note),
        "3": lambda: section_attention_speed(device, args.smoke, say, note),
        "4": lambda: section_nll_speed(device, args.smoke, say, note),
        "5": lambda: section_scorer(device, args.smoke, say, texts, tok),
        "6": lambda: section_agreement(device, args.smoke, say, texts, tok),
        "7": lambda: section_train(device, args.smoke, say, texts, tok),
    }
    took = []
    for name, run in sections.items():
        if name in skip:
            continue
        t = time.perf_counter()
        run()
        took.append(f"{name}: {time.perf_counter() - t:.0f} s")
    say("### Summary")
    say()
    say("| check | measured | verdict |")
    say("|---|---|---|")
    for check, measured, verdict in SUMMARY:
        say(f"| {check} | {measured} | {verdict} |")
    say()
    say(f"total {time.perf_counter() - t0:.0f} s ({', '.join(took)})")
    with open(args.out, "a") as f:
        f.write("\n" + "\n".join(lines).rstrip() + "\n")
    print(f"appended to {args.out}")
    return 1 if any(v.startswith("**over") or v in ("SPILLS", "STOPPED EARLY") for _, _, v in SUMMARY) else 0


if __name__ == "__main__":
    sys.exit(main())
