"""Per-token negative log-likelihood of an LM head, pure torch: the CPU path
and the oracle of the Triton kernel. The (tokens x vocab) logits exist one
chunk of tokens at a time, in fp32."""
from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_BYTES = 1 << 27  # fp32 logits per chunk: 128 MiB


def _check(hidden, weight, targets, bias):
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden (N, H) and weight (V, H); got {tuple(hidden.shape)}, {tuple(weight.shape)}")
    if targets.shape != (hidden.shape[0],):
        raise ValueError(f"targets must be ({hidden.shape[0]},); got {tuple(targets.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be ({weight.shape[0]},); got {tuple(bias.shape)}")


def token_nll_torch(hidden, weight, targets, bias=None, ignore_index=-100, chunk_tokens=None, softcap=None):
    """-log softmax(hidden @ weight.T + bias)[targets], per token.

    hidden (N, H), weight (V, H), targets (N,) int; returns (N,) float32,
    0 where targets == ignore_index. softcap: the logits are first capped to
    softcap * tanh(logits / softcap), as Gemma 2's output layer does.
    """
    _check(hidden, weight, targets, bias)
    N, V = hidden.shape[0], weight.shape[0]
    out = torch.zeros(N, dtype=torch.float32, device=hidden.device)
    if N == 0:
        return out
    w32 = weight.float()
    b32 = bias.float() if bias is not None else None
    chunk = chunk_tokens or max(1, CHUNK_BYTES // (4 * V))
    for s in range(0, N, chunk):
        logits = hidden[s:s + chunk].float() @ w32.T  # (chunk, V) fp32
        if b32 is not None:
            logits += b32
        if softcap:
            logits = softcap * torch.tanh(logits / softcap)
        out[s:s + chunk] = F.cross_entropy(logits, targets[s:s + chunk], reduction="none",
                                           ignore_index=ignore_index)
    return out
