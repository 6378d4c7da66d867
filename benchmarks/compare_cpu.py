"""`attninf compare` end to end on CPU: a corpus of offline text (Shakespeare
passages and Python standard-library code), scored with SmolLM2-135M, then
three arms (full, attninf, random) x three seeds of a tiny Llama at equal
tokens. Prints and appends to RESULTS.md what the comparison found.

    python benchmarks/compare_cpu.py                       # ~160k tokens, 80 steps a run
    python benchmarks/compare_cpu.py --docs-per-domain 400 --steps 200
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import append_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/attninf-compare-bench")
    ap.add_argument("--heads", default=str(ROOT / "demo-out" / "heads.json"),
                    help="heads.json of smollm2-135m (make demo writes one); detected quickly when missing")
    ap.add_argument("--docs-per-domain", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--arms", default="full,attninf,random")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args()

    from attninf.democorpus import build_demo_corpus
    from attninf.pipelines.compare import CompareConfig, run_compare

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "attninf.cli"]
    t0 = time.perf_counter()
    if not (work / "corpus").is_dir():
        build_demo_corpus(work / "corpus", docs_per_domain=args.docs_per_domain, files_per_domain=2, seed=7)
    heads = Path(args.heads)
    if not heads.is_file():
        heads = work / "heads.json"
        subprocess.run(cli + ["detect-heads", "--config", str(ROOT / "configs" / "quick.yaml"), "--out", str(heads),
                              "--quiet"], check=True)
    t_score = time.perf_counter()
    subprocess.run(cli + ["score", str(work / "corpus"), "--heads", str(heads), "--out", str(work / "scores"),
                          "--max-tokens", "2048", "--quiet"], check=True)
    t_score = time.perf_counter() - t_score
    summary_scores = json.loads((work / "scores" / "manifest.json").read_text()).get("summary", {})
    cfg = CompareConfig(scores=str(work / "scores"), corpus=str(work / "corpus"), out=str(work / "compare"),
                        arms=args.arms, seeds=args.seeds, total_steps=args.steps, warmup_steps=max(1, args.steps // 50),
                        decay_frac=0.25, model_config=str(ROOT / "configs" / "model-tiny.yaml"), device="cpu",
                        eval_sequences=256)
    t_cmp = time.perf_counter()
    s = run_compare(cfg, progress=False, say=lambda m: print(m, flush=True))
    t_cmp = time.perf_counter() - t_cmp
    tokens = s["tokens"][s["arms"][0]][0]
    d = s["diagnostics"]
    lines = [f"### attninf compare on CPU ({dt.date.today()})", "",
             f"`python benchmarks/compare_cpu.py --docs-per-domain {args.docs_per_domain} --steps {args.steps} "
             f"--seeds {args.seeds}`; {platform.machine()}, {os.cpu_count()} cores. Corpus: offline demo text, "
             f"{summary_scores.get('documents', '?')} documents, {summary_scores.get('tokens', '?'):,} tokens, "
             f"scored by `attninf score` (SmolLM2-135M, whole process) in {t_score:.0f} s; held out: "
             f"{', '.join(f'{k} {v}' for k, v in sorted(s['data']['heldout'].items()))} documents. Arms "
             f"{', '.join(s['arms'])}, each {args.seeds} seeds of configs/model-tiny.yaml, {args.steps} steps, "
             f"{tokens:,} tokens a run, WSD (25% decay); compare took {t_cmp:.0f} s, all {time.perf_counter() - t0:.0f} s.",
             "", "| measure (lower is better) | " + " | ".join(s["arms"]) + " |",
             "|---" * (len(s["arms"]) + 1) + "|"]
    for m in s["measures"]:
        lines.append(f"| {m} | " + " | ".join(f"{s['stats'][a][m]['mean']:.4f} ± {s['stats'][a][m]['sd']:.4f}"
                                              for a in s["arms"]) + " |")
    lines += ["", "| paired difference | measure | mean | verdict |", "|---|---|---|---|"]
    for ref, per in s["paired"].items():
        for arm, ms in per.items():
            for m, v in ms.items():
                if m.startswith("heldout loss (mean") or m.startswith("copy") or m.startswith("retrieval"):
                    lines.append(f"| {arm} − {ref} | {m} | {v['mean']:+.4f} | {v['verdict']} |")
    lines += ["", "Selection (top 20% per domain): " + "; ".join(
        f"{g}: {v['document_share']:.0%} of documents, {v['token_share']:.0%} of tokens, median "
        f"{v.get('median_tokens_selected') or 0:.0f} tokens selected vs {v.get('median_tokens_all') or 0:.0f} all"
        for g, v in d["per_domain"].items()),
        "", "Most over-represented tokens in the selection (frequency ratio): " + ", ".join(
        f"`{r['token']!r}` {r['ratio']:.1f}" for r in d["over_represented"][:10])]
    append_results(lines, args.results)


if __name__ == "__main__":
    main()
