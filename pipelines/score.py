"""`attninf score`: every document of a Parquet corpus gets its
AttentionInfluence score, one output file per input file.

Contract (docs/design.md): scores/<same relative path>.parquet, rows in input
order, in the scores schema; scores/manifest.json holds the run fingerprint.

Work: units of rows (pipelines/units.py), each scored by a worker
(pipelines/workers.py) in this process (the default on a machine with at
most one GPU) or as one Dask task each (pipelines/executors.py: one worker
per GPU, a local cluster or the one at --scheduler). A file is assembled
from its units' parts when the last one is in. A rerun with the
same fingerprint redoes only what is missing; one with another fingerprint
stops unless --overwrite. One run per output directory (out/.lock).

Dask is imported only when a cluster is used: `--workers 0` scores in this
process, which is what a machine without dask (a bare GPU image) can run.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from attninf.artifacts import MANIFEST, STATS_DIR, Heads, Scores
from attninf.headsets import head_sets
from attninf import identity
from attninf.corpus import corpus_of, corpus_signature, scores_name
from attninf.identity import same_file
from attninf.storage import utc_now
from attninf.stores import RemotePath, absolute, location, rmtree
from attninf.errors import AttninfError
from attninf.model import model_fingerprint
from attninf.pipelines.corpus import inspect, resolve_domains
from attninf.pipelines.executors import Tracker, check_workers, default_workers, score_here, score_on_dask
from attninf.pipelines.units import PARTS_DIR, file_units, part_path
from attninf.pipelines.lock import RunLock
from attninf.pipelines.score_config import ScoreConfig
from attninf.pipelines.workers import scorer_for

log = logging.getLogger("attninf")


# ----------------------------------------------------------------- driver


def _check_paths(cfg: ScoreConfig) -> None:
    out, corpus = location(cfg.out).resolve(), corpus_of(cfg.corpus).root.resolve()
    if out == corpus or corpus in out.parents:
        raise AttninfError(f"--out {cfg.out} is inside the corpus directory; nothing is ever written there")


def _check_out_dir(cfg: ScoreConfig, fp: dict) -> dict:
    """The corpus signature an earlier run of the same fingerprint recorded
    ({} when there is none, or when --overwrite cleared another run's scores)."""
    out = location(cfg.out).resolve()
    man = out / MANIFEST
    if not man.exists():
        if out.exists() and any(out.rglob("*.parquet")):
            raise AttninfError(f"{cfg.out} holds Parquet files but no {MANIFEST}: choose an empty --out")
        return {}
    earlier = Scores.read(out)
    old = identity.recorded_score_fingerprint(earlier)
    if old == fp:
        return earlier.corpus_files or {}
    diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
    if not cfg.overwrite:
        raise AttninfError(f"{cfg.out} holds scores from a different run (differs in: {', '.join(diff)}); "
                           "pass --overwrite to redo them, or choose another --out")
    log.warning("--overwrite: removing scores made with another fingerprint from %s", cfg.out)
    for p in out.rglob("*.parquet"):
        p.unlink()
    rmtree(out / STATS_DIR)
    rmtree(out / PARTS_DIR)
    return {}


def _clean_tmp(out) -> None:
    if not isinstance(out, RemotePath):  # a remote output has no temporaries: files are uploaded whole
        for p in out.rglob(".*.tmp-*"):
            p.unlink(missing_ok=True)


def _drop_changed(out, old_signature: dict, files: list[str], signature: dict) -> tuple[list[str], list[str]]:
    """Outputs of corpus files that changed since an earlier run are removed
    (redone), and those of files no longer in the corpus (gone): (changed, gone)."""
    changed = [f for f in files if f in old_signature and not same_file(old_signature[f], signature.get(f, []))]
    gone = sorted(set(old_signature) - set(files))
    for rel in changed + gone:
        (out / scores_name(rel)).unlink(missing_ok=True)
        (out / STATS_DIR / f"{scores_name(rel)}.json").unlink(missing_ok=True)
        rmtree(out / PARTS_DIR / rel)
    return changed, gone


def _start(cfg: ScoreConfig, corpus, say) -> tuple[ScoreConfig, list[str], dict[str, int], dict[str, str], dict]:
    """Check the corpus and the output directory, resolve the domains and the
    unit size, write the manifest that says the run started; (cfg, files,
    rows per readable file, unreadable files, manifest)."""
    files = corpus.files()
    rows, bad, with_domain = inspect(corpus, files, cfg.text_column, cfg.domain_column)
    mode, why = resolve_domains(cfg.domain_from, [f for f in files if f in rows], with_domain, cfg.domain_column)
    say(f"domains: {why}")
    cfg = dataclasses.replace(cfg, domain_from=mode, chunk_docs=chunk_docs(cfg))
    heads = Heads.read(cfg.heads)
    spec = cfg.model or heads.model_spec
    mfp = model_fingerprint(spec, cfg.trust_remote_code)
    heads.check_model(spec, mfp["fingerprint"])
    fp = identity.score_fingerprint(cfg, heads, mfp)
    if cfg.head_fracs:
        say("head sets, scored in one pass: " + ", ".join(
            f"{'score' if tag is None else 'score_' + tag} = top {float(f):g} ({len(hs)} heads)"
            for f, (tag, hs) in zip(cfg.head_fracs, head_sets(cfg.head_fracs, heads))))
    recorded = _check_out_dir(cfg, fp)
    out = location(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _clean_tmp(out)
    signature = corpus_signature(corpus, [f for f in files if f in rows])
    changed, gone = _drop_changed(out, recorded, files, signature)
    if changed:
        say(f"{len(changed)} corpus file(s) changed since they were scored, redone: {', '.join(changed[:3])}")
    if gone:
        say(f"{len(gone)} scored file(s) are no longer in the corpus, their scores removed: {', '.join(gone[:3])}")
    manifest = {"fingerprint": fp, "corpus": absolute(cfg.corpus), "files": len(files),
                "corpus_files": signature, "domains": {"from": mode, "why": why},
                "config": dataclasses.asdict(cfg), "started": utc_now()}
    Scores.write_manifest(out, manifest)
    for rel, err in bad.items():
        say(f"unreadable: {rel}: {err}")
    return cfg, files, rows, bad, manifest


def chunk_docs(cfg: ScoreConfig) -> int:
    """Documents per unit: --chunk-docs, or a few minutes of work on the device in use."""
    if cfg.chunk_docs is not None:
        return int(cfg.chunk_docs)
    from attninf.devices import resolve_device

    return 16_384 if str(resolve_device(cfg.device)).startswith("cuda") else 256


def run_score(cfg: ScoreConfig, progress: bool = True, say: Callable[[str], None] = print) -> dict:
    """Score the corpus; returns the summary (also written to the manifest).
    Holds out/.lock while it runs: one run per output directory."""
    _check_paths(cfg)
    out = location(cfg.out)
    created = not out.exists()
    try:
        with RunLock(out) as lock:
            if lock.note:
                say(lock.note)
            return _run(cfg, progress, say)
    finally:
        if created and not isinstance(out, RemotePath) and out.is_dir() and not any(out.iterdir()):
            # refused before writing anything
            out.rmdir()


def _run(cfg: ScoreConfig, progress: bool, say) -> dict:
    t0 = time.perf_counter()
    corpus = corpus_of(cfg.corpus)  # one Corpus: each file is opened (and a JSONL file indexed) once
    cfg, files, rows, bad, manifest = _start(cfg, corpus, say)
    out = location(cfg.out)
    plan = {rel: file_units(corpus, rel, cfg.chunk_docs) for rel in files if rel in rows}
    done = [rel for rel in plan if (out / scores_name(rel)).exists()]
    plan = {rel: units for rel, units in plan.items() if rel not in done}
    for rel in done:  # a crash between a file's assembly and the removal of its parts
        rmtree(out / PARTS_DIR / rel)
    parts = {str(p) for p in (out / PARTS_DIR).rglob("*.parquet")}  # one listing, not one request per unit
    todo = [u for units in plan.values() for u in units if str(part_path(out, u)) not in parts]
    if done or len(todo) < sum(len(v) for v in plan.values()):
        say(f"resuming: {len(done)} of {len(files)} files already scored; {len(todo)} unit(s) to go")
    workers = cfg.workers if cfg.workers is not None else default_workers(cfg.device)
    check_workers(cfg, workers)
    failures = dict(bad)
    tracker = Tracker(cfg, plan, todo, failures, say, progress)
    tracker.assemble_ready()  # files whose every part is already in (or with no rows)
    if todo and workers == 0 and cfg.scheduler is None:
        score_here(cfg, todo, tracker)
    elif todo:
        score_on_dask(cfg, todo, workers, tracker)
    tracker.bar.close()

    scores = Scores(out, manifest)
    totals = {k: 0 for k in ("documents", "ok", "empty", "too_short", "tokens", "duplicate_ids")}
    for st in (scores.file_stats(scores_name(rel)) for rel in files
               if rel in rows and (out / scores_name(rel)).exists()):
        for k in totals:
            totals[k] += (st or {}).get(k, 0)
    summary = {**totals, "files": len(files), "files_scored_now": len(tracker.assembled),
               "files_skipped": len(done), "units": sum(len(v) for v in plan.values()),
               "units_scored_now": len(todo) - tracker.failed_units, "failures": failures,
               "wall_s": round(time.perf_counter() - t0, 2), "new_tokens": tracker.tokens,
               "tokens_per_s": round(tracker.tokens_per_s(), 1), "workers": workers}
    manifest.update({"finished": utc_now(), "summary": summary, "complete": not failures})
    Scores.write_manifest(out, manifest)
    return summary


def dry_run(cfg: ScoreConfig, limit: int, say: Callable[[str], None] = print) -> dict:
    """Score the first `limit` documents in this process, write nothing, and
    project the time for the whole corpus."""
    corpus = corpus_of(cfg.corpus)
    files = corpus.files()
    rows, bad, _ = inspect(corpus, files, cfg.text_column)
    total_docs = sum(rows.values())
    texts: list = []
    for rel in files:
        if rel not in rows or len(texts) >= limit:
            continue
        end = min(rows[rel], limit - len(texts))
        for t in corpus.file(rel).read([cfg.text_column], 0, end, 1024, text=cfg.text_column):
            texts.extend(t.column(0).to_pylist())
    texts = texts[:limit]
    scorer = scorer_for(cfg, cfg.device)
    t0 = time.perf_counter()
    res = scorer.score_texts(texts)
    el = time.perf_counter() - t0
    tokens = int(res["n_tokens"].sum())
    workers = cfg.workers if cfg.workers is not None else default_workers(cfg.device)
    projected = el / max(len(texts), 1) * total_docs / max(workers, 1)
    units = sum(len(file_units(corpus, rel, chunk_docs(cfg))) for rel in rows)
    return {"documents": len(texts), "tokens": tokens, "seconds": round(el, 2), "units": units,
            "workers": max(workers, 1),
            "tokens_per_s": round(tokens / max(el, 1e-9), 1), "corpus_documents": total_docs,
            "unreadable_files": len(bad), "projected_hours": round(projected / 3600, 3),
            "statuses": {s: int((res["status"] == s).sum()) for s in set(res["status"].tolist())},
            "mean_score": float(res["score"][res["status"] == "ok"].mean()) if (res["status"] == "ok").any() else None}
