"""python benchmarks/heads_rule.py --config configs/quick.yaml

What the copy rule and the document start change in the retrieval heads, on
the same probes, from the same forward passes: for each probe, every head's
attention argmax on the answer rows is scored under both rules,

  anywhere  the argmax lands anywhere in the prompt on a token equal to the
            answer token (heads version 1)
  needle    the argmax lands inside the queried value's span (version 2)

once with the probes as version 1 built them (no document prefix) and once
with the document prefix of the current rule. Prints the top-5% heads under
each, their overlap, the Spearman correlation of the full score matrices, and
the share of version 1's copies that landed outside the needle.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from results import append_results  # this folder: the scripts run from it


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=np.float64)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    return np.bincount(inv, weights=r)[inv] / counts[inv]


def spearman(a, b) -> float:
    return float(np.corrcoef(_ranks(np.ravel(a)), _ranks(np.ravel(b)))[0, 1])


@torch.inference_mode()
def both_rules(lm, probes):
    """(L, H) copy rates under the anywhere and the needle rule, one pass per probe."""
    from attninf.heads import _answer_rows, copy_hits
    from attninf.plugin import install, recording

    model = lm.model
    install(model)
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    anywhere = torch.zeros(L, H, dtype=torch.float64)
    needle = torch.zeros(L, H, dtype=torch.float64)
    device = next(model.parameters()).device
    for p in probes:
        ids = torch.tensor(p.input_ids, device=device)
        rows = _answer_rows(p)

        def rec(layer, q, k, scale, window):
            anywhere[layer] += copy_hits(q, k, ids, rows, (0, p.prompt_len), scale, window).double()
            needle[layer] += copy_hits(q, k, ids, rows, p.needle, scale, window).double()

        with recording(model, rec):
            model(ids.view(1, -1), logits_to_keep=1, use_cache=False)
    return (anywhere / len(probes)).numpy(), (needle / len(probes)).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/quick.yaml")
    ap.add_argument("--out", default="benchmarks/RESULTS.md")
    args = ap.parse_args()

    from attninf.config import load_stage
    from attninf.docstart import resolve_doc_prefix
    from attninf.heads import DetectConfig, select_top
    from attninf.model import load_model
    from attninf.probes import make_probes

    cfg = load_stage(DetectConfig, args.config, "detect", {})
    lm = load_model(cfg.model, dtype="float32", device="cpu")
    prefix = resolve_doc_prefix(lm.tokenizer, cfg.doc_prefix)
    res = {}
    t0 = time.perf_counter()
    for name, pre in (("no prefix", ()), (" + ".join(prefix.tokens) or "no prefix", prefix.ids)):
        probes = make_probes(lm.tokenizer, cfg.num_probes, cfg.seed, cfg.context_tokens, pre, cfg.probe_wording)
        res[name] = both_rules(lm, probes)
    el = time.perf_counter() - t0
    fmt = lambda hs: " ".join(f"{l}.{h}" for l, h in hs)  # noqa: E731
    (a0, n0), (a1, n1) = res.values()
    old = select_top(torch.tensor(a0), cfg.top_frac)
    lines = [f"## Retrieval heads under each copy rule ({time.strftime('%Y-%m-%d')}, "
             f"{platform.machine()}, torch {torch.__version__}, {el:.0f}s)", "",
             f"{cfg.model}, {cfg.num_probes} probes under {cfg.context_tokens} tokens, seed {cfg.seed}, "
             f"top {cfg.top_frac:.0%}. Baseline: copies anywhere in the prompt, no document prefix (heads version 1).",
             "", "| rule | document start | top heads (layer.head) | overlap with v1 | Spearman of the matrix vs v1 "
             "| mean copy rate of the top heads |", "|---|---|---|---|---|---|"]
    for (start, (a, n)) in res.items():
        for rule, m in (("anywhere", a), ("needle", n)):
            top = select_top(torch.tensor(m), cfg.top_frac)
            overlap = len({tuple(x) for x in top} & {tuple(x) for x in old})
            lines.append(f"| {rule} | {start} | {fmt(top)} | {overlap}/{len(old)} | {spearman(a0, m):.4f} | "
                         f"{np.mean([m[l, h] for l, h in top]):.3f} |")
    outside = 1 - n0.sum() / max(a0.sum(), 1e-12)
    top_out = 1 - sum(n0[l, h] for l, h in old) / max(sum(a0[l, h] for l, h in old), 1e-12)
    lines += ["", f"Copies outside the needle under the version 1 rule: {outside:.1%} of all, "
                  f"{top_out:.1%} of those of its top heads.", ""]
    append_results(lines, args.out)


if __name__ == "__main__":
    main()
