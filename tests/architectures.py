"""Tiny random models of every architecture family a selector plausibly
comes from, built from transformers' own config classes (no download): four
layers, GQA where the family has it, a 16-token sliding window where it has
one, and each family's peculiarity switched on (Gemma 2's soft-capping,
Granite's multipliers, Cohere's logit scale)."""
import torch

WINDOW = 16
VOCAB = 512

COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False,
              pad_token_id=0, bos_token_id=1, eos_token_id=2)

ARCHITECTURES = {
    "llama": dict(head_dim=16),
    "qwen2": dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=2,
                  layer_types=["full_attention", "full_attention", "sliding_attention", "sliding_attention"]),
    "qwen3": dict(head_dim=16),
    "phi3": dict(),
    "olmo2": dict(),
    "gpt_neox": dict(num_key_value_heads=None, rotary_pct=0.5, use_parallel_residual=True),
    "mistral": dict(head_dim=16, sliding_window=WINDOW),
    "starcoder2": dict(sliding_window=WINDOW, use_bias=True),
    "gemma3_text": dict(head_dim=16, sliding_window=WINDOW, query_pre_attn_scalar=16,
                        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"]),
    "gemma2": dict(head_dim=16, sliding_window=WINDOW, attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
                   query_pre_attn_scalar=16),
    "granite": dict(embedding_multiplier=6.0, residual_multiplier=0.3, attention_multiplier=0.2, logits_scaling=4.0),
    "gemma": dict(head_dim=16),
    "cohere": dict(logit_scale=0.5),
    "stablelm": dict(partial_rotary_factor=0.5),
    "olmo": dict(),
    "smollm3": dict(),
    "phi": dict(partial_rotary_factor=0.5),
}


def tiny_model(arch: str, seed: int = 0):
    """A float32 random model of the family, in eval mode, on sdpa attention."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kw = {**COMMON, **ARCHITECTURES[arch]}
    kw = {k: v for k, v in kw.items() if v is not None}
    cfg = AutoConfig.for_model(arch, **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():  # random weights larger than the initialiser's, so that attention is far from uniform
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.normal_(0, 1.5 / p.shape[1] ** 0.5)
    return model.eval()


def has_window(model) -> bool:
    return getattr(model.config, "sliding_window", None) is not None
