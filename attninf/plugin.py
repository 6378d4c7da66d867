"""One attention function for every Hugging Face causal LM, through
transformers' AttentionInterface: heads can be masked (uniform attention over
the causal prefix) per forward pass, and attention rows can be recorded for
head detection.

    install(model)                       # once: model runs on "attninf"
    with masked_heads(model, [(17, 3)]):  # forward passes here mask head 3 of layer 17
        model(input_ids)

State lives on the model's attention modules, not in globals, so two models
in one process do not see each other's masks.

The function honours what an architecture's attention passes it: the
softmax scale (Granite's attention multiplier arrives as `scaling`), a
sliding window (`sliding_window`, taken by the kernels themselves, so that
no packed row depends on transformers building a mask) and logit
soft-capping (`softcap`, Gemma 2). What it cannot reproduce, attention sinks
(`s_aux`), it refuses by name; check_model compares a forward with the
model's own eager attention at load, so an architecture that does something
else is refused before it scores anything.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from .errors import AttninfError, one_line

ATTN_NAME = "attninf"
_registered = False
# set while the shared-prefix path runs a packed row: masks are not built,
# and every attention call must receive the row's document boundaries
_packed = contextvars.ContextVar("attninf_packed", default=False)
# set by check_model: the windows the model's masks were built with and the
# windows (and layers) its attention calls received
_seen = contextvars.ContextVar("attninf_seen", default=None)
# arguments of an attention function that change its result and that attninf
# does not reproduce
UNSUPPORTED = {"s_aux": "attention sinks", "sinks": "attention sinks", "position_bias": "a position bias"}


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_NAME, attninf_attention)
    # the mask builder must be registered under the same name: without it
    # transformers builds no padding mask for an unknown implementation
    AttentionMaskInterface.register(ATTN_NAME, _mask)
    _registered = True


def _mask(*args, **kwargs):
    """transformers' SDPA mask, except in a packed row: there the kernels take
    the document boundaries and windows themselves, and no (T x T) mask is built."""
    from transformers.masking_utils import sdpa_mask

    seen = _seen.get()
    if seen is not None:
        seen["masks"].add(kwargs.get("local_size"))
    return None if _packed.get() else sdpa_mask(*args, **kwargs)


@contextmanager
def packed_rows():
    """Forward passes inside run on packed rows: attention gets its document
    boundaries from the `attninf_cu_seqlens` argument, never from a mask."""
    token = _packed.set(True)
    try:
        yield
    finally:
        _packed.reset(token)


def install(model) -> None:
    """Switch a loaded HF model to the attninf attention function."""
    _register()
    model.set_attn_implementation(ATTN_NAME)
    if model.config._attn_implementation != ATTN_NAME:  # transformers only warns
        raise AttninfError(f"{type(model).__name__} does not take an attention function from transformers' "
                           "AttentionInterface, so its heads cannot be masked; this architecture is not supported")
    attention_modules(model)  # fail early on a model whose layers we cannot find


def attention_modules(model) -> list:
    """The self-attention module of each layer, indexed by layer number."""
    found = {}
    for _, m in model.named_modules():
        if "Attention" in type(m).__name__ and isinstance(getattr(m, "layer_idx", None), int):
            found.setdefault(m.layer_idx, m)
    n = model.config.num_hidden_layers
    if sorted(found) != list(range(n)):
        raise AttninfError(
            f"cannot find one attention module per layer in {type(model).__name__} "
            f"(found layers {sorted(found)[:5]}..., expected {n}); this architecture is not supported"
        )
    return [found[i] for i in range(n)]


def first_masked_layer(heads: Iterable) -> int:
    """The lowest layer with a masked head: every layer below it computes the
    same hidden states with and without the mask."""
    return min(int(layer) for layer, _ in heads)


def head_mask_tensors(num_layers: int, num_heads: int, heads: Iterable) -> list[torch.Tensor | None]:
    """[(layer, head), ...] -> per layer a bool (Hq,) tensor, or None if no head is masked."""
    masks: list[torch.Tensor | None] = [None] * num_layers
    for layer, head in heads:
        layer, head = int(layer), int(head)
        if not (0 <= layer < num_layers and 0 <= head < num_heads):
            raise AttninfError(f"head [{layer}, {head}] is outside the model ({num_layers} layers x {num_heads} heads)")
        if masks[layer] is None:
            masks[layer] = torch.zeros(num_heads, dtype=torch.bool)
        masks[layer][head] = True
    return masks


def set_layer_masks(model, masks: list) -> None:
    """Per layer a bool (Hq,) or (B, Hq) mask, or None: the low-level setter."""
    for m, mask in zip(attention_modules(model), masks):
        m._attninf_head_mask = mask


def set_masked_heads(model, heads: Iterable) -> None:
    masks = head_mask_tensors(model.config.num_hidden_layers, model.config.num_attention_heads, heads)
    set_layer_masks(model, masks)


@contextmanager
def masked_heads(model, heads: Iterable):
    """Mask the given [layer, head] pairs for the forward passes inside the block."""
    set_masked_heads(model, heads)
    try:
        yield
    finally:
        set_masked_heads(model, [])


@contextmanager
def recording(model, fn: Callable):
    """Call fn(layer_idx, query, key, scaling, window) in every attention layer.

    query: (B, Hq, S, D) and key: (B, Hkv, S, D) after rotary embeddings, the
    tensors the attention itself sees; window: the layer's sliding window
    (query t sees keys t-window+1..t), None for full attention."""
    mods = attention_modules(model)
    for m in mods:
        m._attninf_recorder = fn
    try:
        yield
    finally:
        for m in mods:
            m._attninf_recorder = None


def attninf_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                      is_causal=None, **kwargs):
    """AttentionInterface entry: (B,Hq,S,D) q, (B,Hkv,S,D) k/v -> ((B,S,Hq,D), None)."""
    from attninf.kernels import masked_attention
    from attninf.kernels.attention_torch import capped_attention, visible

    for name, what in UNSUPPORTED.items():
        if kwargs.get(name) is not None:
            raise AttninfError(f"{type(module).__name__} uses {what} ({name}), which attninf's attention does not "
                               "reproduce; this architecture is not supported")
    window = kwargs.get("sliding_window") or None
    softcap = kwargs.get("softcap") or None
    seen = _seen.get()
    if seen is not None:
        seen["windows"][module.layer_idx] = window
    recorder = getattr(module, "_attninf_recorder", None)
    if recorder is not None:
        recorder(module.layer_idx, query, key, scaling, window)
    head_mask = getattr(module, "_attninf_head_mask", None)
    if head_mask is not None:
        head_mask = head_mask.to(query.device)
    q_len, kv_len = query.shape[2], key.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)

    cu_seqlens = kwargs.get("attninf_cu_seqlens")  # packed documents, from the scoring engine
    if _packed.get() and cu_seqlens is None:
        raise AttninfError(f"{type(module).__name__} (layer {module.layer_idx}) received no document boundaries "
                           "in a packed row: this architecture does not pass them to its attention")
    if attention_mask is None and q_len == kv_len:
        out = masked_attention(query, key, value, head_mask=head_mask, causal=causal, cu_seqlens=cu_seqlens,
                               scale=scaling, window=window, softcap=softcap)
    else:
        # padding or a KV cache: the general masked path, under the mask
        # transformers built (window included). A zero query gives equal
        # logits, so softmax under the mask is uniform over exactly the
        # positions the head may see (docs/method.md, step 2).
        if cu_seqlens is not None:
            raise AttninfError("packed documents (cu_seqlens) cannot be combined with an attention mask")
        if head_mask is not None:  # (Hq,) or (B, Hq)
            query = query * (~head_mask).view(-1, query.shape[1], 1, 1).to(query.dtype)
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            attention_mask = attention_mask[:, :, :, :kv_len]
        if softcap:
            if attention_mask is None:  # no padding, with a cache: the queries are the last of the keys
                attention_mask = visible(kv_len, causal, window, query.device)[kv_len - q_len:]
            out = capped_attention(query, key, value, attention_mask, scaling, softcap)
        else:
            out = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, scale=scaling,
                is_causal=attention_mask is None and causal and q_len == kv_len and q_len > 1,
                enable_gqa=query.shape[1] != key.shape[1],
            )
    # (B, Hq, S, D) -> (B, S, Hq, D): the layout transformers expects back
    return out.transpose(1, 2).contiguous(), None


def logit_factor(cfg) -> float:
    """The factor an architecture applies to its output layer's logits:
    Granite divides them by `logits_scaling`, Cohere multiplies them by
    `logit_scale`. Logits are linear in the final hidden state, so the fused
    loss applies the factor to the hidden state instead."""
    factor = 1.0
    if getattr(cfg, "logits_scaling", None) not in (None, 1, 1.0):
        factor /= float(cfg.logits_scaling)
    if getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        factor *= float(cfg.logit_scale)
    return factor


def lm_head(model):
    """(weight (V, H), bias (V,) or None) of the model's output layer."""
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise AttninfError(f"{type(model).__name__} has no linear output layer")
    return head.weight, getattr(head, "bias", None)


def head_nll(model, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, H) final hidden states, (N,) targets -> (N,) fp32 NLL through the
    model's output layer (and its logit factor), with no (N x vocab) logits."""
    from attninf.kernels import token_nll

    weight, bias = lm_head(model)
    factor = logit_factor(model.config)
    if factor != 1.0:
        hidden = hidden * factor
    # Gemma 2 caps its output logits: c * tanh(logits / c)
    return token_nll(hidden, weight, targets, bias, softcap=getattr(model.config, "final_logit_softcapping", None))


def token_losses(model, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
    """(B, S) ids -> (B, S-1) fp32 per-token NLL of ids[:, 1:], through the
    final hidden states and token_nll: no (tokens x vocab) logits tensor.
    Positions whose target is padding (attention_mask 0) get 0."""
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                           use_cache=False)
    hidden = out.last_hidden_state[:, :-1]  # (B, S-1, H): position t predicts token t+1
    B, S1, H = hidden.shape
    targets = input_ids[:, 1:]
    if attention_mask is not None:
        targets = targets.masked_fill(attention_mask[:, 1:] == 0, -100)
    return head_nll(model, hidden.reshape(B * S1, H), targets.reshape(-1)).view(B, S1)


@contextmanager
def attn_implementation(model, name: str):
    """Run the model on another attention implementation inside the block."""
    before = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(before)


@torch.inference_mode()
def check_model(model, tokens: int = 24) -> list[int | None]:
    """attninf's loss (its attention and the fused loss, token_losses) against
    the model's own forward with its own eager attention and its logits, on a
    few tokens, once at load: an architecture whose attention or output layer
    does something attninf does not reproduce (a scaling, a cap, a bias, a
    sink) is refused before it scores anything. Returns each layer's sliding
    window as its attention received it (None: full attention)."""
    import torch.nn.functional as F

    cfg = model.config
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(cfg.vocab_size), (1, tokens), generator=g).to(device)
    with attn_implementation(model, "eager"):
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
    own = F.cross_entropy(logits, ids[0, 1:], reduction="none")
    name = type(model).__name__
    token = _seen.set({"masks": set(), "windows": {}})
    try:
        ours = token_losses(model, ids)[0].float()
        seen = _seen.get()
    except AttninfError:
        raise
    except Exception as e:  # noqa: BLE001 - a layout attninf's forward does not know (Llama 4's base model)
        raise AttninfError(f"{name}: attninf's forward fails on this architecture ({one_line(e)}); "
                           "it is not supported") from e
    finally:
        _seen.reset(token)
    windows = seen["windows"]
    if len(windows) != cfg.num_hidden_layers:
        raise AttninfError(f"{name}: attninf's attention ran in {len(windows)} of {cfg.num_hidden_layers} "
                           "layers; this architecture is not supported")
    lost = {w for w in seen["masks"] if w} - set(windows.values())
    if lost:
        # the kernels apply a window only when the attention receives it; a packed row builds no mask
        raise AttninfError(f"{name} builds attention masks with a window of {sorted(lost)} tokens but does not "
                           "pass the window to its attention; this architecture is not supported")
    low = next(model.parameters()).dtype != torch.float32  # the model's logits are rounded to bf16/fp16
    rel = float((ours - own).abs().mean() / own.abs().mean().clamp_min(1e-6))
    if rel > (2e-2 if low else 1e-4):
        raise AttninfError(
            f"{type(model).__name__}: attninf's loss differs from the model's own by {rel:.1%} on the same "
            f"tokens (mean {float(ours.mean()):.4f} vs {float(own.mean()):.4f}): its attention or output layer "
            "does something attninf does not reproduce; this architecture is not supported")
    return [windows[i] for i in range(cfg.num_hidden_layers)]
