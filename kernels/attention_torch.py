"""Masked attention, pure torch: the CPU path and the oracle of the Triton kernel.

A *masked* head attends uniformly to its causal prefix (AttentionInfluence,
arXiv 2505.07293): weight 1/(t+1) on every visible position, so its output at
position t is the running mean of V over positions 0..t of its document. That
is exactly softmax attention with the head's query set to zero.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(q, k, v, head_mask, cu_seqlens):
    if q.dim() != 4 or k.dim() != 4 or v.shape != k.shape:
        raise ValueError(f"expected q (B,Hq,S,D) and k, v (B,Hkv,S,D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, Hq, S, D = q.shape
    if k.shape[0] != B or k.shape[2] != S or k.shape[3] != D:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch, length or head dim")
    if Hq % k.shape[1]:
        raise ValueError(f"query heads ({Hq}) must be a multiple of key/value heads ({k.shape[1]})")
    if head_mask is not None:
        if head_mask.shape not in ((Hq,), (B, Hq)):
            raise ValueError(f"head_mask must be (Hq,) or (B, Hq) = ({B}, {Hq}); got {tuple(head_mask.shape)}")
    if cu_seqlens is not None:
        if cu_seqlens.dim() != 1 or int(cu_seqlens[0]) != 0 or int(cu_seqlens[-1]) != S:
            raise ValueError(f"cu_seqlens must be 1-D, start at 0 and end at S={S}; got {cu_seqlens.tolist()}")
        if bool((cu_seqlens[1:] < cu_seqlens[:-1]).any()):
            raise ValueError("cu_seqlens must be non-decreasing")


def running_mean(v: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """(..., S, D) -> (..., S, D): mean of v over positions 0..t (fp32 sums)."""
    v32 = v.float()
    S = v.shape[-2]
    if causal:
        counts = torch.arange(1, S + 1, device=v.device, dtype=torch.float32).unsqueeze(-1)
        return (v32.cumsum(-2) / counts).to(v.dtype)
    return v32.mean(-2, keepdim=True).expand_as(v32).to(v.dtype)


def _segment(q, k, v, head_mask, causal, scale):
    """One document (no packing): (B,Hq,S,D) out."""
    B, Hq, S, D = q.shape
    Hkv = k.shape[1]
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal and S > 1, scale=scale,
                                         enable_gqa=Hq != Hkv)
    if head_mask is None or not bool(head_mask.any()):
        return out
    # (B,Hkv,S,D) -> (B,Hq,S,D): each query head sees the mean of its group's V
    mean = running_mean(v, causal).repeat_interleave(Hq // Hkv, dim=1)
    hm = head_mask.view(-1, Hq, 1, 1)  # (Hq,) or (B, Hq) -> broadcast over (B, Hq, S, D)
    return torch.where(hm.to(out.device), mean.to(out.dtype), out)


def masked_attention_torch(q, k, v, head_mask=None, causal=True, cu_seqlens=None, scale=None):
    """Attention with some query heads replaced by uniform attention.

    q: (B, Hq, S, D); k, v: (B, Hkv, S, D), Hq a multiple of Hkv (GQA).
    head_mask: bool (Hq,) or (B, Hq); True = the head attends uniformly.
    cu_seqlens: int (N+1,) document boundaries within each row (packed
    documents): attention, and a masked head's running mean, restart at each.
    scale: softmax scale, default 1/sqrt(D). Returns (B, Hq, S, D) in q's dtype.
    """
    _check(q, k, v, head_mask, cu_seqlens)
    if head_mask is not None:
        head_mask = head_mask.to(torch.bool)
    if cu_seqlens is None:
        return _segment(q, k, v, head_mask, causal, scale)
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e > s:
            out[:, :, s:e] = _segment(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], head_mask, causal, scale)
    return out
