"""Retrieval-head detection (docs/method.md, step 1) and the ablation check.

A head *copies* at answer position t when the argmax j of its attention row
(the query position that predicts answer token w) holds a token equal to w,
and, by the copy rule (DetectConfig.hit):

  needle-span  j lies inside the needle, the queried value's tokens in the
               JSON context (Wu et al. 2024's code); an equal token elsewhere
               in the prompt (another value, a solved example, the
               instruction) is not a copy. The default.
  paper        w is a token of the needle, j anywhere the row sees
               (AttentionInfluence, Section 3, conditions 1 and 2).

Its retrieval score is hits / answer tokens, averaged over probes; the top
`top_frac` of all heads are the retrieval heads. Each probe's hit counts are
kept (heads.json "per_probe"), and the selection's stability computed from
them (attninf.stability). Only the answer rows of attention are computed: a
(Hq, answer, S) block per layer, never S x S.

The ablation: teacher-forced probe accuracy (the model's argmax equals the
answer token) with no mask, with the selected heads masked to uniform
attention, and with as many random heads masked.
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from .devices import DTYPE_HELP, DTYPES
from .errors import AttninfError
from .model import DEFAULT_MODEL, LoadedModel
from .artifacts import HEADS_VERSION, Heads
from .storage import utc_now
from .docstart import resolve_doc_prefix
from .probes import DEFAULT_WORDING, PROBE_SOURCE, WORDINGS, Probe, make_probes
from .stability import Counts, num_selected, selected_heads, stability

if TYPE_CHECKING:
    import torch


@dataclass
class DetectConfig:
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Model name, directory, .gguf file or hub id."})
    top_frac: float = field(default=0.05, metadata={"help": "Fraction of all heads kept as retrieval heads."})
    num_probes: int = field(default=800, metadata={"help": "Number of retrieval probes (the paper: 800)."})
    context_tokens: int = field(default=4096, metadata={
        "help": "Each probe stays under this many tokens (the paper: 4096)."})
    seed: int = field(default=0, metadata={"help": "Seed of the probes and of the random-head control."})
    random_trials: int = field(default=4, metadata={"help": "Random-head draws in the ablation control."})
    dtype: str = field(default="auto", metadata={
        "choices": DTYPES, "help": DTYPE_HELP})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N."})
    doc_prefix: str | None = field(default=None, metadata={
        "metavar": "TOKEN|none",
        "help": "Token put before every probe (and, through heads.json, every scored document).",
        "default_help": "what the tokenizer adds by itself, else its end-of-text separator"})
    hit: str = field(default="needle-span", metadata={
        "choices": Heads.HIT_RULES,
        "help": "Copy rule: needle-span, the attention argmax lands inside the queried value on the answer "
                "token (Wu et al. 2024's code); paper, the answer token is a token of the value and the "
                "argmax lands on an equal token anywhere the row sees (the paper's Section 3)."})
    probe_wording: str = field(default=DEFAULT_WORDING, metadata={
        "choices": tuple(WORDINGS),
        "help": "The probes' instruction: paper, the paper's Appendix A wording; attninf, attninf's shorter "
                "first one."})

    def check(self) -> None:
        if not 0 < self.top_frac <= 1:
            raise AttninfError(f"--top-frac must be in (0, 1], got {self.top_frac}")
        if self.num_probes < 1:
            raise AttninfError(f"--num-probes must be at least 1, got {self.num_probes}")
        if self.context_tokens < 64:
            raise AttninfError(f"--context-tokens must be at least 64, got {self.context_tokens}")
        if self.random_trials < 0:
            raise AttninfError("--random-trials cannot be negative")
        if self.seed < 0:  # the stability bootstrap's generator takes no negative seed; found out after the probes
            raise AttninfError(f"--seed cannot be negative, got {self.seed}")
        if self.hit not in Heads.HIT_RULES:
            raise AttninfError(f"unknown copy rule {self.hit!r}: one of {', '.join(Heads.HIT_RULES)}")
        if self.probe_wording not in WORDINGS:
            raise AttninfError(f"unknown probe wording {self.probe_wording!r}: one of {', '.join(WORDINGS)}")


def _progress(iterable, desc: str, total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="probe", disable=not enabled,
                dynamic_ncols=True, mininterval=1.0)


def _answer_rows(probe: Probe) -> torch.Tensor:
    """Query positions that predict the answer tokens: P-1 .. P+A-2."""
    import torch

    P, A = probe.prompt_len, len(probe.answer_ids)
    return torch.arange(P - 1, P - 1 + A)


def copy_hits(query: torch.Tensor, key: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor,
              needle: tuple[int, int], scale: float | None = None, window: int | None = None,
              rule: str = "needle-span") -> torch.Tensor:
    """Per query head, the fraction of answer rows whose attention argmax
    copies: copy_counts / len(rows), (Hq,) float."""
    return copy_counts(query, key, ids, rows, needle, scale, window, rule).float() / rows.numel()


def copy_counts(query: torch.Tensor, key: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor,
                needle: tuple[int, int], scale: float | None = None, window: int | None = None,
                rule: str = "needle-span") -> torch.Tensor:
    """Per query head, the number of answer rows whose attention argmax copies.

    query (1, Hq, S, D), key (1, Hkv, S, D), ids (S,) token ids, rows (A,)
    query positions, needle [start, end) positions of the queried value in
    the context, window the layer's sliding window (row r sees r-window+1..r)
    or None. Row r predicts token w = ids[r + 1]; with
    j = argmax_j attn[r, j] over the positions r sees, it copies when
    ids[j] == w and, by `rule`, start <= j < end (needle-span) or w is one of
    ids[start:end] (paper). A head of a sliding layer cannot copy from
    outside its window, and gets no credit for it. Soft-capping (tanh) keeps
    the order of the logits, so the argmax needs no cap. Returns (Hq,) int64.
    """
    if rule not in Heads.HIT_RULES:
        raise AttninfError(f"unknown copy rule {rule!r}: one of {', '.join(Heads.HIT_RULES)}")
    import torch

    _, Hq, S, D = query.shape
    Hkv = key.shape[1]
    g = Hq // Hkv
    A = rows.numel()
    rows = rows.to(query.device)
    # (Hkv, g, A, D) x (Hkv, S, D) -> (Hkv, g, A, S): GQA without repeating k
    qr = query[0, :, rows].float().reshape(Hkv, g, A, D)
    logits = torch.einsum("hgad,hsd->hgas", qr, key[0].float()).reshape(Hq, A, S)
    if scale is not None:
        logits = logits * scale
    j = torch.arange(S, device=query.device).view(1, S)
    hidden = j > rows.view(A, 1)  # (A, S): the future
    if window:
        hidden = hidden | (j <= rows.view(A, 1) - window)  # before the window
    logits = logits.masked_fill(hidden, float("-inf"))
    top = logits.argmax(-1)  # (Hq, A)
    ids = ids.to(query.device)
    target = ids[rows + 1]  # (A,)
    start, end = needle
    hit = ids[top] == target.view(1, A)
    if rule == "needle-span":
        hit &= (top >= start) & (top < end)
    else:  # paper: the answer token is one of the needle's tokens; j anywhere the row sees
        hit &= torch.isin(target, ids[start:end]).view(1, A)
    return hit.sum(-1).cpu()


def retrieval_counts(lm: LoadedModel, probes: list[Probe], rule: str = "needle-span", progress: bool = True):
    """(num_probes, num_layers, num_heads) int64 copy counts, and the unmasked
    per-probe answer-token correctness, in one pass."""
    import torch

    from .plugin import install, recording

    model = lm.model
    install(model)
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    correct = []
    device = next(model.parameters()).device
    hits = torch.zeros(len(probes), L, H, dtype=torch.int64)
    with torch.inference_mode():
        for p, probe in enumerate(_progress(probes, "detect heads", len(probes), progress)):
            ids = torch.tensor(probe.input_ids, device=device)
            rows = _answer_rows(probe)

            def rec(layer, query, key, scale, window):
                hits[p, layer] += copy_counts(query, key, ids, rows, probe.needle, scale, window, rule)

            with recording(model, rec):
                correct.append(_probe_correct(model, ids, len(probe.answer_ids)))
    return hits, correct


def mean_rates(hits: torch.Tensor, answer_tokens: list[int]) -> torch.Tensor:
    """(L, H) float64: the mean over probes of hits / answer tokens."""
    import torch

    a = torch.tensor(answer_tokens, dtype=torch.float64).view(-1, 1, 1)
    return (hits.double() / a).mean(0)


def retrieval_scores(lm: LoadedModel, probes: list[Probe], progress: bool = True, rule: str = "needle-span"):
    """(num_layers, num_heads) mean copy rate, and the unmasked per-probe
    answer-token correctness, in one pass."""
    hits, correct = retrieval_counts(lm, probes, rule, progress)
    return mean_rates(hits, [len(p.answer_ids) for p in probes]).float(), correct


def _probe_correct(model, ids: torch.Tensor, A: int) -> torch.Tensor:
    """(A,) bool: does the teacher-forced argmax equal each answer token?"""
    # logits of the last A+1 positions: rows P-1..S-1; the last predicts nothing
    out = model(ids.view(1, -1), logits_to_keep=A + 1, use_cache=False)
    pred = out.logits[0, :A].argmax(-1)
    return (pred == ids[-A:]).cpu()


def accuracy(correct: list[torch.Tensor]) -> dict:
    """Token accuracy (mean over probes of the fraction of answer tokens right)
    and exact match (fraction of probes with every answer token right)."""
    return {"token": sum(c.float().mean().item() for c in correct) / len(correct),
            "exact": sum(bool(c.all()) for c in correct) / len(correct)}


def probe_accuracy(lm: LoadedModel, probes: list[Probe], heads=(), desc: str = "ablation",
                   progress: bool = True) -> dict:
    """Teacher-forced probe accuracy with `heads` masked: {"token": .., "exact": ..}."""
    import torch

    from .plugin import install, masked_heads

    model = lm.model
    install(model)
    device = next(model.parameters()).device
    correct = []
    with masked_heads(model, heads), torch.inference_mode():
        for probe in _progress(probes, desc, len(probes), progress):
            ids = torch.tensor(probe.input_ids, device=device)
            correct.append(_probe_correct(model, ids, len(probe.answer_ids)))
    return accuracy(correct)


def select_top(scores: torch.Tensor, top_frac: float) -> list[list[int]]:
    """Top fraction of all heads by score (ties: lower layer, then lower head)."""
    L, H = scores.shape
    k = num_selected(L * H, top_frac)
    flat = scores.flatten().tolist()
    order = sorted(range(L * H), key=lambda i: (-flat[i], i))[:k]
    return sorted([i // H, i % H] for i in order)


def random_heads(L: int, H: int, k: int, exclude, seed: int) -> list[list[int]]:
    rng = random.Random(f"attninf-random-heads:{seed}")
    excl = {tuple(x) for x in exclude}
    pool = [[l, h] for l in range(L) for h in range(H) if (l, h) not in excl]
    return sorted(rng.sample(pool, min(k, len(pool))))


def detect_heads(lm: LoadedModel, cfg: DetectConfig, progress: bool = True, log=print) -> dict:
    """Run probes, score every head, pick the top ones, run the ablation; the heads.json dict."""
    cfg.check()
    model = lm.model
    from .plugin import check_model, install

    install(model)
    # refuses an attention attninf does not reproduce before any probe runs; each layer's window
    windows = check_model(model)
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    Hkv = getattr(model.config, "num_key_value_heads", None) or H

    t0 = time.perf_counter()
    prefix = resolve_doc_prefix(lm.tokenizer, cfg.doc_prefix)
    log(f"documents start with {prefix.describe()}")
    probes = _build_probes(lm.tokenizer, cfg, prefix.ids, log)
    t_probes = time.perf_counter() - t0

    t1 = time.perf_counter()
    hits, base_correct = retrieval_counts(lm, probes, cfg.hit, progress)  # (N, L, H), per-probe (A,) bools
    t_detect = time.perf_counter() - t1
    answer_tokens = [len(p.answer_ids) for p in probes]
    counts = Counts(np.array(answer_tokens, dtype=np.int64), hits.reshape(len(probes), L * H).numpy(), L, H)
    per_probe = {"answer_tokens": answer_tokens, "hits": counts.hits.tolist()}
    scores = mean_rates(hits, answer_tokens)
    # the selection: select_top's rule on means compared exactly; its stability from the counts alone
    selected = selected_heads(counts, cfg.top_frac)
    stab = stability(counts, cfg.top_frac, seed=cfg.seed)
    base = accuracy(base_correct)

    t2 = time.perf_counter()
    sel = probe_accuracy(lm, probes, selected, "ablation: selected masked", progress)
    trials = _random_trials(lm, probes, selected, cfg, progress)
    t_ablate = time.perf_counter() - t2

    return {
        "heads_version": HEADS_VERSION,
        "hit": cfg.hit,
        "doc_prefix": prefix.to_json(),
        "attninf_version": __version__,
        "created": utc_now(),
        "model": {**lm.fingerprint, "path": lm.path, "model_type": model.config.model_type,
                  "dtype": str(next(model.parameters()).dtype).replace("torch.", "")},
        "num_layers": L,
        "num_heads": H,
        "num_kv_heads": Hkv,
        # each layer's sliding window (null: full attention); copies were counted within it
        "windows": windows,
        "top_frac": cfg.top_frac,
        "heads": selected,
        "scores": [[round(float(x), 6) for x in row] for row in scores.tolist()],
        # each probe's copy counts: hits[p][layer * num_heads + head] of answer_tokens[p] answer rows
        "per_probe": per_probe,
        "stability": stab,
        "probes": _probes_summary(probes, cfg),
        "ablation": _ablation_summary(base, sel, trials),
        "timing": {"build_probes_s": round(t_probes, 2), "detect_s": round(t_detect, 2),
                   "ablation_s": round(t_ablate, 2),
                   "probes_per_s": round(len(probes) / t_detect, 3) if t_detect > 0 else None},
        "config": dataclasses.asdict(cfg),
    }


def _build_probes(tokenizer, cfg: DetectConfig, prefix_ids: list[int], log) -> list[Probe]:
    """cfg.num_probes retrieval probes, each starting with the document prefix."""
    probes = make_probes(tokenizer, cfg.num_probes, cfg.seed, cfg.context_tokens, prefix_ids, cfg.probe_wording)
    lengths = [len(p) for p in probes]
    log(f"built {len(probes)} probes: {min(lengths)}-{max(lengths)} tokens, "
        f"{sum(len(p.answer_ids) for p in probes) / len(probes):.1f} answer tokens each")
    return probes


def _random_trials(lm: LoadedModel, probes: list[Probe], selected: list[list[int]], cfg: DetectConfig,
                   progress: bool) -> list[dict]:
    """The control: probe accuracy with as many random heads (none of the
    selected) masked, once per draw."""
    L, H = lm.model.config.num_hidden_layers, lm.model.config.num_attention_heads
    trials = []
    for t in range(cfg.random_trials):
        rh = random_heads(L, H, len(selected), selected, cfg.seed * 1000 + t)
        acc = probe_accuracy(lm, probes, rh, f"ablation: random #{t + 1}", progress)
        trials.append({"heads": rh, "accuracy": acc["token"], "exact_match": acc["exact"]})
    return trials


def _probes_summary(probes: list[Probe], cfg: DetectConfig) -> dict:
    """heads.json "probes": how they were made and their sizes in tokens."""
    lengths = [len(p) for p in probes]
    return {
        "num_probes": cfg.num_probes, "context_tokens": cfg.context_tokens, "seed": cfg.seed,
        "source": PROBE_SOURCE, "wording": cfg.probe_wording,
        "min_tokens": min(lengths), "max_tokens": max(lengths),
        "mean_answer_tokens": sum(len(p.answer_ids) for p in probes) / len(probes),
        "mean_needle_tokens": sum(p.needle[1] - p.needle[0] for p in probes) / len(probes),
    }


def _ablation_summary(base: dict, sel: dict, trials: list[dict]) -> dict:
    """heads.json "ablation": token accuracy and exact match with no mask, the
    selected heads masked, and random heads masked (mean over the draws; None with none)."""
    mean = lambda key: sum(t[key] for t in trials) / len(trials) if trials else None  # noqa: E731
    return {
        "metric": "teacher-forced answer-token accuracy, mean over probes",
        "no_mask": base["token"],
        "selected_masked": sel["token"],
        "random_masked": mean("accuracy"),
        "exact_match": {"no_mask": base["exact"], "selected_masked": sel["exact"],
                        "random_masked": mean("exact_match")},
        "random_trials": trials,
    }


def run_detect(cfg: DetectConfig, out: str | Path, plot: str | Path | None = None, progress: bool = True,
               say=print, allow_pickle: bool = False, trust_remote_code: bool = False) -> dict:
    """Load the model, detect its heads, write heads.json and the heatmap
    (default: beside out, as .png); returns the heads.json dict."""
    from .model import load_model

    cfg.check()
    t0 = time.perf_counter()
    lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, allow_pickle=allow_pickle,
                    trust_remote_code=trust_remote_code)
    say(f"loaded {lm.name} ({lm.config.model_type}, {lm.config.num_hidden_layers} layers x "
        f"{lm.config.num_attention_heads} heads) in {time.perf_counter() - t0:.1f}s")
    result = detect_heads(lm, cfg, progress=progress, log=say)
    result["timing"]["total_s"] = round(time.perf_counter() - t0, 2)
    write_heads_json(result, out)
    from .heads_plot import plot_heads

    plot_heads(result, plot or Path(out).with_suffix(".png"))
    return result


def write_heads_json(result: dict, path: str | Path) -> None:
    """heads.json, atomically, each row of a matrix (scores, per-probe hits,
    stability frequencies) on one line: a file of 800 probes stays readable."""
    import json

    from .storage import atomic_path

    rows: dict[str, str] = {}

    def compact(matrix):
        out = []
        for row in matrix:
            tag = f"@@row{len(rows)}@@"
            rows[tag] = json.dumps(row, separators=(",", ":"))
            out.append(tag)
        return out

    shown = dict(result, scores=compact(result["scores"]))
    if "per_probe" in result:
        shown["per_probe"] = dict(result["per_probe"], hits=compact(result["per_probe"]["hits"]))
    if "stability" in result:
        shown["stability"] = dict(result["stability"], frequency=compact(result["stability"]["frequency"]))
    text = json.dumps(shown, indent=1, default=str)
    for tag, row in rows.items():
        text = text.replace(f'"{tag}"', row, 1)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def summary_table(result: dict) -> str:
    ab = result["ablation"]
    heads = ", ".join(f"{l}.{h}" for l, h in result["heads"])
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    em = ab.get("exact_match", {})
    lines = [
        f"model      {result['model']['name']}  ({result['num_layers']} layers x {result['num_heads']} heads, "
        f"fingerprint {result['model']['fingerprint']})",
        f"heads      {len(result['heads'])} selected (layer.head): {heads}",
        f"documents  start with {' '.join(result['doc_prefix']['tokens']) or 'nothing'} "
        f"({result['doc_prefix']['rule']})",
        f"copy rule  {result.get('hit', 'needle-span')}: {HIT_RULE_TEXT[result.get('hit', 'needle-span')]}",
        f"probes     {result['probes']['num_probes']}, instruction worded as "
        f"{result['probes'].get('wording', 'attninf')}'s",
        "",
        "ablation: teacher-forced probe accuracy   token   exact",
        f"  {'no mask':<38}{fmt(ab['no_mask'])}   {fmt(em.get('no_mask'))}",
        f"  {'selected heads masked':<38}{fmt(ab['selected_masked'])}   {fmt(em.get('selected_masked'))}",
        f"  {'random heads masked':<38}{fmt(ab['random_masked'])}   {fmt(em.get('random_masked'))}"
        + (f"  (mean of {len(ab['random_trials'])} draws)" if ab["random_trials"] else ""),
        "",
        f"time       detect {result['timing']['detect_s']:.1f}s ({result['timing']['probes_per_s']} probes/s), "
        f"ablation {result['timing']['ablation_s']:.1f}s",
    ]
    if result.get("stability"):
        from .stability import table

        lines += ["", "stability of the selection (attninf heads stability for more):",
                  table(result["stability"], brief=True)]
    return "\n".join(lines)


HIT_RULE_TEXT = {"needle-span": "the argmax lands inside the needle on the answer token",
                 "paper": "the answer token is a needle token and the argmax lands on it anywhere before"}
