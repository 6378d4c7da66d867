"""Rank statistics in numpy for `attninf agree`, in O(n log n)-sized memory
and without scipy: average ranks, Spearman's rho, Kendall's tau-b, strict
rankings with ties broken from outside.

Both correlations are NaN where they are undefined: fewer than two rows, or a
column whose values are all equal (no ranking to agree with). Kendall's tau-b
is Knight's method: sort by (x, y), count the pairs tied in x, in y and in
both, and count the discordant pairs as the inversions of y in that order,
with a bottom-up merge whose every level runs as a few vectorized
searchsorted calls over all block pairs at once (each pair's keys offset by
pair index * (max y + 1), so one sorted array serves every pair).
"""
from __future__ import annotations

import numpy as np

CHUNK = 1 << 20  # elements per slice of a merge level: bounds its temporaries


def _runs(dup: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) sorted positions of each run of equal values, of runs
    longer than one; dup[i]: position i + 1 equals position i. Sized by the
    number of tied runs, not of rows."""
    edges = np.diff(np.r_[False, dup, False].view(np.int8))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _pairs(runs) -> int:
    """Pairs within the tied runs: sum t(t-1)/2, exact."""
    t = (runs[1] - runs[0] + 1).astype(np.int64)
    return int((t * (t - 1) // 2).sum(dtype=np.int64)) if len(t) else 0


def _dup(sorted_values: np.ndarray) -> np.ndarray:
    return sorted_values[1:] == sorted_values[:-1]


def _run_positions(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Every sorted position inside the runs, run after run."""
    t = last - first + 1
    return np.repeat(first - (np.cumsum(t) - t), t) + np.arange(int(t.sum()), dtype=np.int64)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ascending ranks, ties given the mean of the ranks they span
    (float64); beside x and the result, one int64 per row at a time."""
    n = len(x)
    order = np.argsort(x)
    first, last = _runs(_dup(x[order]))
    ranks = np.empty(n, dtype=np.float64)
    for s in range(0, n, CHUNK):
        ranks[order[s:s + CHUNK]] = np.arange(s + 1, min(s + CHUNK, n) + 1, dtype=np.float64)
    for lo, hi in _run_batches(first, last):  # ties: the mean of the ranks they span
        if hi - lo == 1:  # one run, maybe long: a slice of order, no positions made
            ranks[order[first[lo]:last[lo] + 1]] = (first[lo] + last[lo]) / 2.0 + 1
        else:
            f, e = first[lo:hi], last[lo:hi]
            ranks[order[_run_positions(f, e)]] = np.repeat((f + e) / 2.0 + 1, e - f + 1)
    return ranks


def _run_batches(first: np.ndarray, last: np.ndarray):
    """(lo, hi): consecutive runs first[lo:hi] spanning about CHUNK rows in all (one run if longer)."""
    ends = np.cumsum(last - first + 1)
    lo = 0
    while lo < len(first):
        hi = max(lo + 1, int(np.searchsorted(ends, (ends[lo - 1] if lo else 0) + CHUNK, side="right")))
        yield lo, hi
        lo = hi


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r, CHUNK rows at a time; NaN with fewer than two rows or a constant column."""
    n = len(x)
    if n < 2:
        return float("nan")
    mx, my = float(x.mean()), float(y.mean())
    sxx = syy = sxy = 0.0
    for s in range(0, n, CHUNK):
        xc, yc = x[s:s + CHUNK] - mx, y[s:s + CHUNK] - my
        sxx, syy, sxy = sxx + float(xc @ xc), syy + float(yc @ yc), sxy + float(xc @ yc)
    if sxx == 0 or syy == 0:
        return float("nan")
    return max(-1.0, min(1.0, sxy / np.sqrt(sxx * syy)))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


def dense_ranks(x: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(0-based ranks, equal values equal, int32 below 2**31 rows; the number
    of distinct values; the pairs of rows tied)."""
    n = len(x)
    order = np.argsort(x)
    new = np.empty(n, dtype=bool)
    new[:1] = False
    xs = x[order]
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    del xs
    ties = _pairs(_runs(~new[1:]))
    out = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
    out[order] = np.cumsum(new, dtype=out.dtype)
    return out, int(new.sum()) + (1 if n else 0), ties


def inversions(y: np.ndarray, m: int) -> int:
    """Pairs i < j with y[i] > y[j] (equal values are no inversion), for
    integers y in [0, m); y is sorted in place, merge level by merge level."""
    n = len(y)
    total = 0
    w = 1
    buf = np.empty_like(y)
    while w < n:
        step = max(2 * w, (CHUNK // (2 * w)) * 2 * w)  # whole block pairs per slice
        for s in range(0, n, step):
            e = min(s + step, n)
            total += _merge_level(y[s:e], buf[s:e], w, m)
        y, buf = buf, y
        w *= 2
    return total


def _merge_level(y: np.ndarray, out: np.ndarray, w: int, m: int) -> int:
    """Merge each pair of sorted blocks of width w in y into out; the
    inversions between the blocks of each pair."""
    n = len(y)
    if n <= w:  # a lone left block: nothing to merge
        out[:] = y
        return 0
    if n <= 2 * w:  # one pair: no offsets, the queries in slices
        return _merge_pair(y[:w], y[w:], out)
    pos = np.arange(n, dtype=np.int64)
    keys = y.astype(np.int64) + (pos // (2 * w)) * m
    left = (pos // w) % 2 == 0
    del pos
    L, R = keys[left], keys[~left]
    del keys
    in_l = np.searchsorted(L, R, side="right")  # left elements <= each right one, pairs before included
    ends = np.minimum((np.arange(len(R), dtype=np.int64) // w + 1) * w, len(L))  # end of its pair's left block
    count = int((ends - in_l).sum())
    del ends
    out[np.arange(len(R), dtype=np.int64) + in_l] = y[~left]
    del in_l
    in_r = np.searchsorted(R, L, side="left")  # right elements < each left one
    out[np.arange(len(L), dtype=np.int64) + in_r] = y[left]
    return count


def _merge_pair(L: np.ndarray, R: np.ndarray, out: np.ndarray) -> int:
    """Merge two sorted arrays into out, CHUNK queries at a time; the pairs
    (l in L, r in R) with l > r."""
    count = 0
    for s in range(0, len(R), CHUNK):
        r = R[s:s + CHUNK]
        in_l = np.searchsorted(L, r, side="right")
        count += int(len(L) * len(r) - in_l.sum())
        out[np.arange(s, s + len(r), dtype=np.int64) + in_l] = r
    for s in range(0, len(L), CHUNK):
        lv = L[s:s + CHUNK]
        out[np.arange(s, s + len(lv), dtype=np.int64) + np.searchsorted(R, lv, side="left")] = lv
    return count


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b with ties in x, in y and in both; NaN with fewer than
    two rows or a constant column."""
    n = len(x)
    if n < 2:
        return float("nan")
    yr, m, ytie = dense_ranks(y)
    order = np.lexsort((yr, x))
    ys = yr[order]
    del yr
    dup = _dup(x[order])
    del order
    xtie = _pairs(_runs(dup))
    dup &= ys[1:] == ys[:-1]
    ntie = _pairs(_runs(dup))
    del dup
    tot = n * (n - 1) // 2
    if xtie == tot or ytie == tot:
        return float("nan")
    dis = inversions(ys, m)  # within an x tie, y ascends: no inversion counted there
    con_minus_dis = tot - xtie - ytie + ntie - 2 * dis
    return max(-1.0, min(1.0, con_minus_dis / np.sqrt(float(tot - xtie)) / np.sqrt(float(tot - ytie))))


def strict_order(x: np.ndarray, cuts, tiebreak) -> np.ndarray:
    """Row indices from the highest value to the lowest, such that the first
    k are the top k of a ranking whose ties tiebreak(rows) orders (rows:
    indices of equal value; returns them reordered), for every k
    in cuts, and the k-th row is that ranking's. Only the runs of equal
    values that hold a cut's last row are ordered so (the others are wholly
    in or out of every top k, in no particular order)."""
    n = len(x)
    order = np.argsort(-x)
    first, last = _runs(_dup(x[order]))
    runs = set()
    for k in cuts:
        r = int(np.searchsorted(first, k - 1, side="right")) - 1  # the last run starting at or before row k - 1
        if 0 < k <= n and r >= 0 and last[r] >= k - 1:
            runs.add(r)
    for r in sorted(runs):
        f, e = int(first[r]), int(last[r]) + 1
        order[f:e] = tiebreak(order[f:e])
    return order
