"""Compile the production Triton kernels ahead of time for GPUs this machine
does not have, and check what the compiler reports.

Triton's wheel ships ptxas, so a CPU-only machine can build the cubin of a
kernel for sm_80 or sm_90 (and the AMD backend a gfx942 object) exactly as a
launch on that GPU would: the launch's arguments come from the launcher's own
`launches()` (same blocks, warps, stages and constexprs the GPU path picks)
and are bound by the JIT function's own binder (same integer and alignment
specialisation). Each compile runs in a forked child, so a compiler that
aborts is reported as a failure instead of taking the caller down.

A case fails on a compile error, on shared memory above the target's
per-block limit, or on any register spill (ptxas -v: bytes of spill stores
or loads). Run it where TRITON_INTERPRET is unset:

    python -m attninf.kernels.aot                 # production configs, sm_80 and sm_90
    python -m attninf.kernels.aot --full          # + fp16, head dim 256, nll in fp32, gfx942
    python -m attninf.kernels.aot --json          # one JSON object per case
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

# target -> (backend, arch, warp size)
TARGETS = {"sm_80": ("cuda", 80, 32), "sm_90": ("cuda", 90, 32), "gfx942": ("hip", "gfx942", 64)}
# the most shared memory one block may use (opt-in maximum): A100 163 KiB, H100/H200 227 KiB, MI300 LDS 64 KiB
SHARED_LIMIT = {"sm_80": 163 * 1024, "sm_90": 227 * 1024, "gfx942": 64 * 1024}
SEQ = 512  # tokens of the packed row the attention cases are built for (a multiple of every block)
TOKENS, VOCAB = 256, 4096  # nll cases: tokens per launch and vocabulary rows (a multiple of every block)


@dataclass(frozen=True)
class Case:
    """One production configuration of a kernel. attention: `dim` is the head
    dim, heads masked and documents packed (the scorer's launch: both passes);
    nll: `dim` is the hidden size."""
    kernel: str
    dtype: str
    dim: int
    sliding: bool = False  # attention with a sliding window and soft-capped logits (Gemma 2/3)

    @property
    def label(self) -> str:
        what = "D" if self.kernel == "attention" else "H"
        return f"{self.kernel} {what}={self.dim} {self.dtype}" + (" window+softcap" if self.sliding else "")


def production_cases(full: bool = False) -> list[Case]:
    """What the scorer launches on a GPU: bf16 attention at head dims 64
    (SmolLM2, Llama 3.2 1B) and 128 (most 1-8B models), the fused loss at
    SmolLM2's and a 2048-wide model's hidden size, and Gemma's head dim 256
    with a sliding window and soft-capping. --full adds fp16, head dim 256
    without them, and the loss in fp32 (a float32 model's last layer)."""
    cases = [Case("attention", "bfloat16", 64), Case("attention", "bfloat16", 128),
             Case("attention", "bfloat16", 256, sliding=True),
             Case("nll", "bfloat16", 576), Case("nll", "bfloat16", 2048)]
    if full:
        cases += [Case("attention", "float16", 64), Case("attention", "float16", 128),
                  Case("attention", "bfloat16", 256), Case("nll", "float32", 576), Case("nll", "float32", 2048)]
    return cases


def _launches(case: Case):
    """(jit function, [(grid, args, kwargs)]) the launcher makes for this case,
    with the GPU's blocks, from CPU tensors of the case's shapes."""
    import torch

    dtype = getattr(torch, case.dtype)
    if case.kernel == "attention":
        from .attention_triton import _masked_attention_kernel, launches

        hq, hkv = 9, 3
        q = torch.zeros(1, hq, SEQ, case.dim, dtype=dtype)
        k = torch.zeros(1, hkv, SEQ, case.dim, dtype=dtype)
        mask = torch.zeros(hq, dtype=torch.bool)
        mask[[1, 5]] = True
        cu = torch.tensor([0, SEQ // 3, SEQ], dtype=torch.int32)
        extra = dict(window=SEQ // 4, softcap=50.0) if case.sliding else {}
        return _masked_attention_kernel, launches(q, k, k.clone(), mask, cu_seqlens=cu, gpu=True, **extra)[1]
    from .nll_triton import _token_nll_kernel, launches

    hidden = torch.zeros(TOKENS, case.dim, dtype=dtype)
    weight = torch.zeros(VOCAB, case.dim, dtype=dtype)
    return _token_nll_kernel, launches(hidden, weight, torch.zeros(TOKENS, dtype=torch.int64), gpu=True)[1]


def _ptxas_numbers(log: str) -> dict:
    """Registers and spill bytes from `ptxas -v` (the largest of the functions it reports)."""
    regs = [int(x) for x in re.findall(r"Used (\d+) registers", log)]
    stores = [int(x) for x in re.findall(r"(\d+) bytes spill stores", log)]
    loads = [int(x) for x in re.findall(r"(\d+) bytes spill loads", log)]
    return {"registers": max(regs, default=None), "spill_stores": max(stores, default=0),
            "spill_loads": max(loads, default=0)}


def _amdgcn_numbers(asm: str) -> dict:
    """Registers and spills from the AMD object's metadata: VGPR spills go to
    scratch memory (counted, with the private segment's size); SGPR spills
    land in VGPR lanes and cost no memory traffic (not counted)."""
    def most(key):
        return max((int(x) for x in re.findall(rf"\.{key}:\s+(\d+)", asm)), default=0)

    scratch = most("private_segment_fixed_size")
    return {"registers": most("vgpr_count") or None, "spill_stores": max(most("vgpr_spill_count"), scratch),
            "spill_loads": 0}


def compile_launch(fn, args: tuple, kwargs: dict, target_name: str) -> dict:
    """Compile one launch (a JIT function, its arguments and launch options)
    for the target as the JIT would on that GPU; its registers, spill bytes
    and shared memory."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget(*TARGETS[target_name])
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    knobs.nvidia.dump_ptxas_log = True
    knobs.compilation.always_compile = True  # ptxas runs (and reports) even for a cached kernel
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        kernel = compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    nums = (_ptxas_numbers(log.getvalue()) if target.backend == "cuda"
            else _amdgcn_numbers(kernel.asm.get("amdgcn", "")))
    return {**nums, "shared": int(kernel.metadata.shared)}


def compile_case(case: Case, target_name: str) -> dict:
    """Compile every launch of the case for the target (in this process);
    the worst pass's registers, spills and shared memory, and each pass's."""
    fn, runs = _launches(case)
    out = {"registers": 0, "spill_stores": 0, "spill_loads": 0, "shared": 0, "passes": len(runs), "per_pass": []}
    t0 = time.perf_counter()
    for _grid, args, kwargs in runs:
        nums = compile_launch(fn, args, kwargs, target_name)
        out["per_pass"].append({**{k: v for k, v in kwargs.items() if k.isupper() or k.startswith("num_")}, **nums})
        for key in ("registers", "spill_stores", "spill_loads", "shared"):
            out[key] = max(out[key], nums[key] or 0)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def _child(case: Case, target_name: str, conn) -> None:
    try:
        conn.send(compile_case(case, target_name))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which decides
        lines = str(e).strip().splitlines()
        conn.send({"error": f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]})
    finally:
        conn.close()


def run(cases: list[Case], targets: list[str], timeout_s: float = 600) -> list[dict]:
    """Each (case, target) compiled in a forked child; one result row each,
    with `problems` (empty when the case is clean)."""
    ctx = multiprocessing.get_context("fork")
    rows = []
    for case in cases:
        for tname in targets:
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(case, tname, child))
            proc.start()
            child.close()
            res = parent.recv() if parent.poll(timeout_s) else {"error": f"no result after {timeout_s:.0f} s"}
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
            if not res and proc.exitcode:
                res = {"error": f"the compiler died (exit code {proc.exitcode})"}
            row = {**asdict(case), "case": case.label, "target": tname, **res}
            row["problems"] = problems(row)
            rows.append(row)
    return rows


def problems(row: dict) -> list[str]:
    """What is wrong with a compiled case: an error, shared memory over the
    target's per-block limit, a register spill."""
    if "error" in row:
        return [row["error"]]
    out = []
    limit = SHARED_LIMIT[row["target"]]
    if row["shared"] > limit:
        out.append(f"shared memory {row['shared']:,} B > the {limit:,} B a block may use on {row['target']}")
    if row["spill_stores"] or row["spill_loads"]:
        out.append(f"register spills: {row['spill_stores']} B stored, {row['spill_loads']} B loaded per thread")
    return out


def table(rows: list[dict]) -> str:
    lines = ["| kernel (as launched) | target | passes | registers | spill st/ld (B) | shared (B) | s | problems |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['target']} | - | - | - | - | - | {r['error']} |")
            continue
        lines.append(f"| {r['case']} | {r['target']} | {r['passes']} | {r['registers']} | "
                     f"{r['spill_stores']}/{r['spill_loads']} | {r['shared']:,} | {r['seconds']} | "
                     f"{'; '.join(r['problems']) or 'none'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m attninf.kernels.aot", description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="Also fp16, head dim 256, nll in fp32, and gfx942.")
    ap.add_argument("--targets", default=None, help="Comma-separated, of: " + ", ".join(TARGETS))
    ap.add_argument("--json", action="store_true", help="One JSON object per case instead of a table.")
    ap.add_argument("--timeout", type=float, default=600, help="Seconds one compile may take.")
    a = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("attninf: error: unset TRITON_INTERPRET: the interpreter compiles nothing", file=sys.stderr)
        return 2
    targets = a.targets.split(",") if a.targets else (list(TARGETS) if a.full else ["sm_80", "sm_90"])
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        print(f"attninf: error: unknown target {unknown[0]!r}; choose among {', '.join(TARGETS)}", file=sys.stderr)
        return 2
    os.environ.setdefault("TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="attninf-aot-"))
    rows = run(production_cases(a.full), targets, a.timeout)
    print("\n".join(json.dumps(r) for r in rows) if a.json else table(rows))
    return 1 if any(r["problems"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
