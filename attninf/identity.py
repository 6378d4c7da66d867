"""What identifies an output: keys made from everything that decides it.

A stage's output is reused only when the key it was made with equals the
key of what it would read now. A key covers two things:

* settings: the stage's config, less the fields that change how it runs
  and not what it writes (workers, scheduler, ...);
* inputs, by content, never by path alone: the corpus by its files'
  signature (relative path, size, rows, footer hash), a stage output by its
  manifest (written last by every writer of that output, so any rewrite
  changes it, while a copied or moved workdir keeps it), a single file
  (heads.json, a model config YAML) by its bytes, a model by its
  fingerprint (config and weight hashes).

Keys are short sha256 hex digests of canonical JSON. No key reads a file's
modification time, and an input is never keyed by its path alone; a
manifest's bytes hold its write time, which is what makes every rewrite of an
output a new key.

Every rule that says "same run or not" lives here, in this order: the
generic keys; the rule that says a corpus file changed (its signature is
made by attninf.corpus, which reads the formats); the scores
digests that tie a selection to its scores; the score run's fingerprint
(model, heads, settings, SCORING_VERSION); the model fingerprint's parts
(config and weight hashes, cached by path, size and mtime under the attninf
home: a cache of a content hash, never a key by itself). This module only
computes keys from what it is given; it loads, pulls and reads no stage
output, so it imports nothing of attninf: model.model_fingerprint finds a
model's config and files and hashes them with these rules, and the runner's
stage keys (attninf/runner.py) are built from them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any


def digest(obj: Any) -> str:
    """sha256 (16 hex) of obj as canonical JSON (non-JSON values as str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def settings_of(settings: Any, leave_out: tuple[str, ...] = ()) -> Any:
    """A config dataclass (or mapping) as a mapping, less `leave_out`."""
    s = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else settings
    if isinstance(s, dict):
        s = {k: v for k, v in s.items() if k not in leave_out}
    return s


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes, read in 4 MiB chunks (model.py caches
    it for weight files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def file_key(path) -> str | None:
    """sha256 (16 hex) of a file's bytes (a path or a URL); None when there is no such file."""
    from .stores import RemotePath, location

    p = location(path)
    if isinstance(p, RemotePath):
        return hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else None
    return file_sha256(p)[:16] if p.is_file() else None


def output_key(manifest: str | Path) -> str | None:
    """A stage output by its manifest's bytes (None while it has none)."""
    return file_key(manifest)


# ------------------------------------------------------------------ corpus


def same_file(recorded, now) -> bool:
    """Whether a file's signature now is the one recorded. Signatures recorded
    before the footer sha was added ([size, rows]) compare on what they hold."""
    recorded = list(recorded or [])
    return bool(recorded) and list(now)[:len(recorded)] == recorded


# ------------------------------------------------------------------ scores


class ScoreDigest:
    """The digest of one scores file's score column (float64, nulls as NaN),
    fed in batches by a reader that streams the file (the report)."""

    def __init__(self, rows: int):
        self._h = hashlib.sha256(f"{rows}|".encode())

    def update(self, scores) -> "ScoreDigest":
        import numpy as np

        self._h.update(np.ascontiguousarray(np.asarray(scores, dtype=np.float64)).tobytes())
        return self

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def score_file_digest(scores) -> str:
    """Digest of one scores file's whole score column."""
    return ScoreDigest(len(scores)).update(scores).hexdigest()


def combine_digests(per_file: dict[str, str]) -> str:
    """One digest of a scores directory from its files' digests, in path order."""
    h = hashlib.sha256()
    for rel in sorted(per_file):
        h.update(f"{rel}|{per_file[rel]}\n".encode())
    return h.hexdigest()[:16]


def scores_digest(root, files: list[str]) -> str:
    """Which scores files, with every score: a rescore changes it, a copy does
    not. Reads the score column only (8 bytes a row); a stage that reads the
    scores anyway combines score_file_digest of what it read instead."""
    import pyarrow.parquet as pq

    from .stores import location, readable

    return combine_digests({rel: score_file_digest(
        pq.read_table(readable(location(root) / rel), columns=["score"])["score"].to_numpy(zero_copy_only=False))
        for rel in files})


SCORING_VERSION = 3  # bump when the numbers a given score config produces change


def heads_digest(heads: list) -> str:
    """sha256 of a head list, independent of its order."""
    canon = sorted([int(l), int(h)] for l, h in heads)
    return hashlib.sha256(json.dumps(canon).encode()).hexdigest()


def score_fingerprint(cfg, heads, model_fp: dict) -> dict:
    """What decides a score run's numbers: a ScoreConfig's settings that
    matter, the model (model.model_fingerprint, computed without loading its
    weights), the heads (artifacts.Heads; every head set of --head-fracs),
    the tokenizer, the scoring code's version. Scores are reused only under
    an equal fingerprint."""
    from .headsets import head_sets
    from .devices import resolve_device, resolve_dtype

    mfp = model_fp
    (_, first), *more = head_sets(cfg.head_fracs, heads)
    return {
        "model": mfp["fingerprint"],
        "heads_sha256": heads_digest(first),
        # the sets scored beside `score`, by column tag; absent without them: older runs still match
        # (a list: their order is the columns' order, so another order is another run)
        **({"head_sets": [[tag, heads_digest(hs)] for tag, hs in more]} if more else {}),
        "max_tokens": cfg.max_tokens,
        "context_overlap": cfg.context_overlap,
        "doc_prefix": cfg.doc_prefix or (heads.data.get("doc_prefix") or {}).get("tokens"),
        "domain_from": cfg.domain_from,
        # the column each row's domain is read from (only when it is read from one)
        **({"domain_column": cfg.domain_column} if cfg.domain_from == "column" else {}),
        "truncate": cfg.truncate,
        "dtype": str(resolve_dtype(cfg.dtype, resolve_device(cfg.device))).replace("torch.", ""),
        "text_column": cfg.text_column,
        "id_column": cfg.id_column,
        "chunk_docs": cfg.chunk_docs,  # where batches start: the float rounding of a packed batch
        "rows_per_chunk": cfg.rows_per_chunk,
        "scoring_version": SCORING_VERSION,
        "tokenizer": mfp.get("tokenizer_sha256"),
        **({"token_stats": True} if cfg.save_token_stats else {}),  # absent when off: older runs still match
    }


def recorded_score_fingerprint(earlier) -> dict:
    """An earlier score run's fingerprint (artifacts.Scores), with the keys
    added since then filled from the config it recorded: scores made before
    domain_column was a key still resume when it is the same column."""
    old = dict(earlier.fingerprint)
    if "domain_column" not in old and old.get("domain_from") == "column":
        old["domain_column"] = earlier.config.get("domain_column", "domain")
    return old


# ------------------------------------------------------------------- model


def cached_file_sha256(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) under the attninf home."""
    from . import paths

    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = paths.home() / "digests.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    from .storage import write_text

    value = file_sha256(path)
    cache[key] = value
    try:
        write_text(json.dumps(cache), cache_file)
    except OSError:
        pass  # a read-only home only costs a re-hash next time
    return value


_VOLATILE_CONFIG_KEYS = {
    "_name_or_path", "transformers_version", "dtype", "torch_dtype", "_attn_implementation",
    "_attn_implementation_internal", "_commit_hash", "quantization_config", "use_cache",
}


def config_digest(config) -> str:
    d = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS and not k.startswith("_")}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def weights_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.name):
        h.update(f.name.encode())
        h.update(cached_file_sha256(f).encode())
    return h.hexdigest()


def fingerprint(config, weight_files: list[Path], name: str) -> dict:
    c = config_digest(config)
    w = weights_digest(weight_files) if weight_files else None
    short = hashlib.sha256(f"{c}|{w}".encode()).hexdigest()[:16]
    return {"name": name, "config_sha256": c, "weights_sha256": w, "fingerprint": short}


def tokenizer_digest(path: Path) -> str | None:
    """sha256 over a model or tokenizer directory's tokenizer files (cached
    like the weights'); None when it has none."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.startswith(
        ("tokenizer", "special_tokens", "vocab", "merges")))
    return weights_digest(files) if files else None
