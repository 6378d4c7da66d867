"""`attninf agree` on generated score directories of many rows: wall time
and peak RSS of the command as a user runs it (a fresh process, --out: the
table, agree.json and the page), beside the peak RSS of a process that only
imports what it imports (the baseline the rows add to).

    python benchmarks/agree_memory.py --rows 1000000,10000000

Two directories A and B of the same synthetic corpus: --files files, 3
domains of unequal size, 3% of rows too_short in both, ids as strings,
scores correlated (a shared normal plus independent noise on each side,
rounded to 4 decimals so there are ties to break). Written in row groups of
65,536 rows, so the generator's own memory stays one row group.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import cpu_name, measure  # noqa: E402
from results import append_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GROUP = 65_536
BASELINE = "import numpy, pyarrow.parquet, matplotlib.pyplot, attninf.agree, attninf.agree_page, attninf.cli.agree"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}  # the child: this source tree, no display


def generate(work: Path, rows: int, files: int, seed: int = 0) -> tuple[Path, Path]:
    from attninf.artifacts import Scores, scores_schema

    rng = np.random.default_rng(seed)
    a, b = work / "A", work / "B"
    if (a / "manifest.json").is_file() and (b / "manifest.json").is_file():  # made by an earlier run
        return a, b
    shutil.rmtree(a, ignore_errors=True), shutil.rmtree(b, ignore_errors=True)
    per = -(-rows // files)
    a.mkdir(), b.mkdir()
    sig = {}
    for f in range(files):
        rel = f"part-{f:05d}.parquet"
        n = min(per, rows - f * per)
        writers = [pq.ParquetWriter(d / rel, scores_schema()) for d in (a, b)]
        for r0 in range(0, n, GROUP):
            k = min(GROUP, n - r0)
            ids = pa.array([f"doc-{f:04d}-{i:09d}" for i in range(r0, r0 + k)])
            status = np.where(rng.random(k) < 0.03, "too_short", "ok")
            dom = pa.array(rng.choice(["web", "code", "math"], k, p=[0.6, 0.3, 0.1]))
            shared = rng.normal(size=k)
            for w in writers:
                score = np.round(shared + 0.6 * rng.normal(size=k), 4)
                score[status != "ok"] = np.nan
                w.write_table(pa.table({
                    "id": ids, "score": pa.array(score, from_pandas=True), "loss_base": np.full(k, 2.5),
                    "loss_masked": np.full(k, 2.6), "n_tokens": rng.integers(10, 2000, k),
                    "status": pa.array(status), "repetition": np.zeros(k), "domain": dom}, schema=scores_schema()),
                    row_group_size=GROUP)
        for w in writers:
            w.close()
        sig[rel] = [(a / rel).stat().st_size, n, "synthetic"]
    for d in (a, b):
        Scores.write_manifest(d, {"fingerprint": {"model": "synthetic"}, "config": {}, "corpus_files": sig})
    return a, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1000000,10000000", help="comma-separated row counts")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--workdir", help="where the scores go (default: a temporary directory)")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args()
    base_wall, base_rss = measure([sys.executable, "-c", BASELINE], ROOT, ENV)
    print(f"baseline (imports only): {base_rss:,.0f} MiB", flush=True)
    table = []
    for rows in (int(r) for r in args.rows.split(",")):
        work = Path(args.workdir or tempfile.mkdtemp(prefix="attninf-agree-")) / f"rows-{rows}"
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        a, b = generate(work, rows, args.files)
        gen = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in a.glob("*.parquet")) / 2**20
        out = work / "agree"
        wall, rss = measure([sys.executable, "-c", f"from attninf.cli.agree import agree; agree({[str(a), str(b), '--out', str(out)]!r})"],
                             ROOT, ENV)
        res = json.loads((out / "agree.json").read_text())
        table.append((rows, size, gen, wall, rss, res["groups"]["(all)"]))
        if not args.workdir:
            shutil.rmtree(work.parent)
        print(f"{rows:,} rows: {wall:.1f} s, {rss:,.0f} MiB", flush=True)
    cpu = cpu_name()
    lines = [f"## attninf agree: time and peak memory against rows ({time.strftime('%Y-%m-%d')}, {cpu}, "
             f"{os.cpu_count()} cores)", "",
             f"`python benchmarks/agree_memory.py --rows {args.rows} --files {args.files}`: two generated score "
             "directories of one corpus (3 domains, 3% too_short, correlated scores rounded to 4 decimals), "
             "`attninf agree A B --out DIR` in a fresh process (table, agree.json, page); peak RSS is the child's "
             f"ru_maxrss. A process that only imports what agree imports peaks at {base_rss:,.0f} MiB.", "",
             "| rows | MiB of Parquet per side | generate s | agree wall s | peak RSS MiB | above imports MiB "
             "| Spearman (all) | Kendall (all) | top 20% overlap |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r:,} | {s:,.0f} | {g:.0f} | {w:.1f} | {m:,.0f} | {m - base_rss:,.0f} | {al['spearman']:.4f} "
              f"| {al['kendall']:.4f} | {al['overlap']:.4f} |" for r, s, g, w, m, al in table]
    append_results(lines, args.results)


if __name__ == "__main__":
    main()
