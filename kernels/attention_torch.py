"""Masked attention, pure torch: the CPU path and the oracle of the Triton kernel.

A *masked* head attends uniformly to its causal prefix (AttentionInfluence,
arXiv 2505.07293): weight 1/(t+1) on every visible position, so its output at
position t is the running mean of V over positions 0..t of its document. That
is exactly softmax attention with the head's query set to zero.

Two things an architecture's attention may add, both taken here so that no
caller relies on a mask built elsewhere:

* a sliding window W (Mistral, Gemma 2/3, Qwen2 sliding layers): query t
  sees keys j with t - W < j <= t, as transformers' sliding mask does; a
  masked head then averages V over those min(t+1, W) positions;
* logit soft-capping c (Gemma 2): logits become c * tanh(logits / c) before
  the softmax. A zero query still gives equal logits, so masking is unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(q, k, v, head_mask, cu_seqlens, window=None, softcap=None):
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
    if window is not None and (int(window) != window or window < 1):
        raise ValueError(f"window must be a positive number of positions, got {window}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be positive, got {softcap}")


def running_mean(v: torch.Tensor, causal: bool = True, window: int | None = None) -> torch.Tensor:
    """(..., S, D) -> (..., S, D): mean of v over positions 0..t, or over the
    last `window` positions up to t (fp32 sums)."""
    v32 = v.float()
    S = v.shape[-2]
    if not causal:
        return v32.mean(-2, keepdim=True).expand_as(v32).to(v.dtype)
    sums = v32.cumsum(-2)
    t = torch.arange(S, device=v.device)
    counts = (t + 1).to(torch.float32)
    if window and window < S:
        # sum over (t - W, t] = cumsum[t] - cumsum[t - W]
        shifted = torch.zeros_like(sums)
        shifted[..., window:, :] = sums[..., :-window, :]
        sums = sums - shifted
        counts = counts.clamp(max=window)
    return (sums / counts.unsqueeze(-1)).to(v.dtype)


def visible(S: int, causal: bool, window: int | None, device) -> torch.Tensor:
    """(S, S) bool: key j is visible from query i (causal, within the window)."""
    i = torch.arange(S, device=device).view(S, 1)
    j = torch.arange(S, device=device).view(1, S)
    ok = (j <= i) if causal else torch.ones(S, S, dtype=torch.bool, device=device)
    if window:
        ok = ok & (j > i - window)
    return ok


QUERY_CHUNK = 1024  # soft-capped logits are formed this many query rows at a time


def capped_attention(q, k, v, mask, scale, softcap):
    """Soft-capped attention, which SDPA cannot do: fp32 logits, capped to
    softcap * tanh(logits / softcap), masked, softmaxed, a block of query rows
    at a time. q (B,Hq,Sq,D), k/v (B,Hkv,Sk,D); mask: bool (True: visible) or
    additive float, (Sq, Sk) or (B, 1, Sq, Sk). Hidden positions get the
    lowest finite logit, not -inf: a padding row that sees nothing (past the
    window of any real token) stays finite, and no NaN reaches a real row
    through a zero weight. Returns (B, Hq, Sq, D) in q's dtype."""
    g = q.shape[1] // k.shape[1]
    k32 = k.float().repeat_interleave(g, dim=1)
    v32 = v.float().repeat_interleave(g, dim=1)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    low = torch.finfo(torch.float32).min
    out = torch.empty_like(q)
    for s in range(0, q.shape[2], QUERY_CHUNK):
        rows = slice(s, s + QUERY_CHUNK)
        logits = q[:, :, rows].float() @ k32.transpose(-1, -2) * scale
        logits = softcap * torch.tanh(logits / softcap)
        m = mask[..., rows, :]
        logits = logits.masked_fill(~m, low) if m.dtype == torch.bool else (logits + m.float()).clamp_min(low)
        out[:, :, rows] = (logits.softmax(-1) @ v32).to(q.dtype)
    return out


def _segment(q, k, v, head_mask, causal, scale, window=None, softcap=None):
    """One document (no packing): (B,Hq,S,D) out."""
    B, Hq, S, D = q.shape
    Hkv = k.shape[1]
    window = window if window and window < S else None  # a window as long as the document is no window
    if softcap:
        out = capped_attention(q, k, v, visible(S, causal, window, q.device), scale, softcap)
    elif window:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible(S, causal, window, q.device), scale=scale,
                                             enable_gqa=Hq != Hkv)
    else:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal and S > 1, scale=scale,
                                             enable_gqa=Hq != Hkv)
    if head_mask is None or not bool(head_mask.any()):
        return out
    # (B,Hkv,S,D) -> (B,Hq,S,D): each query head sees the mean of its group's V
    mean = running_mean(v, causal, window).repeat_interleave(Hq // Hkv, dim=1)
    hm = head_mask.view(-1, Hq, 1, 1)  # (Hq,) or (B, Hq) -> broadcast over (B, Hq, S, D)
    return torch.where(hm.to(out.device), mean.to(out.dtype), out)


def masked_attention_torch(q, k, v, head_mask=None, causal=True, cu_seqlens=None, scale=None, window=None,
                           softcap=None):
    """Attention with some query heads replaced by uniform attention.

    q: (B, Hq, S, D); k, v: (B, Hkv, S, D), Hq a multiple of Hkv (GQA).
    head_mask: bool (Hq,) or (B, Hq); True = the head attends uniformly.
    cu_seqlens: int (N+1,) document boundaries within each row (packed
    documents): attention, and a masked head's running mean, restart at each.
    scale: softmax scale, default 1/sqrt(D). window: sliding window W (query
    t sees t-W+1..t), None for full attention. softcap: logits capped to
    softcap * tanh(logits / softcap), None for none.
    Returns (B, Hq, S, D) in q's dtype.
    """
    _check(q, k, v, head_mask, cu_seqlens, window, softcap)
    if window and not causal:
        raise ValueError("a sliding window needs causal attention (a bidirectional window is not supported)")
    if head_mask is not None:
        head_mask = head_mask.to(torch.bool)
    if cu_seqlens is None:
        return _segment(q, k, v, head_mask, causal, scale, window, softcap)
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e > s:
            out[:, :, s:e] = _segment(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], head_mask, causal, scale,
                                      window, softcap)
    return out
