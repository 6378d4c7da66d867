"""python benchmarks/gpu_check.py [--smoke] [--out benchmarks/RESULTS.md]

Everything attninf runs on a GPU, checked and timed in one go (under 8
minutes on one H200), as one Markdown report whose last table has a row per
check (exit status 1 when a check fails):

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
SUMMARY: list[tuple[str, str, str]] = []  # (check, measured, verdict): the one table printed last


def note(check: str, measured: str, verdict: str = "") -> None:
    SUMMARY.append((check, measured, verdict))


# ------------------------------------------------------------------ helpers


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _bench(fn, device, reps=20, warmup=5) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def _rel_err(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def attention_f64(q, k, v, head_mask, cu_seqlens):
    """Float64 masked attention, written out: softmax over each query's
    visible prefix of its document, a masked head's output the plain mean of
    V over that prefix. Independent of both kernels."""
    import torch

    q, k, v = q.double(), k.double(), v.double()
    B, Hq, S, D = q.shape
    g = Hq // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    pos = torch.arange(S, device=q.device)
    doc = torch.zeros(S, dtype=torch.long, device=q.device)
    if cu_seqlens is not None:
        doc = torch.bucketize(pos, cu_seqlens[1:].to(q.device).long(), right=True)
    visible = (pos[None, :] <= pos[:, None]) & (doc[None, :] == doc[:, None])  # (S, S): key j from query i
    logits = (q @ k.transpose(-1, -2)) * D ** -0.5
    attn = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)
    uniform = visible.double() / visible.sum(-1, keepdim=True)
    hm = head_mask.view(-1, Hq, 1, 1).to(q.device) if head_mask is not None else torch.zeros(1, Hq, 1, 1,
                                                                                            dtype=torch.bool,
                                                                                            device=q.device)
    return torch.where(hm, uniform @ v, attn @ v)


def nll_f64(hidden, weight, targets):
    import torch

    logits = hidden.double() @ weight.double().T
    return torch.logsumexp(logits, -1) - logits.gather(1, targets[:, None]).squeeze(1)


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


def section_compiled(device, say) -> None:
    """Registers and spills as loaded, against the AOT compile of the same
    launch (kernels/aot.py, run in a subprocess: it forks, and this process
    holds a CUDA context)."""
    import torch

    from attninf.kernels import aot

    say("### 1. Kernels as loaded: registers and spills (driver) vs ahead of time (kernels/aot.py)")
    say()
    cap = torch.cuda.get_device_capability()
    target = {8: "sm_80", 9: "sm_90"}.get(cap[0])
    expected = {}
    if target:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        res = subprocess.run([sys.executable, "-m", "attninf.kernels.aot", "--json", "--full", "--targets", target],
                             env=env, capture_output=True, text=True, cwd=ROOT)
        expected = {r["case"]: r for r in map(json.loads, (x for x in res.stdout.splitlines() if x.startswith("{")))}
    say(f"| kernel (as launched) | loaded regs | loaded spills | AOT {target or '-'} regs | AOT spills st/ld |")
    say("|---|---|---|---|---|")
    for case in aot.production_cases(full=True):
        fn, runs = aot._launches(case)
        regs, spills = 0, 0
        for grid, args, kwargs in runs:
            args = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in args)
            k = fn[grid](*args, **kwargs)
            regs, spills = max(regs, k.n_regs), max(spills, k.n_spills)
        e = expected.get(case.label, {})
        say(f"| {case.label} | {regs} | {spills} | {e.get('registers', '-')} | "
            f"{e.get('spill_stores', '-')}/{e.get('spill_loads', '-')} |")
        note(f"{case.label}: registers, spills as loaded", f"{regs}, {spills}", "ok" if spills == 0 else "SPILLS")
    torch.cuda.synchronize()
    say()


def section_correctness(device, smoke, say) -> None:
    import torch

    from attninf.kernels import masked_attention, token_nll

    say("### 2. Correctness on the device against float64 (max relative error)")
    say()
    say("| case | dtype | path | rel. error | bound |")
    say("|---|---|---|---|---|")
    S, D = (48, 64) if smoke else (2048, 128)
    bound = {torch.bfloat16: 2e-2, torch.float16: 4e-3, torch.float32: 1e-5}
    for name, (B, Hq, Hkv, docs, per_row) in {
        "GQA 20/4, 5% masked": (1, 20, 4, False, False),
        "GQA 32/8, 50% masked, packed docs": (1, 32, 8, True, False),
        "MHA 8/8, per-row masks, B=2": (2, 8, 8, False, True),
    }.items():
        if smoke:
            Hq, Hkv = max(2, Hq // 8), max(1, Hkv // 8)
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            g = torch.Generator(device="cpu").manual_seed(0)
            q = torch.randn(B, Hq, S, D, generator=g).to(device, dtype)
            k = torch.randn(B, Hkv, S, D, generator=g).to(device, dtype)
            v = torch.randn(B, Hkv, S, D, generator=g).to(device, dtype)
            frac = 0.5 if "50%" in name else 0.05
            hm = torch.rand(B if per_row else 1, Hq, generator=g) < frac
            hm[0, 0] = True
            hm = hm.to(device) if per_row else hm[0].to(device)
            cu = None
            if docs:
                cuts = sorted(set(torch.randint(1, S, (5,), generator=g).tolist()))
                cu = torch.tensor([0, *cuts, S], dtype=torch.int32, device=device)
            out = masked_attention(q, k, v, hm, cu_seqlens=cu)
            err = _rel_err(out, attention_f64(q, k, v, hm, cu))
            path = "torch (fp32 routed)" if dtype == torch.float32 and device == "cuda" else "kernel"
            ok = "ok" if err <= bound[dtype] else f"**over {bound[dtype]:g}**"
            say(f"| masked_attention {name} | {str(dtype)[6:]} | {path} | {err:.2e} | {ok} |")
            note(f"masked_attention {name}, {str(dtype)[6:]} vs float64", f"{err:.1e}", ok)
    N, H, V = (40, 64, 500) if smoke else (4096, 2048, 49152)
    for dtype in (torch.bfloat16, torch.float32):
        g = torch.Generator(device="cpu").manual_seed(1)
        h = torch.randn(N, H, generator=g).to(device, dtype)
        w = (torch.randn(V, H, generator=g) * H ** -0.5).to(device, dtype)
        t = torch.randint(0, V, (N,), generator=g).to(device)
        err = _rel_err(token_nll(h, w, t), nll_f64(h, w, t))
        b = 2e-2 if dtype == torch.bfloat16 else 1e-5
        ok = "ok" if err <= b else f"**over {b:g}**"
        say(f"| token_nll N={N} H={H} V={V} | {str(dtype)[6:]} | kernel | {err:.2e} | {ok} |")
        note(f"token_nll H={H} V={V}, {str(dtype)[6:]} vs float64", f"{err:.1e}", ok)
    say()


def _sdpa_flash(q, k, v):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = q.shape[1] // k.shape[1]
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        try:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=g > 1)
        except RuntimeError:  # flash without GQA: repeat k/v (costs memory, not FLOPs)
            return F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                                  is_causal=True)


def section_attention_speed(device, smoke, say) -> None:
    import torch

    from attninf.kernels import masked_attention

    say("### 3. masked_attention vs SDPA flash (causal, bf16, D=128)")
    say()
    say("| S | Hq/Hkv | masked | SDPA ms | SDPA TFLOP/s | attninf ms | attninf TFLOP/s (live heads) | ratio |")
    say("|---|---|---|---|---|---|---|---|")
    shapes = [(4096, 16, 16), (4096, 32, 8)] if not smoke else [(48, 4, 2)]
    for S, Hq, Hkv in shapes:
        B = 1 if smoke else max(1, 16384 // S)
        D = 64 if smoke else 128
        q = torch.randn(B, Hq, S, D, device=device, dtype=torch.bfloat16)
        k = torch.randn(B, Hkv, S, D, device=device, dtype=torch.bfloat16)
        v = torch.randn(B, Hkv, S, D, device=device, dtype=torch.bfloat16)
        flops_head = 4 * B * S * S * D / 2  # causal: half of QK^T and PV
        reps = 2 if smoke else 20
        t_sdpa = None if device != "cuda" else _bench(lambda: _sdpa_flash(q, k, v), device, reps)
        for frac in (0.0, 0.05, 0.5):
            n_masked = round(frac * Hq)
            hm = torch.zeros(Hq, dtype=torch.bool, device=device)
            hm[torch.randperm(Hq)[:n_masked]] = True
            t_k = _bench(lambda: masked_attention(q, k, v, hm), device, reps, warmup=1 if smoke else 5)
            tf_k = flops_head * (Hq - n_masked) / t_k / 1e12
            if t_sdpa is None:
                say(f"| {S} | {Hq}/{Hkv} | {n_masked} | - | - | {t_k * 1e3:.2f} | {tf_k:.4f} | - |")
                continue
            tf_s = flops_head * Hq / t_sdpa / 1e12
            say(f"| {S} | {Hq}/{Hkv} | {n_masked} ({frac:.0%}) | {t_sdpa * 1e3:.2f} | {tf_s:.0f} | "
                f"{t_k * 1e3:.2f} | {tf_k:.0f} | {tf_k / tf_s:.2f} |")
            if frac == 0.0:
                note(f"attention S={S} {Hq}/{Hkv} unmasked: attninf / SDPA flash TFLOP/s", f"{tf_k / tf_s:.2f}x")
    say()


def section_nll_speed(device, smoke, say) -> None:
    import torch
    import torch.nn.functional as F

    from attninf.kernels import token_nll

    say("### 4. token_nll vs logits + cross-entropy (bf16 in, fp32 loss)")
    say()
    say("| tokens | hidden | vocab | logits+CE ms | peak MiB | token_nll ms | peak MiB |")
    say("|---|---|---|---|---|---|---|")
    for V in ((49152, 151936) if not smoke else (500,)):
        N, H = (16384, 2048) if not smoke else (40, 64)
        h = torch.randn(N, H, device=device, dtype=torch.bfloat16)
        w = (torch.randn(V, H, device=device) * H ** -0.5).to(torch.bfloat16)
        t = torch.randint(0, V, (N,), device=device)
        res = []
        for fn in (lambda: F.cross_entropy((h @ w.T).float(), t, reduction="none"), lambda: token_nll(h, w, t)):
            peak = float("nan")
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                fn()
                torch.cuda.synchronize()
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            res.append((_bench(fn, device, 2 if smoke else 10, warmup=1 if smoke else 3), peak))
        (tp, mp), (tf, mf) = res
        say(f"| {N} | {H} | {V} | {tp * 1e3:.2f} | {mp:.0f} | {tf * 1e3:.2f} | {mf:.0f} |")
        note(f"token_nll V={V}: time, memory vs logits+CE", f"{tf / tp:.2f}x time, {mf / mp:.2f}x memory"
             if mp == mp and mp > 0 else f"{tf / tp:.2f}x time")
    say()


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
        "1": lambda: None if args.smoke else section_compiled(device, say),
        "2": lambda: section_correctness(device, args.smoke, say),
        "3": lambda: section_attention_speed(device, args.smoke, say),
        "4": lambda: section_nll_speed(device, args.smoke, say),
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
