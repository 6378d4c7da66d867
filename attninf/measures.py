"""What `attninf compare` measures of a trained proxy model, beyond held-out
loss: the in-context abilities that retrieval heads carry, and a paired
comparison of arms over seeds.

* copy loss: random token spans, each shown twice; the mean NLL of the
  second occurrence. A model that copies from its context predicts it far
  better than the first (whose loss is about ln(vocabulary)).
* probe loss: the key/value retrieval probes of attninf.probes (the ones
  the retrieval heads are found with), scaled to the proxy's context; the
  mean NLL of the answer tokens, fed by teacher forcing.
"""
from __future__ import annotations

import math
import statistics

import numpy as np

# two-sided 5% critical values of Student's t by degrees of freedom (1..10): the
# paired test over a handful of seeds, with no statistics package needed
T_CRIT_05 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def _nll(model, ids: list[int]):
    """Per-position NLL of predicting ids[1:] (float64 numpy)."""
    import torch

    dev = next(model.parameters()).device
    x = torch.tensor(ids, device=dev).view(1, -1)
    with torch.no_grad():
        logits = model(x).logits[0, :-1].double()
    return -torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1, device=dev), x[0, 1:]].cpu().numpy()


def copy_loss(model, vocab_size: int, bos: int, span: int = 32, n: int = 16, seed: int = 0) -> dict:
    """{"first", "second"}: mean NLL of the first and of the second
    occurrence of n random spans of `span` tokens (ids drawn from the
    vocabulary, the first 100 skipped: special tokens live there)."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for _ in range(n):
        s = rng.integers(min(100, vocab_size - 1), vocab_size, span).tolist()
        nll = _nll(model, [bos] + s + s)
        first.append(nll[1:span].mean())  # tokens 2..span of the first occurrence (the first has no context)
        second.append(nll[span:].mean())  # every token of the second occurrence
    return {"first": float(np.mean(first)), "second": float(np.mean(second))}


def probe_loss(model, tokenizer, context_tokens: int, n: int = 8, seed: int = 0) -> float:
    """Mean NLL of the answer tokens of n key/value retrieval probes that fit
    in context_tokens (teacher forcing)."""
    from .probes import make_probe

    from .docstart import document_separators

    bos = document_separators(tokenizer).boundary
    total, count = 0.0, 0
    for i in range(n):
        # attninf's own wording, fixed: compare's finished runs keep their numbers comparable with new ones
        p = make_probe(tokenizer, i, seed=seed, context_tokens=context_tokens, prefix_ids=[bos], wording="attninf")
        nll = _nll(model, p.input_ids)
        answer = nll[p.prompt_len - 1:]  # position j predicts token j + 1: the answer starts at prompt_len
        total += float(answer.sum())
        count += len(answer)
    return total / max(count, 1)


def paired(a: list[float], b: list[float]) -> dict:
    """a - b over paired seeds: mean, sd, t, and a plain-words verdict at 5%
    (two-sided paired t-test; with one seed, no test)."""
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = statistics.mean(d) if d else math.nan
    if n < 2:
        return {"mean": mean, "sd": math.nan, "t": math.nan, "n": n, "verdict": "one seed: no test"}
    sd = statistics.stdev(d)
    if sd == 0:
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    else:
        t = mean / (sd / math.sqrt(n))
    crit = T_CRIT_05[min(n - 1, len(T_CRIT_05)) - 1]
    if abs(t) > crit:
        verdict = f"{'lower' if mean < 0 else 'higher'} in {sum((x < 0) if mean < 0 else (x > 0) for x in d)} of " \
                  f"{n} seeds, significant at 5% (|t| = {abs(t):.2f} > {crit})"
    else:
        verdict = f"not significant at 5% (|t| = {abs(t):.2f} ≤ {crit}, {n} seeds)"
    return {"mean": mean, "sd": sd, "t": t, "n": n, "verdict": verdict}


def over_represented(tokenizer, selected: list[str], everything: list[str], top: int = 15,
                     min_count: int = 20) -> list[dict]:
    """Tokens most over-represented in the selected texts relative to all
    texts: ratio of their frequencies (add-one smoothed), among tokens seen
    at least min_count times in the selection."""
    from collections import Counter

    def counts(texts):
        c: Counter = Counter()
        for start in range(0, len(texts), 256):
            for ids in tokenizer([t or "" for t in texts[start:start + 256]], add_special_tokens=False)["input_ids"]:
                c.update(ids)
        return c

    sel, alls = counts(selected), counts(everything)
    n_sel, n_all = sum(sel.values()) or 1, sum(alls.values()) or 1
    rows = [{"token": tokenizer.decode([t]), "id": t, "selected": c, "all": alls[t],
             "ratio": (c / n_sel) / ((alls[t] + 1) / n_all)} for t, c in sel.items() if c >= min_count]
    rows.sort(key=lambda r: (-r["ratio"], r["id"]))
    return rows[:top]


def id_hash(key: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by (salt, key): the same on every machine and run."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(f"{salt}\0{key}".encode(), digest_size=8).digest(), "little") / 2.0 ** 64
