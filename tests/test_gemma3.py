"""The real Gemma 3 270M, the second offline model (a pretrained base model;
sliding windows of 512 tokens in 15 of its 18 layers, 4 query heads sharing
one key/value head of dim 256, a 262,144-token vocabulary). Slow (a few
minutes on 2 cores, and the first pull dequantizes the GGUF), run by CI."""
import pytest
import torch
import torch.nn.functional as F

from attninf.democorpus import play_passages
from attninf.heads import DetectConfig, detect_heads
from attninf.model import load_model
from attninf.plugin import attn_implementation
from attninf.scoring import Scorer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma():
    return load_model("gemma3-270m", dtype="float32", device="cpu")


def _long_text(tok, tokens: int) -> str:
    import random

    rng = random.Random(0)
    text = ""
    while len(tok(text).input_ids) < tokens:
        text += "\n\n".join(play_passages(rng, 4)) + "\n\n"
    return text


def test_scores_equal_the_models_own_forward_beyond_the_window(gemma):
    """Two documents longer than the 512-token window and a short one, packed
    in one row on the shared-prefix path: each plain loss equals Gemma's own
    eager forward on that document alone (|mean delta| <= 1e-5)."""
    tok = gemma.tokenizer
    texts = [_long_text(tok, 700), _long_text(tok, 600)[200:], "To be, or not to be, that is the question."]
    scorer = Scorer(gemma, heads=[[5, 0], [11, 2]], max_tokens=2048)
    assert scorer.layered  # Gemma 3 takes the packed path now
    res = scorer.score_texts(texts)
    for text, base in zip(texts, res["loss_base"]):
        ids = torch.tensor([scorer.encode([text])[0]])
        with attn_implementation(gemma.model, "eager"), torch.no_grad():
            logits = gemma.model(ids, use_cache=False).logits[0, :-1].float()
        own = F.cross_entropy(logits, ids[0, 1:]).item()
        assert abs(base - own) <= 1e-5, (base, own, ids.shape)
    assert (res["score"] > -1).all()


def test_heads_hurt_retrieval_far_more_than_random_heads(gemma):
    cfg = DetectConfig(model="gemma3-270m", num_probes=8, context_tokens=2048, random_trials=2)
    res = detect_heads(gemma, cfg, progress=False, log=lambda *_: None)
    ab = res["ablation"]
    assert len(res["heads"]) == 4  # 5% of 18 x 4, rounded
    assert ab["no_mask"] > 0.8
    assert ab["selected_masked"] <= 0.5 * ab["random_masked"], ab
    # most of Gemma 3's retrieval heads sit in its global-attention layers (5, 11, 17): 2,048-token probes
    # put most needles out of the 512-token windows
    full = {i for i, t in enumerate(gemma.config.layer_types) if t == "full_attention"}
    assert sum(layer in full for layer, _ in res["heads"]) >= 3, res["heads"]
