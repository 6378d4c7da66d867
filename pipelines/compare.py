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
from attninf.artifacts import (ALL, COMPARE_SUMMARY, HELDOUT, MANIFEST, Scores, Selection, domain_name,
                               write_selection_rows)
from attninf.identity import corpus_mismatch, corpus_signature
from attninf.storage import atomic_path, write_json
from attninf.errors import AttninfError
from attninf.train import TrainConfig, TrainSettings, checkpoint_dir

ARMS = ("full", "attninf", "random", "decay")


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


# ------------------------------------------------------------------ the data


def _check_pair(scores: Scores, corpus: Path) -> None:
    """The scores belong to this corpus by its files' sizes and rows (the ids
    are compared where the split reads both, `_same_ids`)."""
    if not corpus.is_dir():
        raise AttninfError(f"corpus directory not found: {corpus}")
    files = scores.files()
    if scores.corpus_files is not None:
        why = corpus_mismatch(corpus, scores.corpus_files, files)
        if why:
            raise AttninfError(f"{corpus} is not the corpus {scores.root} was scored from: {why}")
    missing = [rel for rel in files if not (corpus / rel).is_file()]
    if missing:
        raise AttninfError(f"{missing[0]} is scored but missing from {corpus}")


def _same_ids(t, s, rel: str, id_col: str, scores: Scores, corpus: Path) -> None:
    """A corpus file (t) and its scores (s) hold the same ids, row by row
    (`<file>:<row>` where the corpus has no id column)."""
    sc = s["id"].cast("string").to_pylist()
    ids = (t[id_col].cast("string").to_pylist() if id_col in t.column_names
           else [f"{rel}:{i}" for i in range(len(t))])
    if ids != sc:
        bad = next((i for i, (a, b) in enumerate(zip(ids, sc)) if a != b), min(len(ids), len(sc)))
        raise AttninfError(f"the scores in {scores.root} do not belong to {corpus}: {rel} row {bad} has id "
                           f"{ids[bad] if bad < len(ids) else '(none)'!r} in the corpus and "
                           f"{sc[bad] if bad < len(sc) else '(none)'!r} in the scores")


def heldout_rows(scores: Scores, frac: float) -> dict[str, np.ndarray]:
    """{file: sorted rows held out}: per domain the ceil(frac * n) documents
    (at least one) with the lowest hash of their id."""
    import pyarrow.parquet as pq

    from attninf.measures import id_hash

    per_domain: dict[str, list[tuple[float, str, int]]] = {}
    for rel in scores.files():
        t = pq.read_table(scores.root / rel, columns=["id", "domain"])
        for row, (i, d) in enumerate(zip(t["id"].cast("string").to_pylist(), t["domain"].to_pylist())):
            per_domain.setdefault(domain_name(d), []).append((id_hash(str(i), "heldout"), rel, row))
    out: dict[str, list[int]] = {rel: [] for rel in scores.files()}
    for dom, docs in sorted(per_domain.items()):
        k = max(1, math.ceil(frac * len(docs)))
        if len(docs) - k < 1:
            raise AttninfError(f"domain {dom} has {len(docs)} document(s): too few to hold out "
                               f"{frac:.0%} and still train on the rest")
        for _, rel, row in sorted(docs)[:k]:
            out[rel].append(row)
    return {rel: np.array(sorted(rows), dtype=np.int64) for rel, rows in out.items()}


def _split(scores: Scores, corpus: Path, held: dict[str, np.ndarray], data: Path) -> dict:
    """Write the training corpus and its scores (rows not held out) and the
    held-out documents; returns {domain: held-out documents}."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    text_col, id_col = scores.column("text"), scores.column("id")
    heldout, counts = [], {}
    for rel, rows in held.items():
        t, s = pq.read_table(corpus / rel), pq.read_table(scores.root / rel)
        _same_ids(t, s, rel, id_col, scores, corpus)
        mask = np.ones(len(t), dtype=bool)
        mask[rows] = False
        keep = pa.array(mask)
        for table, root in ((t, data / "corpus"), (s, data / "scores")):
            with atomic_path(root / rel) as tmp:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(table.filter(keep), tmp)
        out = s.filter(pc.invert(keep))
        texts = t[text_col].take(pa.array(rows)).to_pylist()
        for i, d, text in zip(out["id"].cast("string").to_pylist(), out["domain"].to_pylist(), texts):
            heldout.append({"id": i, "domain": domain_name(d), "text": text})
            counts[domain_name(d)] = counts.get(domain_name(d), 0) + 1
    with atomic_path(data / "heldout" / "heldout.parquet") as tmp:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(heldout), tmp)
    files = sorted(held)
    manifest = {**scores.manifest, "corpus": str((data / "corpus").resolve()),
                "corpus_files": corpus_signature(data / "corpus", files),
                "compare": {"from_scores": str(scores.root.resolve()), "heldout": counts}}
    Scores.write_manifest(data / "scores", manifest)
    return counts


def random_selection(attninf: Selection, scores: Scores, out: Path, seed: int = 0) -> dict:
    """A selection of random documents with, per domain, the tokens of the
    attninf selection within one document: documents of the domain (status
    ok) in an order fixed by a hash of their id, taken until the tokens reach
    the target. Written in the Selection format, so `attninf mix` reads it."""
    import pyarrow.parquet as pq

    from attninf.measures import id_hash

    by_domain = attninf.manifest.get("by") == "domain"
    target = {g: v["tokens_selected"] for g, v in attninf.groups.items()}
    docs: dict[str, list] = {}
    for rel in attninf.files:
        t = pq.read_table(scores.root / rel, columns=["id", "domain", "status", "score", "n_tokens"])
        for row, (i, d, st, sc, n) in enumerate(zip(*(t[c].to_pylist() for c in t.column_names))):
            if st == "ok":
                g = domain_name(d) if by_domain else ALL
                docs.setdefault(g, []).append((id_hash(str(i), f"random:{seed}"), rel, row, str(i), d, sc, n))
    chosen: dict[str, list] = {rel: [] for rel in attninf.files}
    groups = {}
    for g, want in target.items():
        got, kept = 0, 0
        for _, rel, row, i, d, sc, n in sorted(docs.get(g, [])):
            if got >= want:
                break
            chosen[rel].append((row, i, d, sc, n))
            got += n
            kept += 1
        groups[g] = {**attninf.groups[g], "selected": kept, "tokens_selected": got, "threshold": None}
    for rel, rows in chosen.items():
        rows.sort()
        write_selection_rows(out / rel, *([r[k] for r in rows] for k in range(5)))
    m = {**attninf.manifest, "groups": groups, "selected": sum(v["selected"] for v in groups.values()),
         "tokens_selected": sum(v["tokens_selected"] for v in groups.values()),
         "by_why": "random documents with the tokens of the attninf selection per domain (compare's control)"}
    Selection.write_manifest(out, m)
    return m


def prepare(cfg: CompareConfig, say: Callable[[str], None] = print) -> dict:
    """Held-out split, selections and one mixture per arm under OUT/data;
    skipped when OUT/data/prepared.json says it was done with these settings."""
    from attninf.pipelines.mix import MixConfig, run_mix
    from attninf.pipelines.select import SelectConfig, run_select

    data = Path(cfg.out) / "data"
    scores = Scores.read(cfg.scores)
    # by content (attninf.identity): a rescore rewrites the scores' manifest, a changed corpus file its signature
    key = {**{k: getattr(cfg, k) for k in ("heldout_frac", "frac", "repeat", "decay_weight")},
           "scores": identity.output_key(Path(cfg.scores) / MANIFEST), "corpus": identity.corpus_key(cfg.corpus)}
    done = data / "prepared.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        return json.loads(done.read_text())
    _check_pair(scores, Path(cfg.corpus))
    if data.exists():
        shutil.rmtree(data)
    say("held-out split")
    held = _split(scores, Path(cfg.corpus), heldout_rows(scores, cfg.heldout_frac), data)
    say(f"held out {sum(held.values()):,} documents ({', '.join(f'{d} {n}' for d, n in sorted(held.items()))})")
    sel = run_select(SelectConfig(scores=str(data / "scores"), out=str(data / "selected"), frac=cfg.frac))
    rnd = random_selection(Selection.read(data / "selected"), Scores.read(data / "scores"), data / "random")
    common = dict(corpus=str(data / "corpus"), seed=0)
    mixes = {"full": MixConfig(selected=str(data / "selected"), out=str(data / "mix-full"), repeat=0, **common),
             "attninf": MixConfig(selected=str(data / "selected"), out=str(data / "mix-attninf"), repeat=cfg.repeat,
                                  **common),
             "random": MixConfig(selected=str(data / "random"), out=str(data / "mix-random"), repeat=cfg.repeat,
                                 **common),
             "decay": MixConfig(selected=str(data / "selected"), out=str(data / "mix-decay"), phases="stable,decay",
                                decay_weight=cfg.decay_weight, **common)}
    for arm in ARMS:
        say(f"mixture for arm {arm}")
        run_mix(mixes[arm])
    info = {"key": key, "heldout": held, "selected": {g: {k: v[k] for k in ("documents", "selected", "tokens_total",
                                                                            "tokens_selected")}
                                                      for g, v in sel["groups"].items()},
            "random": {g: {k: v[k] for k in ("selected", "tokens_selected")} for g, v in rnd["groups"].items()},
            "mixtures": {arm: str(Path(m.out).resolve()) for arm, m in mixes.items()}}
    write_json(info, done)
    return info


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
    from attninf.model import load_tokenizer, separator_id

    run = json.loads((Path(tcfg.out) / "run.json").read_text())
    final = checkpoint_dir(tcfg.out, tcfg.total_steps)
    model = LlamaForCausalLM.from_pretrained(final).eval()
    tok = load_tokenizer(tcfg.tokenizer)
    bos = separator_id(tok)
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
    data = prepare(cfg, say)
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

    from attninf.storage import corpus_texts
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


