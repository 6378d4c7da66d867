"""Three ways to train with a selection, at equal tokens, on CPU:

* plain: the corpus alone (`attninf mix --repeat 0`);
* attninf: the corpus plus the selected documents once more, one mixture
  for the whole run (AttentionInfluence, `attninf mix --repeat 1`);
* decay: the corpus alone in the stable phase, the corpus with the selected
  documents --decay-weight more times in the decay phase (MiniCPM,
  `attninf mix --phases stable,decay`).

Each trains the tiny Llama of configs/model-tiny.yaml with the same WSD
schedule (25% decay, as the paper's 1T-token run), the same steps and
tokens, for each seed, and is evaluated after the decay on held-out
documents per domain: a second demo corpus drawn with another seed, minus any
document whose text is in the training corpus.

    make demo   # the corpus, scores and selection in demo-out/
    python benchmarks/recipes_cpu.py --workdir demo-out --seeds 3
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import append_results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ("plain", "attninf", "decay")


def heldout(workdir: Path, out: Path, docs: int, seed: int) -> dict:
    """A held-out corpus with no text of the training corpus; {domain: documents}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from attninf.democorpus import build_demo_corpus

    seen = {t for p in (workdir / "corpus").rglob("*.parquet") for t in pq.read_table(p)["text"].to_pylist()}
    raw = out.parent / "heldout-raw"
    build_demo_corpus(raw, docs_per_domain=docs, files_per_domain=1, seed=seed)
    rows = [r for p in sorted(raw.rglob("*.parquet")) for r in pq.read_table(p).to_pylist() if r["text"] not in seen]
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / "heldout.parquet")
    counts: dict = {}
    for r in rows:
        counts[r["domain"]] = counts.get(r["domain"], 0) + 1
    return counts


def mixtures(workdir: Path, tmp: Path, decay_weight: int) -> dict[str, Path]:
    from attninf.pipelines.mix import MixConfig, run_mix

    common = dict(corpus=str(workdir / "corpus"), selected=str(workdir / "selected"), seed=0, shard_rows=50)
    run_mix(MixConfig(out=str(tmp / "plain"), repeat=0, **common))
    run_mix(MixConfig(out=str(tmp / "attninf"), repeat=1, **common))
    run_mix(MixConfig(out=str(tmp / "decay"), phases="stable,decay", decay_weight=decay_weight, **common))
    return {r: tmp / r for r in RECIPES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=str(ROOT / "demo-out"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--decay-weight", type=int, default=3)
    ap.add_argument("--heldout-docs", type=int, default=40, help="documents per domain drawn for the held-out set")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args()

    import torch

    from attninf.train import TrainConfig, train

    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(args.workdir)
    tmp = Path(tempfile.mkdtemp(prefix="attninf-recipes-"))
    held = heldout(work, tmp / "heldout", args.heldout_docs, seed=1234)
    data = mixtures(work, tmp, args.decay_weight)
    losses: dict = {}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for recipe in RECIPES:
            cfg = TrainConfig(data=str(data[recipe]), model_config=str(ROOT / "configs" / "model-tiny.yaml"),
                              out=str(tmp / f"run-{recipe}-{seed}"), seq_len=args.seq_len, batch_size=args.batch_size,
                              total_steps=args.steps, lr=args.lr, warmup_steps=max(1, args.steps // 50),
                              schedule="wsd", decay_frac=0.25, decay="1-sqrt", save_every=10 ** 6,
                              eval_data=str(tmp / "heldout"), eval_sequences=256, seed=seed, device="cpu")
            r = train(cfg, progress=False, say=lambda m: None)
            losses[(recipe, seed)] = r["eval_loss"]
            run = json.loads((Path(cfg.out) / "run.json").read_text())
            print(f"{recipe} seed {seed}: {r['eval_loss']} phases {run['phases']} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    domains = sorted(held)
    mixes = {r: json.loads((data[r] / ".manifest.json").read_text()) for r in RECIPES}

    def fmt(xs):
        return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"

    tokens = args.steps * args.batch_size * args.seq_len
    lines = [f"### Training recipes at equal tokens, tiny Llama on CPU ({dt.date.today()})", "",
             f"`python benchmarks/recipes_cpu.py --workdir demo-out --seeds {args.seeds}`; "
             f"{platform.machine()}, {os.cpu_count()} cores; configs/model-tiny.yaml, {args.steps} steps x "
             f"{args.batch_size} x {args.seq_len} = {tokens:,} tokens per run, WSD (25% decay, 1-sqrt), lr {args.lr}; "
             f"held-out: {', '.join(f'{d} {n}' for d, n in sorted(held.items()))} documents not in the corpus; "
             f"{time.perf_counter() - t0:.0f} s in all.", "",
             "Mixture rows: " + "; ".join(
                 f"{r} {mixes[r]['rows']:,}" + (f" (stable {mixes[r]['phases']['stable']['rows']:,}, decay "
                                                 f"{mixes[r]['phases']['decay']['rows']:,})" if r == "decay" else "")
                 for r in RECIPES), "",
             "| recipe | " + " | ".join(f"held-out loss {d} (mean ± sd over seeds)" for d in domains)
             + " | " + " | ".join(f"{d}: paired diff vs plain" for d in domains) + " |",
             "|---" * (1 + 2 * len(domains)) + "|"]
    for recipe in RECIPES:
        cells = [fmt([losses[(recipe, s)][d] for s in range(args.seeds)]) for d in domains]
        diffs = [fmt([losses[(recipe, s)][d] - losses[("plain", s)][d] for s in range(args.seeds)])
                 if recipe != "plain" else "-" for d in domains]
        lines.append(f"| {recipe} | " + " | ".join(cells) + " | " + " | ".join(diffs) + " |")
    lines.append("")
    lines.append("Per seed: " + "; ".join(f"{r}/{s}: " + ", ".join(f"{d} {losses[(r, s)][d]:.4f}" for d in domains)
                                          for s in range(args.seeds) for r in RECIPES))
    append_results(lines, args.results)


if __name__ == "__main__":
    main()
