"""python benchmarks/method_changes.py --corpus demo-out/corpus --old-heads OLD.json --new-heads demo-out/heads.json

What each method-fidelity change does to the scores, one change at a time,
on one corpus, in one run. The baseline reproduces the scoring of attninf
before the change (scoring version 2): heads found with copies counted
anywhere in the prompt, documents started with the tokenizer's bos token
(`<|im_start|>` for the offline SmolLM2), windows of 512 tokens that overlap
by one. Each row changes one thing:

  1 heads      the heads found with copies counted inside the needle only
  2 doc start  documents start with <|endoftext|> (the document rule)
  3 windows    windows of 512 keep 256 tokens of context
  3' no cut    windows of 2048: no demo document is cut at all
  all          1 + 2 + 3' (the demo's new settings)

For each row: Spearman of the scores against the baseline (per domain and
all), the largest score change, how many of the baseline's top 20% per
domain stay in the top 20%, and the per-domain 20% thresholds. With
--old-scores (a scores/ directory written by the old code) the baseline is
first checked to equal it, so the baseline is the old code's numbers.

OLD.json only needs "heads": [[layer, head], ...]; files older than the
current heads version are read for their head list and nothing else.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from heads_rule import spearman  # this folder: the benchmark scripts run from it
from results import append_results


def load_corpus(root: Path):
    import pyarrow.parquet as pq

    texts, domains, ids = [], [], []
    for p in sorted(root.rglob("*.parquet")):
        t = pq.read_table(p).to_pydict()
        rel = p.relative_to(root).as_posix()
        texts += t["text"]
        domains += t.get("domain", [None] * len(t["text"]))
        ids += t.get("id", [f"{rel}:{i}" for i in range(len(t["text"]))])
    return texts, np.array(domains, dtype=object), ids


def top_frac(scores: np.ndarray, frac: float = 0.2) -> set[int]:
    order = np.argsort(-scores, kind="stable")
    return set(order[:int(np.floor(frac * len(scores) + 0.5))].tolist())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--old-heads", required=True)
    ap.add_argument("--new-heads", required=True)
    ap.add_argument("--old-scores", default=None, help="scores/ of the old code, to check the baseline against")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default="benchmarks/RESULTS.md")
    args = ap.parse_args()

    import torch

    from attninf.docstart import resolve_doc_prefix
    from attninf.model import load_model
    from attninf.scoring import Scorer

    lm = load_model(args.model, dtype="float32", device="cpu")
    old_heads = json.loads(Path(args.old_heads).read_text())["heads"]
    new_heads = json.loads(Path(args.new_heads).read_text())["heads"]
    texts, domains, ids = load_corpus(Path(args.corpus))
    tok = lm.tokenizer
    old_start = resolve_doc_prefix(tok, tok.bos_token)  # what version 2 put first: the tokenizer's bos
    new_start = resolve_doc_prefix(tok)
    rows = [
        ("baseline (v2)", old_heads, old_start, 512, 1),
        ("1 heads", new_heads, old_start, 512, 1),
        ("2 doc start", old_heads, new_start, 512, 1),
        ("3 windows", old_heads, old_start, 512, 256),
        ("3' no cut", old_heads, old_start, 2048, 1),
        ("all", new_heads, new_start, 2048, 1024),
    ]
    results = {}
    for name, heads, start, M, C in rows:
        t0 = time.perf_counter()
        r = Scorer(lm, heads, max_tokens=M, batch_tokens=8192, context_overlap=C, doc_prefix=start).score_texts(texts)
        results[name] = r
        print(f"scored {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    base = results["baseline (v2)"]
    ok = base["status"] == "ok"
    if args.old_scores:
        import pyarrow.parquet as pq

        old = {}
        for p in Path(args.old_scores).rglob("*.parquet"):
            if not p.name.startswith((".", "_")):
                t = pq.read_table(p).to_pydict()
                old.update(zip(t["id"], t["score"]))
        got = np.array([old[i] for i in ids], dtype=np.float64)
        diff = np.nanmax(np.abs(got[ok] - base["score"][ok]))
        print(f"baseline vs the old code's scores: max |diff| {diff:.2e}", file=sys.stderr)
        assert diff < 1e-4, "the baseline does not reproduce the old code"

    doms = sorted({d for d in domains if d is not None})
    lengths = np.array([len(x) for x in Scorer(lm, new_heads, doc_prefix=new_start).encode(texts) if x])
    lines = [f"## Method changes, one at a time ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__})", "",
             f"{len(texts)} documents of {args.corpus}; baseline = scoring version 2 (bos `{tok.bos_token}` first, "
             "512-token windows overlapping by one, heads with copies anywhere in the prompt). "
             f"Documents longer than 512 tokens: {int((lengths > 512).sum())}; longer than 2048: "
             f"{int((lengths > 2048).sum())}; longest {int(lengths.max())}.", "",
             "| change | Spearman all | " + " | ".join(f"Spearman {d}" for d in doms) +
             " | max abs Δscore | top-20% kept | " + " | ".join(f"20% threshold {d}" for d in doms) + " |",
             "|---" * (4 + 2 * len(doms)) + "|"]
    for name, r in results.items():
        sel = ok & (r["status"] == "ok")
        sp_all = spearman(base["score"][sel], r["score"][sel])
        sps, thr, kept = [], [], 0
        total = 0
        for d in doms:
            m = sel & (domains == d)
            sps.append(spearman(base["score"][m], r["score"][m]))
            idx = np.nonzero(m)[0]
            a = {idx[i] for i in top_frac(base["score"][m])}
            b = {idx[i] for i in top_frac(r["score"][m])}
            kept += len(a & b)
            total += len(a)
            thr.append(float(np.sort(r["score"][m])[::-1][max(len(b) - 1, 0)]))
        dmax = float(np.max(np.abs(base["score"][sel] - r["score"][sel])))
        lines.append(f"| {name} | {sp_all:.4f} | " + " | ".join(f"{x:.4f}" for x in sps) +
                     f" | {dmax:.4f} | {kept}/{total} | " + " | ".join(f"{x:.4f}" for x in thr) + " |")
    lines.append("")
    append_results(lines, args.out)


if __name__ == "__main__":
    main()
