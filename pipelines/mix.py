"""`attninf mix`: the full corpus plus the selected documents `repeat` more
times, shuffled by seed, as Parquet shards a trainer can stream (docs/method.md,
step 5).

Two passes, neither holding the corpus in memory: each corpus file (read
once, batch by batch, in parallel) gives every output row a 64-bit key hashed
from (seed, file, row, copy) and writes it to the piece of its shard
(key mod shards); then each shard sorts its pieces by key. The order depends
only on the seed and the data, never on scheduling.

Output: mixed/part-NNNNN-of-MMMMM.parquet with columns text, id, domain,
source ("base" or "selected"); mixed/.manifest.json with rows and tokens per
domain and source and each domain's effective sampling weight. The manifest
is a dot-file so that `datasets.load_dataset("parquet", data_dir="mixed/")`,
which reads every other file in the folder as Parquet, skips it. The mixture
is built in a new folder beside mixed/ that then replaces it whole: no shard
or phase of an earlier mix survives a new one.

With --phases stable,decay (MiniCPM, arXiv 2404.06395: high-quality data
brought in during the decay of a WSD schedule gives most of its gain there)
there are two such mixtures, mixed/stable/ (the corpus alone) and
mixed/decay/ (the selected documents --decay-weight more times), and
mixed/.manifest.json lists them with their per-domain weights.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attninf.artifacts import MIX_MANIFEST, Mixture, Scores, Selection, shard_name
from attninf.corpus import corpus_mismatch, corpus_name, corpus_of
from attninf.storage import atomic_path, check_replaceable, replaced_dir, utc_now
from attninf.stores import absolute, location, readable
from attninf.errors import AttninfError

READ_BATCH = 65_536


@dataclass
class MixConfig:
    corpus: str = field(default="", metadata={"help": "The corpus that was scored (folder, URL or glob)."})
    selected: str = field(default="selected", metadata={"help": "Output of `attninf select`."})
    out: str = field(default="mixed", metadata={"help": "Output directory."})
    repeat: int = field(default=1, metadata={"help": "Extra copies of each selected document (the paper: 1)."})
    seed: int = field(default=0, metadata={"help": "Shuffle seed."})
    shard_rows: int = field(default=100_000, metadata={"help": "About this many rows per shard."})
    phases: str | None = field(default=None, metadata={
        "metavar": "stable,decay",
        "help": "Write one mixture per phase of a WSD-family schedule: OUT/stable/ (the corpus alone) and "
                "OUT/decay/ (the corpus with every selected document --decay-weight more times); "
                "`attninf train` switches stream where the schedule starts to decay.",
        "default_help": "one mixture, as --repeat says"})
    decay_weight: int = field(default=3, metadata={
        "help": "With --phases: extra copies of each selected document in the decay mixture."})


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a well-spread 64-bit hash of uint64 inputs."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def row_keys(seed: int, file_idx: int, rows: np.ndarray, copy: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        # any integer seed: negative or >= 2**64 ones are taken modulo 2**64
        h = _mix64(np.full(rows.shape, seed % (1 << 64), dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15))
        h = _mix64(h ^ np.uint64(file_idx))
        h = _mix64(h ^ np.uint64(copy))
        return _mix64(h ^ rows.astype(np.uint64))


def _plan(cfg: MixConfig) -> tuple[Selection, Scores]:
    """The selection and the scores behind it, checked against the corpus as it is now."""
    sel = Selection.read(cfg.selected)
    scores = sel.scores()
    corpus = corpus_of(cfg.corpus)
    if not corpus.exists():
        raise AttninfError(f"corpus directory not found: {corpus}")
    if scores.corpus_files is not None:  # the corpus by its files' sizes and rows, wherever it lies now
        why = corpus_mismatch(corpus, scores.corpus_files, sel.files)
        if why:
            raise AttninfError(f"{corpus} is not the corpus {scores.root} was scored from: {why}")
    elif sel.manifest["scores"].get("corpus") and sel.manifest["scores"]["corpus"] != absolute(cfg.corpus):
        raise AttninfError(f"{sel.root} was selected from scores of {sel.manifest['scores']['corpus']}, not {corpus}")
    if cfg.repeat < 0:
        raise AttninfError("--repeat cannot be negative")
    if cfg.shard_rows < 1:
        raise AttninfError("--shard-rows must be at least 1")
    missing = [corpus_name(f) for f in sel.files if not (corpus.root / corpus_name(f)).is_file()]
    if missing:
        raise AttninfError(f"{len(missing)} scored file(s) are missing from {cfg.corpus}, e.g. {missing[0]}")
    return sel, scores


def _write_pieces(t, keys: np.ndarray, n_shards: int, pieces: str, name: str) -> None:
    """Rows of t into the piece `name` of the shard their key falls in."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = (keys % np.uint64(n_shards)).astype(np.int64)
    for s in np.unique(shard):
        d = Path(pieces) / f"{s:05d}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(t.filter(pa.array(shard == s)), d / name)


def _split_file(cfg_d, rel, file_idx, scores, columns, n_shards, pieces):
    """Pass 1 for one corpus file: write its rows (and selected copies) into
    shard pieces; {"<domain>|<source>": [rows, tokens]}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cfg = MixConfig(**cfg_d)
    text_col, id_col, domain_col = columns
    cf = corpus_of(cfg.corpus).file(rel)
    names = cf.names()
    sc_names = pq.read_schema(readable(location(scores) / rel)).names
    sc = pq.read_table(readable(location(scores) / rel),
                       columns=["id", "n_tokens"] + (["domain"] if "domain" in sc_names else []))
    chosen = Selection.read(cfg.selected).rows(rel)
    if len(sc) != cf.rows:
        raise AttninfError(f"{cf.rel}: the corpus file has {cf.rows} rows but its scores {len(sc)}: "
                           "the corpus changed since it was scored")
    stats: dict = {}
    start = 0
    jsonl = cf.kind != "parquet"  # a JSON key may be missing from the first row and there in others
    cols = [text_col] + [c for c in (id_col, domain_col) if c in names or jsonl]
    for b, batch in enumerate(cf.read(cols, step=READ_BATCH, text=text_col,
                                      as_text=(id_col, domain_col) if jsonl else ())):
        n = batch.num_rows
        rows = np.arange(start, start + n, dtype=np.int64)
        ids = sc["id"].slice(start, n).cast(pa.string())  # corpus ids, or <file>:<row> made by score
        if "domain" in sc.column_names:  # the domain the selection ranked by (column or folder)
            dom = sc["domain"].slice(start, n).cast(pa.string())
        elif domain_col in batch.column_names:
            dom = batch.column(domain_col).cast(pa.string())
        else:
            dom = pa.nulls(n, pa.string())
        ntok = sc["n_tokens"].slice(start, n).to_numpy(zero_copy_only=False)
        local = chosen[(chosen >= start) & (chosen < start + n)] - start
        parts = [(np.arange(n), 0, "base")] + [(local, c, "selected") for c in range(1, cfg.repeat + 1)]
        for idx, copy, source in (p for p in parts if len(p[0])):
            keys = row_keys(cfg.seed, file_idx, rows[idx], copy)
            take = pa.array(idx)
            t = pa.table({"_key": pa.array(keys, pa.uint64()), "_f": pa.array(np.full(len(idx), file_idx)),
                          "_r": pa.array(rows[idx]), "_c": pa.array(np.full(len(idx), copy)),
                          "text": batch.column(text_col).take(take), "id": ids.take(take), "domain": dom.take(take),
                          "source": pa.array([source] * len(idx), pa.string())})
            _write_pieces(t, keys, n_shards, pieces, f"{file_idx:06d}-{b:05d}-{copy}.parquet")
            for dname, nt in zip(dom.take(take).to_pylist(), ntok[idx].tolist()):
                st = stats.setdefault(f"{dname}|{source}", [0, 0])
                st[0] += 1
                st[1] += int(nt)
        start += n
    return stats


def _write_shard(shard: int, n_shards: int, pieces: str, out: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = Path(pieces) / f"{shard:05d}"
    files = sorted(d.glob("*.parquet")) if d.exists() else []
    schema = pa.schema([("text", pa.string()), ("id", pa.string()), ("domain", pa.string()), ("source", pa.string())])
    if files:
        t = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
        t = t.sort_by([("_key", "ascending"), ("_f", "ascending"), ("_r", "ascending"), ("_c", "ascending")])
        t = t.select(["text", "id", "domain", "source"]).cast(schema)
    else:
        t = schema.empty_table()
    with atomic_path(Path(out) / shard_name(shard, n_shards)) as tmp:
        pq.write_table(t, tmp)
    return len(t)


def _domains(parts: list[dict]) -> dict:
    """Rows and tokens per domain and source, and each domain's share of the
    mixed token stream (weight) and of the corpus alone (base_weight)."""
    per: dict = {}
    for part in parts:
        for k, (n, t) in part.items():
            dname, source = k.rsplit("|", 1)
            e = per.setdefault(dname, {"base_rows": 0, "base_tokens": 0, "selected_rows": 0, "selected_tokens": 0})
            e[f"{source}_rows"] += n
            e[f"{source}_tokens"] += t
    all_tokens = sum(e["base_tokens"] + e["selected_tokens"] for e in per.values()) or 1
    base_all = sum(e["base_tokens"] for e in per.values()) or 1
    for e in per.values():
        e["weight"] = (e["base_tokens"] + e["selected_tokens"]) / all_tokens
        e["base_weight"] = e["base_tokens"] / base_all
    return per


PHASES = ("stable", "decay")


def _ours(name: str) -> bool:
    """What a mix writes into its folder."""
    return name in (MIX_MANIFEST, ".pieces", *PHASES) or (name.startswith("part-") and name.endswith(".parquet"))


def run_mix(cfg: MixConfig, scheduler: str = "threads") -> dict:
    """Write the mixture (or, with cfg.phases, one per phase) into a new
    folder that then replaces cfg.out whole; returns the manifest."""
    if cfg.phases:
        phases = [p.strip() for p in cfg.phases.split(",") if p.strip()]
        if phases != list(PHASES):
            raise AttninfError(f"--phases must be {','.join(PHASES)} (the stable and the decay phase of the "
                               f"schedule), got {cfg.phases!r}")
        if cfg.decay_weight < 1:
            raise AttninfError("--decay-weight must be at least 1: the decay mixture upweights the selection")
    check_replaceable(cfg.out, "mix", _ours, {"corpus": corpus_of(cfg.corpus).root, "selection": cfg.selected})
    with replaced_dir(cfg.out, last=(MIX_MANIFEST,)) as into:
        return _run_phased(cfg, scheduler, into) if cfg.phases else _run_one(cfg, scheduler, into)


def _run_phased(cfg: MixConfig, scheduler: str, into: Path) -> dict:
    out = location(cfg.out)
    repeat = {"stable": 0, "decay": cfg.decay_weight}
    parts = {p: _run_one(dataclasses.replace(cfg, out=str(out / p), repeat=repeat[p], phases=None), scheduler,
                         into / p)
             for p in PHASES}
    manifest = {
        "created": utc_now(),
        "config": dataclasses.asdict(cfg), "corpus": absolute(cfg.corpus),
        "phases": {p: {"path": p, "repeat": repeat[p], "rows": m["rows"], "shards": m["shards"],
                       "weights": {d: e["weight"] for d, e in m["domains"].items()}} for p, m in parts.items()},
        "rows": sum(m["rows"] for m in parts.values()),
    }
    Mixture.write_manifest(into, manifest)  # written last: marks the phased mixture complete
    return {**manifest, "parts": parts}


def _run_one(cfg: MixConfig, scheduler: str, into: Path) -> dict:
    """One mixture, written into `into` (which becomes cfg.out)."""
    import dask

    sel, scores = _plan(cfg)
    files = sel.files
    columns = (scores.column("text"), scores.column("id"), scores.column("domain"))
    corpus = corpus_of(cfg.corpus)
    base_rows = sum(corpus.file(f).rows for f in files)
    total = base_rows + cfg.repeat * sel.manifest["selected"]
    n_shards = max(1, math.ceil(total / cfg.shard_rows))
    out = Path(into)
    out.mkdir(parents=True, exist_ok=True)
    pieces = out / ".pieces"
    cfg_d = dataclasses.asdict(cfg)
    parts = dask.compute(*[dask.delayed(_split_file)(cfg_d, rel, i, str(scores.root), columns, n_shards, str(pieces))
                           for i, rel in enumerate(files)], scheduler=scheduler)
    counts = dask.compute(*[dask.delayed(_write_shard)(s, n_shards, str(pieces), str(out)) for s in range(n_shards)],
                          scheduler=scheduler)
    shutil.rmtree(pieces, ignore_errors=True)
    manifest = {
        "created": utc_now(),
        "config": cfg_d, "corpus": absolute(cfg.corpus),
        "selected": {"path": absolute(cfg.selected), "documents": sel.manifest["selected"]},
        "rows": int(sum(counts)), "base_rows": base_rows, "shards": n_shards,
        "files": [shard_name(s, n_shards) for s in range(n_shards)], "domains": _domains(list(parts)),
    }
    if manifest["rows"] != total:
        raise AttninfError(f"internal error: wrote {manifest['rows']} rows, expected {total}")
    Mixture.write_manifest(out, manifest)
    return manifest
