"""The kernel half of benchmarks/gpu_check.py: the Triton kernels as the
driver loaded them against kernels/aot.py, their results against the
float64 references of tests/reference.py, attention against SDPA flash, and
the fused loss against logits + cross-entropy. Each section prints its
table through `say` and its headline rows through `note`; gpu_check.py runs
them, then the model-level sections, then the summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # reference.py: the float64 references the kernel tests use

from reference import attention_f64, nll_f64  # noqa: E402


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


def section_compiled(device, say, note) -> None:
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


def section_correctness(device, smoke, say, note) -> None:
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
            err = _rel_err(out, attention_f64(q, k, v, hm, cu_seqlens=cu))
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


def section_attention_speed(device, smoke, say, note) -> None:
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


def section_nll_speed(device, smoke, say, note) -> None:
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
