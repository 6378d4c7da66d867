"""Slow, plain float64 references the fast paths are tested against."""
import torch


def attention_f64(q, k, v, head_mask=None, causal=True, cu_seqlens=None, scale=None, window=None, softcap=None):
    """Explicit softmax attention in float64; a masked head has all-zero logits
    (softmax of zeros = uniform over the visible positions). window: key j is
    visible from query i when i - window < j; softcap: c * tanh(logits / c)."""
    q, k, v = q.double(), k.double(), v.double()
    B, Hq, S, D = q.shape
    g = Hq // k.shape[1]
    k = k.repeat_interleave(g, dim=1)
    v = v.repeat_interleave(g, dim=1)
    scale = D ** -0.5 if scale is None else scale
    logits = q @ k.transpose(-1, -2) * scale  # (B, Hq, S, S)
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    if head_mask is not None:
        hm = head_mask.view(-1, Hq, 1, 1).to(torch.bool)
        logits = torch.where(hm, torch.zeros_like(logits), logits)
    i = torch.arange(S, device=q.device).view(S, 1)
    j = torch.arange(S, device=q.device).view(1, S)
    allowed = torch.ones(S, S, dtype=torch.bool, device=q.device)
    if causal:
        allowed &= j <= i
    if window:
        allowed &= j > i - window
    if cu_seqlens is not None:
        doc = torch.bucketize(torch.arange(S, device=q.device), cu_seqlens[1:].to(q.device), right=True)
        allowed &= doc.view(S, 1) == doc.view(1, S)
    logits = logits.masked_fill(~allowed, float("-inf"))
    return torch.softmax(logits, dim=-1) @ v


def zero_query_model(model, heads):
    """An independent masked model: a float32 eager copy with the masked
    heads' rows of q_proj zeroed (zero query = uniform attention, docs/method.md,
    step 2). Llama-family layout (model.model.layers[i].self_attn.q_proj)."""
    import copy

    ref = copy.deepcopy(model).float()
    ref.set_attn_implementation("eager")
    D = ref.config.head_dim
    with torch.no_grad():
        for layer, head in heads:
            ref.model.layers[layer].self_attn.q_proj.weight[head * D:(head + 1) * D] = 0
    return ref


def nll_f64(hidden, weight, targets, bias=None, ignore_index=-100, softcap=None):
    """Per-token -log p(target) from full float64 logits; 0 at ignore_index."""
    logits = hidden.double() @ weight.double().T
    if bias is not None:
        logits = logits + bias.double()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    lp = torch.log_softmax(logits, -1)
    safe = targets.clamp(min=0)
    out = -lp.gather(1, safe.view(-1, 1)).squeeze(1)
    return torch.where(targets == ignore_index, torch.zeros_like(out), out)
