"""What `attninf report` shows of a scores directory, computed in bounded
memory: the files are read in record batches of BATCH_ROWS rows, twice.

1. Ranges: per domain the ok count, the lowest and highest score, the
   longest document; the digest of every file's score column (a selection is
   checked against it).
2. Everything else, with the histogram edges that pass 1 fixed: exact
   histograms (score, length, top-1% token share), exact length medians
   (token counts are integers, counted per value), token sums, a uniform
   sample per domain for the scatter plots (the rows with the smallest
   random keys, which merges batch by batch), the top and bottom documents
   of each domain and the best selected ones.

Memory is that of one batch, the sample, the kept documents and the distinct
lengths: it does not grow with the number of rows.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .artifacts import NO_DOMAIN, TOKEN_STATS, Scores, Selection, Status, domain_name
from .identity import ScoreDigest, combine_digests
from .stores import readable

BATCH_ROWS = 65_536
SAMPLE = 200_000  # points drawn in the scatter plots, over all domains
SCORE_BINS, LENGTH_BINS, SHARE_BINS = 40, 30, 1000
ONE_BLOCK = 0.5  # top-1% token share from which a score counts as carried by one block
COLUMNS = ("id", "score", "n_tokens", "status", "repetition", "domain") + TOKEN_STATS


def _batches(scores: Scores, columns) -> Iterator[tuple[str, int, int, dict]]:
    """(file, first row, rows in the file, {column: numpy array}) per record batch."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for rel in scores.files():
        pf = pq.ParquetFile(readable(scores.root / rel))
        have = [c for c in columns if c in pf.schema_arrow.names]
        start, total = 0, pf.metadata.num_rows
        for b in pf.iter_batches(batch_size=BATCH_ROWS, columns=have):
            n = b.num_rows
            cols: dict = {"n": n}
            for c in have:
                a = b.column(c)
                if c == "domain":  # a few distinct values: named once each, not once a row
                    enc = a.cast(pa.string()).dictionary_encode()
                    names = np.array([domain_name(v) for v in enc.dictionary.to_pylist()] + [NO_DOMAIN], dtype=object)
                    idx = pc.fill_null(enc.indices, len(names) - 1).to_numpy(zero_copy_only=False)
                    cols[c] = names[idx]
                elif c == "status":
                    cols["ok"] = pc.fill_null(pc.equal(a, Status.OK.value), False).to_numpy(zero_copy_only=False)
                elif c == "id":
                    cols[c] = a  # Arrow: turned into Python strings only for the rows kept
                else:
                    cols[c] = pc.fill_null(a.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)
            cols.setdefault("domain", np.full(n, NO_DOMAIN, dtype=object))
            cols.setdefault("ok", np.zeros(n, dtype=bool))
            cols.setdefault("repetition", np.full(n, np.nan))
            # as select: a score of +-inf (L_base = 0) or NaN is never ranked, binned or drawn; the
            # ok rows with a non-finite score are counted per domain instead
            finite = np.isfinite(cols.get("score", np.full(n, np.nan)))
            cols["non_finite"] = cols["ok"] & ~finite
            cols["ok"] &= finite
            yield rel, start, total, cols
            start += n


@dataclass
class Kept:
    """A few documents in rank order (score descending, then id), with what
    the page prints of them."""
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    id: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    file: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    row: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))
    repetition: np.ndarray = field(default_factory=lambda: np.zeros(0))
    domain: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))

    def __len__(self) -> int:
        return len(self.score)

    def take(self, idx) -> "Kept":
        return Kept(**{k: v[idx] for k, v in vars(self).items()})

    @staticmethod
    def of(cols: dict, rel: str, start: int, idx: np.ndarray) -> "Kept":
        return Kept(score=cols["score"][idx], id=np.array([str(x) for x in cols["id"].take(idx).to_pylist()],
                                                          dtype=object),
                    file=np.full(len(idx), rel, dtype=object), row=start + idx, n_tokens=cols["n_tokens"][idx],
                    repetition=cols["repetition"][idx], domain=cols["domain"][idx])

    def ranked(self) -> np.ndarray:
        return np.lexsort((self.id, -self.score))

    def merge(self, other: "Kept", n: int, bottom: bool = False) -> "Kept":
        """The best n of both (the worst n, worst first, with bottom)."""
        both = Kept(**{k: np.concatenate([v, getattr(other, k)]) for k, v in vars(self).items()})
        order = both.ranked()
        return both.take(order[::-1][:n] if bottom else order[:n])


def _candidates(score: np.ndarray, n: int, bottom: bool) -> np.ndarray:
    """Indices that may be among the n best (worst) of a batch: every row at
    or beyond the n-th score, ties included (ids decide among them later)."""
    if len(score) <= n:
        return np.arange(len(score))
    if bottom:
        return np.nonzero(score <= np.partition(score, n - 1)[n - 1])[0]
    return np.nonzero(score >= np.partition(score, len(score) - n)[len(score) - n])[0]


def median_of_counts(counts: Counter) -> float:
    """np.median of the values a Counter holds with their multiplicities."""
    if not counts:
        return float("nan")
    values = np.array(sorted(counts))
    cum = np.cumsum([counts[v] for v in values])
    total = cum[-1]
    lo = values[np.searchsorted(cum, (total - 1) // 2 + 1)]
    hi = values[np.searchsorted(cum, total // 2 + 1)]
    return float(lo + hi) / 2


class Histogram:
    """Exact counts over fixed edges, filled batch by batch."""

    def __init__(self, edges: np.ndarray):
        self.edges = edges
        self.counts = np.zeros(len(edges) - 1, dtype=np.int64)

    def add(self, x: np.ndarray) -> None:
        x = x[~np.isnan(x)]
        if len(x):
            self.counts += np.histogram(x, self.edges)[0]

    def median(self) -> float:
        """The median to half a bin: the two middle values (one when the
        count is odd) each taken at the centre of its bin, averaged."""
        total = int(self.counts.sum())
        if not total:
            return float("nan")
        cum = np.cumsum(self.counts)
        centres = (self.edges[:-1] + self.edges[1:]) / 2
        lo, hi = (int(np.searchsorted(cum, rank + 1)) for rank in ((total - 1) // 2, total // 2))
        return float((centres[lo] + centres[hi]) / 2)


def _score_edges(lo: float, hi: float) -> np.ndarray:
    if not np.isfinite(lo):
        lo = hi = 0.0
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, SCORE_BINS + 1)


class DomainStats:
    """Everything the page shows of one domain, for all and for selected documents."""

    def __init__(self, name: str, ok: int, lo: float, hi: float, longest: float, sample: int,
                 non_finite: int = 0):
        self.name, self.ok, self.sample_size = name, ok, sample
        self.non_finite = non_finite  # status ok but a score of +-inf or NaN: counted, never ranked
        score_edges = _score_edges(lo, hi)
        length_edges = np.logspace(0, np.log10(max(longest, 10)), LENGTH_BINS + 1)
        share_edges = np.linspace(0, 1, SHARE_BINS + 1)
        self.scores = {k: Histogram(score_edges) for k in ("all", "selected")}
        self.lengths = {k: Histogram(length_edges) for k in ("all", "selected")}
        self.length_counts = {k: Counter() for k in ("all", "selected")}
        self.tokens = {"all": 0, "selected": 0}
        self.selected = 0  # documents the selection kept (all of them: self.ok)
        self.share = {k: Histogram(share_edges) for k in ("all", "selected")}
        self.halves = {k: np.zeros(3) for k in ("all", "selected")}  # sum first, sum second, count
        self.has_token_stats = False
        self.top, self.bottom = Kept(), Kept()
        self._keys = np.zeros(0)
        self.points = {"score": np.zeros(0), "repetition": np.zeros(0), "selected": np.zeros(0, dtype=bool)}

    def add(self, cols: dict, rel: str, start: int, idx: np.ndarray, chosen: np.ndarray, keys: np.ndarray,
            top: int) -> None:
        """Rows idx (ok rows of this domain) of a batch; chosen: which of them were selected."""
        lengths = np.maximum(cols["n_tokens"][idx], 1)
        for k, m in (("all", slice(None)), ("selected", chosen)):
            self.scores[k].add(cols["score"][idx][m])
            self.lengths[k].add(lengths[m])
            u, c = np.unique(lengths[m].astype(np.int64), return_counts=True)
            self.length_counts[k].update(dict(zip(u.tolist(), c.tolist())))
            self.tokens[k] += int(cols["n_tokens"][idx][m].sum())
            if TOKEN_STATS[0] in cols:
                self.has_token_stats = True
                self.share[k].add(cols[TOKEN_STATS[0]][idx][m])
                first, second = cols[TOKEN_STATS[1]][idx][m], cols[TOKEN_STATS[2]][idx][m]
                both = ~(np.isnan(first) | np.isnan(second))
                self.halves[k] += (first[both].sum(), second[both].sum(), both.sum())
        self.selected += int(chosen.sum())
        self._sample(cols, idx, chosen, keys)
        if top:
            s = cols["score"][idx]
            self.top = self.top.merge(Kept.of(cols, rel, start, idx[_candidates(s, top, False)]), top)
            self.bottom = self.bottom.merge(Kept.of(cols, rel, start, idx[_candidates(s, top, True)]), top,
                                            bottom=True)

    def _sample(self, cols: dict, idx: np.ndarray, chosen: np.ndarray, keys: np.ndarray) -> None:
        """Keep the sample_size rows with the smallest keys: a uniform sample without replacement."""
        self._keys = np.concatenate([self._keys, keys])
        new = {"score": cols["score"][idx], "repetition": cols["repetition"][idx], "selected": chosen}
        self.points = {k: np.concatenate([v, new[k]]) for k, v in self.points.items()}
        if len(self._keys) > self.sample_size:
            keep = np.argpartition(self._keys, self.sample_size - 1)[:self.sample_size]
            self._keys = self._keys[keep]
            self.points = {k: v[keep] for k, v in self.points.items()}

    def median_tokens(self, which: str) -> float:
        return median_of_counts(self.length_counts[which])

    def one_block(self, which: str) -> float:
        """Share of documents whose top-1% token share is at least ONE_BLOCK."""
        h = self.share[which]
        total = h.counts.sum()
        return float(h.counts[h.edges[:-1] >= ONE_BLOCK].sum() / total) if total else float("nan")

    def mean_halves(self, which: str) -> tuple[float, float]:
        s1, s2, n = self.halves[which]
        return (s1 / n, s2 / n) if n else (float("nan"), float("nan"))


def sample_sizes(counts: dict[str, int], limit: int) -> dict[str, int]:
    """Points per domain for the scatter plots: all of them up to `limit` in
    total; beyond it, in proportion to the domain's size but never fewer than
    min(its size, limit / 100), so a small domain is never sampled away."""
    total = sum(counts.values())
    if total <= limit:
        return dict(counts)
    floor = max(1, limit // 100)
    return {d: min(n, max(floor, int(round(limit * n / total)))) for d, n in counts.items()}


@dataclass
class ReportStats:
    domains: dict[str, DomainStats]
    best_selected: Kept  # the best selected documents over all domains
    selected: int  # documents the selection kept, over all domains
    rows: int  # rows read, over all files


def _ranges(scores: Scores) -> tuple[dict, dict, int]:
    """Pass 1: per domain [ok rows, lowest, highest score, longest document,
    rows with a non-finite score];
    each file's score digest; rows read."""
    ranges: dict[str, list] = {}
    digests: dict[str, ScoreDigest] = {}
    rows = 0
    for rel, start, total, cols in _batches(scores, ("score", "status", "domain", "n_tokens")):
        digests.setdefault(rel, ScoreDigest(total)).update(cols["score"])
        rows += cols["n"]
        ok, nonfinite = cols["ok"], cols["non_finite"]
        for dom in np.unique(cols["domain"][ok | nonfinite]).tolist():
            m = ok & (cols["domain"] == dom)
            r = ranges.setdefault(dom, [0, np.inf, -np.inf, 0, 0])
            r[4] += int((nonfinite & (cols["domain"] == dom)).sum())
            if not m.any():
                continue
            s = cols["score"][m]
            r[0] += int(m.sum())
            r[1], r[2] = min(r[1], s.min()), max(r[2], s.max())
            r[3] = max(r[3], cols["n_tokens"][m].max())
    for rel in scores.files():  # a file with no rows has no batch
        digests.setdefault(rel, ScoreDigest(0))
    return ranges, {rel: h.hexdigest() for rel, h in digests.items()}, rows


def _chosen(sel_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which of these (ascending) row numbers the selection kept."""
    if not len(sel_rows):
        return np.zeros(len(rows), dtype=bool)
    at = np.minimum(np.searchsorted(sel_rows, rows), len(sel_rows) - 1)
    return sel_rows[at] == rows


def collect(scores: Scores, sel: Selection | None, top: int, table_rows: int, sample: int = SAMPLE,
            seed: int = 0) -> ReportStats:
    """Both passes over the scores (see the module's docstring)."""
    ranges, digests, _ = _ranges(scores)
    if sel is not None:
        sel.check_scores(scores.root, combine_digests({f: digests.get(f, "") for f in sel.files}))
    sizes = sample_sizes({d: r[0] for d, r in ranges.items()}, sample)
    domains = {d: DomainStats(d, r[0], r[1], r[2], r[3], sizes[d], non_finite=r[4])
               for d, r in sorted(ranges.items())}
    best, selected, rows = Kept(), 0, 0
    sel_rows, current = np.zeros(0, dtype=np.int64), None
    for b, (rel, start, total, cols) in enumerate(_batches(scores, COLUMNS)):
        if rel != current:
            current = rel
            sel_rows = sel.rows(rel) if sel is not None else np.zeros(0, dtype=np.int64)
        n = cols["n"]
        rows += n
        chosen = _chosen(sel_rows, np.arange(start, start + n)) & cols["ok"]
        keys = np.random.default_rng([seed, b]).random(n)
        for dom in np.unique(cols["domain"][cols["ok"]]).tolist():
            idx = np.nonzero(cols["ok"] & (cols["domain"] == dom))[0]
            domains[dom].add(cols, rel, start, idx, chosen[idx], keys[idx], top)
        selected += int(chosen.sum())
        if table_rows and chosen.any():
            idx = np.nonzero(chosen)[0]
            best = best.merge(Kept.of(cols, rel, start, idx[_candidates(cols["score"][idx], table_rows, False)]),
                              table_rows)
    return ReportStats(domains=domains, best_selected=best, selected=selected, rows=rows)
