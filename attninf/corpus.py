"""The corpus: which files it holds, in which format, how many rows each
has, and its rows read back by position. Every stage that reads the corpus
(score, mix, compare, report's excerpts, explain) reads it here.

A corpus is a folder, a URL prefix of an fsspec store, or either followed by
a glob over the files' relative paths (`corpus/**/*.jsonl.zst`). Its files
are Parquet (`.parquet`) or JSON Lines (`.jsonl`, `.jsonl.gz`, `.jsonl.zst`,
and Dolma's `.json.gz`, `.json.zst`): the format is told by the name and
checked by the first bytes. Path parts starting with "." (temporaries) and
files named "_..." of no corpus format (`_SUCCESS` markers) are not corpus
files; any other file is an error.

A Parquet column and a JSON Lines key are the same thing here (text, id,
domain); attninf.jsonl reads JSON Lines files (rows, their index, ids and
domains as text).

The scores of a corpus file are one Parquet file named by `scores_name`:
the same relative path for a Parquet file, `.parquet` appended for JSON Lines
(`a/x.jsonl.zst` -> `a/x.jsonl.zst.parquet`); `corpus_name` is its inverse.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

from .errors import AttninfError
from .jsonl import JsonLines, open_raw
from .stores import RemotePath, all_files, location, readable

PARQUET, JSONL = "parquet", "jsonl"
FORMATS = {".parquet": (PARQUET, None), ".jsonl": (JSONL, None), ".jsonl.gz": (JSONL, "gzip"),
           ".jsonl.zst": (JSONL, "zstd"), ".json.gz": (JSONL, "gzip"), ".json.zst": (JSONL, "zstd")}
ACCEPTED = ", ".join(FORMATS)
_MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}
READ_BUFFER = 1 << 20  # Parquet column chunks read page by page: memory does not grow with a row group's size


def format_suffix(rel: str) -> str | None:
    """The corpus-format suffix a file's name ends with (the longest), or None."""
    return next((x for x in sorted(FORMATS, key=len, reverse=True) if rel.endswith(x)), None)


def format_of(rel: str) -> tuple[str, str | None] | None:
    """(parquet | jsonl, compression) told by the file's name; None for another file."""
    suffix = format_suffix(rel)
    return FORMATS[suffix] if suffix else None


def scores_name(rel: str) -> str:
    """The scores file of a corpus file (relative path)."""
    return rel if rel.endswith(".parquet") else rel + ".parquet"


def corpus_name(scores_rel: str) -> str:
    """The corpus file a scores file belongs to (the inverse of scores_name;
    a corpus file's own name is returned as it is)."""
    stem = scores_rel[: -len(".parquet")] if scores_rel.endswith(".parquet") else ""
    return stem if (format_of(stem) or (None,))[0] == JSONL else scores_rel


def _skipped(rel: str) -> bool:
    """Not a corpus file: under a dot-folder or a dot-file (temporaries), or
    a marker like `_SUCCESS` (a name starting with "_" of no corpus format)."""
    name = rel.rsplit("/", 1)[-1]
    return any(part.startswith(".") for part in rel.split("/")) or (name.startswith("_") and not format_of(name))


def _glob_regex(pattern: str):
    """A glob over relative paths as a regex: `*` and `?` stay inside one
    folder, `**/` is any number of folders (none included), `[...]` a class."""
    import re

    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1:j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = j + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _split_glob(spec: str) -> tuple[str, str | None]:
    """(root, pattern): a spec with glob characters is cut at the last '/'
    before the first of them."""
    first = min((i for i, c in enumerate(spec) if c in "*?["), default=None)
    if first is None:
        return spec, None
    cut = spec.rfind("/", 0, first)
    if cut < 0:
        return ".", spec
    return spec[:cut] or "/", spec[cut + 1:]


class Corpus:
    """A corpus given as a folder, a URL prefix or a glob."""

    def __init__(self, spec: str | Path):
        self.spec = str(spec)
        root, self.pattern = _split_glob(self.spec)
        self.root = location(root)
        self._files: dict[str, CorpusFile] = {}  # opened once: a JSON Lines index is read once per run

    def __str__(self) -> str:
        return self.spec

    def exists(self) -> bool:
        return self.root.is_dir() if not isinstance(self.root, RemotePath) else self.root.exists()

    def files(self) -> list[str]:
        """Relative paths (posix, sorted) of the corpus files; one-line
        errors for a missing folder, an empty one, a file of no known format,
        and two files that would share a scores file."""
        if not self.exists():
            raise AttninfError(f"corpus directory not found: {self.root}")
        rels = [r for r in all_files(self.root) if not _skipped(r)]
        if self.pattern:
            rx = _glob_regex(self.pattern)
            rels = [r for r in rels if rx.match(r)]
        unknown = [r for r in rels if format_of(r) is None]
        if unknown:
            raise AttninfError(f"{self.root}/{unknown[0]} is not a corpus file ({len(unknown)} such file(s)): a "
                               f"corpus holds {ACCEPTED} files; move it out or give a glob, e.g. "
                               f"{self.root}/**/*.parquet")
        if not rels:
            raise AttninfError(f"no corpus files ({ACCEPTED}) under {self.spec}")
        ambiguous = [r for r in rels if r.endswith(".parquet") and corpus_name(r) != r]
        if ambiguous:
            raise AttninfError(f"{ambiguous[0]}: a Parquet file named like the scores of a JSON Lines file; "
                               "rename it (drop the inner suffix)")
        seen: dict[str, str] = {}
        for r in rels:
            other = seen.setdefault(scores_name(r), r)
            if other != r:
                raise AttninfError(f"{other} and {r} would share the scores file {scores_name(r)}: rename one")
        return rels

    def has(self, rel: str) -> bool:
        """Whether the corpus file (named, or named by its scores file) is there."""
        return (self.root / corpus_name(rel)).is_file()

    def file(self, rel: str) -> "CorpusFile":
        """A corpus file by its name, or by the name of its scores file."""
        rel = corpus_name(rel)
        if rel not in self._files:
            self._files[rel] = CorpusFile(self.root, rel)
        return self._files[rel]


def corpus_of(spec) -> Corpus:
    return spec if isinstance(spec, Corpus) else Corpus(spec)


def scored_ids(rel: str, kind: str, row0: int, n: int, ids=None):
    """The ids a scores file gives rows row0..row0+n of corpus file `rel`
    (a pyarrow string array): the corpus's own, and `<file>:<row>` where it
    gives none: every row of a file without the id column, and a JSON Lines
    row whose key is missing or null (a Parquet null id stays null). One rule
    for score, which writes them, and compare, which checks them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if ids is not None and (kind == PARQUET or not ids.null_count):
        return ids
    made = pa.array([f"{rel}:{row0 + i}" for i in range(n)], pa.string())
    return made if ids is None else pc.if_else(ids.is_null(), made, ids)


def corpus_texts(corpus, rel: str, rows, column: str = "text") -> dict[int, str | None]:
    """{row: text} of some rows of one corpus file (named, or named by its scores file)."""
    return corpus_of(corpus).file(rel).texts(rows, column)


def corpus_text(corpus, rel: str, row: int, column: str = "text") -> str | None:
    """The text of one corpus row."""
    return corpus_texts(corpus, rel, [row], column)[row]


# ------------------------------------------------------------------ one file


class CorpusFile:
    """One corpus file: its format, columns, rows, signature, and its rows
    read back by position, in tables of the columns asked for."""

    def __init__(self, root, rel: str):
        self.rel = rel
        self.path = location(root) / rel
        fmt = format_of(rel)
        if fmt is None:
            raise AttninfError(f"{rel}: not a corpus file (a corpus holds {ACCEPTED} files)")
        self.kind, self.compression = fmt
        self._pf = None
        self.jsonl = JsonLines(self.path, rel, self.compression) if self.kind == JSONL else None

    # ---- opening
    def _raw(self):
        return open_raw(self.path, self.rel)

    def check_content(self) -> None:
        """The first bytes are what the name says, or a one-line error."""
        with self._raw() as f:
            head = f.read(4)
        if self.kind == PARQUET:
            ok, what = head == b"PAR1", "Parquet"
        elif self.compression:
            ok, what = head.startswith(_MAGIC[self.compression]), f"{self.compression}-compressed"
        else:
            ok, what = not head or head.lstrip()[:1] in (b"{", b""), "JSON Lines (a line starting with '{')"
        if not ok:
            raise AttninfError(f"{self.rel}: not {what} although its name says so (first bytes {head!r})")

    def parquet(self):
        import pyarrow.parquet as pq

        if self._pf is None:
            try:
                self._pf = pq.ParquetFile(readable(self.path), buffer_size=READ_BUFFER, pre_buffer=False)
            except FileNotFoundError:
                raise AttninfError(f"{self.rel} is missing from the corpus") from None
        return self._pf

    # ---- what it holds
    def names(self) -> list[str]:
        """Its columns: the Parquet schema's, or the keys of the first JSON Lines record."""
        if self.kind == PARQUET:
            return self.parquet().schema_arrow.names
        return list(self.jsonl.first_record())

    def column_kind(self, name: str) -> str | None:
        """Why a column cannot hold text (its Arrow type), or None when it can."""
        import pyarrow as pa

        if self.kind == PARQUET:
            t = self.parquet().schema_arrow.field(name).type
            is_text = pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(
                pa.types, "is_string_view", lambda _: False)(t)
            return None if is_text else str(t)
        v = self.jsonl.first_record().get(name)
        return None if v is None or isinstance(v, str) else type(v).__name__

    @property
    def rows(self) -> int:
        if self.kind == PARQUET:
            return self.parquet().metadata.num_rows
        return self.jsonl.index()["rows"]

    def row_groups(self) -> list[int]:
        """Rows per row group (a JSON Lines file is one group, cut into equal ranges by units)."""
        if self.kind == PARQUET:
            md = self.parquet().metadata
            return [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        return [self.rows]

    def signature(self) -> list:
        """[size in bytes, rows (-1 when unreadable), content sha]: Parquet by
        its footer, JSON Lines by every decompressed byte (hashed in the pass
        that counts its rows, cached with it). Neither the modification time
        nor the path enters it: a copied corpus keeps it."""
        size = self.path.stat().st_size
        try:
            rows = self.rows
        except Exception:  # noqa: BLE001 - an unreadable file still has a size
            rows = -1
        return [size, rows, self._content_sha(size)]

    def _content_sha(self, size: int) -> str | None:
        import struct

        try:
            if self.kind != PARQUET:
                return self.jsonl.index()["sha256"][:16]
            if size < 12:
                return None
            with self._raw() as f:
                f.seek(size - 8)
                n, magic = struct.unpack("<I4s", f.read(8))
                if magic != b"PAR1" or n > size - 12:
                    return None
                f.seek(size - 8 - n)
                return hashlib.sha256(f.read(n)).hexdigest()[:16]
        except (OSError, AttninfError):
            return None

    # ---- reading rows
    def read(self, columns: list[str], start: int = 0, end: int | None = None, step: int = 65_536,
             text: str | None = None, as_text: tuple[str, ...] = ()) -> Iterator:
        """Tables of exactly `step` rows (the last may be shorter) of these
        columns, covering rows [start, end). A JSON Lines key missing from a
        row is null; the `text` key must hold strings (or null); the keys in
        `as_text` (ids, domains) are read as text whatever JSON type they hold."""
        end = self.rows if end is None else end
        if end <= start:
            return iter(())
        if self.kind == PARQUET:
            return self._read_parquet(columns, start, end, step)
        return self.jsonl.read(columns, start, end, step, text, as_text)

    def _read_parquet(self, columns, start, end, step):
        import pyarrow as pa

        pf = self.parquet()
        groups, first, row = [], None, 0
        for i, n in enumerate(self.row_groups()):  # the row groups that hold [start, end)
            if row + n > start and row < end:
                groups.append(i)
                first = row if first is None else first
            row += n
        if not groups:
            return
        buf, buffered, pos = [], 0, first  # pos: file row of the next batch's first row
        for batch in pf.iter_batches(batch_size=min(step, 65_536), row_groups=groups, columns=columns):
            lo, hi = max(start - pos, 0), min(end - pos, batch.num_rows)
            pos += batch.num_rows
            if hi > lo:
                buf.append(batch.slice(lo, hi - lo))
                buffered += hi - lo
            while buffered >= step:
                t = pa.Table.from_batches(buf)
                yield t.slice(0, step)
                rest = t.slice(step)
                buf, buffered = rest.to_batches(), rest.num_rows
            if pos >= end:
                break
        if buffered:
            yield pa.Table.from_batches(buf)

    def texts(self, rows, column: str = "text") -> dict[int, str | None]:
        """{row: text} of some rows, reading (for Parquet) only the row groups that hold them."""
        wanted, out = sorted(set(int(r) for r in rows)), {}
        if not wanted:
            return out
        if self.kind == PARQUET:
            pf, start = self.parquet(), 0
            for i, n in enumerate(self.row_groups()):
                here = [r for r in wanted if start <= r < start + n]
                if here:
                    col = pf.read_row_group(i, columns=[column])[column]
                    out.update({r: col[r - start].as_py() for r in here})
                start += n
        else:
            out = self.jsonl.texts(wanted, column)
        missing = [r for r in wanted if r not in out]
        if missing:
            raise AttninfError(f"{self.rel} has no row {missing[0]}")
        return out


# ------------------------------------------------------------ the signature


def corpus_key(spec) -> str:
    """The corpus by content: the signature of every file it holds."""
    from .identity import digest

    c = corpus_of(spec)
    return digest(corpus_signature(c, c.files()))


def corpus_signature(corpus, files: list[str]) -> dict[str, list]:
    """{relative path: [size in bytes, rows, content sha]} of corpus files
    (CorpusFile.signature); rows -1 where a file cannot be read."""
    c = corpus_of(corpus)
    return {rel: c.file(rel).signature() for rel in sorted(files)}


def corpus_mismatch(corpus, recorded: dict[str, list], files: list[str]) -> str | None:
    """Why the corpus is not the one recorded, for these files (corpus
    names, or the names of their scores files), or None."""
    from .identity import same_file

    c = corpus_of(corpus)
    for f in files:
        rel = corpus_name(f)
        if rel not in recorded:
            return f"{rel} was not part of the scored corpus"
        if not (c.root / rel).is_file():
            return f"{rel} is missing"
        now = c.file(rel).signature()
        if not same_file(recorded[rel], now):
            return f"{rel} changed since it was scored (size, rows, content {now} vs {list(recorded[rel])})"
    return None
