"""How stable the selected retrieval heads are, from detect-heads' per-probe
copy counts alone (heads.json "per_probe"): no model runs, numpy only.

A head's retrieval score is the mean over probes of its copy rate
hits_p / A_p (A_p: probe p's answer tokens); the selection keeps the top
`top_frac` of all heads, ties to the lower layer, then the lower head (the
rule of heads.select_top). Here:

- bootstrap: B resamples of the probes with replacement; each head's
  selection frequency (the share of resamples that select it), the share of
  resamples whose selected set equals the set of all probes, and their mean
  Jaccard index with it;
- probe budget: for n = 2, 4, 8, ... probes (and all of them), draws of n
  probes without replacement, their mean Jaccard with the set of all probes
  and the share identical to it; the budget at which the set stops changing
  is the smallest n below the number of probes from which the mean Jaccard
  stays >= `threshold` for every larger n, or none ("not reached").

The means are compared exactly: each rate is scaled to an integer over the
least common multiple of the probes' answer lengths, so two heads tie only
when their mean rates are equal, not when rounding makes them so. (Should
the scaled sums not fit in 64 bits, float64 rates are used, and near ties
may fall either way; the result says which.) The index draws are functions
of their own (bootstrap_indices, budget_indices) so that a check can reuse
them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import AttninfError

BOOTSTRAP = 1000  # resamples
DRAWS = 50  # draws per probe budget n
THRESHOLD = 0.9  # mean Jaccard from which the set counts as settled
UNSTABLE_SELECTED = 0.5  # a selected head chosen in fewer resamples than this is unstable
UNSTABLE_UNSELECTED = 0.2  # an unselected head chosen in at least this many resamples is a near miss
BUDGET_RULE = ("the smallest n below the number of probes from which the mean Jaccard with the "
               "all-probe set stays >= {t} for every larger n")
RERUN = "run `attninf detect-heads` again to get them"


def num_selected(num_heads: int, top_frac: float) -> int:
    """How many heads the top `top_frac` of `num_heads` is (at least one)."""
    return max(1, math.floor(top_frac * num_heads + 0.5))


@dataclass
class Counts:
    """Per-probe copy counts: answer_tokens (N,), hits (N, L*H) row-major."""

    answer_tokens: np.ndarray
    hits: np.ndarray
    num_layers: int
    num_heads: int

    @property
    def num_probes(self) -> int:
        return len(self.answer_tokens)

    def rates(self) -> np.ndarray:
        """(N, L*H) float64 copy rate of each head on each probe."""
        return self.hits / self.answer_tokens[:, None]

    def mean_rates(self) -> np.ndarray:
        """(L, H) mean over probes of the rates: heads.json "scores" before rounding."""
        return self.rates().mean(0).reshape(self.num_layers, self.num_heads)

    def scaled(self) -> tuple[np.ndarray, bool]:
        """(N, L*H) rates as integers over the lcm of the answer lengths, and
        True; or float64 rates and False when sums of them might not fit in int64."""
        m = math.lcm(*(int(a) for a in self.answer_tokens))
        if m * self.num_probes < 2 ** 62:
            return self.hits.astype(np.int64) * (m // self.answer_tokens.astype(np.int64))[:, None], True
        return self.rates(), False


def counts_from(data: dict, where: str = "heads.json") -> Counts:
    """The per-probe counts of a heads.json dict; a one-line refusal without them."""
    pp = data.get("per_probe")
    if not pp:
        raise AttninfError(f"{where} has no per-probe copy counts (made by an older detect-heads): {RERUN}")
    L, H = int(data["num_layers"]), int(data["num_heads"])
    a, hits = pp.get("answer_tokens", []), pp.get("hits", [])
    if len(a) != len(hits) or not a or any(len(row) != L * H for row in hits):
        raise AttninfError(f"{where}: per_probe holds {len(hits)} rows of hits for {len(a)} probes, not one row "
                           f"of {L}x{H} counts per probe: {RERUN}")
    a, hits = np.asarray(a, dtype=np.int64), np.asarray(hits, dtype=np.int64)
    if (a < 1).any() or (hits < 0).any() or (hits > a[:, None]).any():
        raise AttninfError(f"{where}: per_probe counts out of range (hits must lie in 0..answer tokens): {RERUN}")
    return Counts(a, hits, L, H)


def select_rows(sums: np.ndarray, k: int) -> np.ndarray:
    """(B, n_heads) bool: each row's top k by sum, ties to the lower index."""
    order = np.argsort(-sums, axis=1, kind="stable")[:, :k]
    mask = np.zeros(sums.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def _sums(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(B, n_heads): for each row of probe indices (repeats counted), the sum of values' rows."""
    B, N = idx.shape[0], values.shape[0]
    weights = np.zeros((B, N), dtype=values.dtype)
    np.add.at(weights, (np.repeat(np.arange(B), idx.shape[1]), idx.ravel()), 1)
    return weights @ values


def bootstrap_indices(num_probes: int, bootstrap: int, seed: int) -> np.ndarray:
    """(bootstrap, num_probes) probe indices, drawn with replacement."""
    return np.random.default_rng([seed, 0]).integers(0, num_probes, size=(bootstrap, num_probes))


def budget_sizes(num_probes: int) -> list[int]:
    """2, 4, 8, ... below num_probes, then num_probes."""
    sizes, n = [], 2
    while n < num_probes:
        sizes.append(n)
        n *= 2
    return sizes + [num_probes]


def budget_indices(num_probes: int, draws: int, seed: int) -> dict[int, np.ndarray]:
    """For each budget n, (draws, n) probe indices, each row drawn without
    replacement (one row for n = num_probes: every draw is all of them)."""
    rng = np.random.default_rng([seed, 1])
    return {n: np.stack([rng.permutation(num_probes)[:n] for _ in range(draws if n < num_probes else 1)])
            for n in budget_sizes(num_probes)}


def _jaccard(masks: np.ndarray, ref: np.ndarray) -> np.ndarray:
    inter = (masks & ref).sum(1)
    union = (masks | ref).sum(1)
    return inter / union


def _heads(mask: np.ndarray, H: int) -> list[list[int]]:
    return [[int(i) // H, int(i) % H] for i in np.flatnonzero(mask)]


def selected_heads(counts: Counts, top_frac: float) -> list[list[int]]:
    """The top `top_frac` of heads by exact mean copy rate over all probes
    (ties to the lower index): detect-heads' selection, and the sets of
    `score --head-fracs`."""
    values, _ = counts.scaled()
    k = num_selected(counts.num_layers * counts.num_heads, top_frac)
    return _heads(select_rows(values.sum(0, keepdims=True), k)[0], counts.num_heads)


def stability(counts: Counts, top_frac: float, bootstrap: int = BOOTSTRAP, seed: int = 0, draws: int = DRAWS,
              threshold: float = THRESHOLD) -> dict:
    """The bootstrap and probe-budget numbers of the selection (the module's docstring)."""
    if bootstrap < 1 or draws < 1:
        raise AttninfError("--bootstrap and --draws must be at least 1")
    if not 0 < top_frac <= 1:
        raise AttninfError(f"--top-frac must be in (0, 1], got {top_frac}")
    L, H, N = counts.num_layers, counts.num_heads, counts.num_probes
    values, exact = counts.scaled()
    k = num_selected(L * H, top_frac)
    full = select_rows(values.sum(0, keepdims=True), k)[0]

    sel = select_rows(_sums(values, bootstrap_indices(N, bootstrap, seed)), k)
    freq = sel.mean(0)
    curve = []
    for n, idx in budget_indices(N, draws, seed).items():
        masks = select_rows(_sums(values, idx), k)
        jac = float(_jaccard(masks, full).mean())
        curve.append({"n": n, "draws": len(idx), "mean_jaccard": jac,
                      "identical": round(float((masks == full).all(1).mean()), 4)})
    budget = None
    for i, point in enumerate(curve[:-1]):  # on the unrounded means: 0.89996 has not reached 0.9
        if all(p["mean_jaccard"] >= threshold for p in curve[i:]):
            budget = point["n"]
            break
    for point in curve:
        point["mean_jaccard"] = round(point["mean_jaccard"], 4)
    return {
        "num_probes": N, "top_frac": top_frac, "k": k, "bootstrap": bootstrap, "draws": draws, "seed": seed,
        "exact": exact,
        "selected": _heads(full, H),
        "frequency": [[round(float(x), 4) for x in row] for row in freq.reshape(L, H)],
        "set_confidence": round(float((sel == full).all(1).mean()), 4),
        "mean_jaccard": round(float(_jaccard(sel, full).mean()), 4),
        "unstable_selected": {"below": UNSTABLE_SELECTED, "heads": _heads(full & (freq < UNSTABLE_SELECTED), H)},
        "near_misses": {"at_least": UNSTABLE_UNSELECTED, "heads": _heads(~full & (freq >= UNSTABLE_UNSELECTED), H)},
        "budget": {"threshold": threshold, "rule": BUDGET_RULE.format(t=threshold), "n": budget, "curve": curve},
    }


def _list(heads: list[list[int]], freq) -> str:
    return ", ".join(f"{l}.{h} ({freq[l][h]:.2f})" for l, h in heads) or "none"


def budget_line(st: dict) -> str:
    b = st["budget"]
    if b["n"] is None:
        return (f"not reached with the {st['num_probes']} probes at hand (rule: {b['rule']}); "
                "more probes would tell")
    return f"{b['n']} probes ({b['rule']})"


def table(st: dict, brief: bool = False) -> str:
    """The stability numbers as text; brief: the few lines of detect-heads' summary."""
    freq = st["frequency"]
    lines = [
        f"bootstrap   {st['bootstrap']} resamples of the {st['num_probes']} probes (seed {st['seed']}), "
        f"top {st['top_frac']:.0%} = {st['k']} heads",
        f"  same set as all probes  {st['set_confidence']:.3f}    mean Jaccard with it  {st['mean_jaccard']:.3f}",
        f"  unstable (selected in < {st['unstable_selected']['below']:.0%} of resamples): "
        f"{_list(st['unstable_selected']['heads'], freq)}",
        f"  near misses (not selected, in >= {st['near_misses']['at_least']:.0%}): "
        f"{_list(st['near_misses']['heads'], freq)}",
    ]
    if not brief:
        lines += ["", "selection frequency of the selected heads (layer.head):",
                  "  " + _list(st["selected"], freq), "",
                  f"probe budget: draws of n probes without replacement ({st['draws']} per n)",
                  f"  {'n':>6}  {'mean Jaccard':>12}  {'identical':>9}"]
        lines += [f"  {p['n']:>6}  {p['mean_jaccard']:>12.3f}  {p['identical']:>9.3f}" for p in st["budget"]["curve"]]
    lines.append(f"  set stops changing at: {budget_line(st)}")
    if not st["exact"]:
        lines.append("  (rates compared in float64: near ties may fall either way)")
    return "\n".join(lines)
