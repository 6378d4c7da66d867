"""`attninf select`: the top fraction (or a token budget) of documents within
each domain, exact, computed partition-wise with Dask (docs/method.md, step 4).

Ranking: score descending, ties broken by id ascending (as strings), then by
scores file and row, so the result never depends on file order or worker
count and duplicate ids cannot push the cut past its count. Only documents
with status ok and a finite score (and, with --max-repetition, repetition at
or below it) compete; the others are counted in the manifest.

Groups: the scores' domain (null: the group "(none)"); one global ranking only
when asked (--by global) or when no document has a domain, and then the
manifest and the terminal say so and why.

How the exact cut is found without gathering the corpus: each round, every
scores file returns a histogram of its candidate scores over the interval
that still holds the cut, per domain; the merged histograms narrow the
interval by ~1000x. When few rows remain inside it, only those rows (score,
id, tokens) are gathered and sorted. Then every file keeps its rows that rank
at or above the cut.

Output: selected/<same relative path as the scores file>, the selected rows
(row = index in the corpus file, id, domain, score, n_tokens), and
selected/manifest.json with the cut, counts and tokens per domain.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

import numpy as np

from attninf.artifacts import ALL, MANIFEST, NO_DOMAIN, Scores, Selection, domain_name, write_selection_rows
from attninf.identity import combine_digests, score_file_digest
from attninf.storage import utc_now
from attninf.stores import absolute, is_url, location, readable
from attninf.errors import AttninfError

BINS = 1024
GATHER = 20_000  # rows inside the cut interval that are gathered and sorted exactly


@dataclass
class SelectConfig:
    scores: str = field(default="scores", metadata={"help": "Scores directory from `attninf score`."})
    out: str = field(default="selected", metadata={"help": "Output directory."})
    frac: float | None = field(default=0.2, metadata={"help": "Fraction of documents kept per domain (paper: 0.2)."})
    tokens: int | None = field(default=None, metadata={
        "help": "Keep the best documents up to this many tokens per domain (instead of --frac)."})
    by: str = field(default="auto", metadata={
        "choices": ("auto", "domain", "global"),
        "help": "Rank within each domain (auto: when the scores have one) or over the whole corpus."})
    max_repetition: float | None = field(default=None, metadata={
        "help": "Exclude documents whose repetition (repeated word 4-grams) is above this, e.g. 0.5."})

    def __post_init__(self):
        if self.tokens is not None:  # a token budget replaces the fraction
            self.frac = None

    def check(self) -> None:
        if self.tokens is not None:
            if self.tokens < 0:  # 0 is a budget too: nothing is kept
                raise AttninfError(f"--tokens cannot be negative (the tokens to keep per domain), got {self.tokens}")
        elif self.frac is None or not 0 <= self.frac <= 1:
            raise AttninfError(f"--frac must be in [0, 1], got {self.frac}")
        if self.by not in ("auto", "domain", "global"):
            raise AttninfError(f"--by must be domain, global or auto, got {self.by!r}")


def _load(root: str, rel: str, cfg: SelectConfig, by_domain: bool):
    """Columns of one scores file, with the candidate mask and group keys."""
    import pyarrow.parquet as pq

    path = location(root) / rel
    cols = set(pq.read_schema(readable(path)).names)
    # every pass re-reads its file: only the columns the selection needs
    t = pq.read_table(readable(path), columns=[c for c in ("id", "score", "n_tokens", "status", "repetition", "domain")
                                     if c in cols])
    score = t["score"].to_numpy(zero_copy_only=False).astype(np.float64)
    status_ok = np.array([s == "ok" for s in t["status"].to_pylist()], dtype=bool)
    finite = np.isfinite(score)
    ok = status_ok & finite  # inf (L_base = 0) and NaN never enter a ranking
    rep_excl = np.zeros(len(score), dtype=bool)
    if cfg.max_repetition is not None and "repetition" in cols:
        rep = t["repetition"].to_numpy(zero_copy_only=False).astype(np.float64)
        rep_excl = ok & (rep > cfg.max_repetition)
    domain = t["domain"].to_pylist() if "domain" in cols else [None] * len(score)
    groups = (np.array([domain_name(d) for d in domain], dtype=object)
              if by_domain else np.full(len(score), ALL, dtype=object))
    ids = np.array([str(x) for x in t["id"].to_pylist()], dtype=object)
    ntok = t["n_tokens"].to_numpy(zero_copy_only=False).astype(np.int64)
    return {"score": score, "cand": ok & ~rep_excl, "not_ok": ~status_ok, "non_finite": status_ok & ~finite,
            "repetitive": rep_excl, "group": groups, "id": ids, "n_tokens": ntok, "domain": domain,
            "file": rel, "row": np.arange(len(score), dtype=np.int64)}


def _stats(root, rel, cfg, by_domain):
    """Per group counts, tokens and score range of one file, and the digest of its scores."""
    d = _load(root, rel, cfg, by_domain)
    out = {}
    for g in set(d["group"].tolist()):
        m = d["group"] == g
        c = m & d["cand"]
        out[g] = {"documents": int(m.sum()), "candidates": int(c.sum()), "not_ok": int((m & d["not_ok"]).sum()),
                  "non_finite": int((m & d["non_finite"]).sum()),
                  "repetitive": int((m & d["repetitive"]).sum()), "tokens_total": int(d["n_tokens"][m].sum()),
                  "tokens_candidates": int(d["n_tokens"][c].sum()),
                  "min": float(d["score"][c].min()) if c.any() else None,
                  "max": float(d["score"][c].max()) if c.any() else None}
    return out, score_file_digest(d["score"])


def _inside(d, g, lo, hi):
    """Candidates of group g whose score lies in (lo, hi]."""
    return (d["group"] == g) & d["cand"] & (d["score"] > lo) & (d["score"] <= hi)


def _edges(lo: float, hi: float) -> np.ndarray:
    """BINS equal bins over [lo, hi], finite even where hi - lo overflows
    (lo*(1-t) + hi*t never leaves [lo, hi]); non-decreasing."""
    t = np.linspace(0.0, 1.0, BINS + 1)
    e = lo * (1 - t) + hi * t
    e[0], e[-1] = lo, hi
    return np.maximum.accumulate(e)


def _hist(root, rel, cfg, by_domain, intervals):
    """Per group: (count, tokens) per bin of (lo, hi] split into BINS equal bins."""
    d = _load(root, rel, cfg, by_domain)
    out = {}
    for g, (lo, hi) in intervals.items():
        m = _inside(d, g, lo, hi)
        edges = _edges(lo, hi)
        b = np.clip(np.searchsorted(edges, d["score"][m], side="left") - 1, 0, BINS - 1)
        out[g] = (np.bincount(b, minlength=BINS), np.bincount(b, weights=d["n_tokens"][m], minlength=BINS))
    return out


def _gather(root, rel, cfg, by_domain, intervals):
    d = _load(root, rel, cfg, by_domain)
    out = {}
    for g, (lo, hi) in intervals.items():
        m = _inside(d, g, lo, hi)
        out[g] = [(sc, id_, rel, row, nt) for sc, id_, row, nt in
                  zip(d["score"][m].tolist(), d["id"][m].tolist(), d["row"][m].tolist(), d["n_tokens"][m].tolist())]
    return out


def _selected_rows(root, rel, cfg, by_domain, cuts):
    d = _load(root, rel, cfg, by_domain)
    keep = np.zeros(len(d["score"]), dtype=bool)
    for g, cut in cuts.items():
        m = (d["group"] == g) & d["cand"]
        if cut is None:  # nothing selected in this group
            continue
        if cut == "all":
            keep |= m
            continue
        if cut[0] == "gt":  # everything strictly above a score
            keep |= m & (d["score"] > cut[1])
            continue
        _, cs, cid, cfile, crow = cut  # ranks at or above the cut: score desc, then id, file, row asc
        above = d["score"] > cs
        tie = (d["score"] == cs) & np.array([(i, rel, r) <= (cid, cfile, crow) for i, r in zip(d["id"], d["row"])],
                                            dtype=bool)
        keep |= m & (above | tie)
    return d, keep


def _check_domain_columns(root: str, files: list[str], cfg: SelectConfig) -> None:
    """Either every scores file has a domain column or none does."""
    import pyarrow.parquet as pq

    with_col = [f for f in files if "domain" in pq.read_schema(readable(location(root) / f)).names]
    if with_col and len(with_col) < len(files):
        lacking = next(f for f in files if f not in with_col)
        raise AttninfError(f"{location(root) / lacking} has no domain column but {with_col[0]} has: "
                           "these scores come from different runs; score the corpus again into one --out")
    if cfg.by == "domain" and not with_col:
        raise AttninfError(f"--by domain: the scores in {root} have no domain column")


def _ranking(cfg: SelectConfig, per_domain: dict, root: str) -> tuple[bool, str]:
    """(rank within domains?, why): within domains whenever any document has one, unless --by global."""
    named = sorted(g for g in per_domain if g != NO_DOMAIN)
    if cfg.by == "global":
        return False, "--by global"
    if cfg.by == "domain" and not named:
        raise AttninfError(f"--by domain: every domain in {root} is null")
    if not named:
        return False, "no document has a domain (score with --domain-from column or dir to rank within domains)"
    why = f"{len(named)} domain(s): {', '.join(named[:8])}{' ...' if len(named) > 8 else ''}"
    if NO_DOMAIN in per_domain:
        why += f"; {per_domain[NO_DOMAIN]['documents']:,} document(s) without a domain ranked as {NO_DOMAIN}"
    return True, why


def _targets(cfg: SelectConfig, totals: dict) -> tuple[dict, dict, dict]:
    """Per group: the target (count or tokens), the cuts already known (none
    or all), and the score interval that holds every other cut."""
    need: dict[str, tuple[str, int]] = {}
    cuts: dict[str, object] = {}
    open_: dict[str, dict] = {}
    for g, t in totals.items():
        if cfg.tokens is not None:
            need[g] = ("tokens", int(cfg.tokens))
        else:
            need[g] = ("count", int(math.floor(cfg.frac * t["candidates"] + 0.5)))
        kind, n = need[g]
        avail = t["candidates"] if kind == "count" else t["tokens_candidates"]
        if t["candidates"] == 0 or n <= 0:
            cuts[g] = None
        elif n >= avail:
            cuts[g] = "all"
        else:
            lo = np.nextafter(t["min"], -np.inf)
            open_[g] = {"lo": lo, "hi": t["max"], "above_n": 0, "above_tok": 0, "inside": t["candidates"]}
    return need, cuts, open_


def _narrow(job: dict, need: dict, open_: dict) -> None:
    """Pass 2: shrink each open interval ~BINS-fold per round (merged
    per-file histograms) until few rows remain inside it."""
    def wide(s):
        return s["inside"] > GATHER and s["hi"] > np.nextafter(s["lo"], np.inf)

    while any(wide(s) for s in open_.values()):
        refine = {g: (s["lo"], s["hi"]) for g, s in open_.items() if wide(s)}
        merged = {g: (np.zeros(BINS), np.zeros(BINS)) for g in refine}
        for part in _map(job, _hist, refine):
            for g, (c, w) in part.items():
                merged[g][0][:] += c
                merged[g][1][:] += w
        for g, (lo, hi) in refine.items():
            s = open_[g]
            kind, n = need[g]
            counts, toks = merged[g]
            edges = _edges(lo, hi)
            cum_n, cum_t = s["above_n"], s["above_tok"]
            for j in range(BINS - 1, -1, -1):  # from the top bin down
                if (kind == "count" and cum_n + counts[j] >= n) or (kind == "tokens" and cum_t + toks[j] > n):
                    break
                cum_n += counts[j]
                cum_t += toks[j]
            new_lo, new_hi = (edges[j] if j > 0 else lo), edges[j + 1] if j < BINS - 1 else hi
            if new_lo >= new_hi:  # float resolution reached: gather what is inside
                s["inside"] = 0
                continue
            s.update(lo=new_lo, hi=new_hi, above_n=int(cum_n), above_tok=int(cum_t), inside=int(counts[j]))


def _cut(job: dict, need: dict, open_: dict, cuts: dict) -> None:
    """Pass 3: gather the rows inside each interval, rank them, cut exactly."""
    if not open_:
        return
    rows: dict[str, list] = {g: [] for g in open_}
    for part in _map(job, _gather, {g: (s["lo"], s["hi"]) for g, s in open_.items()}):
        for g, r in part.items():
            rows[g].extend(r)
    for g, s in open_.items():
        kind, n = need[g]
        ranked = sorted(rows[g], key=lambda r: (-r[0], r[1], r[2], r[3]))
        taken, cum = None, s["above_tok"]
        for i, (sc, id_, rel, row, nt) in enumerate(ranked):
            if kind == "count" and s["above_n"] + i >= n:
                break
            if kind == "tokens":
                if cum + nt > n:
                    break
                cum += nt
            taken = ("ge", sc, id_, rel, row)
        # nothing taken inside: the cut is everything above the interval
        cuts[g] = taken if taken is not None else (("gt", s["hi"]) if s["above_n"] else None)


def _write_rows(root, rel, cfg, by_domain, cuts, out: str) -> dict[str, list[int]]:
    """Pass 4, one file: write its selected rows; (documents, tokens) kept per group."""
    d, keep = _selected_rows(root, rel, cfg, by_domain, cuts)
    idx = np.nonzero(keep)[0]
    write_selection_rows(location(out) / rel, idx, d["id"][idx].tolist(),
                         [None if d["domain"][i] is None else str(d["domain"][i]) for i in idx],
                         d["score"][idx], d["n_tokens"][idx])
    per: dict[str, list[int]] = {}
    for i in idx:
        k = per.setdefault(d["group"][i], [0, 0])
        k[0] += 1
        k[1] += int(d["n_tokens"][i])
    return per


def _map(job: dict, fn, *args) -> list:
    """fn(root, rel, cfg, by_domain, *args) for every scores file, in parallel, in file order."""
    import dask

    return list(dask.compute(*[dask.delayed(fn)(job["root"], f, job["cfg"], job["by_domain"], *args)
                               for f in job["files"]], scheduler=job["scheduler"]))


def _groups(totals: dict, cuts: dict, kept: dict) -> dict:
    """The manifest's per-group numbers: counts, score range, the cut, what was kept."""
    groups = {}
    for g, t in sorted(totals.items()):
        cut = cuts.get(g)
        groups[g] = {**{k: v for k, v in t.items() if k not in ("min", "max")},
                     "score_min": t["min"], "score_max": t["max"],
                     "threshold": None if cut in (None, "all") else cut[1],
                     "threshold_id": cut[2] if isinstance(cut, tuple) and cut[0] == "ge" else None,
                     "selected": kept.get(g, [0, 0])[0], "tokens_selected": kept.get(g, [0, 0])[1]}
    return groups


def run_select(cfg: SelectConfig, scheduler: str = "threads") -> dict:
    """Write the selection and its manifest; returns the manifest."""
    cfg.check()
    scores = Scores.read(cfg.scores)
    files, root = scores.files(), cfg.scores
    _check_domain_columns(root, files, cfg)
    job = {"root": root, "files": files, "cfg": cfg, "by_domain": True, "scheduler": scheduler}

    # pass 1: counts, tokens and score range per domain, merged into one group when ranking globally
    parts = _map(job, _stats)
    per_domain = _merge_stats([groups for groups, _ in parts])
    digest = combine_digests({f: fd for f, (_, fd) in zip(files, parts)})  # ties the selection to these scores
    by_domain, why = _ranking(cfg, per_domain, root)
    job["by_domain"] = by_domain
    totals = per_domain if by_domain else _merge_stats([{ALL: s} for s in per_domain.values()])

    need, cuts, open_ = _targets(cfg, totals)
    _narrow(job, need, open_)
    _cut(job, need, open_, cuts)
    out = location(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # until the new one is written, out is an unfinished selection
    kept: dict[str, list[int]] = {}
    for part in _map(job, _write_rows, cuts, str(out)):  # pass 4: every file writes its selected rows
        for g, (n, tk) in part.items():
            k = kept.setdefault(g, [0, 0])
            k[0] += n
            k[1] += tk
    groups = _groups(totals, cuts, kept)
    manifest = {
        "created": utc_now(),
        "config": dataclasses.asdict(cfg),
        "by": "domain" if by_domain else "global",
        "by_why": why,
        "scores": {"path": absolute(root),
                   # survives moving the workdir (local folders only)
                   "relpath": (os.path.relpath(location(root).resolve(), out.resolve())
                               if not (is_url(root) or is_url(cfg.out)) else None),
                   "fingerprint": scores.manifest.get("fingerprint"), "corpus": scores.manifest.get("corpus"),
                   "digest": digest},
        "groups": groups,
        "selected": sum(v["selected"] for v in groups.values()),
        "tokens_selected": sum(v["tokens_selected"] for v in groups.values()),
        "files": files,
    }
    Selection.write_manifest(out, manifest)
    return manifest


def _merge_stats(parts) -> dict[str, dict]:
    """Add per-file group statistics: counts and tokens sum, the score range widens."""
    totals: dict[str, dict] = {}
    for part in parts:
        for g, s in part.items():
            t = totals.setdefault(g, {"documents": 0, "candidates": 0, "not_ok": 0, "non_finite": 0,
                                      "repetitive": 0, "tokens_total": 0, "tokens_candidates": 0,
                                      "min": None, "max": None})
            for k in ("documents", "candidates", "not_ok", "non_finite", "repetitive", "tokens_total",
                      "tokens_candidates"):
                t[k] += s[k]
            if s["min"] is not None:
                t["min"] = s["min"] if t["min"] is None else min(t["min"], s["min"])
                t["max"] = s["max"] if t["max"] is None else max(t["max"], s["max"])
    return totals


def extremes(cfg: SelectConfig, n: int, by_domain: bool) -> dict[str, dict[str, list[tuple]]]:
    """The n best and n worst eligible documents of each group, as (score, id,
    file, row, n_tokens), ranked as select ranks (score, then id, file, row)."""
    best: dict[str, list] = {}
    worst: dict[str, list] = {}
    for rel in Scores.read(cfg.scores).files():
        d = _load(cfg.scores, rel, cfg, by_domain)
        for g in set(d["group"][d["cand"]].tolist()):
            m = np.nonzero((d["group"] == g) & d["cand"])[0]
            rows = [(float(d["score"][i]), d["id"][i], rel, int(i), int(d["n_tokens"][i])) for i in m]
            best[g] = sorted(best.get(g, []) + rows, key=lambda r: (-r[0], r[1], r[2], r[3]))[:n]
            worst[g] = sorted(worst.get(g, []) + rows, key=lambda r: (r[0], r[1], r[2], r[3]))[:n]
    return {g: {"top": best[g], "bottom": worst[g]} for g in sorted(best)}


def ranking_line(manifest: dict) -> str:
    """The one line that says how the documents were ranked, and why."""
    if manifest["by"] == "global":
        return f"ranking globally: {manifest['by_why']}"
    return f"ranking within domains: {manifest['by_why']}"
