"""`attninf select` and `attninf report` on a generated scores directory of
many rows: wall time and peak RSS of each command, as a user runs it (a
fresh process, default flags, no token maps since there is no corpus).

    python benchmarks/report_memory.py --rows 10000000
    python benchmarks/report_memory.py --rows 1000000 --baseline /tmp/old   # a checkout of an older commit too

The scores are synthetic (the numbers the stages read, not a model's): 4
domains of unequal size, 3% of rows not ok, ids as strings, token-stat
columns. --baseline runs the same commands with another checkout's attninf
on the same directory, side by side, so the table shows ratios from one run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from results import append_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def generate(out: Path, rows: int, files: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True)
    per = -(-rows // files)
    for f in range(files):
        n = min(per, rows - f * per)
        status = np.where(rng.random(n) < 0.03, "too_short", "ok")
        score = rng.gamma(2.0, 0.02, n)
        score[status != "ok"] = np.nan
        pq.write_table(pa.table({
            "id": pa.array([f"doc-{f:04d}-{i:08d}" for i in range(n)]),
            "score": pa.array(score, from_pandas=True), "loss_base": rng.normal(2.5, 0.3, n),
            "loss_masked": rng.normal(2.6, 0.3, n), "n_tokens": rng.lognormal(6, 1.2, n).astype(np.int64) + 1,
            "status": pa.array(status).dictionary_encode().cast(pa.string()),
            "repetition": rng.beta(1, 8, n),
            "domain": pa.array(rng.choice(["web", "code", "math", "books"], n, p=[0.6, 0.25, 0.1, 0.05])),
            "top1_share": rng.beta(2, 6, n), "score_first_half": rng.gamma(2.0, 0.02, n),
            "score_second_half": rng.gamma(2.0, 0.02, n)}), out / f"part-{f:05d}.parquet", row_group_size=65536)
    (out / "manifest.json").write_text(json.dumps({"fingerprint": {"model": "synthetic"}, "config": {}}))


def measure(cmd: list[str], pythonpath: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one command in a fresh process in the source tree `pythonpath`."""
    return harness.measure(cmd, pythonpath, {**os.environ, "PYTHONPATH": str(pythonpath), "MPLBACKEND": "Agg"})

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--baseline", help="checkout of another commit whose attninf runs the same commands")
    ap.add_argument("--workdir", help="where the scores go (default: a temporary directory)")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="attninf-report-"))
    scores = work / "scores"
    t0 = time.perf_counter()
    if not scores.exists():
        generate(scores, args.rows, args.files)
    gen = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in scores.glob("*.parquet")) / 2**20
    versions = [("this commit", ROOT)] + ([("baseline", Path(args.baseline).resolve())] if args.baseline else [])
    rows = []
    for name, src in versions:
        sel, rep = work / f"sel-{name.replace(' ', '_')}", work / f"report-{name.replace(' ', '_')}"
        cli = [sys.executable, "-m", "attninf.cli"]
        s_wall, s_rss = measure(cli + ["select", str(scores), "--out", str(sel)], src)
        r_wall, r_rss = measure(cli + ["report", str(scores), "--selected", str(sel), "--out", str(rep),
                                       "--token-maps", "0"], src)
        rows.append((name, s_wall, s_rss, r_wall, r_rss))
        print(f"{name}: select {s_wall:.1f} s {s_rss:,.0f} MiB; report {r_wall:.1f} s {r_rss:,.0f} MiB", flush=True)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [f"### select and report on {args.rows:,} score rows ({args.files} files, {size:,.0f} MiB of Parquet)",
             "", f"`python benchmarks/report_memory.py --rows {args.rows}"
             + (" --baseline <checkout>`" if args.baseline else "`")
             + f"; {cpu}, {os.cpu_count()} cores; generating the scores took {gen:.0f} s.", "",
             "| attninf | select wall s | select peak RSS MiB | report wall s | report peak RSS MiB |",
             "|---|---|---|---|---|"]
    lines += [f"| {n} | {sw:.1f} | {sr:,.0f} | {rw:.1f} | {rr:,.0f} |" for n, sw, sr, rw, rr in rows]
    if len(rows) == 2:
        (_, sw, sr, rw, rr), (_, bsw, bsr, brw, brr) = rows
        lines.append(f"| baseline / this commit | {bsw / sw:.2f}x | {bsr / sr:.2f}x | {brw / rw:.2f}x | {brr / rr:.2f}x |")
    append_results(lines, args.results)


if __name__ == "__main__":
    main()
