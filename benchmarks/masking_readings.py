"""python benchmarks/masking_readings.py --corpus DIR --heads heads.json [--out benchmarks/RESULTS.md]

The paper's Appendix C says a masked head's attention weights are set "to
equal weights. And if the length of the sequence is L, the attention weight
of each token should be set to 1/L". attninf reads it as 1/(t+1) over each
query's visible prefix (the zero-query reading). This script scores a corpus
under each reading, in float32, with a plain attention written here (no
attninf kernel, so it checks attninf's own reading too):

  prefix        1/(t+1) on positions 0..t: attninf's reading
  1/L visible   1/L on positions 0..t, not renormalised (row t sums to (t+1)/L)
  1/L all       1/L on every position, the future included (the text taken literally)
  zero          the head's output set to zero (not a uniform attention at all)

and prints, per domain, Spearman of each reading's scores against attninf's
engine's scores, the top-20% overlap, and the largest difference. L is the
length of the document's row: the document prefix and its tokens.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

READINGS = ("prefix", "1/L visible", "1/L all", "zero")


def uniform_weights(reading: str, S: int) -> torch.Tensor:
    """(S, S) attention weights of a masked head under a reading."""
    causal = torch.ones(S, S).tril()
    if reading == "prefix":
        return causal / causal.sum(-1, keepdim=True)
    if reading == "1/L visible":
        return causal / S
    if reading == "1/L all":
        return torch.full((S, S), 1.0 / S)
    if reading == "zero":
        return torch.zeros(S, S)
    raise ValueError(reading)


def reading_attention(masked: dict[int, list[int]], reading: list[str | None]):
    """An attention function for transformers' AttentionInterface: causal
    softmax attention, the heads of `masked` (layer -> heads) replaced by
    reading[0]'s weights (None: no head masked)."""
    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        B, H, S, D = query.shape
        g = H // key.shape[1]
        k, v = key.repeat_interleave(g, 1).float(), value.repeat_interleave(g, 1).float()
        logits = (query.float() @ k.transpose(-1, -2)) * scaling
        logits = logits.masked_fill(torch.ones(S, S, dtype=torch.bool, device=query.device).triu(1), float("-inf"))
        w = logits.softmax(-1)
        if reading[0] is not None and module.layer_idx in masked:
            w = w.clone()
            w[:, masked[module.layer_idx]] = uniform_weights(reading[0], S).to(w)
        return (w @ v).to(value.dtype).transpose(1, 2).contiguous(), None
    return attention


def reading_scores(lm, heads: list, texts: list[str], prefix_ids: list[int], max_tokens: int = 2048) -> dict:
    """{reading: scores (len(texts),)} in float32, one document per forward
    (the first max_tokens tokens, the document prefix first)."""
    from transformers import AttentionInterface

    model = lm.model
    masked: dict[int, list[int]] = {}
    for layer, head in heads:
        masked.setdefault(int(layer), []).append(int(head))
    which: list[str | None] = [None]
    AttentionInterface.register("attninf_readings", reading_attention(masked, which))
    model.set_attn_implementation("attninf_readings")
    out = {r: np.full(len(texts), np.nan) for r in READINGS}
    with torch.inference_mode():
        for i, text in enumerate(texts):
            ids = (list(prefix_ids) + lm.tokenizer(text, add_special_tokens=False)["input_ids"])[:max_tokens]
            if len(ids) < 2:
                continue
            x = torch.tensor(ids).view(1, -1)
            losses = {}
            for r in (None, *READINGS):
                which[0] = r
                logits = model(x, use_cache=False).logits[0, :-1].float()
                losses[r] = torch.nn.functional.cross_entropy(logits, x[0, 1:]).item()
            for r in READINGS:
                out[r][i] = (losses[r] - losses[None]) / losses[None]
    return out


def spearman(a, b) -> float:
    from attninf.rankstats import spearman as rank_correlation

    return rank_correlation(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


def top_overlap(a, b, frac: float = 0.2) -> tuple[int, int]:
    k = max(1, int(np.floor(frac * len(a) + 0.5)))
    ta, tb = set(np.argsort(-a, kind="stable")[:k]), set(np.argsort(-b, kind="stable")[:k])
    return len(ta & tb), k


def compare_readings(lm, heads, corpus: Path, prefix: str, max_tokens: int = 2048, limit: int | None = None) -> list[dict]:
    """Per domain and reading: Spearman and top-20% overlap against attninf's
    engine, documents starting with the `prefix` token."""
    import pyarrow.parquet as pq

    from attninf.scoring import Scorer

    texts, domains = [], []
    for p in sorted(corpus.rglob("*.parquet")):
        t = pq.read_table(p, columns=["text", "domain"]).to_pydict()
        texts += t["text"]
        domains += t["domain"]
    texts, domains = texts[:limit], np.array(domains[:limit], dtype=object)
    engine = Scorer(lm, heads, max_tokens=max_tokens, doc_prefix=prefix).score_texts(texts)["score"]
    got = reading_scores(lm, heads, texts, lm.tokenizer.convert_tokens_to_ids([prefix]), max_tokens)
    rows = []
    for d in sorted(set(domains)):
        m = domains == d
        for r in READINGS:
            both, k = top_overlap(got[r][m], engine[m])
            rows.append({"domain": d, "reading": r, "n": int(m.sum()), "spearman": spearman(got[r][m], engine[m]),
                         "overlap": both, "k": k, "max_diff": float(np.nanmax(np.abs(got[r][m] - engine[m])))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--heads", required=True)
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--limit", type=int, default=None, help="the first N documents only")
    args = ap.parse_args()

    from attninf.artifacts import Heads
    from attninf.model import load_model

    heads = Heads.read(args.heads)
    lm = load_model(heads.model_spec, dtype="float32", device="cpu")
    t0 = time.perf_counter()
    prefix = heads.data["doc_prefix"]["tokens"][0]
    for r in compare_readings(lm, heads.heads, Path(args.corpus), prefix, args.max_tokens, args.limit):
        print(f"{r['domain']:<8} {r['reading']:<12} Spearman {r['spearman']:+.3f}  top 20% {r['overlap']}/{r['k']}  "
              f"max diff {r['max_diff']:.2e}")
    print(f"{time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
