"""Head detection against a slow reference built on eager attention's full
attention matrices, on a tiny random Llama in float64; the needle-span copy
rule on hand-built attention."""
import json

import pytest
import torch
from click.testing import CliRunner

from attninf.cli import main
from attninf.errors import AttninfError
from attninf.artifacts import Heads
from attninf.heads import (accuracy, copy_counts, copy_hits, probe_accuracy, random_heads, retrieval_scores,
                           select_top)
from attninf.model import load_model
from attninf.probes import make_probes


def _reference_scores(model, probes):
    """Copy rate per (layer, head) from output_attentions=True: full S x S maps
    of the model's own eager attention (its mask, window and cap), in float64."""
    import copy

    ref = copy.deepcopy(model).double().eval()
    ref.set_attn_implementation("eager")
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    total = torch.zeros(L, H, dtype=torch.float64)
    accs = []
    for p in probes:
        ids = torch.tensor(p.input_ids)
        P, A = p.prompt_len, len(p.answer_ids)
        start, end = p.needle
        with torch.no_grad():
            out = ref(ids.view(1, -1), output_attentions=True)
        for layer, att in enumerate(out.attentions):  # (1, H, S, S)
            for h in range(H):
                hits = 0
                for t in range(A):
                    r = P - 1 + t
                    j = int(att[0, h, r].argmax())
                    hits += int(start <= j < end and ids[j] == ids[r + 1])
                total[layer, h] += hits / A
        pred = out.logits[0, P - 1:P - 1 + A].argmax(-1)
        accs.append((pred == ids[P:]).double().mean().item())
    return total / len(probes), sum(accs) / len(accs)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    lm.model.double()
    return lm


def test_scores_match_eager_reference(tiny):
    probes = make_probes(tiny.tokenizer, 3, seed=5, context_tokens=800, prefix_ids=[0])
    scores, correct = retrieval_scores(tiny, probes, progress=False)
    ref, ref_acc = _reference_scores(tiny.model, probes)
    assert ref.sum() > 0, "the reference found no copy at all: the test would be vacuous"
    torch.testing.assert_close(scores.double(), ref, rtol=0, atol=1e-6)
    acc = probe_accuracy(tiny, probes, progress=False)
    assert acc["token"] == pytest.approx(ref_acc, abs=1e-9)
    assert accuracy(correct)["token"] == pytest.approx(ref_acc, abs=1e-9)


def test_select_top_and_ties():
    s = torch.tensor([[0.1, 0.9, 0.5], [0.9, 0.0, 0.2]])
    assert select_top(s, 0.34) == [[0, 1], [1, 0]]  # 0.34 * 6 = 2.04 -> 2 heads
    assert select_top(s, 0.01) == [[0, 1]]  # at least one; tie 0.9/0.9 -> lower layer
    assert select_top(s, 1.0) == sorted([l, h] for l in range(2) for h in range(3))


def test_random_heads_exclude_selected():
    sel = [[0, 0], [1, 1]]
    r = random_heads(3, 3, 4, sel, seed=0)
    assert len(r) == 4 and not {tuple(x) for x in r} & {(0, 0), (1, 1)}
    assert r == random_heads(3, 3, 4, sel, seed=0)


def test_detect_heads_cli(tiny_model_dir, tmp_path):
    out = tmp_path / "heads.json"
    res = CliRunner().invoke(main, ["detect-heads", "--model", str(tiny_model_dir), "--num-probes", "2",
                                    "--context-tokens", "800", "--top-frac", "0.1", "--random-trials", "1",
                                    "--out", str(out), "--quiet", "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["num_layers"] == 4 and d["num_heads"] == 6 and d["num_kv_heads"] == 2
    assert len(d["scores"]) == 4 and len(d["scores"][0]) == 6
    assert len(d["heads"]) == 2  # round(0.1 * 24)
    assert d["heads"] == select_top(torch.tensor(d["scores"]), 0.1)
    assert d["model"]["fingerprint"] and d["model"]["weights_sha256"]
    ab = d["ablation"]
    for label, key in (("no mask", "no_mask"), ("selected heads masked", "selected_masked"),
                       ("random heads masked", "random_masked")):  # accuracies, as the terminal's table shows them
        assert 0 <= ab[key] <= 1 and f"{ab[key]:.3f}" in res.output.split(label, 1)[1].splitlines()[0], label
    assert len(ab["random_trials"]) == 1
    assert ab["random_masked"] == pytest.approx(ab["random_trials"][0]["accuracy"])  # the mean of one draw
    assert d["probes"]["seed"] == 0 and d["probes"]["num_probes"] == 2 and "Shakespeare" in d["probes"]["source"]
    assert (tmp_path / "heads.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert d["hit"] == "needle-span" and d["heads_version"] == 2
    assert d["doc_prefix"] == {"ids": [0], "tokens": ["<|endoftext|>"], "rule": "separator"}
    assert Heads.read(out).heads == d["heads"]
    assert "selected heads masked" in res.output
    assert "copy rule  needle-span" in res.output and d["probes"]["wording"] == "paper"
    assert d["config"]["hit"] == "needle-span" and d["config"]["probe_wording"] == "paper"
    # per-probe counts, exact: the scores are their mean rate
    pp = d["per_probe"]
    assert len(pp["answer_tokens"]) == 2 and [len(r) for r in pp["hits"]] == [24, 24]
    assert all(isinstance(x, int) and 0 <= x <= a for a, r in zip(pp["answer_tokens"], pp["hits"]) for x in r)
    rates = [[sum(r[l * 6 + h] / a for a, r in zip(pp["answer_tokens"], pp["hits"])) / 2 for h in range(6)]
             for l in range(4)]
    assert d["scores"] == [[round(x, 6) for x in row] for row in rates]
    # the stability of the selection, in heads.json and the summary
    st = d["stability"]
    assert st["selected"] == d["heads"] and st["bootstrap"] == 1000 and len(st["frequency"]) == 4
    assert "stability of the selection" in res.output and "same set as all probes" in res.output
    assert '"hits": [\n' in out.read_text()  # one line per probe
    assert sum(1 for line in out.read_text().splitlines() if line.strip().startswith("[")) >= 2 + 4 + 4


def test_detect_heads_paper_rule_and_wording(tiny_model_dir, tmp_path):
    out = tmp_path / "heads.json"
    res = CliRunner().invoke(main, ["detect-heads", "--model", str(tiny_model_dir), "--num-probes", "2",
                                    "--context-tokens", "800", "--random-trials", "0", "--hit", "paper",
                                    "--probe-wording", "attninf", "--out", str(out), "--quiet", "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["hit"] == "paper" and d["config"]["hit"] == "paper" and d["probes"]["wording"] == "attninf"
    assert "copy rule  paper" in res.output and "worded as attninf's" in res.output
    assert Heads.read(out).heads == d["heads"]  # score reads either rule
    res = CliRunner().invoke(main, ["detect-heads", "--hit", "anywhere"])
    assert res.exit_code == 2 and "anywhere" in res.output


def test_heads_json_rules_read(tmp_path):
    """heads.json of either copy rule is read, with or without per-probe
    counts; heads version 1 and an unknown rule are refused."""
    base = {"model": {"name": "x"}, "heads": [[0, 0]], "num_layers": 1, "num_heads": 1, "heads_version": 2}
    p = tmp_path / "heads.json"
    for hit in ("needle-span", "paper"):
        p.write_text(json.dumps({**base, "hit": hit}))
        assert Heads.read(p).heads == [[0, 0]]
        p.write_text(json.dumps({**base, "hit": hit, "per_probe": {"answer_tokens": [3], "hits": [[1]]}}))
        assert Heads.read(p).data["per_probe"]["hits"] == [[1]]
    p.write_text(json.dumps({**base, "hit": "anywhere"}))
    with pytest.raises(AttninfError, match="copy rule 'anywhere', not one of needle-span, paper"):
        Heads.read(p)
    p.write_text(json.dumps({**base, "heads_version": 1, "hit": "paper"}))
    with pytest.raises(AttninfError, match="older detect-heads"):
        Heads.read(p)


def test_detect_heads_config_file(tiny_model_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {tiny_model_dir}\ndtype: float32\ndetect:\n  num_probes: 1\n"
                   "  context_tokens: 800\n  random_trials: 0\n  top_frac: 0.2\n")
    out = tmp_path / "h.json"
    res = CliRunner().invoke(main, ["detect-heads", "--config", str(cfg), "--top-frac", "0.5",
                                    "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["config"]["num_probes"] == 1 and d["top_frac"] == 0.5  # the flag beats the file
    assert len(d["heads"]) == 12
    bad = tmp_path / "bad.yaml"
    bad.write_text("detect:\n  num_probs: 3\n")
    res = CliRunner().invoke(main, ["detect-heads", "--config", str(bad)])
    assert res.exit_code == 2 and "unknown key 'num_probs' in section detect of" in res.output
    assert "did you mean 'num_probes'?" in res.output and len(res.output.strip().splitlines()) == 1


def _one_hot_attention(S, targets, Hkv):
    """query (1, Hq, S, S), key (1, Hkv, S, S): key j is the unit vector e_j,
    and query head h at row r is 10 * e_targets[h][r], so the argmax of that
    attention row is exactly targets[h][r]."""
    Hq = len(targets)
    key = torch.eye(S).expand(1, Hkv, S, S).clone()
    query = torch.zeros(1, Hq, S, S)
    for h, rows in enumerate(targets):
        for r, j in rows.items():
            query[0, h, r, j] = 10.0
    return query, key


@pytest.mark.parametrize("Hkv", [1, 2, 4])
def test_copy_hits_needle_span(Hkv):
    #        0  1  2  3  4  5  6  7 | 8  9   positions; prompt 0..7, answer 8..9
    ids = torch.tensor([4, 7, 9, 7, 3, 7, 8, 2, 7, 8])
    needle = (4, 7)  # tokens 3 7 8: the queried value
    rows = torch.tensor([7, 8])  # row 7 predicts ids[8] = 7, row 8 predicts ids[9] = 8
    targets = [
        {7: 1, 8: 6},  # equal token outside the needle (an instruction / other value), then inside: 1 of 2
        {7: 5, 8: 6},  # both inside and equal: 2 of 2
        {7: 4, 8: 5},  # inside the needle but a different token: 0 of 2
        {7: 3, 8: 8},  # equal token before the needle; the answer itself (outside): 0 of 2
    ]
    query, key = _one_hot_attention(10, targets, Hkv)
    got = copy_hits(query, key, ids, rows, needle, scale=1.0)
    # independent reference: plain loops over float64 softmax rows
    want = []
    for h in range(4):
        kh = key[0, h // (4 // Hkv)].double()
        hits = 0
        for r in rows.tolist():
            logits = query[0, h, r].double() @ kh.T
            logits[r + 1:] = float("-inf")
            j = int(torch.softmax(logits, -1).argmax())
            hits += needle[0] <= j < needle[1] and int(ids[j]) == int(ids[r + 1])
        want.append(hits / len(rows))
    assert want == [0.5, 1.0, 0.0, 0.0]
    assert got.tolist() == want


def _reference_counts(query, key, ids, rows, needle, rule, window=None):
    """Plain loops: per head, the answer rows whose softmax argmax copies by `rule`."""
    Hq, Hkv = query.shape[1], key.shape[1]
    start, end = needle
    needle_tokens = set(ids[start:end].tolist())
    out = []
    for h in range(Hq):
        kh = key[0, h // (Hq // Hkv)].double()
        hits = 0
        for r in rows.tolist():
            logits = query[0, h, r].double() @ kh.T
            logits[r + 1:] = float("-inf")
            if window:
                logits[:max(0, r - window + 1)] = float("-inf")
            j = int(torch.softmax(logits, -1).argmax())
            w = int(ids[r + 1])
            same = int(ids[j]) == w
            if rule == "needle-span":
                hits += same and start <= j < end
            else:
                hits += same and w in needle_tokens
        out.append(hits)
    return out


@pytest.mark.parametrize("rule", ["needle-span", "paper"])
@pytest.mark.parametrize("Hkv,window", [(1, None), (2, None), (2, 5), (4, 3)])
def test_copy_counts_match_loops(rule, Hkv, window):
    """Random small q/k over a 4-token vocabulary (equal tokens everywhere):
    the counts equal the plain-loop reference, under both rules."""
    g = torch.Generator().manual_seed(Hkv * 10 + (window or 0))
    S, D, Hq = 24, 8, 4
    for trial in range(5):
        ids = torch.randint(0, 4, (S,), generator=g)
        query = torch.randn(1, Hq, S, D, generator=g)
        key = torch.randn(1, Hkv, S, D, generator=g)
        rows = torch.arange(15, S - 1)
        needle = (3, 10)
        got = copy_counts(query, key, ids, rows, needle, scale=0.5, window=window, rule=rule)
        # the reference with the same scale folded into the query
        want = _reference_counts(query * 0.5, key, ids, rows, needle, rule, window)
        assert got.dtype == torch.int64 and got.tolist() == want
        assert copy_hits(query, key, ids, rows, needle, 0.5, window, rule).tolist() == [w / len(rows) for w in want]


def test_copy_rules_differ_on_an_equal_token_elsewhere():
    """An answer token that the value holds, attended where it also appears
    outside the value (a shot): a copy for the paper, none for needle-span; an
    answer token that is not in the value is no copy for either."""
    #        0  1  2  3  4  5  6  7 | 8  9   positions; prompt 0..7, answer 8..9
    ids = torch.tensor([4, 7, 9, 7, 3, 7, 8, 2, 7, 9])
    needle = (4, 7)  # tokens 3 7 8
    rows = torch.tensor([7, 8])  # row 7 predicts 7 (in the value), row 8 predicts 9 (not in it)
    targets = [
        {7: 1, 8: 2},  # 7 at position 1 (outside), 9 at position 2 (outside, not a needle token)
        {7: 5, 8: 2},  # 7 inside the needle, 9 outside
        {7: 3, 8: 6},  # 7 at position 3 (outside); position 6 holds 8, not 9
    ]
    query, key = _one_hot_attention(10, targets, 1)
    span = copy_counts(query, key, ids, rows, needle, 1.0, rule="needle-span").tolist()
    paper = copy_counts(query, key, ids, rows, needle, 1.0, rule="paper").tolist()
    assert span == [0, 1, 0] and paper == [1, 1, 1]
    for rule, got in (("needle-span", span), ("paper", paper)):
        assert got == _reference_counts(query, key, ids, rows, needle, rule)
    with pytest.raises(AttninfError, match="unknown copy rule"):
        copy_counts(query, key, ids, rows, needle, 1.0, rule="anywhere")


def test_copy_hits_ignores_future_positions():
    ids = torch.tensor([1, 2, 3, 2, 3])
    query, key = _one_hot_attention(5, [{2: 4}], 1)  # row 2 would pick position 4, which it cannot see
    got = copy_hits(query, key, ids, torch.tensor([2]), (0, 5), scale=1.0)
    assert got.tolist() == [0.0]  # the causal argmax lands on a zero logit at position 0, token 1 != 2


def test_old_heads_json_refused(tmp_path):
    p = tmp_path / "heads.json"
    p.write_text(json.dumps({"model": {"name": "x"}, "heads": [[0, 0]], "num_layers": 1, "num_heads": 1}))
    with pytest.raises(AttninfError, match="older detect-heads.*run `attninf detect-heads"):
        Heads.read(p)


def test_detect_heads_doc_prefix_flag(tiny_model_dir, tmp_path):
    args = ["detect-heads", "--model", str(tiny_model_dir), "--num-probes", "1", "--context-tokens", "600",
            "--random-trials", "0", "--quiet", "--dtype", "float32"]
    out = tmp_path / "h.json"
    res = CliRunner().invoke(main, [*args, "--doc-prefix", "none", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["doc_prefix"] == {"ids": [], "tokens": [], "rule": "none"}
    res = CliRunner().invoke(main, [*args, "--doc-prefix", "<|nope|>", "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "is not a token of this tokenizer" in res.output


@pytest.mark.parametrize("arch", ["mistral", "gemma3_text", "qwen2"])
def test_sliding_window_scores_match_eager_reference(arch):
    """A head of a sliding layer copies only what its window shows: the score
    matrix equals the eager reference's argmax over the layer's own mask, on
    probes whose needle lies far outside the 16-token window and inside it."""
    from architectures import tiny_model
    from attninf.model import LoadedModel
    from attninf.probes import Probe

    model = tiny_model(arch).double()
    g = torch.Generator().manual_seed(3)
    probes = []
    for needle in ((10, 60), (84, 99)):  # far before the answer rows (~100-107), then just before them
        prompt = torch.randint(3, 11, (99,), generator=g).tolist()  # 8 token values: equal tokens are common
        answer = prompt[needle[0] - 1:needle[0] + 7]
        probes.append(Probe("", "", prompt, answer, "", 0, 0, needle=needle, prefix_ids=[1]))
    lm = LoadedModel(model=model, tokenizer=None, name=arch, path=arch)
    scores, _ = retrieval_scores(lm, probes, progress=False)
    ref, _ = _reference_scores(model, probes)
    assert ref.sum() > 0, "the reference found no copy at all: the test would be vacuous"
    torch.testing.assert_close(scores.double(), ref, rtol=0, atol=1e-9)
    # without the window, heads of sliding layers would be credited with copies they cannot make
    from attninf.heads import _answer_rows
    from attninf.plugin import recording

    windows, blind = {}, torch.zeros_like(ref)
    for p in probes:
        ids = torch.tensor(p.input_ids)

        def rec(layer, q, k, scale, window):
            windows[layer] = window
            blind[layer] += copy_hits(q, k, ids, _answer_rows(p), p.needle, scale).double() / len(probes)

        with recording(model, rec), torch.no_grad():
            model(ids.view(1, -1), use_cache=False)
    sliding = [layer for layer, w in windows.items() if w]
    assert sliding and all(windows[layer] == 16 for layer in sliding)
    assert (blind[sliding] > ref[sliding]).any()


def test_heads_plot_title_fits_a_narrow_figure(tmp_path):
    """A 4-head model given by a long path: the title names the file, wrapped to the figure."""
    from attninf.heads_plot import _title, plot_heads

    gguf = tmp_path / ("a-very-long-folder-name-" * 4) / "gemma-3-270m-it-Q4_K_M.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"")
    result = {"model": {"name": str(gguf)}, "scores": [[0.1, 0.2, 0.0, 0.3]] * 18, "heads": [[5, 1]],
              "top_frac": 0.05}
    title = _title(result, chars=44)
    assert "gemma-3-270m-it-Q4_K_M.gguf" in title and "a-very-long-folder" not in title
    assert all(len(line) <= 44 for line in title.splitlines())
    plot_heads(result, tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_heads_of_a_sliding_model_record_windows_and_old_ones_are_refused(tmp_path):
    """heads.json says each layer's window; a heads.json without them (made
    before copies were counted within windows) is refused for a model with
    sliding windows, and still read for one without."""
    from architectures import tiny_model
    from attninf.heads import DetectConfig, detect_heads
    from attninf.model import LoadedModel
    from attninf.plugin import check_model, install

    from conftest import _tokenizer

    tok = _tokenizer()
    model = tiny_model("gemma3_text")
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    lm = LoadedModel(model=model, tokenizer=tok, name="tiny-gemma3", path="tiny-gemma3",
                     fingerprint={"fingerprint": "f"})
    res = detect_heads(lm, DetectConfig(num_probes=2, context_tokens=800, random_trials=0), progress=False,
                       log=lambda *_: None)
    assert res["windows"] == [16, None, 16, None]
    heads = Heads(tmp_path / "heads.json", res)
    assert check_model(model) == res["windows"]  # what the scorer sees at load is what detection saw
    heads.check_windows("m", res["windows"])
    old = Heads(tmp_path / "heads.json", {k: v for k, v in res.items() if k != "windows"})
    with pytest.raises(AttninfError, match="sliding window.*detect-heads"):
        old.check_windows("m", check_model(model))
    llama = tiny_model("llama")
    install(llama)
    old.check_windows("m", check_model(llama))  # a full-attention model reads it still
    with pytest.raises(AttninfError, match=r"made with sliding windows \[16, None, 16, None\].*detect-heads"):
        heads.check_windows("m", [32, None, 32, None])
