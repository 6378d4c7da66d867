"""Masked attention as one Triton kernel, FlashAttention-2 style: online
softmax over key blocks, no S x S matrix in memory, causal blocks past the
diagonal skipped, grouped-query attention by indexing (k/v never repeated).

A masked head (AttentionInfluence, arXiv 2505.07293) attends uniformly to its
causal prefix: its output is the running mean of V, accumulated here as a
0/1-weighted sum with no QK^T work. Packed documents (cu_seqlens) restart
both the attention and the running mean at every boundary. A sliding window
(query t sees t-W+1..t) bounds both, and skips the key blocks before it;
soft-capping (c * tanh(logits / c)) applies to the softmax heads' logits.

The torch twin with the same signature is attention_torch.masked_attention_torch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._triton_common import dot, dot_flags, interpreter_block


@triton.jit
def _visible(cols, rows, start, end, S, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """(BLOCK_M, BLOCK_N) bool: key column j is visible from query row i:
    same document (start[i] <= j < end[i]), inside the sequence, j <= i if
    causal, and j > i - window with a sliding window."""
    ok = (cols[None, :] >= start[:, None]) & (cols[None, :] < end[:, None]) & (cols[None, :] < S)
    if CAUSAL:
        ok = ok & (cols[None, :] <= rows[:, None])
    if HAS_WINDOW:
        ok = ok & (cols[None, :] > rows[:, None] - window)
    return ok


@triton.jit
def _tanh(x):
    """tanh through exp, saturating to +-1 without overflow trouble (exp -> inf gives 1)."""
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _masked_attention_kernel(
    Q, K, V, O, HeadMask, DocStart, DocEnd,
    sqb, sqh, sqs, sqd,
    skb, skh, sks, skd,
    svb, svh, svs, svd,
    sob, soh, sos, sod,
    smb, smh,
    S, Hq, G, qk_scale, window, softcap,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_DOCS: tl.constexpr, HAS_MASK: tl.constexpr, MASKED: tl.constexpr,
    HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr, IEEE: tl.constexpr, UPCAST: tl.constexpr,
):
    """One (query block, batch row, head) program. With a head mask the
    launcher runs this kernel twice, MASKED=False (the softmax heads; a
    masked head's program does nothing) and MASKED=True (the running mean of
    the masked heads only): each specialisation holds one path, not both,
    which is what keeps it within the register file."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    # Positions are int32 (a sequence is far below 2**31 tokens); anything
    # that multiplies a stride is int64: b * stride_b or row * stride_s
    # overflows int32 once a tensor spans 2**31 elements.
    b = (pid_bh // Hq).to(tl.int64)
    h = (pid_bh % Hq).to(tl.int64)
    kvh = h // G  # grouped-query attention: query head h reads kv head h // G

    run = True
    if HAS_MASK:
        run = (tl.load(HeadMask + b * smb + h * smh) != 0) == MASKED
    if run:
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query rows
        offs_n = tl.arange(0, BLOCK_N)  # (BLOCK_N,) key columns, from n0
        offs_d = tl.arange(0, HEAD_DIM)
        row_ok = offs_m < S

        if HAS_DOCS:
            # (BLOCK_M,) first and one-past-last position of each row's document
            start = tl.load(DocStart + offs_m, mask=row_ok, other=0)
            end = tl.load(DocEnd + offs_m, mask=row_ok, other=0)
            lo = tl.min(tl.where(row_ok, start, S), axis=0)
            hi_rows = tl.max(tl.where(row_ok, end, 0), axis=0)
        else:
            start = tl.zeros([BLOCK_M], dtype=tl.int32)
            end = tl.zeros([BLOCK_M], dtype=tl.int32) + S
            lo = 0
            hi_rows = S
        if CAUSAL:
            hi = tl.minimum((pid_m + 1) * BLOCK_M, S)  # blocks past the diagonal are never read
        else:
            hi = hi_rows
        if HAS_WINDOW:  # key blocks wholly before the first row's window are never read
            lo = tl.maximum(lo, pid_m * BLOCK_M - window + 1)
        lo = (lo // BLOCK_N) * BLOCK_N

        k_base = K + b * skb + kvh * skh
        v_base = V + b * svb + kvh * svh
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)

        if MASKED:
            # uniform attention: weight 1 on every visible position (a 0/1
            # matrix in v's dtype), divided at the end by the visible count,
            # which is known without summing: start..min(row, end - 1)
            for n0 in range(lo, hi, BLOCK_N):
                cols = n0 + offs_n
                ok = _visible(cols, offs_m, start, end, S, window, CAUSAL, HAS_WINDOW)
                v = tl.load(v_base + cols.to(tl.int64)[:, None] * svs + offs_d[None, :] * svd,
                            mask=cols[:, None] < S, other=0.0)
                acc += dot(tl.where(ok, 1.0, 0.0).to(v.dtype), v, IEEE, UPCAST)  # (bool -> bf16 is wrong in the interpreter)
            last = tl.minimum(offs_m, end - 1) if CAUSAL else end - 1
            first = start
            if HAS_WINDOW:
                first = tl.maximum(start, offs_m - window + 1)
            l_i = tl.maximum(last - first + 1, 0).to(tl.float32)
        else:
            q = tl.load(Q + b * sqb + h * sqh + offs_m.to(tl.int64)[:, None] * sqs + offs_d[None, :] * sqd,
                        mask=row_ok[:, None], other=0.0)
            m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
            for n0 in range(lo, hi, BLOCK_N):
                cols = n0 + offs_n
                ok = _visible(cols, offs_m, start, end, S, window, CAUSAL, HAS_WINDOW)
                k = tl.load(k_base + cols.to(tl.int64)[:, None] * sks + offs_d[None, :] * skd,
                            mask=cols[:, None] < S, other=0.0)
                s = dot(q, tl.trans(k), IEEE, UPCAST)
                if HAS_SOFTCAP:  # capped in the natural domain, then to log2: qk_scale includes log2(e)
                    s = softcap * _tanh(s * (qk_scale * 0.6931471805599453 / softcap)) * 1.4426950408889634
                else:
                    s = s * qk_scale
                s = tl.where(ok, s, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, axis=1))
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
                alpha = tl.exp2(m_i - m_safe)
                p = tl.exp2(s - m_safe[:, None])
                l_i = l_i * alpha + tl.sum(p, axis=1)
                v = tl.load(v_base + cols.to(tl.int64)[:, None] * svs + offs_d[None, :] * svd,
                            mask=cols[:, None] < S, other=0.0)
                acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, IEEE, UPCAST)
                m_i = m_new

        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        o_ptrs = O + b * sob + h * soh + offs_m.to(tl.int64)[:, None] * sos + offs_d[None, :] * sod
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None])


def _doc_bounds(cu_seqlens: torch.Tensor, S: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(S,) start and end of the document each position belongs to."""
    cu = cu_seqlens.to(device=device, dtype=torch.int64)
    lengths = cu[1:] - cu[:-1]
    start = torch.repeat_interleave(cu[:-1], lengths)
    end = torch.repeat_interleave(cu[1:], lengths)
    return start.to(torch.int32).contiguous(), end.to(torch.int32).contiguous()


def _blocks(D: int, S: int, gpu: bool, masked: bool = False) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for this head dim and pass,
    on a GPU or under the interpreter. The GPU values are the ones that
    compile without a register spill on sm_80 and sm_90 with room to spare
    (kernels/aot.py, benchmarks/RESULTS.md); the masked pass, a 0/1 matrix
    times V for a few heads, takes small tiles."""
    if not gpu:
        b = interpreter_block(S, 64)
        return b, b, 4, 1
    if masked:
        return 32, 32, 4, 2
    if D <= 64:
        return 128, 64, 8, 3
    if D <= 128:
        return 128, 32, 8, 3
    return 64, 32, 8, 2


def launches(q, k, v, head_mask=None, causal=True, cu_seqlens=None, scale=None, block_m: int | None = None,
             block_n: int | None = None, out=None, gpu: bool | None = None, window=None, softcap=None) -> tuple:
    """(out, [(grid, args, kwargs)]): the kernel launches
    masked_attention_triton makes, without launching: what kernels/aot.py
    compiles for a GPU this machine may not have (gpu=True picks the GPU's
    blocks whatever the tensors' device)."""
    from .attention_torch import _check

    _check(q, k, v, head_mask, cu_seqlens, window, softcap)
    if window and not causal:
        raise ValueError("a sliding window needs causal attention (a bidirectional window is not supported)")
    B, Hq, S, D = q.shape
    window = int(window) if window and window < S else 0  # a window as long as the row is no window
    if D not in (16, 32, 64, 128, 256):
        raise ValueError(f"head dim {D} is not supported by the Triton kernel (16, 32, 64, 128 or 256)")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"dtype {q.dtype} is not supported (float16, bfloat16, float32)")
    if not (k.dtype == v.dtype == q.dtype):
        raise ValueError("q, k and v must have the same dtype")
    out = torch.empty_like(q) if out is None else out
    if S == 0:
        return out, []
    gpu = q.is_cuda if gpu is None else gpu
    scale = D ** -0.5 if scale is None else float(scale)
    has_mask = head_mask is not None and bool(head_mask.any())
    if has_mask:
        hm = head_mask.to(device=q.device, dtype=torch.int8)
        hm = hm.expand(B, Hq).contiguous() if hm.dim() == 1 else hm.contiguous()
        smb, smh = hm.stride()
    else:
        hm, smb, smh = q, 0, 0  # never read
    if cu_seqlens is not None:
        doc_start, doc_end = _doc_bounds(cu_seqlens, S, q.device)
    else:
        doc_start = doc_end = q  # never read
    args = (q, k, v, out, hm, doc_start, doc_end, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            smb, smh, S, Hq, Hq // k.shape[1], scale * 1.4426950408889634, window, float(softcap or 0.0))
    runs = []
    for masked in ((False, True) if has_mask else (False,)):
        bm, bn, warps, stages = _blocks(D, S, gpu, masked)
        bm, bn = block_m or bm, block_n or bn
        runs.append(((triton.cdiv(S, bm), B * Hq), args,
                     dict(HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn, CAUSAL=bool(causal), HAS_DOCS=cu_seqlens is not None,
                          HAS_MASK=has_mask, MASKED=masked, HAS_WINDOW=window > 0, HAS_SOFTCAP=bool(softcap),
                          **dot_flags(q.dtype), num_warps=warps,
                          num_stages=stages)))
    return out, runs


def masked_attention_triton(q, k, v, head_mask=None, causal=True, cu_seqlens=None, scale=None,
                            block_m: int | None = None, block_n: int | None = None, out=None, window=None,
                            softcap=None):
    """Triton masked attention; same contract as masked_attention_torch.

    q: (B, Hq, S, D); k, v: (B, Hkv, S, D); head_mask: bool (Hq,) or (B, Hq);
    cu_seqlens: int (N+1,) document boundaries shared by every row; window,
    softcap: as masked_attention_torch.
    """
    out, runs = launches(q, k, v, head_mask, causal, cu_seqlens, scale, block_m, block_n, out,
                         window=window, softcap=softcap)
    for grid, args, kwargs in runs:
        _masked_attention_kernel[grid](*args, **kwargs)
    return out
