"""Every architecture family, tiny and random (tests/architectures.py),
against the model's own code: attninf's plain loss equals the model's eager
forward; its masked loss equals the model's eager forward with the masked
heads' queries zeroed (a zero query gives equal logits: uniform attention
over what the head may see, through the model's own mask, window and cap);
packed rows (the shared-prefix path) and padded batches (two passes) give
both, on documents longer than the sliding window."""
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attninf.forward import DocSums, SharedPrefix, TwoPass
from attninf.plugin import attn_implementation, install, masked_heads, token_losses
from attninf.windows import Window

from architectures import ARCHITECTURES, VOCAB, WINDOW, tiny_model

REF = "attninf_test_zero_query"
HEADS = [[1, 0], [2, 3], [3, 1]]  # in full and sliding layers where a family has both
LENGTHS = (157, 40, 9)  # the first much longer than the 16-token window
# families whose forward does not pass its keyword arguments to the attention: no packed path
NO_PACKED = {"stablelm"}


def _zero_query_attention(module, query, key, value, attention_mask, **kwargs):
    """The model's own eager attention, with the masked heads' queries zeroed."""
    heads = getattr(module, "_test_heads", ())
    if heads:
        query = query.clone()
        query[:, list(heads)] = 0
    eager = sys.modules[type(module).__module__].eager_attention_forward
    return eager(module, query, key, value, attention_mask, **kwargs)


def _register_reference():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(REF, _zero_query_attention)
    AttentionMaskInterface.register(REF, eager_mask)


def _own_nll(model, ids, heads=()):
    """(S-1,) per-token NLL from the model's own forward and logits, eager
    attention, `heads` masked by zeroing their queries."""
    from attninf.plugin import attention_modules

    mods = attention_modules(model)
    for layer, head in heads:
        mods[layer]._test_heads = (*getattr(mods[layer], "_test_heads", ()), head)
    try:
        with attn_implementation(model, REF), torch.no_grad():
            logits = model(input_ids=ids.view(1, -1), use_cache=False).logits[0, :-1].float()
    finally:
        for m in mods:
            m._test_heads = ()
    return F.cross_entropy(logits, ids[1:], reduction="none").double()


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def arch_model(request):
    _register_reference()
    model = tiny_model(request.param)
    install(model)
    g = torch.Generator().manual_seed(5)
    docs = [torch.randint(3, VOCAB, (n,), generator=g) for n in LENGTHS]
    return request.param, model, docs


def test_plain_and_masked_loss_equal_the_models_own(arch_model):
    arch, model, docs = arch_model
    ids = docs[0]
    with torch.no_grad():
        plain = token_losses(model, ids.view(1, -1))[0].double()
        with masked_heads(model, HEADS):
            masked = token_losses(model, ids.view(1, -1))[0].double()
    own_plain, own_masked = _own_nll(model, ids), _own_nll(model, ids, HEADS)
    # the document's loss (what a score is made of) to 1e-5; each token's to fp32 rounding of a sum of ~10
    assert abs(plain.mean() - own_plain.mean()) <= 1e-5 and (plain - own_plain).abs().max() <= 5e-5, arch
    assert abs(masked.mean() - own_masked.mean()) <= 1e-5 and (masked - own_masked).abs().max() <= 5e-5, arch
    # the heads matter: masking them changes the loss by far more than the tolerance
    assert (own_masked - own_plain).abs().max() > 1e-2, arch


@pytest.mark.parametrize("strategy", [SharedPrefix, TwoPass])
def test_packed_and_padded_sums_equal_the_models_own(arch_model, strategy):
    arch, model, docs = arch_model
    if strategy is SharedPrefix and arch in NO_PACKED:
        assert SharedPrefix.check(model, HEADS) is not None  # refused at load, so the scorer takes TwoPass
        return
    if strategy is SharedPrefix:
        assert SharedPrefix.check(model, HEADS) is None, arch
    windows = [Window(d, ids.tolist(), 1, 0) for d, ids in enumerate(docs)]
    sink = DocSums(len(docs))
    with torch.inference_mode():
        # all three documents in one packed row / one padded batch
        strategy(model, HEADS, batch_tokens=sum(LENGTHS), pad_id=0).run(windows, sink)
    want = np.array([[_own_nll(model, ids).sum() for ids in docs],
                     [_own_nll(model, ids, HEADS).sum() for ids in docs]])
    np.testing.assert_array_equal(sink.counts, [n - 1 for n in LENGTHS])
    assert np.abs(sink.sums / sink.counts - want / sink.counts).max() <= 1e-5, arch


def test_the_matrix_has_windows_caps_and_scalings():
    """The families above exercise what the plug-in must honour."""
    cfgs = {a: tiny_model(a).config for a in ("mistral", "gemma2", "gemma3_text", "granite", "cohere")}
    assert cfgs["mistral"].sliding_window == WINDOW < LENGTHS[0]
    assert cfgs["gemma3_text"].layer_types.count("sliding_attention") == 2
    assert cfgs["gemma2"].attn_logit_softcapping and cfgs["gemma2"].final_logit_softcapping
    assert cfgs["granite"].logits_scaling != 1 and cfgs["granite"].attention_multiplier != 1
    assert cfgs["cohere"].logit_scale != 1


def test_attention_sinks_are_refused_at_load():
    """gpt-oss adds a learned sink to each head's softmax: refused by name, not scored wrongly."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from architectures import COMMON
    from attninf.errors import AttninfError
    from attninf.plugin import check_model

    cfg = AutoConfig.for_model("gpt_oss", **{**COMMON, "head_dim": 16, "num_local_experts": 2,
                                             "num_experts_per_tok": 1, "sliding_window": WINDOW,
                                             "layer_types": ["sliding_attention", "full_attention"] * 2})
    model = AutoModelForCausalLM.from_config(cfg).eval()
    install(model)
    with pytest.raises(AttninfError, match=r"uses attention sinks \(s_aux\).*not supported"):
        check_model(model)


def test_what_the_plugin_does_not_reproduce_is_refused_at_load(monkeypatch):
    """The load check compares with the model's own eager forward: an output
    scaling the fused loss ignored (Granite's logits_scaling, as before it was
    honoured) or an attention cap the plug-in ignored is refused, not scored."""
    import attninf.plugin as plugin
    from attninf.errors import AttninfError

    granite = tiny_model("granite")
    install(granite)
    plugin.check_model(granite)  # honoured: passes
    monkeypatch.setattr(plugin, "logit_factor", lambda cfg: 1.0)
    with pytest.raises(AttninfError, match="differs from the model's own"):
        plugin.check_model(granite)
    monkeypatch.undo()

    gemma2 = tiny_model("gemma2")
    install(gemma2)
    plugin.check_model(gemma2)
    real = plugin.attninf_attention
    monkeypatch.setattr(plugin, "attninf_attention",
                        lambda *a, **kw: real(*a, **{k: v for k, v in kw.items() if k != "softcap"}))
    from transformers import AttentionInterface

    AttentionInterface.register(plugin.ATTN_NAME, plugin.attninf_attention)
    try:
        with pytest.raises(AttninfError, match="differs from the model's own"):
            plugin.check_model(gemma2)
    finally:
        AttentionInterface.register(plugin.ATTN_NAME, real)


def test_gemma2_loads_from_a_directory_and_scores(tmp_path):
    """Gemma 2 refuses SDPA at load; attninf loads it with eager attention and
    installs its own, with soft-capping honoured (the load check passes)."""
    from attninf.model import load_model
    from attninf.scoring import Scorer

    from conftest import _tokenizer

    tok = _tokenizer()
    model = tiny_model("gemma2")
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path), dtype="float32", device="cpu")
    scorer = Scorer(lm, heads=[[1, 0], [2, 3]], max_tokens=64)
    assert scorer.layered
    res = scorer.score_texts(["To be, or not to be, that is the question. " * 8, "x"])
    assert res["status"][0] == "ok" and res["loss_base"][0] > 0


def _random(arch: str, **kw):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(arch, **kw)).eval()


def test_a_window_the_attention_never_receives_is_refused_at_load():
    """Qwen2-MoE builds a sliding-window mask but does not pass the window to
    its attention: a packed row (no mask) would attend past it, and head
    detection would count copies outside it. Refused at load, on 24 tokens."""
    from architectures import COMMON
    from attninf.errors import AttninfError
    from attninf.plugin import check_model

    model = _random("qwen2_moe", **{**COMMON, "use_sliding_window": True, "sliding_window": WINDOW,
                                    "max_window_layers": 4, "num_experts": 2, "num_experts_per_tok": 1,
                                    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32})
    install(model)
    with pytest.raises(AttninfError, match=r"window of \[16\] tokens but does not pass the window"):
        check_model(model)


def test_a_model_the_fork_breaks_falls_back_to_two_passes():
    """GPTBigCode reshapes hidden states to batch 1 inside its forward: the
    packed check fails with its own error and scoring takes two padded passes."""
    model = _random("gpt_bigcode", vocab_size=VOCAB, n_embd=64, n_layer=4, n_head=4, n_positions=512)
    install(model)
    why = SharedPrefix.check(model, HEADS)
    assert why and why.startswith("RuntimeError"), why
    windows = [Window(0, list(range(3, 40)), 1, 0)]
    sink = DocSums(1)
    with torch.inference_mode():
        TwoPass(model, HEADS, batch_tokens=64).run(windows, sink)
    assert np.isfinite(sink.sums).all() and sink.sums[0, 0] != sink.sums[1, 0]


def test_a_model_without_the_attention_interface_is_refused():
    """Falcon computes attention itself: masking its heads would do nothing
    and every score would be 0. Refused at install."""
    from attninf.errors import AttninfError

    model = _random("falcon", vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    with pytest.raises(AttninfError, match="AttentionInterface.*not supported"):
        install(model)


def test_an_architecture_attninf_cannot_run_is_refused_in_one_line():
    """Llama 4 (chunked attention, its CausalLM is its own base model): refused at load, not a traceback."""
    from transformers import Llama4ForCausalLM, Llama4TextConfig

    from architectures import COMMON
    from attninf.errors import AttninfError
    from attninf.plugin import check_model

    cfg = Llama4TextConfig(**{**COMMON, "head_dim": 16, "attention_chunk_size": 16, "num_local_experts": 2,
                              "num_experts_per_tok": 1, "intermediate_size_mlp": 96, "interleave_moe_layer_step": 1,
                              "no_rope_layer_interval": 4})
    torch.manual_seed(0)
    model = Llama4ForCausalLM(cfg).eval()
    install(model)
    with pytest.raises(AttninfError, match="Llama4ForCausalLM: attninf's forward fails .* not supported"):
        check_model(model)


def test_the_docs_name_the_families_this_matrix_tests():
    """README and design.md list the tested families: the list is this file's."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    design = " ".join((root / "docs" / "design.md").read_text().split())
    n = re.search(r"the matrix: (\d+) tiny random families \(([^;]*);", design)
    assert n and int(n.group(1)) == len(ARCHITECTURES)
    assert len(n.group(2).split(", ")) == len(ARCHITECTURES)
    readme = " ".join((root / "README.md").read_text().split())
    listed = re.search(r"works if attninf can reproduce its attention exactly: (.*?) are tested against their own", readme)
    names = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen2/3", "phi3": "Phi-3", "phi": "Phi", "olmo": "OLMo",
             "olmo2": "OLMo 1/2", "gpt_neox": "GPT-NeoX", "mistral": "Mistral", "starcoder2": "Starcoder2",
             "gemma": "Gemma", "gemma2": "Gemma 1/2/3", "gemma3_text": "Gemma 1/2/3", "granite": "Granite",
             "cohere": "Cohere", "smollm3": "SmolLM3", "stablelm": "StableLM"}
    assert listed and set(names) == set(ARCHITECTURES)
    assert all(names[a] in listed.group(1) for a in ARCHITECTURES)
