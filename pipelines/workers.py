"""What a worker does with a unit: load the scorer once per process (on its
own GPU when there are several), read the unit's rows, score them in
batches counted from the unit's first row, and write the unit's part."""
from __future__ import annotations

import json
import time
from typing import Any

from attninf.artifacts import scores_schema, scores_table
from attninf.storage import atomic_path

from attninf.pipelines.score_config import ScoreConfig, extra_tags
from attninf.pipelines.units import Unit, UnitReader, part_path

_SCORERS: dict[str, Any] = {}  # per process: the model is loaded once per worker, not per task


def scorer_for(cfg: ScoreConfig, device: str):
    from attninf.scoring import load_scorer

    key = json.dumps([cfg.model, cfg.heads, cfg.dtype, device, cfg.max_tokens, cfg.batch_tokens, cfg.truncate,
                      cfg.context_overlap, cfg.doc_prefix, cfg.head_fracs])
    if key not in _SCORERS:
        _SCORERS.clear()  # one model per worker
        _SCORERS[key] = load_scorer(cfg.model, cfg.heads, dtype=cfg.dtype, device=device,
                                    max_tokens=cfg.max_tokens, batch_tokens=cfg.batch_tokens,
                                    truncate=cfg.truncate, allow_pickle=cfg.allow_pickle,
                                    trust_remote_code=cfg.trust_remote_code,
                                    context_overlap=cfg.context_overlap, doc_prefix=cfg.doc_prefix,
                                    head_fracs=cfg.head_fracs)
    return _SCORERS[key]


def worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "local"


def worker_device(device: str) -> str:
    """One worker per GPU: a local worker named N takes cuda:N."""
    import torch

    if device != "auto" or not torch.cuda.is_available():
        return device
    try:
        return f"cuda:{int(worker_name()) % torch.cuda.device_count()}"
    except ValueError:
        return "cuda"


def _quiet_transformers() -> None:
    """Workers load weights without per-worker progress bars in the driver's output."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _score_batch(scorer, texts: list, token_stats: bool = False) -> dict:
    """score_texts, retried with half the packed batch on a GPU out-of-memory
    (down to one window per row) before giving up."""
    import torch

    forward = scorer.forward
    full = forward.batch_tokens
    try:
        while True:
            try:
                return scorer.score_texts(texts, token_stats=True) if token_stats else scorer.score_texts(texts)
            except torch.cuda.OutOfMemoryError:
                if forward.batch_tokens <= scorer.max_tokens:
                    raise
                torch.cuda.empty_cache()
                forward.batch_tokens = max(scorer.max_tokens, forward.batch_tokens // 2)
    finally:
        forward.batch_tokens = full


def progress_to(topic: str):
    """A progress callback for a unit on a Dask worker: each batch's
    (unit, rows, tokens) goes to the driver as an event on `topic`."""
    def report(unit: Unit, rows: int, tokens: int) -> None:
        try:
            from distributed import get_worker

            get_worker().log_event(topic, {"unit": str(unit), "rows": rows, "tokens": tokens})
        except (ImportError, ValueError):  # not on a worker: nobody to tell
            pass
    return report


def score_unit(cfg: ScoreConfig, unit: Unit, threads: int | None = None, progress=None) -> dict:
    """Score one unit (cfg: a ScoreConfig) into its part file; returns where
    it ran and how long it took. Pure in (config, unit): the same input gives
    the same bytes, on any worker. progress(unit, rows, tokens) is called
    after each batch of documents, so that a bar moves inside a long unit."""
    import pyarrow.parquet as pq
    import torch

    _quiet_transformers()
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    scorer = scorer_for(cfg, worker_device(cfg.device))
    reader = UnitReader(cfg, unit.file)
    tokens = 0
    with atomic_path(part_path(cfg.out, unit)) as tmp:  # renamed into place only when the unit is scored
        writer = None
        try:
            for texts, ids, domain in reader.batches(unit.start, unit.end):
                res = _score_batch(scorer, texts, cfg.save_token_stats)
                table = scores_table(ids, res, domain, extra_tags(cfg))
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
                tokens += int(res["n_tokens"].sum())
                if progress is not None:
                    progress(unit, len(texts), int(res["n_tokens"].sum()))
            writer = writer or pq.ParquetWriter(tmp, scores_schema(token_stats=cfg.save_token_stats,
                                                                   head_sets=extra_tags(cfg)))
        finally:
            if writer is not None:
                writer.close()
    return {"unit": str(unit), "rows": unit.rows, "tokens": tokens, "worker": worker_name(),
            "seconds": round(time.perf_counter() - t0, 3)}
