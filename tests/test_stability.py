"""attninf.stability and `attninf heads stability` against brute force: plain
Python loops and exact fractions over the same index draws."""
import json
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

from attninf.cli.heads import heads as heads_group
from attninf.errors import AttninfError
from attninf.stability import (Counts, budget_indices, budget_sizes, bootstrap_indices, counts_from,
                               num_selected, stability)


def _counts(seed=0, N=9, L=3, H=4, top=3):
    """Small counts over few answer tokens: equal means (ties) are common."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 5, N)
    hits = np.minimum(rng.integers(0, top + 1, (N, L * H)), a[:, None])
    return Counts(a, hits, L, H)


def _select(c: Counts, rows, k):
    """The top k heads of the probes `rows` (repeats counted) by exact mean rate, ties to the lower index."""
    n = c.num_heads * c.num_layers
    means = [sum(Fraction(int(c.hits[p][i]), int(c.answer_tokens[p])) for p in rows) / len(rows) for i in range(n)]
    return set(sorted(range(n), key=lambda i: (-means[i], i))[:k])


@pytest.mark.parametrize("seed,top_frac", [(0, 0.25), (1, 0.1), (2, 0.5)])
def test_bootstrap_equals_brute_force(seed, top_frac):
    c = _counts(seed)
    n = c.num_layers * c.num_heads
    k = num_selected(n, top_frac)
    st = stability(c, top_frac, bootstrap=150, seed=seed, draws=7)
    full = _select(c, range(c.num_probes), k)
    assert st["exact"] and st["k"] == k
    assert {l * c.num_heads + h for l, h in st["selected"]} == full
    count = [0] * n
    same, jac = 0, []
    for row in bootstrap_indices(c.num_probes, 150, seed).tolist():
        s = _select(c, row, k)
        for i in s:
            count[i] += 1
        same += s == full
        jac.append(len(s & full) / len(s | full))
    assert [x for row in st["frequency"] for x in row] == [round(x / 150, 4) for x in count]
    assert st["set_confidence"] == round(same / 150, 4)
    assert st["mean_jaccard"] == round(sum(jac) / len(jac), 4)
    # the probe-budget curve, draw by draw
    draws = budget_indices(c.num_probes, 7, seed)
    assert list(draws) == budget_sizes(c.num_probes) == [2, 4, 8, 9]
    for point in st["budget"]["curve"]:
        idx = draws[point["n"]].tolist()
        assert all(len(set(r)) == len(r) == point["n"] for r in idx)  # without replacement
        sets = [_select(c, r, k) for r in idx]
        assert point["draws"] == len(idx) == (7 if point["n"] < c.num_probes else 1)
        assert point["mean_jaccard"] == round(sum(len(s & full) / len(s | full) for s in sets) / len(sets), 4)
        assert point["identical"] == round(sum(s == full for s in sets) / len(sets), 4)
    freq = st["frequency"]
    assert st["unstable_selected"]["heads"] == [[i // 4, i % 4] for i in sorted(full) if freq[i // 4][i % 4] < 0.5]
    assert st["near_misses"]["heads"] == [[i // 4, i % 4] for i in range(n)
                                          if i not in full and freq[i // 4][i % 4] >= 0.2]
    assert stability(c, top_frac, bootstrap=150, seed=seed, draws=7) == st  # seeded
    assert stability(c, top_frac, bootstrap=150, seed=seed + 1, draws=7)["frequency"] != st["frequency"]


def test_budget_rule():
    """Identical probes: every subset gives the full set, settled at n = 2.
    Three probes each copying on a head of its own, one head kept: a draw of
    two gives the full set (head 0, the tie's lower index) only when it holds
    probe 0, so the set is not settled below all three."""
    same = Counts(np.full(6, 4), np.tile(np.arange(8) % 5, (6, 1)), 2, 4)
    st = stability(same, 0.25, bootstrap=50)
    assert st["set_confidence"] == 1.0 and st["budget"]["n"] == 2
    assert all(p["mean_jaccard"] == 1.0 for p in st["budget"]["curve"])
    own = Counts(np.full(3, 2), np.eye(3, dtype=np.int64) * 2, 1, 3)
    st = stability(own, 0.3, bootstrap=200, draws=30)
    assert st["selected"] == [[0, 0]] and st["budget"]["n"] is None
    assert [p["n"] for p in st["budget"]["curve"]] == [2, 3] and st["budget"]["curve"][0]["mean_jaccard"] < 0.9
    from attninf.stability import budget_line

    assert budget_line(st).startswith("not reached with the 3 probes at hand")


def test_float_fallback_when_lcm_is_huge():
    """Answer lengths whose lcm overflows int64 sums: float64 rates, said so."""
    primes = [1009, 1013, 1019, 1021, 1031, 1033, 1039]
    c = Counts(np.array(primes), np.array([[1, 0]] * len(primes)), 1, 2)
    assert c.scaled()[1] is False
    st = stability(c, 0.5, bootstrap=20)
    assert st["exact"] is False and st["selected"] == [[0, 0]]


def test_counts_from_refusals():
    base = {"num_layers": 1, "num_heads": 2}
    with pytest.raises(AttninfError, match="h.json has no per-probe copy counts.*detect-heads"):
        counts_from(base, "h.json")
    with pytest.raises(AttninfError, match="not one row of 1x2 counts per probe"):
        counts_from({**base, "per_probe": {"answer_tokens": [3], "hits": [[1, 2, 3]]}})
    with pytest.raises(AttninfError, match="not one row of 1x2 counts per probe"):
        counts_from({**base, "per_probe": {"answer_tokens": [3, 3], "hits": [[1, 2], [1]]}})  # ragged
    with pytest.raises(AttninfError, match="out of range"):
        counts_from({**base, "per_probe": {"answer_tokens": [3], "hits": [[1, 4]]}})
    with pytest.raises(AttninfError, match="top-frac"):
        stability(_counts(), 0.0)


@pytest.fixture(scope="module")
def heads_json(tiny_model_dir, tmp_path_factory):
    from attninf.cli import main

    out = tmp_path_factory.mktemp("stab") / "heads.json"
    res = CliRunner().invoke(main, ["detect-heads", "--model", str(tiny_model_dir), "--num-probes", "3",
                                    "--context-tokens", "800", "--top-frac", "0.1", "--random-trials", "0",
                                    "--out", str(out), "--quiet", "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    return out


def test_heads_json_counts_give_its_scores_and_stability(heads_json):
    d = json.loads(heads_json.read_text())
    c = counts_from(d)
    assert c.num_probes == 3 and c.hits.sum() > 0, "no copy at all: the test would be vacuous"
    np.testing.assert_array_equal(np.round(c.mean_rates(), 6), np.array(d["scores"]))
    st = stability(c, d["top_frac"], seed=d["config"]["seed"])
    assert st == d["stability"] and st["selected"] == d["heads"]


def test_cli(heads_json, tmp_path):
    out, png = tmp_path / "st.json", tmp_path / "st.png"
    res = CliRunner().invoke(heads_group, ["stability", str(heads_json), "--bootstrap", "300", "--seed", "4",
                                           "--draws", "5", "--json", str(out), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    st = json.loads(out.read_text())
    d = json.loads(heads_json.read_text())
    assert st == stability(counts_from(d), 0.1, bootstrap=300, seed=4, draws=5)
    assert "300 resamples of the 3 probes (seed 4)" in res.output
    assert f"same set as all probes  {st['set_confidence']:.3f}" in res.output
    assert "probe budget" in res.output and "set stops changing at:" in res.output
    assert "mean Jaccard with the all-probe set stays >= 0.9" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # another --top-frac: said to differ from heads.json's selection
    res = CliRunner().invoke(heads_group, ["stability", str(heads_json), "--bootstrap", "20", "--top-frac", "0.5"])
    assert res.exit_code == 0 and "is not heads.json's selection" in res.output
    assert "--threshold" in CliRunner().invoke(heads_group, ["stability", "--help"]).output


def test_cli_refuses_a_heads_json_without_counts(heads_json, tmp_path):
    d = json.loads(heads_json.read_text())
    del d["per_probe"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(d))
    res = CliRunner().invoke(heads_group, ["stability", str(old)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "no per-probe copy counts" in lines[0] and "detect-heads" in lines[0]
    res = CliRunner().invoke(heads_group, ["stability", str(tmp_path / "none.json")])
    assert res.exit_code == 2 and "not found" in res.output


def test_plot_marks_unstable_heads(tmp_path):
    """Selected heads below half the resamples dashed, near misses orange; the legend in the title."""
    from matplotlib.patches import Rectangle

    import matplotlib.pyplot as plt

    from attninf.heads_plot import _title, plot_heads

    c = _counts(5, N=5)
    st = stability(c, 0.25, bootstrap=100)
    assert st["unstable_selected"]["heads"] or st["near_misses"]["heads"], "nothing to mark"
    result = {"model": {"name": "m"}, "scores": c.mean_rates().tolist(), "heads": st["selected"], "top_frac": 0.25,
              "stability": st}
    assert "dashed: selected in < 50% of 100 bootstrap resamples" in " ".join(_title(result, 200).splitlines())
    drawn = []
    orig = plt.Axes.add_patch

    def spy(self, p):
        if isinstance(p, Rectangle):
            drawn.append((p.get_edgecolor()[:3], p.get_linestyle(), (round(p.get_y() + 0.5), round(p.get_x() + 0.5))))
        return orig(self, p)

    plt.Axes.add_patch = spy
    try:
        plot_heads(result, tmp_path / "h.png")
    finally:
        plt.Axes.add_patch = orig
    red, orange = (1.0, 0.0, 0.0), (1.0, 0.6470588235294118, 0.0)
    shaky = {tuple(x) for x in st["unstable_selected"]["heads"]}
    assert sorted(p for col, _, p in drawn if col == red) == sorted(map(tuple, st["selected"]))
    assert {p for col, ls, p in drawn if col == red and ls == "--"} == shaky
    assert sorted(p for col, _, p in drawn if col == orange) == sorted(map(tuple, st["near_misses"]["heads"]))


def test_budget_is_judged_on_unrounded_means(monkeypatch):
    """A curve whose mean Jaccard is 0.89996 has not reached 0.9, though it prints as 0.9."""
    import attninf.stability as st_mod

    c = _counts(3)
    real = st_mod._jaccard
    monkeypatch.setattr(st_mod, "_jaccard", lambda masks, ref: np.minimum(real(masks, ref), 0.89996))
    st = stability(c, 0.25, bootstrap=20, seed=0, draws=5, threshold=0.9)
    assert st["budget"]["n"] is None
    assert all(p["mean_jaccard"] <= 0.9 for p in st["budget"]["curve"])


@pytest.mark.parametrize("field,value,msg", [("seed", -1, "--seed cannot be negative"),
                                             ("hit", "anywhere", "unknown copy rule"),
                                             ("probe_wording", "mine", "unknown probe wording")])
def test_detect_settings_refused_before_any_work(field, value, msg):
    from attninf.heads import DetectConfig

    with pytest.raises(AttninfError, match=msg):
        DetectConfig(**{field: value}).check()
