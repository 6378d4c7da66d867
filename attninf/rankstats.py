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


def _tie_sizes(sorted_values: np.ndarray) -> np.ndarray:
    """Lengths of the runs of equal values in a sorted array."""
    n = len(sorted_values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    return np.diff(np.r_[starts, n])


def _pairs(sizes: np.ndarray) -> int:
    """Pairs within runs of these sizes: sum t(t-1)/2, exact in Python ints."""
    s = sizes[sizes > 1].astype(np.int64)
    return int((s * (s - 1) // 2).sum(dtype=np.int64)) if len(s) else 0


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ascending ranks, ties given the mean of the ranks they span (float64)."""
    n = len(x)
    order = np.argsort(x, kind="stable")
    sizes = _tie_sizes(x[order])
    ends = np.cumsum(sizes)
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat((2 * ends - sizes + 1) / 2.0, sizes)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; NaN with fewer than two rows or a constant column."""
    n = len(x)
    if n < 2:
        return float("nan")
    xc = x - x.mean()
    yc = y - y.mean()
    sxx, syy = float(np.dot(xc, xc)), float(np.dot(yc, yc))
    sxy = float(np.dot(xc, yc))
    if sxx == 0 or syy == 0:
        return float("nan")
    return max(-1.0, min(1.0, sxy / np.sqrt(sxx * syy)))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


def dense_ranks(x: np.ndarray) -> tuple[np.ndarray, int]:
    """(0-based ranks with equal values equal, int32 or int64; number of distinct values)."""
    n = len(x)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new = np.empty(n, dtype=bool)
    new[:1] = False
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    del xs
    out = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
    out[order] = np.cumsum(new, dtype=out.dtype)
    return out, int(new.sum()) + (1 if n else 0)


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
    yr, m = dense_ranks(y)
    ytie = _pairs(np.bincount(yr, minlength=m))
    order = np.lexsort((yr, x))
    ys = yr[order]
    del yr
    xs = x[order]
    del order
    xnew = np.r_[True, xs[1:] != xs[:-1]]
    del xs
    xtie = _pairs(np.diff(np.r_[np.flatnonzero(xnew), n]))
    both = xnew.copy()
    both[1:] |= ys[1:] != ys[:-1]
    del xnew
    ntie = _pairs(np.diff(np.r_[np.flatnonzero(both), n]))
    del both
    tot = n * (n - 1) // 2
    if xtie == tot or ytie == tot:
        return float("nan")
    dis = inversions(ys, m)  # within an x tie, y ascends: no inversion counted there
    con_minus_dis = tot - xtie - ytie + ntie - 2 * dis
    return max(-1.0, min(1.0, con_minus_dis / np.sqrt(float(tot - xtie)) / np.sqrt(float(tot - ytie))))


def strict_order(x: np.ndarray, tiebreak) -> np.ndarray:
    """Row indices from the highest value to the lowest; rows of equal value
    in the order tiebreak(rows) gives them (rows: their indices, ascending;
    returns an int rank per row)."""
    order = np.argsort(-x, kind="stable")
    sizes = _tie_sizes(x[order])
    tied_groups = sizes > 1
    if tied_groups.any():
        ts = sizes[tied_groups]
        starts = (np.cumsum(sizes) - sizes)[tied_groups]
        first = np.cumsum(ts) - ts  # where each tie starts among the tied positions
        tied = np.repeat(starts - first, ts) + np.arange(int(ts.sum()), dtype=np.int64)  # positions in order
        rows = order[tied]
        key = np.asarray(tiebreak(rows))
        group = np.repeat(np.arange(len(ts)), ts)
        order[tied] = rows[np.lexsort((key, group))]
    return order
