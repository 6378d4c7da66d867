"""python benchmarks/score_memory.py [--sizes-mb 64,1024] [--formats parquet,jsonl.zst] [--chunk-docs N]
[--out benchmarks/RESULTS.md]

Peak memory of `attninf score` against the size of the corpus file: one
corpus file of generated text per format and size, written streaming (never
held whole), scored by a tiny random-weight Llama (so the run takes minutes
on a CPU) with the first window of each document (--truncate --max-tokens
64), in this process (--workers 0, the default on CPU). If memory grew with
the file, the largest file's row would show it.

Formats: `parquet` (row groups of 500 documents; the size is the text's) and
`jsonl.zst` (one JSON Lines file compressed by zstandard's stream writer,
lines {"text": ..., "id": "doc-N"}; the size is the *compressed* file's). A
JSON Lines file is one row group cut into --chunk-docs units, and a unit of a
compressed file decompresses the file from its start, skipping the lines
before its first row; the units come from the run's _stats json.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

from results import append_results  # this folder: the scripts run from it

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
FORMATS = ("parquet", "jsonl.zst")


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


def mixed_document(rng: random.Random, pool: list[str], words: list[str]) -> str:
    """~100 KB like write_corpus's documents (probe sentences), each sentence
    followed by 8 words drawn at random from their vocabulary and a random
    32-bit integer: text that zstd compresses ~2.7x instead of ~10x, so a
    compressed file of a given size does not take many times its size of text
    to generate and score."""
    parts, n, target = [], 0, rng.randint(80_000, 120_000)
    while n < target:
        p = f"{rng.choice(pool)} {' '.join(rng.choices(words, k=8))} {rng.getrandbits(32)}"
        parts.append(p)
        n += len(p) + 1
    return " ".join(parts)


def write_jsonl_zst(path: Path, mb: int, seed: int = 0, batch: int = 100) -> tuple[int, int]:
    """One .jsonl.zst file of about `mb` MB compressed, written through
    zstandard's stream writer `batch` documents at a time (never held whole);
    (documents, decompressed bytes)."""
    import zstandard

    from attninf.probes import sentences

    rng = random.Random(seed)
    pool = list(sentences())
    words = sorted({w for s in pool for w in s.split()})
    path.parent.mkdir(parents=True, exist_ok=True)
    docs = size = 0
    with open(path, "wb") as f, zstandard.ZstdCompressor().stream_writer(f) as w:
        while w.tell() < mb * 1_000_000:  # compressed bytes written so far
            data = "".join(json.dumps({"text": mixed_document(rng, pool, words), "id": f"doc-{docs + i}"}) + "\n"
                           for i in range(batch)).encode()
            w.write(data)
            size += len(data)
            docs += batch
    return docs, size


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stats_of(out: Path) -> dict:
    """The _stats json of the run's one scored file."""
    found = sorted(out.rglob("_stats/*.json"))
    if len(found) != 1:
        raise SystemExit(f"expected one _stats json under {out}, found {[str(p) for p in found]}")
    return json.loads(found[0].read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-mb", default="64,1024", help="per format: Parquet's text, jsonl.zst's compressed file")
    ap.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, of {', '.join(FORMATS)}")
    ap.add_argument("--chunk-docs", type=int, default=None, help="passed to attninf score (default: its own)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args()
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not formats or any(f not in FORMATS for f in formats):
        ap.error(f"--formats: comma-separated, of {', '.join(FORMATS)}")

    import torch

    from pipeline_overhead import run, tiny_model

    command = "python benchmarks/score_memory.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    tmp = Path(tempfile.mkdtemp(prefix="attninf-memory-"))
    os.environ["ATTNINF_HOME"] = str(tmp / "home")  # a JSON Lines file's row count is not cached from before
    heads = tiny_model(tmp / "tiny")
    exe = str(Path(sys.executable).parent / "attninf")
    flags = ["--truncate", "--max-tokens", str(args.max_tokens), "--workers", "0", "--quiet"]
    if args.chunk_docs is not None:
        flags += ["--chunk-docs", str(args.chunk_docs)]
    rows = []
    for fmt in formats:
        for mb in (int(x) for x in args.sizes_mb.split(",")):
            corpus = tmp / f"corpus-{fmt}-{mb}"
            path = corpus / f"f.{fmt}"
            t = time.perf_counter()
            docs, size = (write_corpus if fmt == "parquet" else write_jsonl_zst)(path, mb)
            gen = time.perf_counter() - t
            out = tmp / f"out-{fmt}-{mb}"
            el, rss = run([exe, "score", str(corpus), "--heads", str(heads), "--out", str(out), *flags])
            st = stats_of(out)
            if st["documents"] != docs:
                raise SystemExit(f"{path}: {st['documents']} documents scored, {docs} written")
            rows.append({"format": fmt, "file": os.path.getsize(path), "size": size, "docs": docs,
                         "units": st["units"], "seconds": el, "rss": rss, "tokens": st["tokens"]})
            print(f"{fmt}: {os.path.getsize(path) / 1e6:,.0f} MB file, {size / 1e6:,.0f} MB decompressed, "
                  f"{docs:,} documents (written in {gen:.0f}s), {st['units']} units: {el:.0f}s, "
                  f"peak RSS {rss:,.0f} MiB", flush=True)
            for p in corpus.iterdir():  # the next size's disk
                p.unlink()
    title = ("JSON Lines (.jsonl.zst): units and peak memory" if "jsonl.zst" in formats
             else "Peak memory against corpus size")
    chunk = f"--chunk-docs {args.chunk_docs}" if args.chunk_docs is not None else "default units"
    lines = [f"## {title} ({dt.date.today()}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, torch {torch.__version__})", "",
             f"`{command}`: `attninf score` in this process (--workers 0), tiny random Llama, --truncate "
             f"--max-tokens {args.max_tokens}, {chunk}; one corpus file per format and size. Parquet: probe "
             "sentences, file MB is the Parquet file, decompressed MB its text; jsonl.zst: probe sentences mixed "
             "with random words and integers, file MB is the compressed file, decompressed MB the JSON Lines. "
             "Units from the run's _stats json; peak RSS of the whole process, sampled every 0.1 s.", "",
             "| format | file MB | decompressed MB | documents | units | seconds | documents/s | decompressed MB/s "
             "| peak RSS MiB | CPU |", "|---|---|---|---|---|---|---|---|---|---|"]
    cpu = cpu_model()
    for r in rows:
        lines.append(f"| {r['format']} | {r['file'] / 1e6:,.0f} | {r['size'] / 1e6:,.0f} | {r['docs']:,} | "
                     f"{r['units']} | {r['seconds']:.0f} | {r['docs'] / r['seconds']:,.1f} | "
                     f"{r['size'] / 1e6 / r['seconds']:,.2f} | {r['rss']:,.0f} | {cpu} |")
    append_results(lines, args.out)


if __name__ == "__main__":
    main()
