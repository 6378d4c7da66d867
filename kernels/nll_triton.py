"""Per-token negative log-likelihood of an LM head as one Triton kernel: each
program takes a block of tokens, walks the vocabulary in blocks with an online
log-sum-exp, and picks up the target's logit on the way. Logits never exist
beyond one (BLOCK_N x BLOCK_V) tile; accumulation is fp32.

The torch twin with the same signature is nll_torch.token_nll_torch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._triton_common import dot, dot_flags, interpreter_block


@triton.jit
def _token_nll_kernel(
    Hid, W, Bias, T, Out,
    N, V, HID,
    shn, shk, swv, swk,
    ignore_index, softcap,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_SOFTCAP: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
):
    pid = tl.program_id(0)
    # Token rows and vocabulary columns are int64: row * stride overflows int32
    # once hidden or weight spans 2**31 elements.
    rows = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) tokens
    row_ok = rows < N
    t = tl.load(T + rows, mask=row_ok, other=ignore_index).to(tl.int32)
    m = tl.zeros([BLOCK_N], dtype=tl.float32) - float("inf")
    l = tl.zeros([BLOCK_N], dtype=tl.float32)
    tgt = tl.zeros([BLOCK_N], dtype=tl.float32)
    offs_v = tl.arange(0, BLOCK_V).to(tl.int64)  # (BLOCK_V,) vocabulary rows, from v0
    offs_k = tl.arange(0, BLOCK_K)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + offs_v
        col_ok = cols < V
        logits = tl.zeros([BLOCK_N, BLOCK_V], dtype=tl.float32)
        for k0 in range(0, HID, BLOCK_K):
            ks = k0 + offs_k
            k_ok = ks < HID
            h = tl.load(Hid + rows[:, None] * shn + ks[None, :] * shk,
                        mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(W + cols[:, None] * swv + ks[None, :] * swk,
                        mask=col_ok[:, None] & k_ok[None, :], other=0.0)
            logits += dot(h, tl.trans(w), IEEE, UPCAST)
        if HAS_BIAS:
            logits += tl.load(Bias + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if HAS_SOFTCAP:  # softcap * tanh(logits / softcap), tanh through exp
            logits = softcap * (1.0 - 2.0 / (tl.exp(2.0 * logits / softcap) + 1.0))
        logits = tl.where(col_ok[None, :], logits, float("-inf"))
        m_new = tl.maximum(m, tl.max(logits, axis=1))
        l = l * tl.exp(m - m_new) + tl.sum(tl.exp(logits - m_new[:, None]), axis=1)
        m = m_new
        tgt += tl.sum(tl.where(cols[None, :] == t[:, None], logits, 0.0), axis=1)
    nll = tl.log(l) + m - tgt
    nll = tl.where(t == ignore_index, 0.0, nll)
    tl.store(Out + rows, nll, mask=row_ok)


def _blocks(gpu: bool, N: int, V: int, H: int, dtype=None):
    """(BLOCK_N, BLOCK_V, BLOCK_K, num_warps, num_stages), on a GPU or under
    the interpreter. fp32 tiles are smaller: exact fp32 dots run on FMA units
    with their operands in registers, and the bf16 tiles spilled there on
    sm_80 (kernels/aot.py)."""
    if not gpu:
        return interpreter_block(N, 64), interpreter_block(V, 256), interpreter_block(H, 128), 4, 1
    if dtype == torch.float32:
        return 64, 64, 32, 8, 2
    return 64, 128, 64, 8, 3


def launches(hidden, weight, targets, bias=None, ignore_index=-100, block_n=None, block_v=None, block_k=None,
             out=None, gpu: bool | None = None, softcap=None) -> tuple:
    """(out, [(grid, args, kwargs)]): the kernel launch token_nll_triton
    makes, without launching (kernels/aot.py compiles it for a GPU target)."""
    from .nll_torch import _check

    _check(hidden, weight, targets, bias)
    N, H = hidden.shape
    V = weight.shape[0]
    out = torch.empty(N, dtype=torch.float32, device=hidden.device) if out is None else out
    if N == 0:
        return out, []
    bn, bv, bk, warps, stages = _blocks(hidden.is_cuda if gpu is None else gpu, N, V, H, hidden.dtype)
    bn, bv, bk = block_n or bn, block_v or bv, block_k or bk
    args = (hidden, weight, bias if bias is not None else hidden, targets, out,
            N, V, H, *hidden.stride(), *weight.stride(), ignore_index, float(softcap or 0.0))
    kwargs = dict(BLOCK_N=bn, BLOCK_V=bv, BLOCK_K=bk, HAS_BIAS=bias is not None, HAS_SOFTCAP=bool(softcap),
                  **dot_flags(hidden.dtype),
                  num_warps=warps, num_stages=stages)
    return out, [((triton.cdiv(N, bn),), args, kwargs)]


def token_nll_triton(hidden, weight, targets, bias=None, ignore_index=-100, chunk_tokens=None,
                     block_n=None, block_v=None, block_k=None, out=None, softcap=None):
    """Triton per-token NLL; same contract as token_nll_torch (chunk_tokens is
    accepted for symmetry and ignored: the kernel never holds more than a tile)."""
    out, runs = launches(hidden, weight, targets.contiguous(), bias, ignore_index, block_n, block_v, block_k, out,
                         softcap=softcap)
    for grid, args, kwargs in runs:
        _token_nll_kernel[grid](*args, **kwargs)
    return out
