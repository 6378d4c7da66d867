"""Token-level influence: the tokens' loss rises add up to the document's
score, each token's NLL matches a plain forward, offsets give back the text;
`attninf explain` and `attninf select --show`."""
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from attninf.cli import main
from attninf.explain import explain_texts, render_html, render_terminal, segments
from attninf.model import load_model
from attninf.plugin import masked_heads
from attninf.probes import sentences
from attninf.scoring import Scorer

from helpers import SCORE_HEADS, make_corpus, make_scored_corpus

TEXTS = [" ".join(sentences()[i:i + k]) for i, k in ((0, 3), (40, 30), (200, 1), (300, 12))] + \
    ["def f(x):\n    y = x + 1\n    return y * y  # ünïcode ✓\n", "", "Hello"]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir), dtype="float32", device="cpu")


@pytest.mark.parametrize("layered", [True, False])
@pytest.mark.parametrize("max_tokens,overlap", [(4096, None), (24, 8), (16, 1)])
def test_token_losses_add_up_to_the_score(lm, layered, max_tokens, overlap):
    scorer = Scorer(lm, SCORE_HEADS, max_tokens=max_tokens, context_overlap=overlap, layered=layered,
                    batch_tokens=64)
    plain = scorer.score_texts(TEXTS)
    res, _, _ = scorer.token_nll(TEXTS)
    for k in ("score", "loss_base", "loss_masked", "n_tokens", "status"):  # the token path changes nothing
        np.testing.assert_array_equal(res[k], plain[k])
    for ti, s, n in zip(explain_texts(scorer, TEXTS), plain["score"], plain["n_tokens"]):
        scored = ~np.isnan(ti.delta)
        assert scored.sum() == n  # every predicted token once, windows or not
        if ti.status != "ok":
            assert math.isnan(s)
            continue
        np.testing.assert_allclose(ti.delta[scored].sum() / ti.nll_base[scored].sum(), s, rtol=1e-12)
        np.testing.assert_allclose(ti.nll_base[scored].mean(), ti.loss_base, rtol=1e-12)


def test_token_losses_match_a_plain_forward(lm):
    """Independent reference: one forward per text (no packing, no fork),
    float64 log-softmax of the HF logits, with and without the heads masked."""
    scorer = Scorer(lm, SCORE_HEADS)
    prefix = list(scorer.doc_prefix.ids)
    for ti, text in zip(explain_texts(scorer, TEXTS[:5]), TEXTS[:5]):
        ids = prefix + lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor(ids).view(1, -1)
        ref = []
        with torch.inference_mode():
            for masked in (False, True):
                if masked:
                    with masked_heads(lm.model, SCORE_HEADS):
                        logits = lm.model(x).logits[0].double()
                else:
                    logits = lm.model(x).logits[0].double()
                lp = torch.log_softmax(logits[:-1], -1)
                ref.append(-lp[torch.arange(len(ids) - 1), x[0, 1:]].numpy())
        P = len(prefix)
        # token j of the document (after the prefix) is predicted at position P + j - 1
        np.testing.assert_allclose(ti.nll_base, ref[0][P - 1:], atol=2e-5)
        np.testing.assert_allclose(ti.nll_masked, ref[1][P - 1:], atol=2e-5)


def test_offsets_give_back_the_exact_text(lm):
    scorer = Scorer(lm, SCORE_HEADS)
    for ti, text in zip(explain_texts(scorer, TEXTS), TEXTS):
        assert "".join(piece for piece, _ in segments(ti)) == text
        assert len(ti.pieces) == len(ti.offsets) == len(ti.nll_base)
        for piece, (a, b) in zip(ti.pieces, ti.offsets):
            assert text[a:b] == piece
        if text.isascii() and text:
            ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
            assert [lm.tokenizer.decode([t]) for t in ids] == ti.pieces


def test_renderings(lm):
    scorer = Scorer(lm, SCORE_HEADS)
    ti = explain_texts(scorer, [TEXTS[1]])[0]
    plain = render_terminal(ti, color=False)
    assert "[[" in plain and plain.replace("[[", "").replace("]]", "") == TEXTS[1]
    coloured = render_terminal(ti, color=True)
    assert "\x1b[" in coloured
    page = render_html(ti)
    assert page.count("<span style='background:rgba(") >= len(ti.pieces) // 2 and "score " in page
    assert 0 < ti.top_share() <= 1 and all(np.isfinite(ti.halves()))


def test_nothing_to_explain_is_said_plainly(lm):
    from attninf.explain import summary_lines

    scorer = Scorer(lm, SCORE_HEADS, doc_prefix="none")  # no document start: one token predicts nothing
    short, empty = explain_texts(scorer, ["H", "  "])
    assert (short.status, empty.status) == ("too_short", "empty")
    assert "single token" in summary_lines(short)[0] and "empty" in summary_lines(empty)[0]
    assert "<pre>H</pre>" in render_html(short)  # the text, no token coloured


def _explain(args):
    res = CliRunner().invoke(main, ["explain", *map(str, args)])
    return res


def test_explain_command_edge_cases(tmp_path, heads_file):
    res = _explain(["--heads", heads_file, "--no-color", ""])
    assert res.exit_code == 0 and "the document is empty" in res.output, res.output
    res = _explain(["--heads", heads_file, "--no-color", "H"])  # one token: predicted from the document start
    assert res.exit_code == 0 and "over 1 predicted token\n" in res.output, res.output
    long_text = " ".join(sentences()[:400])
    out = tmp_path / "e.html"
    res = _explain(["--heads", heads_file, "--no-color", "--max-tokens", "32", "--max-chars", "300",
                    "--html", out, long_text])
    assert res.exit_code == 0, res.output
    assert "score " in res.output and "more characters" in res.output and out.exists()
    res = _explain(["--heads", heads_file])
    assert res.exit_code == 2 and "give the document one way" in res.output


def test_explain_a_scored_document_recomputes_its_score(tmp_path, heads_file):
    corpus = make_corpus(tmp_path / "corpus", files=2, rows=5)
    res = CliRunner().invoke(main, ["score", str(corpus), "--heads", str(heads_file), "--out", str(tmp_path / "s"),
                                    "--max-tokens", "48", "--quiet"])
    assert res.exit_code == 0, res.output
    t = pq.read_table(tmp_path / "s" / "prose" / "part-0.parquet").to_pydict()
    res = _explain(["--scores", tmp_path / "s", "--id", t["id"][3], "--no-color"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    got = float(lines[0].split()[1])
    held = float(next(x for x in lines if x.startswith("the scores file holds")).split()[-1])
    assert got == pytest.approx(t["score"][3], abs=1e-5) and held == pytest.approx(t["score"][3], abs=1e-5)
    res = _explain(["--scores", tmp_path / "s", "--id", "nope"])
    assert res.exit_code == 2 and "no document with id 'nope'" in res.output


def test_select_show(tmp_path):
    corpus, scores = make_scored_corpus(tmp_path, files=2, rows=30)
    res = CliRunner().invoke(main, ["select", str(scores), "--out", str(tmp_path / "sel"), "--show", "3"])
    assert res.exit_code == 0, res.output
    allrows = []
    for p in sorted(scores.rglob("*.parquet")):
        t = pq.read_table(p).to_pydict()
        text = pq.read_table(corpus / p.relative_to(scores))["text"].to_pylist()
        allrows += [(s, i, d, x) for s, i, d, x in zip(t["score"], t["id"], t["domain"], text)]
    for dom in ("code", "web"):
        rows = sorted((r for r in allrows if r[2] == dom), key=lambda r: (-r[0], r[1]))
        block = res.output.split(f"{dom}: top 3")[1].split(f"{dom}: bottom 3")[0]
        shown = [line.split()[2] for line in block.strip().splitlines()[1:]]
        assert shown == [r[1] for r in rows[:3]]
        assert " ".join(rows[0][3].split())[:60] in block  # the excerpt is that document's text
    json.loads((tmp_path / "sel" / "manifest.json").read_text())


def _reference_summary(base, masked):
    """token_summary written out plainly: a sorted Python list, two loops."""
    deltas = [m - b for b, m in zip(base, masked)]
    rises = sorted((d for d in deltas if d > 0), reverse=True)
    k = max(1, math.ceil(0.01 * len(deltas)))
    share = sum(rises[:k]) / sum(rises) if rises else math.nan
    h = len(deltas) // 2
    halves = [(sum(masked[a:b]) - sum(base[a:b])) / sum(base[a:b]) for a, b in ((0, h), (h, len(deltas)))]
    return [share, *halves]


def test_token_stats_leave_scores_alone_and_match_a_plain_reference(lm):
    """score_texts(token_stats=True): the same scores bit for bit, and
    top1_share / half scores equal a plain computation over the NLLs of one
    unpacked float64 forward per text (every predicted token, prefix included)."""
    scorer = Scorer(lm, SCORE_HEADS, max_tokens=24, context_overlap=8, batch_tokens=64)
    plain = scorer.score_texts(TEXTS)
    got = scorer.score_texts(TEXTS, token_stats=True)
    for k in plain:
        np.testing.assert_array_equal(got[k], plain[k])
    full = Scorer(lm, SCORE_HEADS)  # one window: the reference forward sees the same context
    got = full.score_texts(TEXTS, token_stats=True)
    prefix = list(full.doc_prefix.ids)
    for i, text in enumerate(TEXTS):
        if got["status"][i] != "ok":
            assert all(math.isnan(got[c][i]) for c in ("top1_share", "score_first_half", "score_second_half"))
            continue
        ids = prefix + lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor(ids).view(1, -1)
        nll = []
        with torch.inference_mode():
            for masked in (False, True):
                with masked_heads(lm.model, SCORE_HEADS if masked else []):
                    lp = torch.log_softmax(lm.model(x).logits[0].double()[:-1], -1)
                nll.append((-lp[torch.arange(len(ids) - 1), x[0, 1:]]).tolist())
        want = _reference_summary(*nll)
        have = [got[c][i] for c in ("top1_share", "score_first_half", "score_second_half")]
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-6)


def test_score_save_token_stats(tmp_path, heads_file):
    """--save-token-stats adds three columns and changes no score; it is part
    of the run's fingerprint (a directory scored without it is not mixed in)."""
    corpus = make_corpus(tmp_path / "corpus", files=2, rows=6)
    r = CliRunner()
    args = ["score", str(corpus), "--heads", str(heads_file), "--workers", "0", "--max-tokens", "32", "--quiet"]
    assert r.invoke(main, [*args, "--out", str(tmp_path / "a")]).exit_code == 0
    res = r.invoke(main, [*args, "--out", str(tmp_path / "b"), "--save-token-stats"])
    assert res.exit_code == 0, res.output
    for p in sorted((tmp_path / "a").rglob("part-*.parquet")):
        a, b = pq.read_table(p), pq.read_table(tmp_path / "b" / p.relative_to(tmp_path / "a"))
        assert b.column_names == a.column_names + ["top1_share", "score_first_half", "score_second_half"]
        assert a.equals(b.select(a.column_names))
        ok = np.array(b["status"].to_pylist()) == "ok"
        share = b["top1_share"].to_numpy(zero_copy_only=False)
        assert ok.any() and np.all((share[ok] > 0) & (share[ok] <= 1))
    res = r.invoke(main, [*args, "--out", str(tmp_path / "a"), "--save-token-stats"])
    assert res.exit_code != 0 and "--overwrite" in res.output, res.output
