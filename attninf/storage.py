"""How attninf reads and writes files: atomic writes (a file or a whole
folder appears complete or not at all), JSON manifests, the Parquet files
of a folder in a fixed order, and corpus rows read back by position. The
stage outputs built on these are typed in attninf.artifacts."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import AttninfError


def utc_now() -> str:
    """The time every manifest records (created, started, finished): UTC, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


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


@contextmanager
def replaced_dir(dst: str | Path) -> Iterator[Path]:
    """A new empty directory beside dst to build a whole output in. When the
    block ends without error it takes dst's place whole: an earlier output,
    and anything else that was in dst, is gone, so dst never mixes two runs'
    files. When it fails it is removed and dst is left as it was."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = dst.with_name(f".{dst.name}.tmp-{tag}")
    tmp.mkdir()
    try:
        yield tmp
        old = dst.with_name(f".{dst.name}.old-{tag}")
        if dst.exists():
            os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_replaceable(out: str | Path, command: str, owns, overlaps: dict[str, str | Path]) -> None:
    """Refuse an output folder that `command` would replace whole (replaced_dir)
    when it overlaps one of its inputs, or holds a file `owns(name)` does not
    claim: something no earlier run of the command wrote."""
    out_r = Path(out).resolve()
    for name, p in overlaps.items():
        p = Path(p).resolve()
        if p == out_r or out_r in p.parents or p in out_r.parents:
            raise AttninfError(f"--out {out} and the {name} ({p}) overlap: `attninf {command}` replaces its "
                               "output folder whole; choose another --out")
    if out_r.is_dir():
        other = sorted(p.name for p in out_r.iterdir() if not owns(p.name))
        if other:
            raise AttninfError(f"--out {out} holds files `attninf {command}` did not write (e.g. {other[0]}) and "
                               "it replaces the folder whole: choose a new or empty --out")


def write_json(obj, path: str | Path, indent: int = 1) -> None:
    """JSON written atomically (non-JSON values, e.g. numpy scalars, as str)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=str))


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | Path, missing: str, fix: str) -> dict:
    """A JSON mapping written by a stage; one-line errors: `missing` when the
    file is not there, "damaged ...: fix" when it does not parse."""
    path = Path(path)
    if not path.is_file():
        raise AttninfError(missing)
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise AttninfError(f"{path} is damaged ({e}): {fix}") from e
    if not isinstance(data, dict):
        raise AttninfError(f"{path} is damaged (not a mapping): {fix}")
    return data


def corpus_texts(corpus: str | Path, rel: str, rows, column: str = "text") -> dict[int, str | None]:
    """{row: text} of some rows of one corpus file, reading each row group
    that holds one of them once (never the whole text column)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(Path(corpus) / rel)
    wanted, out, start = sorted(set(int(r) for r in rows)), {}, 0
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        here = [r for r in wanted if start <= r < start + n]
        if here:
            col = pf.read_row_group(i, columns=[column])[column]
            out.update({r: col[r - start].as_py() for r in here})
        start += n
    missing = [r for r in wanted if r not in out]
    if missing:
        raise AttninfError(f"{rel} has no row {missing[0]}")
    return out


def corpus_text(corpus: str | Path, rel: str, row: int, column: str = "text") -> str | None:
    """The text of one corpus row, reading only the row group that holds it."""
    return corpus_texts(corpus, rel, [row], column)[row]
