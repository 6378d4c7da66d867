"""python benchmarks/kernels_gpu.py [--out benchmarks/kernels_gpu.md] [--smoke]

Checks and times the Triton kernels on one GPU in a few minutes:

1. correctness on the GPU: masked_attention and token_nll in bf16 against
   their torch twins in fp32 (max relative error), with GQA, packed documents
   and masked heads;
2. masked_attention TFLOP/s against torch SDPA (flash backend) at 1.3B-model
   shapes (S=4096, D=128, Hq=20 and 32, GQA) with 0%, 5% and 50% of heads
   masked; only the unmasked heads' FLOPs are counted (a masked head does no
   QK^T work), so a faster masked run shows as equal TFLOP/s, less time;
3. token_nll time and peak memory against logits + cross-entropy at vocab
   49,152 and 155,136.

Writes a Markdown table (machine, versions, date) to --out and prints it.
--smoke runs tiny shapes on the CPU under the Triton interpreter, to check the
script itself where there is no GPU.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(fn, device, reps=20, warmup=5):
    """Median seconds per call."""
    import torch

    for _ in range(warmup):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            torch.cuda.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
    else:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def _rel_err(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-12)).item()


def sdpa_flash(q, k, v):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = q.shape[1] // k.shape[1]
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        try:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=g > 1)
        except RuntimeError:  # older flash paths without GQA: repeat k/v (costs memory, not FLOPs)
            return F.scaled_dot_product_attention(q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1),
                                                  is_causal=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "kernels_gpu.md"))
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under the Triton interpreter")
    args = ap.parse_args()
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(ROOT))
    from attninf.kernels import masked_attention_torch, token_nll_torch
    from attninf.kernels.attention_triton import masked_attention_triton
    from attninf.kernels.nll_triton import token_nll_triton

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("kernels_gpu.py: no CUDA GPU visible (use --smoke to check the script on CPU)")
    torch.manual_seed(0)
    bf16 = torch.bfloat16
    lines = []
    say = lambda s="": (print(s, flush=True), lines.append(s))  # noqa: E731

    gpu = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    import triton
    import transformers

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    say(f"## attninf kernels on {gpu}")
    say()
    say(f"{dt.date.today()}, torch {torch.__version__}, triton {triton.__version__}, "
        f"transformers {transformers.__version__}, commit {commit or '?'}" + (", SMOKE (CPU interpreter)" if args.smoke else ""))
    say()

    # ---------------------------------------------------------------- correctness
    S, D = (4096, 128) if not args.smoke else (40, 64)
    say("### Correctness (bf16 kernel vs fp32 torch twin, max relative error)")
    say()
    say("| case | rel. error |")
    say("|---|---|")
    for name, (B, Hq, Hkv, cu) in {
        "GQA 20/4, 5% masked": (1, 20, 4, None),
        "GQA 32/8, 50% masked, packed docs": (1, 32, 8, "docs"),
        "MHA 8/8, per-row masks, B=2": (2, 8, 8, None),
    }.items():
        q = torch.randn(B, Hq, S, D, device=device, dtype=bf16)
        k = torch.randn(B, Hkv, S, D, device=device, dtype=bf16)
        v = torch.randn(B, Hkv, S, D, device=device, dtype=bf16)
        frac = 0.5 if "50%" in name else 0.05
        hm = torch.rand(B, Hq, device=device) < frac
        hm[0, 0] = True
        cus = None
        if cu:
            cuts = sorted(set(torch.randint(1, S, (6,)).tolist()))
            cus = torch.tensor([0, *cuts, S], device=device, dtype=torch.int32)
        out = masked_attention_triton(q, k, v, hm, cu_seqlens=cus)
        ref = masked_attention_torch(q.float(), k.float(), v.float(), hm, cu_seqlens=cus)
        say(f"| masked_attention {name} | {_rel_err(out, ref):.2e} |")
    N, H, V = (4096, 2560, 49152) if not args.smoke else (40, 64, 500)
    h = torch.randn(N, H, device=device, dtype=bf16)
    w = (torch.randn(V, H, device=device) * H ** -0.5).to(bf16)
    t = torch.randint(0, V, (N,), device=device)
    say(f"| token_nll N={N} H={H} V={V} | "
        f"{_rel_err(token_nll_triton(h, w, t), token_nll_torch(h.float(), w.float(), t)):.2e} |")
    say()

    # ------------------------------------------------------------ attention speed
    say("### masked_attention vs SDPA flash (causal, bf16, D=128)")
    say()
    say("| S | Hq/Hkv | masked | SDPA ms | SDPA TFLOP/s | attninf ms | attninf TFLOP/s | ratio |")
    say("|---|---|---|---|---|---|---|---|")
    shapes = [(4096, 20, 4), (4096, 32, 8)] if not args.smoke else [(40, 4, 2)]
    for S, Hq, Hkv in shapes:
        B = 1 if args.smoke else max(1, 16384 // S)
        D = 128 if not args.smoke else 64
        q = torch.randn(B, Hq, S, D, device=device, dtype=bf16)
        k = torch.randn(B, Hkv, S, D, device=device, dtype=bf16)
        v = torch.randn(B, Hkv, S, D, device=device, dtype=bf16)
        flops_head = 4 * B * S * S * D / 2  # causal: half of QK^T and PV
        reps = 3 if args.smoke else 20
        t_sdpa = None if args.smoke else _bench(lambda: sdpa_flash(q, k, v), device, reps)
        for frac in (0.0, 0.05, 0.5):
            n_masked = round(frac * Hq)
            hm = torch.zeros(Hq, dtype=torch.bool, device=device)
            hm[torch.randperm(Hq)[:n_masked]] = True
            t_k = _bench(lambda: masked_attention_triton(q, k, v, hm), device, reps, warmup=1 if args.smoke else 5)
            live = flops_head * (Hq - n_masked)
            tf_k = live / t_k / 1e12
            if t_sdpa is not None:
                tf_s = flops_head * Hq / t_sdpa / 1e12
                say(f"| {S} | {Hq}/{Hkv} | {n_masked} ({frac:.0%}) | {t_sdpa * 1e3:.2f} | {tf_s:.0f} | "
                    f"{t_k * 1e3:.2f} | {tf_k:.0f} | {tf_k / tf_s:.2f} |")
            else:
                say(f"| {S} | {Hq}/{Hkv} | {n_masked} ({frac:.0%}) | - | - | {t_k * 1e3:.2f} | {tf_k:.4f} | - |")
    say()

    # ------------------------------------------------------------ token_nll speed
    say("### token_nll vs logits + cross-entropy (bf16 in, fp32 loss)")
    say()
    say("| tokens | hidden | vocab | logits+CE ms | peak MiB | token_nll ms | peak MiB | memory saved |")
    say("|---|---|---|---|---|---|---|---|")
    for V in ((49152, 155136) if not args.smoke else (500,)):
        N, H = (16384, 2560) if not args.smoke else (40, 64)
        h = torch.randn(N, H, device=device, dtype=bf16)
        w = (torch.randn(V, H, device=device) * H ** -0.5).to(bf16)
        t = torch.randint(0, V, (N,), device=device)

        def plain():
            return F.cross_entropy((h @ w.T).float(), t, reduction="none")

        def fused():
            return token_nll_triton(h, w, t)

        res = []
        for fn in (plain, fused):
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                fn()
                torch.cuda.synchronize()
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            else:
                peak = float("nan")
            res.append((_bench(fn, device, 3 if args.smoke else 10, warmup=1 if args.smoke else 3), peak))
        (tp, mp), (tf, mf) = res
        saved = f"{mp / mf:.0f}x" if mf == mf and mf > 0 else "-"
        say(f"| {N} | {H} | {V} | {tp * 1e3:.2f} | {mp:.0f} | {tf * 1e3:.2f} | {mf:.0f} | {saved} |")
    say()
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
