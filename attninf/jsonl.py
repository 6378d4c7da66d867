"""JSON Lines corpus files (plain, gzip, zstandard): their lines, their
row index, and their rows read back by position as Arrow tables.

A row is a non-blank line holding one JSON object; a missing key is null, a
blank line is no row; the keys a caller names `as_text` (ids, domains) are
read as text whatever JSON type they hold. The rows are counted by one pass
over the file (`JsonLines.index`), which also hashes the decompressed bytes
(the file's content signature) and records the byte offset of every
INDEX_STRIDE-th row of an uncompressed file, where a read then seeks; a read
of a compressed file streams from its start and skips lines. The index is
cached under the attninf home by path, size and modification time (or the
store's version) and checked against the file's first and last 64 KiB.
attninf.corpus dispatches to this module; nothing else reads it.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Iterator

from .errors import AttninfError, one_line

INDEX_STRIDE = 4096  # rows between the byte offsets an uncompressed file's index records
INDEX_VERSION = 2  # 2: the index holds the sha256 of the file's decompressed bytes
READ_BUFFER = 1 << 20


def open_raw(path, rel: str):
    """A corpus file opened for reading (bytes as stored); one line when it is gone."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise AttninfError(f"{rel} is missing from the corpus") from None


class JsonLines:
    """One JSON Lines file of a corpus (path: a Path or a RemotePath; rel:
    its name in the corpus, for messages; compression: None, gzip or zstd)."""

    def __init__(self, path, rel: str, compression: str | None):
        self.path, self.rel, self.compression = path, rel, compression
        self._index = None

    def _raw(self):
        return open_raw(self.path, self.rel)

    def lines(self) -> Iterator[bytes]:
        """The decompressed lines, as bytes; a corrupt stream is a one-line error."""
        import gzip
        import zlib

        raw = self._raw()
        try:
            if self.compression == "gzip":
                stream = gzip.GzipFile(fileobj=raw)
            elif self.compression == "zstd":
                import zstandard

                stream = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True),
                                           buffer_size=READ_BUFFER)
            else:
                stream = raw
            yield from stream
        except (OSError, EOFError, zlib.error) as e:
            raise AttninfError(f"{self.rel}: corrupt {self.compression or 'file'} ({one_line(e)})") from e
        except Exception as e:  # noqa: BLE001 - zstandard.ZstdError and the store's errors
            if type(e).__name__ == "ZstdError":
                raise AttninfError(f"{self.rel}: corrupt zstd stream ({one_line(e)})") from e
            raise
        finally:
            raw.close()

    def first_record(self) -> dict:
        for n, line in enumerate(self.lines(), 1):
            if line.strip():
                return _record(line, self.rel, n)
        return {}

    def _identity(self) -> str | None:
        """The cache key of the index: path, size and modification time (or
        the store's version); None when the store gives neither (no cache)."""
        st = self.path.stat()
        when = getattr(st, "version", "") or getattr(st, "st_mtime_ns", None) or st.st_mtime
        if not when:
            return None
        where = str(self.path.resolve()) if isinstance(self.path, Path) else str(self.path)
        return hashlib.sha256(f"{INDEX_VERSION}|{where}|{st.st_size}|{when}".encode()).hexdigest()[:24]

    def _edges(self) -> str:
        """sha256 of the raw file's first and last 64 KiB: a cached index is
        used only while they are unchanged (a file replaced by another of the
        same size with its modification time kept, `cp -p`, is seen)."""
        with self._raw() as f:
            h = hashlib.sha256(f.read(1 << 16))
            size = self.path.stat().st_size
            if size > 1 << 17:
                f.seek(size - (1 << 16))
                h.update(f.read())
        return h.hexdigest()

    def index(self) -> dict:
        """{"rows": non-blank lines, "offsets": byte offset of every
        INDEX_STRIDE-th row (uncompressed files only), "sha256": of the
        decompressed bytes}: one pass over the file, cached by its path, size
        and modification time (or the store's version, e.g. its ETag)."""
        if self._index is not None:
            return self._index
        from . import paths

        key = self._identity()
        cache = paths.home() / "jsonl-index" / f"{key}.json" if key else None
        edges = self._edges()
        try:
            cached = json.loads(cache.read_text()) if cache else None
            if cached and cached.get("edges") == edges:
                self._index = cached
                return cached
        except (OSError, ValueError):
            pass
        rows, offsets, pos, h = 0, [], 0, hashlib.sha256()
        for line in self.lines():
            h.update(line)
            if line.strip():
                if rows % INDEX_STRIDE == 0:
                    offsets.append(pos)
                rows += 1
            pos += len(line)
        self._index = {"rows": rows, "offsets": offsets if not self.compression else [], "sha256": h.hexdigest(),
                       "edges": edges}
        try:
            if cache:
                from .storage import write_text

                write_text(json.dumps(self._index), cache)
        except OSError:
            pass  # a read-only home only costs a pass next time
        return self._index

    def read(self, columns: list[str], start: int, end: int, step: int, text: str | None = None,
             as_text: tuple[str, ...] = ()) -> Iterator:
        """Tables of exactly `step` rows (the last may be shorter) of these
        keys, covering rows [start, end); `text` must hold strings or null."""
        import pyarrow as pa

        types: dict[str, object] = {c: pa.string() for c in (*as_text, text) if c}
        values: dict[str, list] = {c: [] for c in columns}
        first_line = None
        for row, lineno, line in self.rows_from(start):
            if row >= end:
                break
            rec = _record(line, self.rel, lineno, row)
            first_line = first_line or (lineno, row)
            for c in columns:
                v = rec.get(c)
                values[c].append(_as_text(v, self.rel, lineno, row, c) if c in as_text and v is not None else v)
            if len(values[columns[0]]) == step:
                yield _table(values, columns, types, self.rel, first_line)
                values, first_line = {c: [] for c in columns}, None
        if values[columns[0]]:
            yield _table(values, columns, types, self.rel, first_line)

    def texts(self, wanted: list[int], column: str) -> dict[int, str | None]:
        """{row: value of `column`} of some rows (sorted, not empty), in one streaming read."""
        out, want = {}, set(wanted)
        for row, lineno, line in self.rows_from(wanted[0]):
            if row in want:
                out[row] = _record(line, self.rel, lineno, row).get(column)
            if row >= wanted[-1]:
                break
        return out

    def rows_from(self, start: int) -> Iterator[tuple[int, int, bytes]]:
        """(row, line number, line) from row `start` on: an uncompressed file
        seeks to the nearest indexed row, a compressed one is read from its start."""
        row, lineno, skip_to = 0, 0, start
        offsets = self.index()["offsets"] if not self.compression and start >= INDEX_STRIDE else []
        if offsets:
            k = min(start // INDEX_STRIDE, len(offsets) - 1)
            yield from self._seek(offsets[k], k * INDEX_STRIDE, start)
            return
        for line in self.lines():
            lineno += 1
            if not line.strip():
                continue
            if row >= skip_to:
                yield row, lineno, line
            row += 1

    def _seek(self, offset: int, row: int, start: int):
        raw = self._raw()
        try:
            raw.seek(offset)
            for line in raw:
                if not line.strip():
                    continue
                if row >= start:
                    yield row, None, line
                row += 1
        finally:
            raw.close()


def _record(line: bytes, rel: str, lineno: int | None, row: int | None = None) -> dict:
    where = f"line {lineno}" if lineno is not None else f"row {row}"
    try:
        rec = json.loads(line)
    except ValueError as e:
        raise AttninfError(f"{rel} {where}: not JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(rec, dict):
        raise AttninfError(f"{rel} {where}: a JSON {type(rec).__name__}, not an object")
    return rec


def _as_text(v, rel: str, lineno: int | None, row: int, key: str) -> str:
    """An id or domain value as text: a string as it is, a number or a
    boolean as JSON writes it; a list or an object is an error."""
    if isinstance(v, str):
        return v
    if isinstance(v, (dict, list)):
        where = f"line {lineno}" if lineno is not None else f"row {row}"
        raise AttninfError(f"{rel} {where}: key {key!r} holds a JSON {type(v).__name__}, not a value")
    return json.dumps(v)


def _table(values: dict, columns: list[str], types: dict, rel: str, first: tuple):
    """Arrow columns of JSON values; a column's type is fixed by its first
    batch with a value (an integer id stays an integer, text is a string)."""
    import pyarrow as pa

    arrays = []
    for c in columns:
        try:
            a = pa.array(values[c], type=types.get(c))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            lineno, row = first
            where = f"line {lineno}" if lineno else f"row {row}"
            if types.get(c) == pa.string() and not any(isinstance(v, str) for v in values[c]):
                raise AttninfError(f"{rel}: key {c!r} is not text in the rows from {where} on "
                                   f"(e.g. {next(v for v in values[c] if v is not None)!r})") from None
            raise AttninfError(f"{rel}: key {c!r} holds values of more than one type in the rows from "
                               f"{where} on ({one_line(e)})") from None
        if c not in types and not pa.types.is_null(a.type):
            types[c] = a.type
        arrays.append(a)
    return pa.Table.from_arrays(arrays, names=columns)
