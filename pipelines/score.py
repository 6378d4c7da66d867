"""`attninf score`: every document of a Parquet corpus gets its
AttentionInfluence score, one output file per input file, on Dask.

Contract (docs/method.md, "Outputs"): scores/<same relative path>.parquet,
rows in input order, columns id, score, loss_base, loss_masked, n_tokens,
status, repetition, domain (from a column, from the top-level folder, or null
when the corpus has none); scores/manifest.json holds the run fingerprint.

Crash safety: an output file is written under a temporary name and renamed
when complete, so its existence means it is finished; a rerun with the same
fingerprint skips finished files, one with another fingerprint stops unless
--overwrite. Work unit: one input file, so a file's rows are packed the same
way on any worker, and the numbers do not depend on the worker count.

Dask is imported only when a cluster is used: `--workers 0` scores in this
process, which is what a machine without dask (a bare GPU image) can run.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from attninf.artifacts import (MANIFEST, STATS_DIR, Scores, Status, atomic_path, corpus_signature, parquet_files,
                               scores_schema, scores_table, write_json)
from attninf.errors import AttninfError

log = logging.getLogger("attninf")



DOMAIN_MODES = ("auto", "column", "dir", "none")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ScoreConfig:
    corpus: str = field(default="", metadata={"help": "Directory of Parquet files (nested folders allowed)."})
    out: str = field(default="scores", metadata={
        "help": "Output directory: one scores Parquet per input file + manifest.json."})
    heads: str = field(default="heads.json", metadata={"help": "heads.json from detect-heads."})
    model: str | None = field(default=None, metadata={
        "help": "Model name, directory, .gguf file or hub id.", "default_help": "the one heads.json names"})
    text_column: str = field(default="text", metadata={"help": "Column holding the document text."})
    id_column: str = field(default="id", metadata={"help": "Id column; absent from a file: ids are "
                                                           "<relative path>:<row>."})
    domain_column: str = field(default="domain", metadata={"help": "Column holding the domain."})
    domain_from: str = field(default="auto", metadata={
        "choices": DOMAIN_MODES,
        "help": "Where each document's domain comes from: the column, the first folder under CORPUS, "
                "none (one global ranking); auto = the column where the corpus has one, else the "
                "folder when CORPUS has several top-level folders."})
    max_tokens: int | None = field(default=None, metadata={
        "help": "Window length; longer documents are scored over several.", "default_help": "min(context, 4096)"})
    context_overlap: int | None = field(default=None, metadata={
        "help": "Tokens of context each later window re-reads before the tokens it scores.",
        "default_help": "half of --max-tokens"})
    doc_prefix: str | None = field(default=None, metadata={
        "metavar": "TOKEN|none", "help": "Token put before every document.",
        "default_help": "the one heads.json's probes used"})
    truncate: bool = field(default=False, metadata={"help": "Score only the first window of long documents."})
    batch_tokens: int = field(default=16384, metadata={"help": "Tokens per packed forward pass (memory vs. speed)."})
    rows_per_chunk: int = field(default=2048, metadata={"help": "Documents read and scored at a time."})
    dtype: str = field(default="auto", metadata={
        "choices": DTYPES, "help": "auto = bf16 where the hardware runs it fast, else float32."})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N."})
    workers: int | None = field(default=None, metadata={
        "help": "Local Dask workers; 0 scores in this process (no Dask).", "default_help": "1 per GPU, else 1"})
    scheduler: str | None = field(default=None, metadata={
        "envvar": "DASK_SCHEDULER_ADDRESS",
        "help": "Use an existing Dask cluster at this address (also $DASK_SCHEDULER_ADDRESS)."})
    overwrite: bool = field(default=False, metadata={
        "help": "Redo scores made with a different model/heads/settings."})
    allow_pickle: bool = field(default=False, metadata={"help": "Allow .bin (pickle) weights; they can run code."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow the model's own Python code."})


# ------------------------------------------------------------------ corpus


def list_files(corpus: str | Path) -> list[str]:
    root = Path(corpus)
    if not root.is_dir():
        raise AttninfError(f"corpus directory not found: {root}")
    files = parquet_files(root)
    if not files:
        raise AttninfError(f"no .parquet files under {root}")
    return files


def inspect(corpus: str | Path, files: list[str], text_column: str,
            domain_column: str | None = None) -> tuple[dict[str, int], dict[str, str], set[str]]:
    """Rows per readable file, {file: error} for unreadable ones, and the
    files that have the domain column. A text column missing from a readable
    file is an error before any work starts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, bad, with_domain = {}, {}, set()
    for rel in files:
        try:
            pf = pq.ParquetFile(Path(corpus) / rel)
            schema = pf.schema_arrow
            rows[rel] = pf.metadata.num_rows
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not fatal
            bad[rel] = _one_line(e)
            continue
        if text_column not in schema.names:
            raise AttninfError(f"{rel} has no column {text_column!r}; its columns are: "
                               f"{', '.join(schema.names)} (choose one with --text-column)")
        t = schema.field(text_column).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)):
            raise AttninfError(f"{rel}: column {text_column!r} holds {t}, not text (choose one with --text-column)")
        if domain_column and domain_column in schema.names:
            with_domain.add(rel)
    return rows, bad, with_domain


def resolve_domains(mode: str, files: list[str], with_column: set[str], column: str) -> tuple[str, str]:
    """(column | dir | none, why): where each document's domain comes from.
    The paper ranks only within a domain, so a corpus that has one in a
    column or in its folder layout must never be ranked globally by accident."""
    if mode not in DOMAIN_MODES:
        raise AttninfError(f"--domain-from must be one of {', '.join(DOMAIN_MODES)}, got {mode!r}")
    tops = {f.split("/", 1)[0] for f in files if "/" in f}
    at_root = [f for f in files if "/" not in f]
    if mode == "auto":
        if with_column:
            mode = "column"
        elif len(tops) > 1 and not at_root:
            return "dir", f"no {column!r} column; one domain per top-level folder ({', '.join(sorted(tops))})"
        else:
            return "none", (f"no {column!r} column and " + ("a single top-level folder" if not at_root else
                            "files at the corpus root") + ": one global ranking")
    if mode == "column":
        lacking = [f for f in files if f not in with_column]
        if lacking:
            raise AttninfError(f"{lacking[0]} has no {column!r} column but {sorted(with_column)[0] if with_column else 'no file'} "
                               f"has: every file needs it ({len(lacking)} lack it), or use --domain-from dir")
        return "column", f"the {column!r} column"
    if mode == "dir":
        if at_root:
            raise AttninfError(f"--domain-from dir: {at_root[0]} sits at the corpus root, not in a domain folder")
        return "dir", f"the top-level folder ({', '.join(sorted(tops))})"
    return "none", "--domain-from none: one global ranking"


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".strip()


# ------------------------------------------------------------- fingerprint


def run_fingerprint(cfg: ScoreConfig) -> dict:
    """What decides the numbers, computed without loading the model's weights."""
    from attninf.heads import check_model, read_heads
    from attninf.model import model_fingerprint, resolve_device, resolve_dtype
    from attninf.scoring import SCORING_VERSION, heads_digest

    heads = read_heads(cfg.heads)
    spec = cfg.model or heads["model"]["name"]
    mfp = model_fingerprint(spec, cfg.trust_remote_code)
    check_model(heads, cfg.heads, spec, mfp["fingerprint"])
    return {
        "model": mfp["fingerprint"],
        "heads_sha256": heads_digest(heads["heads"]),
        "max_tokens": cfg.max_tokens,
        "context_overlap": cfg.context_overlap,
        "doc_prefix": cfg.doc_prefix or (heads.get("doc_prefix") or {}).get("tokens"),
        "domain_from": cfg.domain_from,
        "truncate": cfg.truncate,
        "dtype": str(resolve_dtype(cfg.dtype, resolve_device(cfg.device))).replace("torch.", ""),
        "text_column": cfg.text_column,
        "id_column": cfg.id_column,
        "scoring_version": SCORING_VERSION,
        "tokenizer": mfp.get("tokenizer_sha256"),
    }


# --------------------------------------------------------------- one file

_SCORERS: dict[str, Any] = {}  # per process: the model is loaded once per worker, not per task


def _scorer(cfg: ScoreConfig, device: str):
    from attninf.scoring import load_scorer

    key = json.dumps([cfg.model, cfg.heads, cfg.dtype, device, cfg.max_tokens, cfg.batch_tokens, cfg.truncate,
                      cfg.context_overlap, cfg.doc_prefix])
    if key not in _SCORERS:
        _SCORERS.clear()  # one model per worker
        _SCORERS[key] = load_scorer(cfg.model, cfg.heads, dtype=cfg.dtype, device=device,
                                    max_tokens=cfg.max_tokens, batch_tokens=cfg.batch_tokens,
                                    truncate=cfg.truncate, allow_pickle=cfg.allow_pickle,
                                    trust_remote_code=cfg.trust_remote_code,
                                    context_overlap=cfg.context_overlap, doc_prefix=cfg.doc_prefix)
    return _SCORERS[key]


def _worker_device(device: str) -> str:
    """One worker per GPU: a local worker named N takes cuda:N."""
    import torch

    if device != "auto" or not torch.cuda.is_available():
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
        return f"cuda:{int(name) % torch.cuda.device_count()}"
    except (ImportError, ValueError, TypeError):
        return "cuda"


def _quiet_transformers() -> None:
    """Workers load weights without per-worker progress bars in the driver's output."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


class _FileReader:
    """The columns score reads from one corpus file, batch by batch: texts,
    ids (the id column, or <file>:<row>) and domains (column, folder or null)."""

    def __init__(self, cfg: ScoreConfig, rel: str):
        import pyarrow.parquet as pq

        self.cfg, self.rel = cfg, rel
        self.pf = pq.ParquetFile(Path(cfg.corpus) / rel)
        names = self.pf.schema_arrow.names
        self.has_id = cfg.id_column in names
        self.from_column = cfg.domain_from == "column"
        if self.from_column and cfg.domain_column not in names:
            raise AttninfError(f"{rel} has no {cfg.domain_column!r} column")
        self.folder = rel.split("/", 1)[0] if cfg.domain_from == "dir" else None
        self.columns = ([cfg.text_column] + ([cfg.id_column] if self.has_id else [])
                        + ([cfg.domain_column] if self.from_column else []))

    def batches(self):
        """(texts, ids, domain) per batch of rows_per_chunk rows, in file order."""
        import pyarrow as pa

        row0 = 0
        for batch in self.pf.iter_batches(batch_size=self.cfg.rows_per_chunk, columns=self.columns):
            n = batch.num_rows
            ids = (batch.column(self.cfg.id_column) if self.has_id
                   else pa.array([f"{self.rel}:{row0 + i}" for i in range(n)], pa.string()))
            domain = batch.column(self.cfg.domain_column) if self.from_column else self.folder
            yield batch.column(self.cfg.text_column).to_pylist(), ids, domain
            row0 += n


def _count(stats: dict, res: dict, ids, seen: set) -> None:
    """Add one batch to a file's counters (documents, statuses, tokens, duplicate ids)."""
    import numpy as np

    for x in ids.to_pylist():
        if x in seen or x is None:
            stats["duplicate_ids"] += 1
        seen.add(x)
    stats["documents"] += len(ids)
    stats["tokens"] += int(res["n_tokens"].sum())
    for st in Status:
        stats[st.value] += int(np.sum(res["status"] == st.value))


def score_file(cfg_dict: dict, rel: str, threads: int | None = None) -> dict:
    """Score one corpus file into out/<rel>; returns its counters. Pure in
    (config, file): the same input gives the same bytes, on any worker."""
    import pyarrow.parquet as pq
    import torch

    cfg = ScoreConfig(**cfg_dict)
    _quiet_transformers()
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    scorer = _scorer(cfg, _worker_device(cfg.device))
    reader = _FileReader(cfg, rel)
    stats = {"file": rel, "documents": 0, **{st.value: 0 for st in Status}, "tokens": 0, "duplicate_ids": 0}
    seen: set = set()
    with atomic_path(Path(cfg.out) / rel) as tmp:  # renamed onto out/<rel> only when the whole file is scored
        writer = None
        try:
            for texts, ids, domain in reader.batches():
                res = scorer.score_texts(texts)
                table = scores_table(ids, res, domain)
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                _count(stats, res, ids, seen)
            writer = writer or pq.ParquetWriter(tmp, scores_schema())  # no rows: still an (empty) output
        finally:
            if writer is not None:
                writer.close()
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        write_json(stats, Path(cfg.out) / STATS_DIR / f"{rel}.json")  # before the rename: output => stats
    return stats


# ----------------------------------------------------------------- driver


def _check_out_dir(cfg: ScoreConfig, fp: dict) -> None:
    out, corpus = Path(cfg.out).resolve(), Path(cfg.corpus).resolve()
    if out == corpus or corpus in out.parents:
        raise AttninfError(f"--out {cfg.out} is inside the corpus directory; nothing is ever written there")
    man = out / MANIFEST
    if not man.exists():
        if out.exists() and any(out.rglob("*.parquet")):
            raise AttninfError(f"{cfg.out} holds Parquet files but no {MANIFEST}: choose an empty --out")
        return
    old = Scores.read(out).fingerprint
    if old == fp:
        return
    diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
    if not cfg.overwrite:
        raise AttninfError(f"{cfg.out} holds scores from a different run (differs in: {', '.join(diff)}); "
                           "pass --overwrite to redo them, or choose another --out")
    log.warning("--overwrite: removing scores made with another fingerprint from %s", cfg.out)
    for p in out.rglob("*.parquet"):
        p.unlink()
    shutil.rmtree(out / STATS_DIR, ignore_errors=True)


def _clean_tmp(out: Path) -> None:
    for p in out.rglob(".*.tmp-*"):
        p.unlink(missing_ok=True)


def _client(cfg: ScoreConfig, workers: int):
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        raise AttninfError("dask[distributed] is not installed: pip install 'dask[distributed]', "
                           "or score in this process with --workers 0") from e
    address = cfg.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        try:
            return Client(address, timeout="20s"), None
        except OSError as e:
            raise AttninfError(f"cannot reach the Dask scheduler at {address}: {_one_line(e)}") from e
    if not log.isEnabledFor(logging.INFO):  # Dask's own INFO lines only with --verbose
        for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker",
                     "distributed.core", "distributed.http.proxy"):
            logging.getLogger(name).setLevel(logging.ERROR)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster), cluster


def default_workers(device: str) -> int:
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 1


class _Progress:
    """The driver's view of a run: a bar over documents, tokens per second,
    and the files that failed (with one line each)."""

    def __init__(self, rows: dict[str, int], todo: list[str], failures: dict, say, show: bool):
        from tqdm.auto import tqdm

        self.rows, self.failures, self.say = rows, failures, say
        self.bar = tqdm(total=sum(rows[f] for f in todo), unit="doc", disable=not show, dynamic_ncols=True,
                        desc="score")
        self.tokens = 0
        self.t0 = time.perf_counter()

    def finished(self, rel: str, stats: dict | None = None, error: str | None = None) -> None:
        if error is not None:
            self.failures[rel] = error
            self.say(f"failed: {rel}: {error}")
        else:
            self.tokens += stats["tokens"]
        self.bar.update(self.rows[rel])
        self.bar.set_postfix_str(f"{self.tokens_per_s():,.0f} tok/s, {len(self.failures)} failed")

    def tokens_per_s(self) -> float:
        return self.tokens / max(time.perf_counter() - self.t0, 1e-9)


def _score_here(cfg_dict: dict, todo: list[str], progress: _Progress) -> None:
    """--workers 0: every file in this process, one after the other."""
    for rel in todo:
        try:
            progress.finished(rel, score_file(cfg_dict, rel))
        except AttninfError:
            raise
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
            progress.finished(rel, error=_one_line(e))


def _score_on_dask(cfg: ScoreConfig, cfg_dict: dict, todo: list[str], workers: int, progress: _Progress) -> None:
    """One task per file on a local cluster (or the one at --scheduler)."""
    from distributed import as_completed

    client, cluster = _client(cfg, workers)
    threads = None if cluster is None else max(1, (os.cpu_count() or 1) // workers)
    try:
        futs = {client.submit(score_file, cfg_dict, rel, threads, pure=False,
                              key=f"attninf-score-{uuid.uuid4().hex[:8]}-{rel}"): rel for rel in todo}
        for fut in as_completed(futs):
            rel = futs[fut]
            try:
                progress.finished(rel, fut.result())
            except AttninfError as e:
                raise AttninfError(f"{rel}: {e}") from e
            except Exception as e:  # noqa: BLE001 - includes KilledWorker after retries
                progress.finished(rel, error=_one_line(e))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _start(cfg: ScoreConfig, say) -> tuple[ScoreConfig, list[str], dict[str, int], dict[str, str], dict]:
    """Check the corpus and the output directory, resolve the domains, write
    the manifest that says the run started; (cfg, files, rows per readable
    file, unreadable files, manifest)."""
    files = list_files(cfg.corpus)
    rows, bad, with_domain = inspect(cfg.corpus, files, cfg.text_column, cfg.domain_column)
    mode, why = resolve_domains(cfg.domain_from, [f for f in files if f in rows], with_domain, cfg.domain_column)
    say(f"domains: {why}")
    cfg = dataclasses.replace(cfg, domain_from=mode)
    fp = run_fingerprint(cfg)
    _check_out_dir(cfg, fp)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _clean_tmp(out)
    manifest = {"fingerprint": fp, "corpus": str(Path(cfg.corpus).resolve()), "files": len(files),
                "corpus_files": corpus_signature(cfg.corpus, [f for f in files if f in rows]),
                "domains": {"from": mode, "why": why},
                "config": dataclasses.asdict(cfg), "started": _now()}
    Scores.write_manifest(out, manifest)
    for rel, err in bad.items():
        say(f"unreadable: {rel}: {err}")
    return cfg, files, rows, bad, manifest


def run_score(cfg: ScoreConfig, progress: bool = True, say: Callable[[str], None] = print) -> dict:
    """Score the corpus; returns the summary (also written to the manifest)."""
    t0 = time.perf_counter()
    cfg, files, rows, bad, manifest = _start(cfg, say)
    out = Path(cfg.out)
    todo = [f for f in files if f in rows and not (out / f).exists()]
    done = [f for f in files if f in rows and (out / f).exists()]
    if done:
        say(f"resuming: {len(done)} of {len(files)} files already scored, {len(todo)} to go")
    failures = dict(bad)
    workers = cfg.workers if cfg.workers is not None else default_workers(cfg.device)
    prog = _Progress(rows, todo, failures, say, progress)
    if todo and workers == 0:
        _score_here(dataclasses.asdict(cfg), todo, prog)
    elif todo:
        _score_on_dask(cfg, dataclasses.asdict(cfg), todo, workers, prog)
    prog.bar.close()

    scores = Scores(out, manifest)
    totals = {k: 0 for k in ("documents", "ok", "empty", "too_short", "tokens", "duplicate_ids")}
    for st in (scores.file_stats(rel) for rel in files if rel not in failures):
        for k in totals:
            totals[k] += (st or {}).get(k, 0)
    summary = {**totals, "files": len(files), "files_scored_now": len(todo) - len(set(todo) & set(failures)),
               "files_skipped": len(done), "failures": failures, "wall_s": round(time.perf_counter() - t0, 2),
               "new_tokens": prog.tokens, "tokens_per_s": round(prog.tokens_per_s(), 1), "workers": workers}
    manifest.update({"finished": _now(), "summary": summary, "complete": not failures})
    Scores.write_manifest(out, manifest)
    return summary


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def dry_run(cfg: ScoreConfig, limit: int, say: Callable[[str], None] = print) -> dict:
    """Score the first `limit` documents in this process, write nothing, and
    project the time for the whole corpus."""
    import pyarrow.parquet as pq

    files = list_files(cfg.corpus)
    rows, bad, _ = inspect(cfg.corpus, files, cfg.text_column)
    total_docs = sum(rows.values())
    texts: list = []
    for rel in files:
        if rel not in rows or len(texts) >= limit:
            continue
        for batch in pq.ParquetFile(Path(cfg.corpus) / rel).iter_batches(batch_size=1024, columns=[cfg.text_column]):
            texts.extend(batch.column(0).to_pylist())
            if len(texts) >= limit:
                break
    texts = texts[:limit]
    scorer = _scorer(cfg, cfg.device)
    t0 = time.perf_counter()
    res = scorer.score_texts(texts)
    el = time.perf_counter() - t0
    tokens = int(res["n_tokens"].sum())
    workers = cfg.workers if cfg.workers else 1
    projected = el / max(len(texts), 1) * total_docs / workers
    return {"documents": len(texts), "tokens": tokens, "seconds": round(el, 2),
            "tokens_per_s": round(tokens / max(el, 1e-9), 1), "corpus_documents": total_docs,
            "unreadable_files": len(bad), "projected_hours": round(projected / 3600, 3),
            "statuses": {s: int((res["status"] == s).sum()) for s in set(res["status"].tolist())},
            "mean_score": float(res["score"][res["status"] == "ok"].mean()) if (res["status"] == "ok").any() else None}
