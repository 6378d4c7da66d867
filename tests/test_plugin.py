"""The attninf attention function inside whole HF models: equal to the model's
own sdpa with no head masked; with heads masked, equal to an independent
construction (the same model, eager attention, those heads' query rows zeroed)."""
import copy

import pytest
import torch
from transformers import LlamaForCausalLM

from attninf.plugin import attention_modules, install, masked_heads

from conftest import tiny_llama_config
from reference import zero_query_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    m = LlamaForCausalLM(tiny_llama_config(300, num_hidden_layers=3)).eval()
    m.set_attn_implementation("sdpa")
    return m


def _zero_queries(model, heads):
    return zero_query_model(model, heads)


def _batch(gen, B=2, S=23, pad=(0, 5)):
    ids = torch.randint(0, 300, (B, S), generator=gen)
    mask = torch.ones(B, S, dtype=torch.long)
    for b, p in enumerate(pad):
        if p:
            mask[b, :p] = 0  # left padding
    return ids, mask


@torch.no_grad()
def test_no_mask_equals_sdpa(model):
    gen = torch.Generator().manual_seed(0)
    ids, mask = _batch(gen)
    ref = model(ids).logits, model(ids, attention_mask=mask).logits
    m = copy.deepcopy(model)
    install(m)
    got = m(ids).logits, m(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-5)
    keep = mask.bool()
    torch.testing.assert_close(got[1][keep], ref[1][keep], rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("heads", [[(0, 1)], [(1, 0), (1, 4), (2, 5)], [(0, h) for h in range(6)]])
def test_masked_equals_zeroed_query(model, heads):
    gen = torch.Generator().manual_seed(len(heads))
    ids, mask = _batch(gen)
    ref = _zero_queries(model, heads)
    m = copy.deepcopy(model)
    install(m)
    with masked_heads(m, heads):
        got = m(ids).logits
        got_pad = m(ids, attention_mask=mask).logits
    torch.testing.assert_close(got, ref(ids).logits, rtol=1e-4, atol=1e-4)
    keep = mask.bool()
    torch.testing.assert_close(got_pad[keep], ref(ids, attention_mask=mask).logits[keep], rtol=1e-4, atol=1e-4)
    # masking changed something, and the mask is gone after the block
    assert not torch.allclose(got, model(ids).logits, atol=1e-3)
    torch.testing.assert_close(m(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    assert all(a._attninf_head_mask is None for a in attention_modules(m))


def test_bad_head_index(model):
    from attninf.errors import AttninfError

    m = copy.deepcopy(model)
    install(m)
    with pytest.raises(AttninfError, match="outside the model"):
        with masked_heads(m, [(3, 0)]):
            pass


def _tiny(family):
    from transformers import (GPTNeoXConfig, GPTNeoXForCausalLM, MistralConfig, MistralForCausalLM,
                              Qwen2Config, Qwen2ForCausalLM)

    torch.manual_seed(2)
    common = dict(vocab_size=300, hidden_size=96, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=6)
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=2, **common))
    if family == "mistral":  # a sliding window shorter than the batch: the mask path
        return MistralForCausalLM(MistralConfig(num_key_value_heads=3, sliding_window=8, **common))
    return GPTNeoXForCausalLM(GPTNeoXConfig(**common))


@torch.no_grad()
@pytest.mark.parametrize("family", ["qwen2", "mistral", "gpt_neox"])
def test_other_families_equal_sdpa(family):
    m = _tiny(family).eval()
    m.set_attn_implementation("sdpa")
    gen = torch.Generator().manual_seed(3)
    ids, mask = _batch(gen)
    ref = m(ids, attention_mask=mask).logits
    install(m)
    got = m(ids, attention_mask=mask).logits
    keep = mask.bool()
    torch.testing.assert_close(got[keep], ref[keep], rtol=1e-5, atol=1e-5)
    with masked_heads(m, [(1, 2)]):  # masking reaches every family's attention
        assert not torch.allclose(m(ids, attention_mask=mask).logits[keep], ref[keep], atol=1e-4)


@torch.no_grad()
def test_triton_backend_inside_model(model):
    """The whole model on the Triton kernel (interpreter on CPU): equal to sdpa
    unmasked, and to the zeroed-query reference masked."""
    from attninf.kernels import set_backend

    gen = torch.Generator().manual_seed(9)
    ids = torch.randint(0, 300, (2, 21), generator=gen)
    heads = [(0, 2), (2, 5)]
    m = copy.deepcopy(model)
    install(m)
    set_backend("triton")
    try:
        plain = m(ids).logits
        with masked_heads(m, heads):
            masked = m(ids).logits
    finally:
        set_backend("auto")
    torch.testing.assert_close(plain, model(ids).logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(masked, _zero_queries(model, heads)(ids).logits, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_token_losses_equal_cross_entropy(model):
    from attninf.plugin import token_losses

    gen = torch.Generator().manual_seed(4)
    ids, mask = _batch(gen, pad=(0, 4))
    m = copy.deepcopy(model)
    install(m)
    got = token_losses(m, ids, attention_mask=mask)
    logits = model(ids, attention_mask=mask).logits[:, :-1]
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 300).double(), ids[:, 1:].reshape(-1),
                                            reduction="none").view(2, -1)
    keep = mask[:, 1:].bool()
    torch.testing.assert_close(got[keep].double(), ref[keep], rtol=1e-5, atol=1e-5)
    assert (got[~keep] == 0).all()
