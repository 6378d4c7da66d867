"""`attninf compare`: does the selection help on this corpus? Small proxy
trainings, arm against arm, at equal tokens and seeds (DataComp-LM style).

1. Held-out split first: in each domain the documents with the lowest hash
   of their id (a fixed `heldout_frac`, at least one) are set aside, before
   anything is selected or mixed, in OUT/data/heldout/. The rest is the
   training corpus (OUT/data/corpus/) with its scores (OUT/data/scores/).
2. Arms, each a mixture of that training corpus:
   full (the corpus alone); attninf (corpus + the top `frac` of each domain,
   `repeat` more times, as `attninf mix`); random (corpus + a random subset
   of each domain with the same tokens as attninf's selection, within one
   document, `repeat` more times: it separates "which documents" from "more
   repetition"); decay (the corpus in the stable phase, the selection
   `decay_weight` more times in the decay phase).
3. Every arm trains the same model config for the same steps and tokens with
   each seed (`attninf train`'s training; a finished run is not retrained, a
   killed one resumes), then is measured: held-out loss per domain, copy
   loss, retrieval-probe loss (attninf.measures), the training loss curve.
4. OUT/summary.json and OUT/index.html: mean ± sd per arm and measure,
   paired differences against full and random, the selection diagnostics.

Steps 1 and 2 (the data, prepared once) are in compare_data.py; this module
holds the config, the runs and the summary.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from attninf import identity
from attninf.artifacts import ALL, COMPARE_SUMMARY, HELDOUT, Scores, Selection, domain_name
from attninf.pipelines.compare_data import ARMS, prepare
from attninf.storage import write_json
from attninf.errors import AttninfError
from attninf.checkpoints import checkpoint_dir
from attninf.train import TrainConfig, TrainSettings


@dataclass
class CompareConfig(TrainSettings):
    """`attninf compare`: the training settings every proxy run shares
    (`attninf train`'s options), and what compare decides itself: the arms,
    the seeds, the held-out split, the selection's fraction and repeats. The
    data, output folder and seed of each run are compare's, per arm and seed."""
    scores: str = field(default="scores", metadata={"help": "Scores of the corpus (`attninf score`)."})
    corpus: str = field(default="", metadata={"help": "The corpus that was scored.", "default_help": "required"})
    out: str = field(default="compare", metadata={"help": "Output directory."})
    arms: str = field(default="full,attninf,random", metadata={
        "help": f"Arms to train, comma-separated, of: {', '.join(ARMS)}."})
    seeds: int = field(default=3, metadata={"help": "Seeds per arm (model init and data order)."})
    heldout_frac: float = field(default=0.05, metadata={
        "help": "Fraction of each domain held out (by a hash of the id) before anything is selected."})
    frac: float = field(default=0.2, metadata={"help": "Fraction of each domain the attninf arm selects."})
    repeat: int = field(default=1, metadata={"help": "Extra copies of the selected documents (attninf, random)."})
    decay_weight: int = field(default=3, metadata={"help": "Extra copies in the decay phase (decay arm)."})
    probes: int = field(default=8, metadata={"help": "Retrieval probes per model (0: none)."})


def arms_of(cfg: CompareConfig) -> list[str]:
    arms = [a.strip() for a in str(cfg.arms).split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise AttninfError(f"unknown arm {unknown[0] if unknown else repr(cfg.arms)}: choose from {', '.join(ARMS)}")
    if len(set(arms)) != len(arms):
        raise AttninfError(f"--arms names an arm twice: {cfg.arms}")
    return arms


def _check(cfg: CompareConfig) -> None:
    if not cfg.corpus:
        raise AttninfError("--corpus is required: the corpus the scores were made from")
    arms_of(cfg)
    if cfg.seeds < 1:
        raise AttninfError("--seeds must be at least 1")
    if not 0 < cfg.heldout_frac < 0.5:
        raise AttninfError(f"--heldout-frac must be in (0, 0.5), got {cfg.heldout_frac}")
    if not 0 < cfg.frac < 1:
        raise AttninfError(f"--frac must be in (0, 1), got {cfg.frac}")


# -------------------------------------------------------------------- runs

RUN_KEY = "run-key.json"  # in each run's folder: the key (run_key) it was trained under


def _recorded_key(marker: Path) -> str | None:
    try:
        return json.loads(marker.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def train_config(cfg: CompareConfig, arm: str, seed: int, data: dict) -> TrainConfig:
    kw = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainSettings)}
    return TrainConfig(**kw, data=data["mixtures"][arm], out=str(Path(cfg.out) / "runs" / f"{arm}-s{seed}"),
                       eval_data=str(Path(cfg.out) / "data" / "heldout"), seed=seed,
                       save_every=max(1, cfg.total_steps // 10), keep_last=1)


def run_key(tcfg: TrainConfig, probes: int) -> str:
    """What makes one run's numbers: what its checkpoints are checked
    against (the training settings, TrainConfig.digest, and by content its
    mixture, model config and tokenizer, TrainConfig.inputs_key), plus what
    it is measured on: the held-out documents and the probes."""
    heldout = identity.file_key(Path(tcfg.eval_data) / "heldout.parquet") if tcfg.eval_data else None
    return identity.digest([tcfg.digest(), tcfg.inputs_key(), heldout, probes])


def _measure(tcfg: TrainConfig, probes: int) -> dict:
    """Held-out loss (from the run), copy and probe losses of its final model."""
    import torch
    from transformers import LlamaForCausalLM

    from attninf.measures import copy_loss, probe_loss
    from attninf.docstart import document_separators
    from attninf.model import load_tokenizer

    run = json.loads((Path(tcfg.out) / "run.json").read_text())
    final = checkpoint_dir(tcfg.out, tcfg.total_steps)
    model = LlamaForCausalLM.from_pretrained(final).eval()
    tok = load_tokenizer(tcfg.tokenizer)
    bos = document_separators(tok).boundary
    span = max(4, min(64, (tcfg.seq_len - 1) // 2))
    torch.manual_seed(0)
    out = {"heldout_loss": run.get("eval_loss") or {}, "copy": copy_loss(model, len(tok), bos, span=span),
           "tokens": run["step"] * tcfg.tokens_per_step, "phases": run["phases"]}
    if probes:  # in the model's position range (build_model: at least 512), a probe needs a few hundred tokens
        try:
            out["probe_loss"] = probe_loss(model, tok, context_tokens=model.config.max_position_embeddings, n=probes)
        except AttninfError as e:
            out["probe_note"] = str(e)
    return out


def run_compare(cfg: CompareConfig, progress: bool = True, say: Callable[[str], None] = print) -> dict | None:
    """Prepare, train and measure every arm and seed (what is done is
    skipped), write OUT/summary.json and OUT/index.html; returns the summary."""
    from attninf.train import train

    _check(cfg)
    arms = arms_of(cfg)
    data = prepare(cfg.scores, cfg.corpus, Path(cfg.out) / "data", heldout_frac=cfg.heldout_frac, frac=cfg.frac,
                   repeat=cfg.repeat, decay_weight=cfg.decay_weight, say=say)
    runs = [(arm, seed) for seed in range(cfg.seeds) for arm in arms]
    results: dict = {}
    spent: list[float] = []  # seconds of each run trained by this call: the ETA of the rest
    for k, (arm, seed) in enumerate(runs, 1):
        tcfg = train_config(cfg, arm, seed, data)
        run_dir, key = Path(tcfg.out), run_key(tcfg, cfg.probes)
        measured, marker = run_dir / "measures.json", run_dir / RUN_KEY
        if run_dir.exists() and _recorded_key(marker) != key:  # other settings or data: never reused
            say(f"arm {arm}, seed {seed}: made with other settings or data; trained again")
            shutil.rmtree(run_dir)
        if measured.is_file():
            results[(arm, seed)] = json.loads(measured.read_text())
            continue
        write_json({"key": key}, marker)  # before training: a killed run resumes only under the same key
        eta = f", about {statistics.mean(spent) * (len(runs) - k + 1) / 60:.0f} min left" if spent else ""
        say(f"[{k}/{len(runs)}] arm {arm}, seed {seed}: training {cfg.total_steps} steps{eta}")
        t0 = time.perf_counter()
        r = train(tcfg, progress=progress, say=say)
        if r["step"] < tcfg.total_steps:  # a planned stop (max_steps_this_run): run again to go on
            say(f"stopped at step {r['step']} of arm {arm}, seed {seed}; run the same command to go on")
            return None
        results[(arm, seed)] = _measure(tcfg, cfg.probes)
        write_json(results[(arm, seed)], measured)
        spent.append(time.perf_counter() - t0)
    summary = summarize(cfg, arms, data, results)
    summary["diagnostics"] = diagnostics(cfg, data)
    write_json(summary, Path(cfg.out) / COMPARE_SUMMARY)
    from attninf.compare_page import write_page

    write_page(summary, Path(cfg.out))
    return summary


# ----------------------------------------------------------------- summary


def _measures(r: dict) -> dict[str, float]:
    """One run's measures as flat {name: value}, lower is better for all."""
    out = {f"heldout loss {d}": v for d, v in sorted(r["heldout_loss"].items())}
    if r["heldout_loss"]:
        out[HELDOUT] = statistics.mean(r["heldout_loss"].values())
    out["copy loss (2nd occurrence)"] = r["copy"]["second"]
    if "probe_loss" in r:
        out["retrieval probe loss"] = r["probe_loss"]
    return out


def summarize(cfg: CompareConfig, arms: list[str], data: dict, results: dict) -> dict:
    from attninf.measures import paired

    seeds = list(range(cfg.seeds))
    names = list(_measures(results[(arms[0], 0)]))
    table = {arm: {m: [_measures(results[(arm, s)])[m] for s in seeds] for m in names} for arm in arms}
    stats = {arm: {m: {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else math.nan,
                       "values": v} for m, v in per.items()} for arm, per in table.items()}
    diffs = {}
    for ref in ("full", "random"):
        if ref not in arms:
            continue
        diffs[ref] = {arm: {m: paired(table[arm][m], table[ref][m]) for m in names} for arm in arms if arm != ref}
    tokens = {arm: [results[(arm, s)]["tokens"] for s in seeds] for arm in arms}
    curves = {}
    for arm in arms:
        for s in seeds:
            log = Path(cfg.out) / "runs" / f"{arm}-s{s}" / "log.csv"
            curves[f"{arm}-s{s}"] = _curve(log)
    notes = sorted({r["probe_note"] for r in results.values() if "probe_note" in r})
    return {"config": dataclasses.asdict(cfg), "arms": arms, "seeds": seeds, "notes": notes,
            "measures": names, "stats": stats, "paired": diffs, "tokens": tokens, "data": data, "curves": curves}


def _curve(log: Path) -> list[list[float]]:
    import csv

    with open(log, newline="") as f:
        return [[int(r["step"]), float(r["loss"])] for r in csv.DictReader(f)]


def diagnostics(cfg: CompareConfig, data: dict) -> dict:
    """What the paper reports of its selection, for this one: token share vs
    document share per domain, median length selected vs all, and the
    tokens most over-represented in the selected documents."""
    import pyarrow.parquet as pq

    from attninf.corpus import corpus_texts
    from attninf.measures import over_represented
    from attninf.model import load_tokenizer

    root = Path(cfg.out) / "data"
    sel, scores = Selection.read(root / "selected"), Scores.read(root / "scores")
    per = {}
    for g, v in sel.groups.items():
        per[g] = {"document_share": v["selected"] / max(v["documents"], 1),
                  "token_share": v["tokens_selected"] / max(v["tokens_total"], 1)}
    lengths: dict[str, dict[str, list]] = {}
    texts_sel, texts_all = [], []
    for rel in sel.files:
        s = pq.read_table(scores.root / rel, columns=["n_tokens", "domain", "status"])
        rows = set(sel.rows(rel).tolist())
        texts = corpus_texts(root / "corpus", rel, list(range(len(s))), scores.column("text"))
        for row, (n, d, st) in enumerate(zip(*(s[c].to_pylist() for c in s.column_names))):
            if st != "ok":
                continue
            e = lengths.setdefault(domain_name(d) if sel.manifest.get("by") == "domain" else ALL,
                                   {"all": [], "selected": []})
            e["all"].append(n)
            texts_all.append(texts[row])
            if row in rows:
                e["selected"].append(n)
                texts_sel.append(texts[row])
    for g, e in lengths.items():
        per.setdefault(g, {}).update({"median_tokens_all": float(np.median(e["all"])) if e["all"] else None,
                                      "median_tokens_selected": float(np.median(e["selected"])) if e["selected"]
                                      else None})
    tok = load_tokenizer(cfg.tokenizer)
    return {"per_domain": per, "over_represented": over_represented(tok, texts_sel, texts_all),
            "random_tokens": data.get("random"), "selected": data.get("selected")}


def describe(summary: dict) -> list[str]:
    """The summary as lines for the terminal."""
    lines = []
    for m in summary["measures"]:
        cells = [f"{a} {summary['stats'][a][m]['mean']:.4f}" for a in summary["arms"]]
        lines.append(f"{m}: " + ", ".join(cells))
    for ref, per in summary["paired"].items():
        for arm, ms in per.items():
            key = HELDOUT if HELDOUT in ms else summary["measures"][0]
            d = ms[key]
            lines.append(f"{arm} - {ref}, {key}: {d['mean']:+.4f} ({d['verdict']})")
    return lines


