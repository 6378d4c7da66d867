"""What the two Triton kernels (attention_triton, nll_triton) share: the
dot-product helper with its launcher flags, and the interpreter's block sizes.
Imports triton, so only the Triton modules import it."""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def dot(a, b, IEEE: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b with fp32 accumulation. IEEE: exact fp32 (no tf32). UPCAST: the
    Triton interpreter computes bf16 dots wrongly, so there the (already
    bf16-rounded) operands are multiplied in fp32: the same values, exactly."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    elif IEEE:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


def interpreted() -> bool:
    """True under the Triton interpreter (TRITON_INTERPRET=1, CPU tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def dot_flags(dtype: torch.dtype) -> dict[str, bool]:
    """The IEEE and UPCAST constexprs of `dot` for inputs of this dtype."""
    return {"IEEE": dtype == torch.float32, "UPCAST": interpreted() and dtype == torch.bfloat16}


def interpreter_block(n: int, cap: int) -> int:
    """Block size off CUDA (the interpreter), where few large blocks are fastest:
    n rounded up to a power of two, at least 16 (tl.dot's minimum), at most cap."""
    return max(16, min(cap, triton.next_power_of_2(n)))
