"""The unit of scoring work: a range of rows of one corpus file.

A Parquet file is cut into units from its footer alone: whole row groups
are grouped up to `chunk_docs` rows, and a row group larger than that is cut
into equal row ranges, so a file written as one giant row group still
spreads over workers and is never read whole. A JSON Lines file is one such
group of its row count (attninf.corpus counts it in a first pass), cut into
equal line ranges; a unit reads its lines streaming, from the nearest
indexed offset of an uncompressed file or from the start of a compressed
one (skipping lines costs decompression, not memory). The cut depends only
on the file and `chunk_docs`, never on the number of workers, and a unit's
rows are scored in batches counted from its first row, so a unit gives the
same bytes wherever it runs.

Each finished unit is one Parquet file, written atomically:
scores/.parts/<file>/<first row>-<end row>.parquet. When every unit of a
file exists, the driver appends them in row order into the file's scores
file scores/<scores_name(file)> (atomically, with its counters in
scores/_stats/<scores_name(file)>.json) and removes the parts. A kill loses only the units in flight; parts are never taken for
a finished file (they live under a dot-directory that readers skip).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from attninf.artifacts import STATS_DIR, Status, scores_schema
from attninf.corpus import corpus_of, scored_ids, scores_name
from attninf.stores import location, readable, rmtree
from attninf.storage import atomic_path, write_json
from attninf.errors import AttninfError

PARTS_DIR = ".parts"
SCORES_ROW_GROUP = 65_536  # rows per row group of an assembled scores file


@dataclass(frozen=True, order=True)
class Unit:
    file: str
    start: int  # first row of the file in this unit
    end: int  # one past its last row

    @property
    def rows(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        return f"{self.file}[{self.start}:{self.end}]"


def part_path(out, unit: Unit):
    return location(out) / PARTS_DIR / unit.file / f"{unit.start:012d}-{unit.end:012d}.parquet"


def plan_units(row_groups: list[int], chunk_docs: int, file: str = "") -> list[Unit]:
    """Units of at most chunk_docs rows (a row group larger than that is cut
    into equal ranges; smaller ones are grouped whole), covering every row
    once, in order."""
    if chunk_docs < 1:
        raise AttninfError(f"--chunk-docs must be at least 1, got {chunk_docs}")
    units: list[Unit] = []
    start = row = 0
    for n in row_groups:
        if n > chunk_docs:  # cut this row group alone into equal ranges
            if row > start:
                units.append(Unit(file, start, row))
            pieces = -(-n // chunk_docs)
            bounds = [row + (n * i) // pieces for i in range(pieces + 1)]
            units.extend(Unit(file, a, b) for a, b in zip(bounds, bounds[1:]))
            start = row = row + n
            continue
        if row + n - start > chunk_docs:
            units.append(Unit(file, start, row))
            start = row
        row += n
    if row > start:
        units.append(Unit(file, start, row))
    return units


def file_units(corpus, rel: str, chunk_docs: int) -> list[Unit]:
    """The units of one corpus file: from its Parquet footer, or from the
    row count of a JSON Lines file's first pass (one group, cut into equal ranges)."""
    return plan_units(corpus_of(corpus).file(rel).row_groups(), chunk_docs, rel)


# ------------------------------------------------------------------ reading


class UnitReader:
    """The columns score reads from one corpus file, for a range of rows, in
    batches counted from the range's first row: texts, ids (the id column,
    or <file>:<row>) and domains (the column, the folder, or null)."""

    def __init__(self, cfg, rel: str):
        self.cfg, self.rel = cfg, rel
        self.file = corpus_of(cfg.corpus).file(rel)
        names = self.file.names()
        self.jsonl = self.file.kind != "parquet"
        # a JSON Lines row without the id key gets <file>:<row>, as a Parquet file without the column
        self.has_id = cfg.id_column in names or self.jsonl
        self.from_column = cfg.domain_from == "column"
        if self.from_column and cfg.domain_column not in names and self.file.kind == "parquet":
            raise AttninfError(f"{rel} has no {cfg.domain_column!r} column")
        self.folder = rel.split("/", 1)[0] if cfg.domain_from == "dir" else None
        self.columns = ([cfg.text_column] + ([cfg.id_column] if self.has_id else [])
                        + ([cfg.domain_column] if self.from_column else []))

    def batches(self, start: int, end: int) -> Iterator[tuple[list, Any, Any]]:
        """(texts, ids, domain) per batch of rows_per_chunk rows of [start, end)."""
        row0 = start
        keys = (self.cfg.id_column, self.cfg.domain_column)
        for t in self.file.read(self.columns, start, end, self.cfg.rows_per_chunk, text=self.cfg.text_column,
                                as_text=keys if self.jsonl else ()):
            n = t.num_rows
            ids = scored_ids(self.rel, self.file.kind, row0, n,
                             t.column(self.cfg.id_column).combine_chunks() if self.has_id else None)
            domain = t.column(self.cfg.domain_column).combine_chunks() if self.from_column else self.folder
            yield t.column(self.cfg.text_column).to_pylist(), ids, domain
            row0 += n


# ---------------------------------------------------------------- assembly


def _id_hashes(ids) -> tuple[Any, int]:
    """64-bit hashes of the non-null ids of a column, and how many are null."""
    import numpy as np

    values = ids.to_pylist()
    return np.array([hash(x) for x in values if x is not None], dtype=np.int64), sum(x is None for x in values)


def assemble(out, rel: str, units: list[Unit], workers: dict[str, int] | None = None,
             token_stats: bool = False, head_sets=()) -> dict:
    """Append the parts of a corpus file in row order into its scores file
    out/<scores_name(rel)> (atomically), write its counters to
    _stats/<scores_name(rel)>.json, remove the parts. Row groups of
    SCORES_ROW_GROUP rows: the file's bytes do not depend on how it was cut
    into units (nor, so, on the corpus's format). Memory: a row group and a
    part, plus 8 bytes per row for the duplicate-id check."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    out, name = location(out), scores_name(rel)
    stats = {"file": rel, "documents": 0, **{st.value: 0 for st in Status}, "tokens": 0, "duplicate_ids": 0,
             "units": len(units), "workers": workers or {}}  # workers: units of this run per worker
    hashes, buf = [], []
    with atomic_path(out / name) as tmp:
        writer = None
        try:
            for unit in sorted(units):
                t = pq.read_table(readable(part_path(out, unit)))
                writer = writer or pq.ParquetWriter(tmp, t.schema)
                buf.append(t.cast(writer.schema))
                while sum(len(x) for x in buf) >= SCORES_ROW_GROUP:  # row groups whatever the units
                    whole = pa.concat_tables(buf)
                    writer.write_table(whole.slice(0, SCORES_ROW_GROUP).combine_chunks())
                    buf = [whole.slice(SCORES_ROW_GROUP)]
                status = t["status"].to_numpy(zero_copy_only=False)
                stats["documents"] += len(t)
                stats["tokens"] += int(t["n_tokens"].to_numpy(zero_copy_only=False).sum())
                for st in Status:
                    stats[st.value] += int((status == st.value).sum())
                h, nulls = _id_hashes(t["id"])
                hashes.append(h)
                stats["duplicate_ids"] += nulls
            if buf and sum(len(x) for x in buf):
                writer.write_table(pa.concat_tables(buf).combine_chunks())
            # a file with no rows: the schema every file of this scores directory has
            writer = writer or pq.ParquetWriter(tmp, scores_schema(token_stats=token_stats, head_sets=head_sets))
        finally:
            if writer is not None:
                writer.close()
        allh = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.int64)
        stats["duplicate_ids"] += int(len(allh) - len(np.unique(allh)))
        write_json(stats, out / STATS_DIR / f"{name}.json")  # before the rename: output => stats
    rmtree(out / PARTS_DIR / rel)
    return stats


# --------------------------------------------------------------------- lock


