"""python benchmarks/score_memory.py [--sizes-mb 64,1024] [--out benchmarks/RESULTS.md]

Peak memory of `attninf score` against the size of the corpus file: one
Parquet file of generated text per size (written in row groups, never held
whole), scored by a tiny random-weight Llama (so the run takes minutes on a
CPU) with the first window of each document (--truncate --max-tokens 64),
in this process (the default). If memory grew with the file, the largest
file's row would show it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from results import append_results  # this folder: the scripts run from it

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def write_corpus(path: Path, mb: int, seed: int = 0) -> tuple[int, int]:
    """One file of about `mb` MB of text, documents of ~100 KB (long ones: the
    size of a batch is what memory must not exceed), in row groups of 500
    documents; (documents, bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from attninf.probes import sentences

    rng = random.Random(seed)
    pool = list(sentences())
    path.parent.mkdir(parents=True, exist_ok=True)
    docs = size = 0
    with pq.ParquetWriter(path, pa.schema([("text", pa.string())])) as w:
        while size < mb * 1_000_000:
            batch = [" ".join(rng.choices(pool, k=rng.randint(1000, 2000))) for _ in range(500)]
            size += sum(len(t) for t in batch)
            docs += len(batch)
            w.write_table(pa.table({"text": batch}), row_group_size=500)
    return docs, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mb", default="64,1024")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args()

    import torch

    from pipeline_overhead import run, tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="attninf-memory-"))
    heads = tiny_model(tmp / "tiny")
    exe = str(Path(sys.executable).parent / "attninf")
    rows = []
    for mb in (int(x) for x in args.sizes_mb.split(",")):
        corpus = tmp / f"corpus-{mb}"
        docs, size = write_corpus(corpus / "f.parquet", mb)
        t = time.perf_counter()
        el, rss = run([exe, "score", str(corpus), "--heads", str(heads), "--out", str(tmp / f"out-{mb}"),
                       "--truncate", "--max-tokens", "64", "--quiet"])
        rows.append((mb, docs, size, os.path.getsize(corpus / "f.parquet"), el, rss))
        print(f"{size / 1e6:,.0f} MB of text, {docs:,} documents: {el:.0f}s, peak RSS {rss:,.0f} MiB "
              f"({time.perf_counter() - t:.0f}s)", flush=True)
    lines = [f"## Peak memory against corpus size ({dt.date.today()}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__})", "",
             "`attninf score` in this process, tiny random Llama, --truncate --max-tokens 64, default units; "
             "one Parquet file per size.", "",
             "| text MB | file MB | documents | seconds | documents/s | peak RSS MiB |", "|---|---|---|---|---|---|"]
    for mb, docs, size, fsize, el, rss in rows:
        lines.append(f"| {size / 1e6:,.0f} | {fsize / 1e6:,.0f} | {docs:,} | {el:.0f} | {docs / el:,.0f} | {rss:,.0f} |")
    append_results(lines, args.out)


if __name__ == "__main__":
    main()
