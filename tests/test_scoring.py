"""The scoring engine against a slow reference: two plain forward passes per
window in fp32, the masked one on an independent construction (eager
attention with the masked heads' query rows zeroed), no packing, no fork."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attninf.errors import AttninfError
from attninf.model import load_model
from attninf.scoring import Scorer, repetition
from attninf.windows import pack, window_ids

from reference import zero_query_model

HEADS = [[1, 2], [2, 0], [2, 5], [3, 3]]
TEXTS = [
    "To be, or not to be, that is the question.",
    "def add(a, b):\n    return a + b\n" * 6,
    "",
    None,
    "   ",
    "Short.",
    "Now is the winter of our discontent made glorious summer by this sun of York. " * 9,
    "x",
]


def reference(lm, heads, texts, max_tokens, overlap=None, prefix=("<|endoftext|>",)):
    """Plain HF forwards, one window at a time: every window after the first
    starts `overlap` tokens before the first token not yet predicted, and
    predicts from there to its end (standard strided perplexity)."""
    plain = copy.deepcopy(lm.model).float()
    plain.set_attn_implementation("sdpa")
    masked = zero_query_model(plain, heads)
    overlap = max_tokens // 2 if overlap is None else overlap
    start_ids = lm.tokenizer.convert_tokens_to_ids(list(prefix))
    out = []
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            out.append(None)
            continue
        ids = start_ids + lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        sums, predicted, start = [0.0, 0.0], [], 0
        while len(ids) > 1 and (not predicted or predicted[-1] < len(ids) - 1):
            first = predicted[-1] + 1 if predicted else 1  # first position this window predicts
            start = first - overlap if predicted else 0
            w = torch.tensor(ids[start:start + max_tokens]).view(1, -1)
            targets = list(range(first, start + w.shape[1]))
            for k, m in enumerate((plain, masked)):
                with torch.no_grad():
                    logits = m(w).logits[0].double()
                rows = torch.tensor([p - start - 1 for p in targets])
                sums[k] += F.cross_entropy(logits[rows], torch.tensor([ids[p] for p in targets]),
                                           reduction="sum").item()
            predicted += targets
        assert predicted == list(range(1, len(ids)))
        n = len(predicted)
        out.append(None if n == 0 else (sums[0] / n, sums[1] / n, n))
    return out


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), dtype="float32")


@pytest.mark.parametrize("max_tokens,overlap,batch_tokens",
                         [(4096, None, 16384), (16, None, 40), (16, 1, 40), (16, 13, 16), (7, 3, 7)])
def test_scores_equal_reference(lm, max_tokens, overlap, batch_tokens):
    scorer = Scorer(lm, HEADS, max_tokens=max_tokens, batch_tokens=batch_tokens, context_overlap=overlap)
    assert scorer.layered and scorer.first_masked == 1
    got = scorer.score_texts(TEXTS)
    ref = reference(lm, HEADS, TEXTS, max_tokens, overlap)
    assert list(got["status"]) == ["ok", "ok", "empty", "empty", "empty", "ok", "ok", "ok"]
    for i, r in enumerate(ref):
        if r is None:
            assert np.isnan(got["score"][i]) and got["n_tokens"][i] == 0
            continue
        base, masked, n = r
        assert got["n_tokens"][i] == n
        assert got["loss_base"][i] == pytest.approx(base, rel=1e-5)
        assert got["loss_masked"][i] == pytest.approx(masked, rel=1e-5)
        assert got["score"][i] == pytest.approx((masked - base) / base, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("overlap", [1, 20])
def test_padded_fallback_equals_layered(lm, overlap):
    a = Scorer(lm, HEADS, max_tokens=32, batch_tokens=64, context_overlap=overlap).score_texts(TEXTS)
    b = Scorer(lm, HEADS, max_tokens=32, batch_tokens=64, layered=False, context_overlap=overlap).score_texts(TEXTS)
    ok = a["status"] == "ok"
    np.testing.assert_allclose(a["loss_base"][ok], b["loss_base"][ok], rtol=1e-5)
    np.testing.assert_allclose(a["loss_masked"][ok], b["loss_masked"][ok], rtol=1e-5)
    assert list(a["status"]) == list(b["status"])


def test_truncate_scores_first_window_only(lm):
    s = Scorer(lm, HEADS, max_tokens=16, truncate=True)
    got = s.score_texts([TEXTS[6]])
    assert got["n_tokens"][0] == 15
    ref = reference(lm, HEADS, [lm.tokenizer.decode(s.encode([TEXTS[6]])[0][1:16])], 16)
    assert got["loss_base"][0] == pytest.approx(ref[0][0], rel=1e-4)


def test_too_short_without_prefix(lm):
    s = Scorer(lm, HEADS, doc_prefix="none")
    assert s.doc_prefix.ids == ()
    got = s.score_texts(["x", "xy z"])
    assert got["status"][0] == "too_short" and np.isnan(got["score"][0])


def test_doc_prefix_changes_scores(lm):
    text = [TEXTS[0]]
    a = Scorer(lm, HEADS).score_texts(text)
    b = Scorer(lm, HEADS, doc_prefix="none").score_texts(text)
    assert a["n_tokens"][0] == b["n_tokens"][0] + 1  # the first word is predicted from the separator
    ref = reference(lm, HEADS, text, 4096, prefix=())
    assert b["loss_base"][0] == pytest.approx(ref[0][0], rel=1e-5)


def test_windows_cover_every_token_once():
    ids = list(range(23))
    for M in (2, 3, 5, 8, 23, 100):
        for C in range(1, M):
            ws = window_ids(ids, M, C)
            predicted = [t for w, ctx in ws for t in w[ctx:]]
            assert predicted == ids[1:], (M, C)
            assert all(len(w) <= M for w, _ in ws)
            # every token is predicted from at least min(its position, C) tokens of context
            for w, ctx in ws:
                assert ctx == 1 or (ctx == C and w[0] > 0)
    assert window_ids([5], 8) == [] and window_ids(ids, 5, 2, truncate=True) == [(ids[:5], 1)]
    with pytest.raises(AttninfError, match="context-overlap"):
        window_ids(ids, 5, 5)


def test_pack_first_fit_decreasing():
    lens = [5, 3, 8, 2, 2, 7, 1]
    bins = pack(lens, 10)
    assert sorted(i for b in bins for i in b) == list(range(len(lens)))
    assert all(sum(lens[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 3  # 28 tokens in bins of 10
    assert pack(lens, 10) == bins


def test_repetition_measure():
    assert repetition("a b c d e f g") == 0.0
    assert repetition("a b c d a b c d a b c d") == pytest.approx(1 - 4 / 9)
    assert repetition("too short") == 0.0 and np.isnan(repetition(None))


def test_one_token_document_after_the_prefix_is_scored(lm):
    """A one-token document has one target, its token predicted from the
    document prefix, like the first token of every document: it is scored
    (docs/method.md, step 3), not too_short; without a prefix it is too_short."""
    s = Scorer(lm, HEADS)
    assert len(s.doc_prefix.ids) == 1
    one = next(w for w in ("x", "a", "the") if len(lm.tokenizer(w, add_special_tokens=False)["input_ids"]) == 1)
    got = s.score_texts([one])
    assert got["status"][0] == "ok" and got["n_tokens"][0] == 1
    ref = reference(lm, HEADS, [one], 4096)
    assert got["loss_base"][0] == pytest.approx(ref[0][0], rel=1e-5)
    assert got["loss_masked"][0] == pytest.approx(ref[0][1], rel=1e-5)
    assert abs(got["score"][0]) < 1e-6  # its one predicting position sees only the prefix: masking changes nothing
