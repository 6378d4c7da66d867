"""python benchmarks/selection_study.py [--probes 48] [--work DIR] [--out benchmarks/RESULTS.md]

How much the selection depends on the method's choices and attninf's, on the
offline default selector (SmolLM2-135M, --dtype auto) and two corpora: the
demo corpus (Shakespeare passages, standard-library code) and a second one
built here from this Python environment (`docs`: the package descriptions
in the installed packages' METADATA; `code`: modules of the installed
third-party packages).

The reference is the demo's setting: probes in the paper's wording, copies
inside the needle span, 12 probes of 2,048 tokens, top 5% of heads,
documents started with `<|endoftext|>`, windows of 2,048 tokens, masking as
1/(t+1). Each row changes one thing and gives, per corpus and domain, the
Spearman of the scores against the reference and how many of the
reference's top 20% stay in the top 20%; and the Jaccard of its heads with
the reference heads.

Costs kept small with the tools of issue 28: one detect pass over --probes
probes gives every probe budget (the first n probes are the n-probe run:
probes are deterministic per index) and both copy rules (both counted from
the same attention); every head set is scored in one pass per corpus
(Scorer's more_heads, what `score --head-fracs` runs). The masking readings
come from benchmarks/masking_readings.py's plain attention in float32 (the
first --reading-docs documents of each domain). Head stability: attninf's own
bootstrap (attninf.stability) at 12 and at --probes probes.
"""
from __future__ import annotations

import argparse
import os
import random
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

from harness import cpu_name, demo_corpus  # this folder: the scripts run from it
from masking_readings import READINGS, reading_scores, spearman, top_overlap
from results import append_results

REF_PROBES, REF_FRAC, CONTEXT = 12, 0.05, 2048


def package_corpus(out: Path, per_domain: int = 50, seed: int = 0) -> None:
    """out/docs/part-0.parquet (package descriptions) and out/code/part-0.parquet (third-party modules)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    site = Path(sysconfig.get_paths()["purelib"])
    rng = random.Random(seed)
    docs = []
    for meta in sorted(site.glob("*.dist-info/METADATA")):
        text = meta.read_text(encoding="utf-8", errors="replace")
        body = text.split("\n\n", 1)[1].strip() if "\n\n" in text else ""
        if len(body.split()) >= 80:
            docs.append(" ".join(body.split(" ")[:rng.choice([150, 300, 600])]))
    files = sorted(p for p in site.glob("*/*.py") if "test" not in p.as_posix() and p.stat().st_size > 2000
                   and not p.parts[-2].startswith(("_", "attninf", "pip", "setuptools")))
    code = []
    for p in rng.sample(files, min(len(files), 4 * per_domain)):
        lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
        start = rng.randrange(max(1, len(lines) - 40))
        code.append("\n".join(lines[start:start + rng.choice([30, 60, 120])]))
    for domain, texts in (("docs", rng.sample(docs, min(per_domain, len(docs)))), ("code", code[:per_domain])):
        (out / domain).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": [f"{domain}-{i:05d}" for i in range(len(texts))], "domain": [domain] * len(texts),
                                 "text": texts}), out / domain / "part-0.parquet")


def read_corpus(root: Path):
    import pyarrow.parquet as pq

    texts, domains = [], []
    for p in sorted(root.rglob("*.parquet")):
        t = pq.read_table(p, columns=["text", "domain"]).to_pydict()
        texts += t["text"]
        domains += t["domain"]
    return texts, np.array(domains, dtype=object)


def probe_counts(lm, probes, rules) -> dict[str, torch.Tensor]:
    """{rule: (probes, L, H) copy counts}, every rule from the same forward pass."""
    from attninf.heads import _answer_rows, copy_counts
    from attninf.plugin import install, recording

    model = lm.model
    install(model)
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    hits = {r: torch.zeros(len(probes), L, H, dtype=torch.int64) for r in rules}
    with torch.inference_mode():
        for p, probe in enumerate(probes):
            ids = torch.tensor(probe.input_ids)
            rows = _answer_rows(probe)

            def rec(layer, query, key, scale, window):
                for r in rules:
                    hits[r][p, layer] += copy_counts(query, key, ids, rows, probe.needle, scale, window, r)

            with recording(model, rec):
                model(ids.view(1, -1), logits_to_keep=1, use_cache=False)
    return hits


def ranking(hits: torch.Tensor, probes, n: int) -> np.ndarray:
    a = torch.tensor([len(p.answer_ids) for p in probes[:n]], dtype=torch.float64).view(-1, 1, 1)
    return (hits[:n].double() / a).mean(0).numpy()


def jaccard(a, b) -> float:
    a, b = set(map(tuple, a)), set(map(tuple, b))
    return len(a & b) / len(a | b)


def stability_of(hits: torch.Tensor, probes, n: int) -> dict:
    from attninf.stability import counts_from, stability

    L, H = hits.shape[1:]
    per = {"answer_tokens": [len(p.answer_ids) for p in probes[:n]], "hits": hits[:n].reshape(n, -1).tolist()}
    return stability(counts_from({"per_probe": per, "num_layers": L, "num_heads": H}), REF_FRAC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=48)
    ap.add_argument("--reading-docs", type=int, default=25, help="documents per domain for the masking readings")
    ap.add_argument("--docs-per-domain", type=int, default=50)
    ap.add_argument("--work", default="/tmp/attninf-study")
    ap.add_argument("--out", default="benchmarks/RESULTS.md")
    args = ap.parse_args()

    from attninf.devices import resolve_dtype
    from attninf.docstart import resolve_doc_prefix
    from attninf.heads import select_top
    from attninf.model import load_model
    from attninf.probes import make_probes
    from attninf.scoring import Scorer

    t0 = time.perf_counter()
    work = Path(args.work)
    corpora = {"demo": demo_corpus(work / "demo", args.docs_per_domain), "packages": work / "packages"}
    if not corpora["packages"].exists():
        package_corpus(corpora["packages"], args.docs_per_domain)
    lm = load_model("smollm2-135m", dtype="auto", device="cpu")
    prefix = resolve_doc_prefix(lm.tokenizer, None)
    tok = lm.tokenizer

    # --- heads under each choice, from two detect passes
    paper = make_probes(tok, args.probes, 0, CONTEXT, list(prefix.ids), "paper")
    ours = make_probes(tok, REF_PROBES, 0, CONTEXT, list(prefix.ids), "attninf")
    hits = probe_counts(lm, paper, ("needle-span", "paper"))
    hits_ours = probe_counts(lm, ours, ("needle-span",))["needle-span"]
    t_detect = time.perf_counter() - t0
    ns = hits["needle-span"]
    ref = select_top(ranking(ns, paper, REF_PROBES), REF_FRAC)
    sets = {
        "reference": ref,
        "probes: 4": select_top(ranking(ns, paper, 4), REF_FRAC),
        f"probes: {args.probes}": select_top(ranking(ns, paper, args.probes), REF_FRAC),
        "heads: top 3%": select_top(ranking(ns, paper, REF_PROBES), 0.03),
        "heads: top 10%": select_top(ranking(ns, paper, REF_PROBES), 0.10),
        "copy rule: paper's Eq. 1-3": select_top(ranking(hits["paper"], paper, REF_PROBES), REF_FRAC),
        "probe wording: attninf's": select_top(ranking(hits_ours, ours, REF_PROBES), REF_FRAC),
    }
    stab = {n: stability_of(ns, paper, n) for n in (REF_PROBES, args.probes)}

    # --- scores: every head set in one pass per corpus; the document start and the window once each
    results: dict[str, dict] = {name: {} for name in [*sets, "document start: none", "max tokens: 512",
                                                      *[f"masking: {r}" for r in READINGS[1:]]]}
    more = {f"s{i}": hs for i, (name, hs) in enumerate(sets.items()) if name != "reference"}
    tags = {name: f"s{i}" for i, name in enumerate(sets) if name != "reference"}
    for cname, root in corpora.items():
        texts, domains = read_corpus(root)
        res = Scorer(lm, ref, max_tokens=CONTEXT, doc_prefix=prefix, more_heads=more).score_texts(texts)
        base = res["score"]
        cols = {name: res[f"score_{tags[name]}"] for name in tags}
        cols["document start: none"] = Scorer(lm, ref, max_tokens=CONTEXT, doc_prefix="none").score_texts(texts)["score"]
        cols["max tokens: 512"] = Scorer(lm, ref, max_tokens=512, doc_prefix=prefix).score_texts(texts)["score"]
        for name, col in cols.items():
            results[name][cname] = per_domain(base, col, domains)
        # masking readings: float32, plain attention, a subset of each domain
        keep = np.concatenate([np.flatnonzero(domains == d)[:args.reading_docs] for d in sorted(set(domains))])
        lm32 = load_model("smollm2-135m", dtype="float32", device="cpu")
        rd = reading_scores(lm32, ref, [texts[i] for i in keep], list(prefix.ids), CONTEXT)
        for r in READINGS[1:]:
            results[f"masking: {r}"][cname] = per_domain(rd["prefix"], rd[r], domains[keep])
        del lm32

    elapsed = time.perf_counter() - t0
    dtype = str(resolve_dtype("auto", "cpu")).replace("torch.", "")
    lines = [f"## How much the selection depends on each choice ({time.strftime('%Y-%m-%d')}, {cpu_name()}, "
             f"{os.cpu_count()} cores, SmolLM2-135M, --dtype auto = {dtype}, {elapsed:.0f}s)", "",
             f"`python benchmarks/selection_study.py --probes {args.probes} --reading-docs {args.reading_docs} "
             f"--docs-per-domain {args.docs_per_domain}`. "
             "Reference: the demo's settings (paper wording, needle-span copies, 12 probes of 2,048 tokens, top 5% "
             f"= {len(ref)} heads, `<|endoftext|>` first, windows of 2,048, masking 1/(t+1)); each row changes one "
             "thing. Per corpus and domain: Spearman of the scores against the reference, and the reference's top "
             "20% kept in the top 20% (chance: 20%). Masking rows: float32, plain attention, the first "
             f"{args.reading_docs} documents per domain, against the 1/(t+1) reading of the same code. Corpora: "
             "demo (plays, code: the demo's), packages (docs: package descriptions from this environment's METADATA "
             "files; code: its third-party modules).", ""]
    doms = {c: sorted(results["probes: 4"][c]) for c in corpora}
    head = " | ".join(f"{c} {d}: Spearman, top 20%" for c in corpora for d in doms[c])
    lines += [f"| change | heads (Jaccard with the reference) | {head} |", "|---|---|" + "---|" * sum(map(len, doms.values()))]
    for name, per in results.items():
        if name == "reference":
            continue
        hs = sets.get(name)
        cell = f"{len(hs)} ({jaccard(hs, ref):.2f})" if hs is not None else "same"
        vals = " | ".join(f"{per[c][d]['spearman']:.3f}, {per[c][d]['kept']}/{per[c][d]['k']}" for c in corpora
                          for d in doms[c])
        lines.append(f"| {name} | {cell} | {vals} |")
    lines += ["", f"Heads: reference {' '.join(f'{l}.{h}' for l, h in ref)}; " + "; ".join(
        f"{n}: {' '.join(f'{l}.{h}' for l, h in hs)}" for n, hs in sets.items() if n != "reference"), "",
        "Head stability (attninf.stability, 1,000 bootstrap resamples of the probes, top 5%):", "",
        "| probes | same set as all probes | mean Jaccard | unstable selected heads (frequency < 0.5) | "
        "near misses (frequency >= 0.2) | probe budget where the set settles |", "|---|---|---|---|---|---|"]
    for n, st in stab.items():
        fmt = lambda hs: " ".join(f"{l}.{h}" for l, h in hs) or "none"  # noqa: E731
        lines.append(f"| {n} | {st['set_confidence']:.3f} | {st['mean_jaccard']:.3f} | "
                     f"{fmt(st['unstable_selected']['heads'])} | {fmt(st['near_misses']['heads'])} | "
                     f"{st['budget']['n'] or 'not reached'} |")
    lines += ["", f"Detect passes ({args.probes} + {REF_PROBES} probes): {t_detect:.0f}s."]
    append_results(lines, args.out)


def per_domain(ref: np.ndarray, other: np.ndarray, domains: np.ndarray) -> dict:
    out = {}
    for d in sorted(set(domains)):
        m = (domains == d) & np.isfinite(ref) & np.isfinite(other)
        kept, k = top_overlap(other[m], ref[m])
        out[d] = {"spearman": spearman(other[m], ref[m]), "kept": kept, "k": k}
    return out


if __name__ == "__main__":
    main()
