"""`attninf export`: a mixture as flat token-id shards, the layout other
trainers read without a tokenizer (nanoGPT-style memmap loaders, Megatron-
style indexed datasets, torchtitan readers).

For each shard of the mixture (each phase of a phased one):

* `<name>.bin`: the token ids of its documents, in row order, each document
  followed by EOS, as `uint16` when the vocabulary fits (< 65,536 ids), else
  `uint32`, little-endian, no header: `np.memmap(path, dtype)` reads it;
* `<name>.idx`: `int64`, rows + 1 offsets (in tokens) into the .bin:
  document i is bin[idx[i]:idx[i + 1]]. Every mixture row is a document, an
  empty or null text an empty one (no EOS), so row i of the shard is
  document i;
* `manifest.json`, written last: tokenizer, vocabulary size, EOS id, dtype,
  and per shard its documents, tokens and the sha256 of both files, so a
  truncated or damaged shard is found (`attninf export --verify`).

The shards are tokenized in parallel (one Dask task each), streaming: a
shard is read in record batches and its .bin written as it goes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifacts import TOKENS_FORMAT, TOKENS_MANIFEST, Mixture
from .storage import atomic_path, check_replaceable, replaced_dir, write_json
from .errors import AttninfError

READ_ROWS = 2048


@dataclass
class ExportConfig:
    data: str = field(default="mixed", metadata={"help": "Mixture from `attninf mix` (plain or phased)."})
    out: str = field(default="tokens", metadata={"help": "Output directory."})
    tokenizer: str = field(default="smollm2-135m", metadata={"help": "Model name or path of the tokenizer."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    workers: int | None = field(default=None, metadata={
        "help": "Shards tokenized at once (Dask threads).", "default_help": "the cores"})


def token_dtype(vocab_size: int):
    """uint16 when every id fits, else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def export_shard(src: Path, dst: Path, tokenizer, eos: int, dtype, text_column: str) -> dict:
    """One mixture shard to dst.bin and dst.idx; returns its manifest entry."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(src)
    if text_column not in pf.schema_arrow.names:
        raise AttninfError(f"{src}: no column {text_column!r} (columns: {', '.join(pf.schema_arrow.names)})")
    offsets, total, h = [0], 0, hashlib.sha256()
    limit = np.iinfo(dtype).max
    with atomic_path(dst.with_suffix(".bin")) as tmp, open(tmp, "wb") as f:
        for batch in pf.iter_batches(batch_size=READ_ROWS, columns=[text_column]):
            texts = batch.column(0).to_pylist()
            keep = [i for i, t in enumerate(texts) if t]
            enc = tokenizer([texts[i] for i in keep], add_special_tokens=False)["input_ids"] if keep else []
            docs = [[] for _ in texts]
            for i, ids in zip(keep, enc):
                docs[i] = ids + [eos]
            flat = np.fromiter((t for d in docs for t in d), dtype=np.int64, count=sum(map(len, docs)))
            if len(flat) and (flat.max() > limit or flat.min() < 0):
                raise AttninfError(f"token id {int(flat.max())} does not fit {dtype.name}: the tokenizer's "
                                   "vocabulary is larger than it says")
            data = flat.astype(dtype).tobytes()
            f.write(data)
            h.update(data)
            for d in docs:
                total += len(d)
                offsets.append(total)
    idx = np.asarray(offsets, dtype="<i8")
    with atomic_path(dst.with_suffix(".idx")) as tmp:
        idx.tofile(tmp)
    return {"bin": dst.with_suffix(".bin").name, "idx": dst.with_suffix(".idx").name, "source": src.name,
            "documents": len(idx) - 1, "tokens": total, "sha256_bin": h.hexdigest(),
            "sha256_idx": hashlib.sha256(idx.tobytes()).hexdigest()}


def run_export(cfg: ExportConfig) -> dict:
    """Export every phase of the mixture; returns the manifest."""
    from .model import load_tokenizer

    phases = Mixture.read(cfg.data).phase_shards()
    tok = load_tokenizer(cfg.tokenizer)
    eos = tok.eos_token_id
    if eos is None:
        raise AttninfError(f"the tokenizer {cfg.tokenizer} has no EOS token to end documents with")
    dtype = token_dtype(len(tok))
    # built in a new folder that replaces cfg.out whole: no shard or phase of an earlier export survives
    check_replaceable(cfg.out, "export",
                      lambda n: n in (TOKENS_MANIFEST, "stable", "decay") or n.endswith((".bin", ".idx")),
                      {"mixture": cfg.data})
    with replaced_dir(cfg.out) as into:
        return _export(cfg, phases, tok, eos, dtype, into)


def _export(cfg: ExportConfig, phases: dict, tok, eos: int, dtype, out: Path) -> dict:
    import dask

    tasks = {}
    for name, files in phases.items():
        d = out if name == "main" else out / name
        d.mkdir(parents=True, exist_ok=True)
        tasks[name] = [dask.delayed(export_shard)(f, d / f.stem, tok, eos, dtype, cfg.text_column) for f in files]
    done = dask.compute(tasks, scheduler="threads", num_workers=cfg.workers)[0]
    manifest = {"format": TOKENS_FORMAT, "tokenizer": cfg.tokenizer, "vocab_size": len(tok), "eos_id": int(eos),
                "dtype": dtype.name, "byteorder": "little", "eos_appended": True,
                "source": str(Path(cfg.data).resolve()),
                "phases": {name: {"path": "." if name == "main" else name, "shards": shards,
                                   "documents": sum(s["documents"] for s in shards),
                                   "tokens": sum(s["tokens"] for s in shards)} for name, shards in done.items()}}
    manifest["documents"] = sum(v["documents"] for v in manifest["phases"].values())
    manifest["tokens"] = sum(v["tokens"] for v in manifest["phases"].values())
    write_json(manifest, out / TOKENS_MANIFEST)
    return manifest


