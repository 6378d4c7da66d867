"""The scoring engine against a slow reference: two plain forward passes per
window in fp32, the masked one on an independent construction (eager
attention with the masked heads' query rows zeroed), no packing, no fork."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attninf.model import load_model
from attninf.scoring import Scorer, pack, repetition, window_ids

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


def reference(lm, heads, texts, max_tokens):
    plain = copy.deepcopy(lm.model).float()
    plain.set_attn_implementation("sdpa")
    masked = zero_query_model(plain, heads)
    bos = lm.tokenizer.bos_token_id
    out = []
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            out.append(None)
            continue
        ids = [bos] + lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        sums, n, start = [0.0, 0.0], 0, 0
        while start < len(ids) - 1:
            w = torch.tensor(ids[start:start + max_tokens]).view(1, -1)
            for k, m in enumerate((plain, masked)):
                with torch.no_grad():
                    logits = m(w).logits[0, :-1].double()
                sums[k] += F.cross_entropy(logits, w[0, 1:], reduction="sum").item()
            n += w.shape[1] - 1
            start += max_tokens - 1
        out.append(None if n == 0 else (sums[0] / n, sums[1] / n, n))
    return out


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), dtype="float32")


@pytest.mark.parametrize("max_tokens,batch_tokens", [(4096, 16384), (16, 40), (7, 7)])
def test_scores_equal_reference(lm, max_tokens, batch_tokens):
    scorer = Scorer(lm, HEADS, max_tokens=max_tokens, batch_tokens=batch_tokens)
    assert scorer.layered and scorer.first_masked == 1
    got = scorer.score_texts(TEXTS)
    ref = reference(lm, HEADS, TEXTS, max_tokens)
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


def test_padded_fallback_equals_layered(lm):
    a = Scorer(lm, HEADS, max_tokens=32, batch_tokens=64).score_texts(TEXTS)
    b = Scorer(lm, HEADS, max_tokens=32, batch_tokens=64, layered=False).score_texts(TEXTS)
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


def test_too_short_without_bos(lm):
    s = Scorer(lm, HEADS)
    s.bos = None
    got = s.score_texts(["x", "xy z"])
    assert got["status"][0] == "too_short" and np.isnan(got["score"][0])


def test_windows_cover_every_token_once():
    ids = list(range(23))
    for M in (2, 3, 5, 23, 100):
        ws = window_ids(ids, M)
        predicted = [t for w in ws for t in w[1:]]
        assert predicted == ids[1:]
        assert all(len(w) <= M for w in ws)
    assert window_ids([5], 8) == [] and window_ids(ids, 5, truncate=True) == [ids[:5]]


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
