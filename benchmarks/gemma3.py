"""python benchmarks/gemma3.py [--docs-per-domain 50] [--probes 12] [--work DIR] [--out benchmarks/RESULTS.md]

The second offline model, Gemma 3 270M (a pretrained base model, sliding
windows of 512 tokens in 15 of its 18 layers), beside the offline default
SmolLM2-135M-Instruct on the demo corpus of `attninf run configs/demo.yaml`:

1. `attninf detect-heads` on each with the demo's settings (12 probes of
   2,048 tokens, top 5% of heads): the heads and the ablation (probe accuracy
   unmasked, with the heads masked, with as many random heads masked);
2. `attninf score` of the corpus with each, whole process with default flags,
   timed from outside; Gemma 3 a second time with the packed shared-prefix
   path switched off (the two full passes over padded batches it took before
   it had that path), the same process otherwise, to show what the path buys;
3. how far the two selectors agree: Spearman of the scores per domain, and the
   overlap of each domain's top 20% (what `select --frac 0.2` keeps).

Prints a table and appends it to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import cpu_name, demo_corpus, run  # this folder: the scripts run from it
from results import append_results

MODELS = ("smollm2-135m", "gemma3-270m")
# the same CLI process with the shared-prefix path refused at load: the scorer then takes two padded passes
TWO_PASS = ("import sys; import attninf.forward as f; "
            "f.SharedPrefix.check = staticmethod(lambda *a, **k: 'switched off by benchmarks/gemma3.py'); "
            "from attninf.cli import main; sys.argv[0] = 'attninf'; main()")


def scores_of(folder: Path):
    import pandas as pd

    files = sorted(p for p in folder.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in
                                                                   p.relative_to(folder).parts))
    return pd.concat([pd.read_parquet(p, columns=["id", "domain", "score", "n_tokens", "status"]) for p in files])


def agreement(a, b, frac: float = 0.2) -> list[dict]:
    """Per domain: documents scored by both, Spearman of the scores (Pearson
    of their ranks, ties averaged), overlap of the top `frac`."""
    both = a.merge(b, on=["id", "domain"], suffixes=("_a", "_b"))
    both = both[(both.status_a == "ok") & (both.status_b == "ok")]
    out = []
    for domain, g in sorted(both.groupby("domain")):
        k = max(1, round(frac * len(g)))
        top_a = set(g.nlargest(k, "score_a").id)
        top_b = set(g.nlargest(k, "score_b").id)
        out.append({"domain": domain, "n": len(g), "spearman": g.score_a.rank().corr(g.score_b.rank()),
                    "top": k, "overlap": len(top_a & top_b) / k, "chance": k / len(g)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs-per-domain", type=int, default=50)
    ap.add_argument("--probes", type=int, default=12)
    ap.add_argument("--work", default="/tmp/attninf-gemma3")
    ap.add_argument("--out", default="benchmarks/RESULTS.md")
    ap.add_argument("--reuse-heads", action="store_true",
                    help="keep a heads.json already in --work (its detect-heads is not timed again)")
    args = ap.parse_args()

    from attninf.devices import resolve_dtype

    work = Path(args.work)
    corpus = demo_corpus(work, args.docs_per_domain)
    attninf = [sys.executable, "-m", "attninf.cli"]
    rows, heads = {}, {}
    for model in MODELS:
        subprocess.run([*attninf, "model", "pull", model], check=True)
        d = work / model
        d.mkdir(exist_ok=True)
        hj = d / "heads.json"
        if not (args.reuse_heads and hj.exists()):
            rows[f"{model} detect-heads"] = run(
                [*attninf, "detect-heads", "--model", model, "--num-probes", str(args.probes), "--context-tokens",
                  "2048", "--top-frac", "0.05", "--random-trials", "3", "--out", str(hj), "--quiet"], d / "detect.log")
        heads[model] = json.loads(hj.read_text())
        shutil.rmtree(d / "scores", ignore_errors=True)
        rows[f"{model} score"] = run([*attninf, "score", str(corpus), "--heads", str(hj), "--out", str(d / "scores"),
                                      "--max-tokens", "2048", "--quiet"], d / "score.log")
    g = work / "gemma3-270m"
    shutil.rmtree(g / "scores-two-pass", ignore_errors=True)
    rows["gemma3-270m score, two passes"] = run(
        [sys.executable, "-c", TWO_PASS, "score", str(corpus), "--heads", str(g / "heads.json"), "--out",
         str(g / "scores-two-pass"), "--max-tokens", "2048", "--quiet"], g / "score-two-pass.log")

    a, b = scores_of(work / MODELS[0] / "scores"), scores_of(g / "scores")
    two = scores_of(g / "scores-two-pass")
    same = b.merge(two, on="id")
    drift = float((same.score_x - same.score_y).abs().max())
    tokens = int(b.n_tokens.sum())
    cpu = cpu_name()
    lines = [f"## Gemma 3 270M beside SmolLM2-135M on the demo corpus ({time.strftime('%Y-%m-%d')}, {cpu}, "
             f"{os.cpu_count()} cores, --dtype auto = {str(resolve_dtype('auto', 'cpu')).replace('torch.', '')})", "",
             f"`python benchmarks/gemma3.py --docs-per-domain {args.docs_per_domain} --probes {args.probes}"
             f"{' --reuse-heads' if args.reuse_heads else ''}`: "
             f"{len(b)} documents, {tokens:,} tokens (Gemma 3's tokenizer). Whole processes, default flags.", "",
             "| model | heads (layer.head) | probe acc. no mask | heads masked | random masked | exact match no mask |",
             "|---|---|---|---|---|---|"]
    for model in MODELS:
        ab = heads[model]["ablation"]
        lines.append(f"| {model} | {' '.join(f'{l}.{h}' for l, h in heads[model]['heads'])} | {ab['no_mask']:.3f} | "
                     f"{ab['selected_masked']:.3f} | {ab['random_masked']:.3f} | {ab['exact_match']['no_mask']:.2f} |")
    lines += ["", "| command | wall s | peak RSS MiB |", "|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['s']:.0f} | {r['rss_mib']:,.0f} |")
    sp, tp = rows["gemma3-270m score"]["s"], rows["gemma3-270m score, two passes"]["s"]
    lines += ["", f"Gemma 3 scoring: shared-prefix packed path {sp:.0f} s against {tp:.0f} s with two padded passes "
              f"({tp / sp:.2f}x); largest score difference between the two paths {drift:.1e}.", "",
              "| domain | documents | Spearman (SmolLM2 vs Gemma 3) | top 20% overlap | by chance |",
              "|---|---|---|---|---|"]
    for r in agreement(a, b):
        lines.append(f"| {r['domain']} | {r['n']} | {r['spearman']:.3f} | {r['overlap']:.2f} ({r['top']} docs) | "
                     f"{r['chance']:.2f} |")
    append_results(lines, args.out)


if __name__ == "__main__":
    main()
