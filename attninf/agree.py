"""`attninf agree`: how far two scorings of the same corpus agree (two score
directories, or two score columns of one), per domain and over all rows.

Rows are joined by identity, (scores file, row): both sides must list the
same files with the same row counts, the same corpus signature in their
manifests, and the same id and domain row by row; anything else is refused.
A row counts when its status is ok and both values are finite; the others
are counted by reason.

The top --frac of a group is `attninf select`'s: floor(frac * n + 0.5) rows
by score descending, ties by id (as text), then file, then row; taken among
the rows that count, so it is select's selection when none is left out.
(all) ranks every counted row together for its correlations, and its
overlap compares whole selections: the union of the per-domain tops, what
select keeps, or the one global top with --by global.

Memory: the files are read in record batches; what stays is one float64 per
side, an int64 position and an int32 domain code per counted row, and the
per-group rankings (rankstats) one group at a time. Ids are read back only
for the runs of tied scores that hold a cut, and for the movers.
"""
from __future__ import annotations

import math

import numpy as np

from .artifacts import ALL, NO_DOMAIN, Scores, Status, domain_name
from .errors import AttninfError
from .identity import same_file
from .rankstats import average_ranks, kendall_tau_b, pearson, strict_order
from .stores import readable

FRACS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
SAMPLE = 20_000  # points of the page's scatter
BATCH = 65_536
LEFT_OUT = ("status not ok in A", "status not ok in B (ok in A)", "A's value not finite", "B's value not finite")


def top_count(frac: float, n: int) -> int:
    """How many rows the top frac of n is: select's count, round half up."""
    return int(math.floor(frac * n + 0.5))


class Join:
    """The counted rows of A and B: values a, b (float64), pos (int64: the
    row's place in the files concatenated in order), grouped: bounds[group]
    = (start, end); dom (int32 codes into domains) only with --by global."""

    def __init__(self, a: Scores, b: Scores, a_col: str, b_col: str, by: str = "domain"):
        self.sides, self.cols = (a, b), (a_col, b_col)
        self.same_dir = a.root == b.root
        self.files = _check_pair(a, b, a_col, b_col)
        # rows are joined by (file, row); the corpus signatures, where both manifests have them, prove the
        # corpus the same, so ids made from other id columns need not agree; domains only matter per domain
        self.check_ids = not (a.corpus_files and b.corpus_files and a.column("id") != b.column("id"))
        self.check_domains = by == "domain"
        counts = [_num_rows(a, f) for f in self.files]
        self.starts = np.r_[0, np.cumsum(counts, dtype=np.int64)]
        self.rows = int(self.starts[-1])
        self.left_out = dict.fromkeys(LEFT_OUT, 0)
        self.domains: list[str] = []
        self._read()

    def _read(self) -> None:
        import pyarrow.compute as pc

        total = self.rows
        a, b = np.empty(total), np.empty(total)
        pos, dom = np.empty(total, dtype=np.int64), np.empty(total, dtype=np.int32)
        codes: dict[str, int] = {}
        n = 0
        for f, rel in enumerate(self.files):
            for r0, ta, tb in self._aligned(rel):
                if tb is not None:
                    if self.check_ids:
                        _same_rows(ta, tb, "id", rel, r0)
                    if self.check_domains:
                        _same_rows(ta, tb, "domain", rel, r0)
                    tb_status, vb = tb.column("status"), tb.column(self.cols[1])
                else:
                    tb_status, vb = ta.column("status"), ta.column(self.cols[1])
                ok_a = _ok(ta.column("status"))
                ok_b = _ok(tb_status)
                va, vb = _floats(ta.column(self.cols[0])), _floats(vb)
                fa, fb = np.isfinite(va), np.isfinite(vb)
                both = ok_a & ok_b
                for key, m in zip(LEFT_OUT, (~ok_a, ok_a & ~ok_b, both & ~fa, both & fa & ~fb)):
                    self.left_out[key] += int(m.sum())
                keep = np.flatnonzero(both & fa & fb)
                k = len(keep)
                a[n:n + k], b[n:n + k] = va[keep], vb[keep]
                pos[n:n + k] = self.starts[f] + r0 + keep
                d = ta.column("domain") if "domain" in ta.column_names else None
                dom[n:n + k] = _codes(d, codes, len(va), pc)[keep]
                n += k
        self.domains = sorted(codes, key=codes.get)
        import pyarrow as pa

        pa.default_memory_pool().release_unused()  # the batches' buffers, kept by the allocator otherwise
        self.a, self.b, self.pos, self.dom = a[:n], b[:n], pos[:n], dom[:n]
        self.bounds = {ALL: (0, n)}

    def _aligned(self, rel: str):
        """(first row, A's batch, B's batch or None) over one file, cut to the same rows."""
        import pyarrow.parquet as pq

        a, b = self.sides
        want = ["status", "domain", self.cols[0]]
        if self.same_dir:
            pf = pq.ParquetFile(readable(a.root / rel))
            cols = list(dict.fromkeys([c for c in want if c in pf.schema_arrow.names] + [self.cols[1]]))
            r0 = 0
            for t in pf.iter_batches(batch_size=BATCH, columns=cols):
                yield r0, t, None
                r0 += t.num_rows
            return
        its = []
        for side, col in zip(self.sides, self.cols):
            pf = pq.ParquetFile(readable(side.root / rel))
            names = pf.schema_arrow.names
            its.append(pf.iter_batches(batch_size=BATCH, columns=[c for c in ("id", "status", "domain", col)
                                                                   if c in names]))
        (ia, ib), (ca, cb), r0 = its, [None, None], 0
        while True:
            ca = next(ia, None) if ca is None or ca.num_rows == 0 else ca
            cb = next(ib, None) if cb is None or cb.num_rows == 0 else cb
            if ca is None or cb is None:
                return
            k = min(ca.num_rows, cb.num_rows)
            yield r0, ca.slice(0, k), cb.slice(0, k)
            ca, cb, r0 = ca.slice(k), cb.slice(k), r0 + k

    def group_by_domain(self) -> None:
        """Reorder the rows by domain (file order kept within one); bounds per domain name."""
        counts = np.bincount(self.dom, minlength=len(self.domains))
        order = np.argsort(self.dom, kind="stable")
        self.a = self.a[order]  # one array at a time: the old one is freed before the next is copied
        self.b = self.b[order]
        self.pos = self.pos[order]
        del order
        ends = np.cumsum(counts)
        self.bounds = {self.domains[c]: (int(ends[c] - counts[c]), int(ends[c]))
                       for c in sorted(range(len(counts)), key=lambda c: self.domains[c]) if counts[c]}
        self.dom = None

    def where(self, pos) -> tuple[list[str], list[int]]:
        """(scores file, row) of positions."""
        f = np.searchsorted(self.starts, pos, side="right") - 1
        return [self.files[i] for i in f], [int(p - self.starts[i]) for p, i in zip(pos, f)]

    def ids(self, pos):
        """The ids of positions as select compares them (text; a null as "None"), an Arrow
        string array in the order given; read from A, only the row groups that hold them."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        pos = np.asarray(pos, dtype=np.int64)
        order = np.argsort(pos, kind="stable")
        sp = pos[order]
        f = np.searchsorted(self.starts, sp, side="right") - 1
        chunks = []
        for fi in np.unique(f):
            rows = sp[f == fi] - self.starts[fi]
            pf = pq.ParquetFile(readable(self.sides[0].root / self.files[fi]))
            ends = np.cumsum([pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
            g = np.searchsorted(ends, rows, side="right")
            for gi in np.unique(g):
                col = pf.read_row_group(int(gi), columns=["id"]).column("id")
                chunks.append(col.take(rows[g == gi] - (ends[gi - 1] if gi else 0)).cast(pa.string()))
        ids = pc.fill_null(pa.chunked_array(chunks, pa.string()).combine_chunks(), "None")
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        return ids.take(back)


def _check_pair(a: Scores, b: Scores, a_col: str, b_col: str) -> list[str]:
    """The scores files of A, refused unless B's are the same corpus's and both columns exist."""
    fa, fb = a.files(), b.files()
    if fa != fb:
        only = sorted(set(fa) ^ set(fb))
        where = "A" if only and only[0] in fa else "B"
        from .corpus import scores_name

        lacking, name = (b, "B") if where == "A" else (a, "A")
        if only and only[0] in {scores_name(r) for r in (lacking.corpus_files or {})}:
            raise AttninfError(f"{name}'s scores ({lacking.root}) are not finished: {only[0]} is in its corpus but "
                               "not scored yet; run its `attninf score` again to finish them")
        raise AttninfError(f"A ({a.root}) and B ({b.root}) are not scorings of the same corpus: "
                           f"{only[0] if only else 'the file lists'} is only in {where}")
    ca, cb = a.corpus_files, b.corpus_files
    if ca is not None and cb is not None:
        for rel in sorted(set(ca) | set(cb)):
            if rel not in ca or rel not in cb or not (same_file(ca[rel], cb[rel]) or same_file(cb[rel], ca[rel])):
                raise AttninfError(f"A ({a.root}) and B ({b.root}) were scored from different corpora: "
                                   f"corpus file {rel} is {ca.get(rel)} in A's manifest and {cb.get(rel)} in B's")
    import pyarrow as pa
    import pyarrow.parquet as pq

    for side, name, col in ((a, "A", a_col), (b, "B", b_col)):
        for rel in fa:
            schema = pq.read_schema(readable(side.root / rel))
            for c in (col, "status"):
                if c not in schema.names:
                    have = ", ".join(n for n in schema.names if n.startswith("score")) or "none"
                    raise AttninfError(f"{name} ({side.root}) has no column {c!r} in {rel} "
                                       f"(its score columns: {have})")
            t = schema.field(col).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
                raise AttninfError(f"{name}'s column {col!r} in {rel} is {t}, not a number")
    for rel in fa:
        na, nb = _num_rows(a, rel), _num_rows(b, rel)
        if na != nb:
            raise AttninfError(f"A ({a.root}) and B ({b.root}) are not scorings of the same corpus: "
                               f"{rel} has {na:,} rows in A and {nb:,} in B")
    return fa


def _num_rows(s: Scores, rel: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(readable(s.root / rel)).metadata.num_rows


def _ok(status) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.equal(status.cast("string"), Status.OK.value).fill_null(False).to_numpy(zero_copy_only=False)


def _floats(col) -> np.ndarray:
    import pyarrow as pa

    return col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _codes(col, codes: dict, n: int, pc) -> np.ndarray:
    """int32 domain codes of a batch (null: NO_DOMAIN), new names added to codes."""
    if col is None:
        return np.full(n, codes.setdefault(NO_DOMAIN, len(codes)), dtype=np.int32)
    enc = pc.dictionary_encode(col.cast("string"))
    lut = np.array([codes.setdefault(domain_name(v), len(codes)) for v in enc.dictionary.to_pylist()]
                   + [codes.setdefault(NO_DOMAIN, len(codes)) if enc.null_count else -1], dtype=np.int32)
    idx = enc.indices.fill_null(len(enc.dictionary)).to_numpy(zero_copy_only=False)
    return lut[idx]


def _same_rows(ta, tb, col: str, rel: str, r0: int) -> None:
    """Refuse two batches whose column (id, domain) differs in any row (nulls equal nulls)."""
    import pyarrow.compute as pc

    if (col in ta.column_names) != (col in tb.column_names):
        raise AttninfError(f"A and B are not scorings of the same corpus: {rel} has a {col} column in only one")
    if col not in ta.column_names:
        return
    x, y = ta.column(col).cast("string"), tb.column(col).cast("string")
    nx, ny = x.is_null().to_numpy(zero_copy_only=False), y.is_null().to_numpy(zero_copy_only=False)
    good = pc.equal(x, y).fill_null(False).to_numpy(zero_copy_only=False) | (nx & ny)
    if not good.all():
        i = int(np.argmin(good))
        what = "not scorings of the same corpus" if col == "id" else "grouped differently (score both with the " \
                                                                      "same --domain-from)"
        raise AttninfError(f"A and B are {what}: {rel} row {r0 + i} has {col} {x[i].as_py()!r} in A and "
                           f"{y[i].as_py()!r} in B")


# ------------------------------------------------------------------ numbers


def to_json(x):
    """The result as strict JSON values: NaN (undefined) becomes null, the page's sample is left out."""
    if isinstance(x, dict):
        return {k: to_json(v) for k, v in x.items() if not str(k).startswith("_")}
    if isinstance(x, (list, tuple)):
        return [to_json(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def _overlap(inter: int, k: int) -> dict:
    """|A∩B| / k and the Jaccard of two top sets of k rows each (NaN when k is 0)."""
    nan = float("nan")
    return {"k": k, "shared": inter, "overlap": inter / k if k else nan,
            "jaccard": inter / (2 * k - inter) if k else nan}


class _Group:
    """The numbers of one group's rows (a, b: views), with its movers and scatter sample."""

    def __init__(self, j: Join, name: str, fracs: list[float], frac: float, show: int, sample: np.ndarray,
                 ranked: bool = True):
        s, e = j.bounds.get(name, (0, len(j.a)))
        a, b, pos = j.a[s:e], j.b[s:e], j.pos[s:e]
        n = self.n = e - s
        self.stats = {"n": n, "kendall": kendall_tau_b(a, b)}
        if ranked:  # select's top k for every k asked, first: its orders are dropped before the ranks are made
            ks = [top_count(f, n) for f in fracs]
            place_a, cut_a, thr_a = _strict(a, pos, j, ks, top_count(frac, n))
            place_b, cut_b, thr_b = _strict(b, pos, j, ks, top_count(frac, n))
            worst = np.maximum(place_a, place_b)  # a row is in both tops of k iff its worse place is < k
            del place_a, place_b
            self.by_frac = {f: (int(np.count_nonzero(worst < k)), k) for f, k in zip(fracs, ks)}
            del worst
        pa_, pb = average_ranks(a), average_ranks(b)
        self.stats["spearman"] = pearson(pa_, pb)
        if not ranked:  # (all) over domains: correlations only
            return
        for p in (pa_, pb):  # ascending average rank -> share of the group ranked above, ties half (0: the top)
            np.subtract(n + 0.5, p, out=p)
            p /= max(n, 1)
        here = sample[(sample >= s) & (sample < e)] - s
        self.sample = (pa_[here], pb[here], np.full(len(here), name, dtype=object))
        self.movers = _movers(pa_, pb, show, a, b, pos, name)
        self.stats.update(threshold_a=thr_a, threshold_b=thr_b,
                          a_cut_in_b=float(pb[cut_a]) if cut_a is not None else None,
                          b_cut_in_a=float(pa_[cut_b]) if cut_b is not None else None)
        self.stats.update(_overlap(*self.by_frac[frac]))


def _strict(x: np.ndarray, pos: np.ndarray, j: Join, ks: list[int], k: int):
    """(each row's place in select's ranking of x, as far as the tops of ks
    tell; the row at the cut of the top k or None; its value)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def by_id(rows):  # select's order of tied rows: id as text, then file and row
        t = pa.table({"id": j.ids(pos[rows]), "pos": pa.array(pos[rows])})
        return rows[pc.sort_indices(t, sort_keys=[("id", "ascending"), ("pos", "ascending")]).to_numpy()]

    n = len(x)
    order = strict_order(x, ks, by_id)
    place = np.empty(n, dtype=np.int32 if n < 2**31 else np.int64)
    place[order] = np.arange(n, dtype=place.dtype)
    cut = int(order[k - 1]) if k else None
    return place, cut, (float(x[cut]) if cut is not None else None)


def _movers(pa_, pb, show: int, a, b, pos, group: str) -> list[tuple]:
    """The show rows whose share-ranked-above moved most, (|move|, pos, ...) ties by position."""
    n = len(pa_)
    if not show or not n:
        return []
    d = np.abs(pa_ - pb)
    take = min(show, n)
    dk = np.partition(d, n - take)[n - take]
    rows = np.r_[np.flatnonzero(d > dk), np.flatnonzero(d == dk)[:take - int((d > dk).sum())]]
    return [(float(d[i]), int(pos[i]), group, float(a[i]), float(b[i]), float(pa_[i]), float(pb[i]), int(i))
            for i in rows]


def agree(a, b=None, a_column: str = "score", b_column: str = "score", frac: float = 0.2, by: str = "domain",
          show: int = 10, fracs=FRACS) -> dict:
    """The agreement of column a_column of scores directory a and b_column of
    b (default: a itself), as a JSON-ready mapping, plus "_sample" (the
    scatter points, for the page)."""
    if not 0 <= frac <= 1:
        raise AttninfError(f"--frac must be in [0, 1], got {frac}")
    if by not in ("domain", "global"):
        raise AttninfError(f"--by must be domain or global, got {by!r}")
    if show < 0:
        raise AttninfError(f"--show cannot be negative, got {show}")
    sa = Scores.read(a)
    sb = sa if b is None else Scores.read(b)
    j = Join(sa, sb, a_column, b_column, by)
    notes = []
    if by == "domain" and [d for d in j.domains if d != NO_DOMAIN]:
        j.group_by_domain()
    elif by == "domain":
        notes.append("no document has a domain: ranked over the whole corpus")
        by = "global"
    fracs = sorted({float(f) for f in fracs} | {float(frac)})
    n = len(j.a)
    sample = (np.sort(np.random.default_rng(0).choice(n, SAMPLE, replace=False)) if n > SAMPLE
              else np.arange(n))
    names = [g for g in j.bounds if g != ALL] if by == "domain" else [ALL]
    groups = {g: _Group(j, g, fracs, frac, show, sample) for g in names}
    if by == "domain":  # the selection is the union of the domains' tops
        whole = _Group(j, ALL, fracs, frac, show, sample, ranked=False)
        sums = {f: tuple(map(sum, zip(*(g.by_frac[f] for g in groups.values())))) for f in fracs}
        whole.by_frac = sums
        whole.stats.update(threshold_a=None, threshold_b=None, a_cut_in_b=None, b_cut_in_a=None,
                           **_overlap(*sums[frac]))
        groups[ALL] = whole
    movers = sorted((m for g in groups.values() for m in getattr(g, "movers", [])), key=lambda m: (-m[0], m[1]))
    movers = movers[:show]
    if j.dom is not None:  # ranked globally: each mover's own domain
        movers = [m[:2] + (j.domains[j.dom[m[7]]],) + m[3:] for m in movers]
    ids = j.ids([m[1] for m in movers]).to_pylist()
    files, rows = j.where([m[1] for m in movers])
    left = sum(j.left_out.values())
    if left:
        notes.append(f"{left:,} of {j.rows:,} rows left out: "
                     + ", ".join(f"{v:,} {k}" for k, v in j.left_out.items() if v))
    out = {
        "a": {"path": str(sa.root), "column": a_column}, "b": {"path": str(sb.root), "column": b_column},
        "by": by, "frac": frac, "fracs": fracs, "rows": j.rows, "counted": n, "left_out": j.left_out,
        "notes": notes,
        "groups": {g: grp.stats for g, grp in groups.items()},
        "overlap_by_frac": {g: {str(f): _overlap(*grp.by_frac[f]) for f in fracs} for g, grp in groups.items()},
        "movers": [{"id": i, "domain": m[2], "file": f, "row": r, "score_a": m[3], "score_b": m[4],
                    "top_a": m[5], "top_b": m[6], "moved": m[0]}
                   for m, i, f, r in zip(movers, ids, files, rows)],
    }
    parts = [g.sample for g in groups.values() if hasattr(g, "sample")]
    out["_sample"] = tuple(np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in range(3))
    return out
