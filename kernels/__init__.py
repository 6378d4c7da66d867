"""attninf.kernels: masked attention and per-token LM-head loss, each a Triton
kernel with a pure-torch twin of the same signature. Nothing here knows about
models or files.

    masked_attention(q, k, v, head_mask=None, causal=True, cu_seqlens=None, scale=None, window=None, softcap=None)
    token_nll(hidden, weight, targets, bias=None, ignore_index=-100, softcap=None)

The dispatchers run the Triton kernel on CUDA tensors and the torch twin
elsewhere; the fallback is logged once. float32 attention on a GPU takes the
torch twin too: at fp32 the kernel's tiles do not fit the register file
(kernels/aot.py measured 45-140 KB spilled per thread), and SDPA runs it
well. Triton is imported only when used.
"""
from __future__ import annotations

import logging

import torch

from .attention_torch import masked_attention_torch, running_mean
from .nll_torch import token_nll_torch

log = logging.getLogger("attninf")
_warned: set[str] = set()
_backend = "auto"


def set_backend(name: str) -> None:
    """"auto" (Triton on CUDA, torch elsewhere), "torch", or "triton" (also on
    CPU tensors, which needs TRITON_INTERPRET=1: how the tests run the kernels)."""
    global _backend
    if name not in ("auto", "torch", "triton"):
        raise ValueError(f"unknown kernel backend {name!r}: auto, torch or triton")
    _backend = name


def _use_triton(t, what: str) -> bool:
    if _backend == "torch":
        return False
    if _backend == "auto" and not t.is_cuda:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        if what not in _warned:
            _warned.add(what)
            log.warning("triton is not installed: %s runs on the torch path", what)
        return False
    return True


def masked_attention(q, k, v, head_mask=None, causal=True, cu_seqlens=None, scale=None, window=None, softcap=None):
    """Attention with masked heads attending uniformly to their causal prefix.

    q (B, Hq, S, D); k, v (B, Hkv, S, D), Hq a multiple of Hkv; head_mask bool
    (Hq,) or (B, Hq); cu_seqlens int (N+1,) packed-document boundaries;
    window: sliding window (query t sees t-W+1..t); softcap: logits become
    softcap * tanh(logits / softcap). Returns (B, Hq, S, D) in q's dtype.
    """
    if q.dtype == torch.float32 and _backend == "auto" and q.is_cuda:
        if "fp32 attention" not in _warned:
            _warned.add("fp32 attention")
            log.info("float32 attention on the GPU runs on the torch path (SDPA); --dtype bfloat16 takes the "
                     "Triton kernel")
        return masked_attention_torch(q, k, v, head_mask, causal, cu_seqlens, scale, window, softcap)
    if _use_triton(q, "masked_attention") and q.shape[-1] in (16, 32, 64, 128, 256):
        from .attention_triton import masked_attention_triton

        return masked_attention_triton(q, k, v, head_mask, causal, cu_seqlens, scale, window=window, softcap=softcap)
    return masked_attention_torch(q, k, v, head_mask, causal, cu_seqlens, scale, window, softcap)


def token_nll(hidden, weight, targets, bias=None, ignore_index=-100, softcap=None):
    """Per-token -log p(target) of an LM head: hidden (N, H), weight (V, H),
    targets (N,) -> (N,) float32, never holding all (N x V) logits at once.
    softcap: logits become softcap * tanh(logits / softcap) (Gemma 2)."""
    if _use_triton(hidden, "token_nll"):
        from .nll_triton import token_nll_triton

        return token_nll_triton(hidden, weight, targets, bias, ignore_index, softcap=softcap)
    return token_nll_torch(hidden, weight, targets, bias, ignore_index, softcap=softcap)


__all__ = ["set_backend", "masked_attention", "masked_attention_torch", "running_mean", "token_nll", "token_nll_torch"]
