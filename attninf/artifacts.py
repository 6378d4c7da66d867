"""What the stages' outputs promise each other, in one place: the name of the
missing domain, and the digests that tie a selection to the scores it was
made from and scores to the corpus they were made of.

The corpus signature reads only Parquet footers (paths, sizes, row counts),
the scores digest the score column; neither depends on modification times or
absolute paths: a workdir copied or moved elsewhere keeps its digests, a
rescore or a changed corpus does not.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Iterator

NO_DOMAIN = "(none)"  # the group of documents without a domain, in select, mix and report
MIX_MANIFEST = ".manifest.json"  # a dot-file, so that `datasets` does not take it for data


class Status(str, Enum):
    """Why a document has (or lacks) a score; written as its value."""

    OK = "ok"
    EMPTY = "empty"  # null, empty or whitespace-only text
    TOO_SHORT = "too_short"  # a single token: nothing to predict


def parquet_files(root: str | Path, skip: tuple[str, ...] = (".",)) -> list[str]:
    """Relative paths (posix, sorted) of the Parquet files under root, leaving
    out any whose path has a part starting with one of `skip` (temporaries,
    a killed job's pieces, `_stats`)."""
    root = Path(root)
    return sorted(rel for rel in (p.relative_to(root).as_posix() for p in root.rglob("*.parquet") if p.is_file())
                  if not any(part.startswith(skip) for part in rel.split("/")))


@contextmanager
def atomic_path(dst: str | Path) -> Iterator[Path]:
    """A temporary name beside dst (`.<name>.tmp-<hex>`) to write to, a file or
    a directory; renamed onto dst when the block ends without error, removed
    when it fails. So dst either does not exist or is complete: what resume
    logic relies on. (A directory dst must not exist when the block ends.)"""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()


def write_json(obj, path: str | Path, indent: int = 1) -> None:
    """JSON written atomically (non-JSON values, e.g. numpy scalars, as str)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=str))


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def domain_name(value) -> str:
    """The group name of a domain value: its text, or NO_DOMAIN for null."""
    return NO_DOMAIN if value is None else str(value)


def corpus_signature(root: str | Path, files: list[str]) -> dict[str, list[int]]:
    """{relative path: [size in bytes, rows]} of corpus files; rows -1 where
    the file cannot be read."""
    import pyarrow.parquet as pq

    out = {}
    for rel in sorted(files):
        p = Path(root) / rel
        try:
            rows = pq.ParquetFile(p).metadata.num_rows
        except Exception:  # noqa: BLE001 - an unreadable file still has a size
            rows = -1
        out[rel] = [p.stat().st_size, rows]
    return out


def corpus_mismatch(root: str | Path, recorded: dict[str, list[int]], files: list[str]) -> str | None:
    """Why the corpus at root is not the one recorded (for these files), or None."""
    for rel in files:
        p = Path(root) / rel
        if rel not in recorded:
            return f"{rel} was not part of the scored corpus"
        if not p.is_file():
            return f"{rel} is missing"
        now = corpus_signature(root, [rel])[rel]
        if now != list(recorded[rel]):
            return f"{rel} changed since it was scored (size, rows {now} vs {recorded[rel]})"
    return None


def score_file_digest(scores) -> str:
    """Digest of one scores file's score column (float64, nulls as NaN)."""
    import numpy as np

    values = np.ascontiguousarray(np.asarray(scores, dtype=np.float64))
    return hashlib.sha256(f"{len(values)}|".encode() + values.tobytes()).hexdigest()


def combine_digests(per_file: dict[str, str]) -> str:
    """One digest of a scores directory from its files' digests, in path order."""
    h = hashlib.sha256()
    for rel in sorted(per_file):
        h.update(f"{rel}|{per_file[rel]}\n".encode())
    return h.hexdigest()[:16]


def scores_digest(root: str | Path, files: list[str]) -> str:
    """Which scores files, with every score: a rescore changes it, a copy does
    not. Reads the score column only (8 bytes a row); a stage that reads the
    scores anyway combines score_file_digest of what it read instead."""
    import pyarrow.parquet as pq

    return combine_digests({rel: score_file_digest(
        pq.read_table(Path(root) / rel, columns=["score"])["score"].to_numpy(zero_copy_only=False))
        for rel in files})
