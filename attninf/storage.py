"""How attninf reads and writes files, on the local disk or on an fsspec
store (attninf.stores): atomic writes (a file or a whole folder appears
complete or not at all), JSON manifests, the Parquet files of a folder in a
fixed order. The stage outputs built on these are typed in
attninf.artifacts; the corpus is read by attninf.corpus."""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import AttninfError
from .stores import RemotePath, all_files, location


def utc_now() -> str:
    """The time every manifest records (created, started, finished): UTC, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def parquet_files(root, skip: tuple[str, ...] = (".",)) -> list[str]:
    """Relative paths (posix, sorted) of the Parquet files under root (a
    path or a URL), leaving out any whose path has a part starting with one
    of `skip` (temporaries, a killed job's pieces, `_stats`)."""
    return [rel for rel in all_files(location(root)) if rel.endswith(".parquet")
            and not any(part.startswith(skip) for part in rel.split("/"))]


@contextmanager
def atomic_path(dst) -> Iterator[Path]:
    """A temporary name beside dst (`.<name>.tmp-<hex>`) to write to, a file or
    a directory; renamed onto dst when the block ends without error, removed
    when it fails. So dst either does not exist or is complete: what resume
    logic relies on. (A directory dst must not exist when the block ends.)
    A remote dst (a file) is written under a local temporary name and
    uploaded when the block ends: the object appears whole or not at all."""
    dst = location(dst)
    if isinstance(dst, RemotePath):
        with tempfile.TemporaryDirectory(prefix=".attninf-upload-") as d:
            tmp = Path(d) / dst.name
            yield tmp
            dst.upload(tmp)
        return
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
def replaced_dir(dst, last: tuple[str, ...] = ()) -> Iterator[Path]:
    """A new empty directory beside dst to build a whole output in. When the
    block ends without error it takes dst's place whole: an earlier output,
    and anything else that was in dst, is gone, so dst never mixes two runs'
    files. When it fails it is removed and dst is left as it was.

    A remote dst has no rename: the output is built in a local temporary
    folder, then dst's old files go (its manifests, `last`, first), the new
    ones are uploaded, and the files named in `last` (the manifests readers
    check) are uploaded last: until they are, dst is an unfinished output."""
    dst = location(dst)
    if isinstance(dst, RemotePath):
        with tempfile.TemporaryDirectory(prefix=".attninf-out-") as d:
            yield Path(d)
            _publish(Path(d), dst, last)
        return
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


def _publish(src: Path, dst: RemotePath, last: tuple[str, ...]) -> None:
    """A local folder's files onto a remote folder that had another output:
    the old manifests removed first, then the old files, the new files, and
    the new manifests last."""
    def manifest_order(rel: str) -> tuple[bool, int]:  # manifests after data, a folder's after its subfolders'
        return rel.rsplit("/", 1)[-1] in last, -rel.count("/")

    for rel in sorted(all_files(dst), key=manifest_order, reverse=True):
        (dst / rel).unlink(missing_ok=True)
    new = sorted(all_files(src), key=manifest_order)
    for rel in new:
        (dst / rel).upload(src / rel)


def check_replaceable(out, command: str, owns, overlaps: dict[str, str | Path]) -> None:
    """Refuse an output folder that `command` would replace whole (replaced_dir)
    when it overlaps one of its inputs, or holds a file `owns(name)` does not
    claim: something no earlier run of the command wrote."""
    out_r = location(out).resolve()
    for name, p in overlaps.items():
        p = location(p).resolve()
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


def read_json(path, missing: str, fix: str) -> dict:
    """A JSON mapping written by a stage; one-line errors: `missing` when the
    file is not there, "damaged ...: fix" when it does not parse."""
    path = location(path)
    if not path.is_file():
        raise AttninfError(missing)
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise AttninfError(f"{path} is damaged ({e}): {fix}") from e
    if not isinstance(data, dict):
        raise AttninfError(f"{path} is damaged (not a mapping): {fix}")
    return data
