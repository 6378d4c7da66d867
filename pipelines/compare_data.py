"""What `attninf compare` trains on, prepared once under OUT/data: the
held-out split (by a hash of each id, per domain, before anything is
selected), the selection, a random selection with the same tokens per
domain, and one mixture per arm. Redone only when its key (the settings
that shape the data, the scores and the corpus by content) changes."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from attninf import identity
from attninf.artifacts import ALL, MANIFEST, Scores, Selection, domain_name, write_selection_rows
from attninf.errors import AttninfError
from attninf.corpus import (corpus_key, format_suffix, corpus_mismatch, corpus_name, corpus_of, corpus_signature,
                            scored_ids)
from attninf.storage import atomic_path, write_json
from attninf.stores import location, readable

ARMS = ("full", "attninf", "random", "decay")


def _check_pair(scores: Scores, corpus) -> None:
    """The scores belong to this corpus by its files' sizes and rows (the ids
    are compared where the split reads both, `_same_ids`)."""
    corpus = corpus_of(corpus)
    if not corpus.exists():
        raise AttninfError(f"corpus directory not found: {corpus}")
    files = scores.files()
    if scores.corpus_files is not None:
        why = corpus_mismatch(corpus, scores.corpus_files, files)
        if why:
            raise AttninfError(f"{corpus} is not the corpus {scores.root} was scored from: {why}")
    missing = [corpus_name(rel) for rel in files if not (corpus.root / corpus_name(rel)).is_file()]
    if missing:
        raise AttninfError(f"{missing[0]} is scored but missing from {corpus}")


def _same_ids(t, s, rel: str, kind: str, id_col: str, scores: Scores, corpus) -> None:
    """A corpus file (t, of format `kind`) and its scores (s) hold the same
    ids, row by row, as score made them (corpus.scored_ids)."""
    sc = s["id"].cast("string").to_pylist()
    own = t[id_col].cast("string").combine_chunks() if id_col in t.column_names else None
    ids = scored_ids(corpus_name(rel), kind, 0, len(t), own).to_pylist()
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
        t = pq.read_table(readable(scores.root / rel), columns=["id", "domain"])
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


def parquet_copy_name(rel: str) -> str:
    """The name of a corpus file's Parquet copy in compare's training corpus
    (and of its scores there): a JSON Lines file's suffix made part of the
    stem (`a/x.jsonl.zst` -> `a/x.jsonl_zst.parquet`), so the copy is read as
    the Parquet file it is."""
    name = corpus_name(rel)
    suffix = format_suffix(name) or ".parquet"
    return name if suffix == ".parquet" else name[: -len(suffix)] + suffix.replace(".", "_") + ".parquet"


def _split(scores: Scores, corpus, held: dict[str, np.ndarray], data: Path) -> dict:
    """Write the training corpus and its scores (rows not held out) and the
    held-out documents; returns {domain: held-out documents}. The training
    corpus is Parquet whatever the corpus's format: each file named as its
    scores file, holding the text, id and domain columns."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    text_col, id_col = scores.column("text"), scores.column("id")
    heldout, counts = [], {}
    for rel, rows in held.items():
        cf = corpus_of(corpus).file(rel)
        names = cf.names()
        jsonl = cf.kind != "parquet"  # a JSON key may be missing from the first row and there in others
        keys = (id_col, scores.column("domain"))
        cols = [text_col] + [c for c in keys if (c in names or jsonl) and c != text_col]
        t = pa.concat_tables(list(cf.read(cols, text=text_col, as_text=keys if jsonl else ()))) if cf.rows else pa.table(
            {c: pa.array([], pa.string()) for c in cols})
        s = pq.read_table(readable(scores.root / rel))
        _same_ids(t, s, rel, cf.kind, id_col, scores, corpus)
        mask = np.ones(len(t), dtype=bool)
        mask[rows] = False
        keep = pa.array(mask)
        for table, root in ((t, data / "corpus"), (s, data / "scores")):
            with atomic_path(root / parquet_copy_name(rel)) as tmp:
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
    files = sorted(parquet_copy_name(rel) for rel in held)
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
        t = pq.read_table(readable(scores.root / rel), columns=["id", "domain", "status", "score", "n_tokens"])
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


def prepare(scores_dir: str, corpus: str, data: Path, *, heldout_frac: float, frac: float, repeat: int,
            decay_weight: int, say: Callable[[str], None] = print) -> dict:
    """Held-out split, selections and one mixture per arm under data/;
    skipped when data/prepared.json says it was done with these settings."""
    from attninf.pipelines.mix import MixConfig, run_mix
    from attninf.pipelines.select import SelectConfig, run_select

    scores = Scores.read(scores_dir)
    # by content (attninf.identity): a rescore rewrites the scores' manifest, a changed corpus file its signature
    key = {"heldout_frac": heldout_frac, "frac": frac, "repeat": repeat, "decay_weight": decay_weight,
           "scores": identity.output_key(location(scores_dir) / MANIFEST), "corpus": corpus_key(corpus)}
    done = data / "prepared.json"
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        return json.loads(done.read_text())
    _check_pair(scores, corpus)
    if data.exists():
        shutil.rmtree(data)
    say("held-out split")
    held = _split(scores, corpus, heldout_rows(scores, heldout_frac), data)
    say(f"held out {sum(held.values()):,} documents ({', '.join(f'{d} {n}' for d, n in sorted(held.items()))})")
    sel = run_select(SelectConfig(scores=str(data / "scores"), out=str(data / "selected"), frac=frac))
    rnd = random_selection(Selection.read(data / "selected"), Scores.read(data / "scores"), data / "random")
    common = dict(corpus=str(data / "corpus"), seed=0)
    mixes = {"full": MixConfig(selected=str(data / "selected"), out=str(data / "mix-full"), repeat=0, **common),
             "attninf": MixConfig(selected=str(data / "selected"), out=str(data / "mix-attninf"), repeat=repeat,
                                  **common),
             "random": MixConfig(selected=str(data / "random"), out=str(data / "mix-random"), repeat=repeat,
                                 **common),
             "decay": MixConfig(selected=str(data / "selected"), out=str(data / "mix-decay"), phases="stable,decay",
                                decay_weight=decay_weight, **common)}
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
