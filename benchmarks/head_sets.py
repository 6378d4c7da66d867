"""python benchmarks/head_sets.py [--fracs 0.03,0.05,0.1] [--docs-per-domain 50] [--work DIR] [--out benchmarks/RESULTS.md]

What `score --head-fracs` saves: K head sets of the offline default model
(SmolLM2-135M) scored in one pass against K separate `attninf score` runs,
one per set, on the demo corpus. Whole processes, default flags otherwise
(--dtype auto, the demo's --max-tokens 2048), timed from outside, in one run
of this script, so that the ratio is measured on one machine in one state.

The heads are ranked by a `detect-heads` with the demo's settings (12 probes
of 2,048 tokens), made once in --work. Prints the table (wall time, peak RSS,
the ratio, and the largest difference between each one-pass column and its
separate run) and appends it to --out.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from harness import cpu_name, demo_corpus, run  # this folder: the scripts run from it
from results import append_results


def column(folder: Path, name: str) -> np.ndarray:
    import pyarrow.parquet as pq

    files = sorted(p for p in folder.rglob("*.parquet")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts))
    return np.concatenate([pq.read_table(p, columns=[name])[name].to_numpy(zero_copy_only=False).astype(float)
                           for p in files])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fracs", default="0.03,0.05,0.1")
    ap.add_argument("--docs-per-domain", type=int, default=50)
    ap.add_argument("--work", default="/tmp/attninf-head-sets")
    ap.add_argument("--out", default="benchmarks/RESULTS.md")
    args = ap.parse_args()

    from attninf.artifacts import Heads
    from attninf.headsets import head_set_tag, head_sets
    from attninf.devices import resolve_dtype

    work = Path(args.work)
    corpus = demo_corpus(work, args.docs_per_domain)
    attninf = [sys.executable, "-m", "attninf.cli"]
    hj = work / "heads.json"
    if not hj.exists():
        subprocess.run([*attninf, "detect-heads", "--num-probes", "12", "--context-tokens", "2048",
                        "--random-trials", "0", "--out", str(hj), "--quiet"], check=True)
    fracs = [float(f) for f in args.fracs.split(",")]
    sets = head_sets(fracs, Heads.read(hj))
    score = [*attninf, "score", str(corpus), "--heads", str(hj), "--max-tokens", "2048", "--quiet"]

    rows = {}
    one = work / "one-pass"
    shutil.rmtree(one, ignore_errors=True)
    rows["one pass"] = run([*score, "--out", str(one), "--head-fracs", args.fracs], work / "one-pass.log")
    drift = {}
    for f, (tag, _) in zip(fracs, sets):
        d = work / f"alone-{f:g}"
        shutil.rmtree(d, ignore_errors=True)
        rows[f"top {f:g} alone"] = run([*score, "--out", str(d), "--head-fracs", f"{f:g}"], work / f"alone-{f:g}.log")
        mine = column(one, "score" if tag is None else f"score_{tag}")
        drift[f] = float(np.nanmax(np.abs(mine - column(d, "score"))))
    separate = sum(r["s"] for k, r in rows.items() if k != "one pass")

    dtype = str(resolve_dtype("auto", "cpu")).replace("torch.", "")
    lines = [f"## Several head sets in one scoring pass (score --head-fracs) ({time.strftime('%Y-%m-%d')}, "
             f"{cpu_name()}, {os.cpu_count()} cores, --dtype auto = {dtype})", "",
             f"`python benchmarks/head_sets.py --fracs {args.fracs} --docs-per-domain {args.docs_per_domain}`: "
             f"SmolLM2-135M, the demo corpus ({len(column(one, 'score'))} documents), heads ranked by 12 probes. "
             "Whole `attninf score` processes, timed from outside, in one run.", "",
             "| run | heads masked | wall s | peak RSS MiB | max abs(score difference) vs its own run |",
             "|---|---|---|---|---|"]
    r = rows["one pass"]
    lines.append(f"| one pass, --head-fracs {args.fracs} | {' / '.join(str(len(h)) for _, h in sets)} | "
                 f"{r['s']:.1f} | {r['rss_mib']:.0f} | - |")
    for f, (tag, hs) in zip(fracs, sets):
        r = rows[f"top {f:g} alone"]
        lines.append(f"| top {f:g} alone (column {'score' if tag is None else 'score_' + head_set_tag(f)}) | "
                     f"{len(hs)} | {r['s']:.1f} | {r['rss_mib']:.0f} | {drift[f]:.2e} |")
    lines += ["", f"{len(fracs)} separate runs: {separate:.1f} s; one pass: {rows['one pass']['s']:.1f} s "
              f"({separate / rows['one pass']['s']:.2f}x faster). The last column is each set's column against its own "
              f"run in {dtype}; in float32 the tests hold 1e-6 (tests/test_head_sets.py)."]
    append_results(lines, args.out)


if __name__ == "__main__":
    main()
