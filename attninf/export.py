"""`attninf export`: a mixture as the token files another trainer reads, in
that trainer's own layout (docs/design.md, "Export formats"):

* megatron: `<shard>.bin` + `<shard>.idx` as Megatron-Core's IndexedDataset
  reads them (MMIDIDX index: sequence lengths, byte pointers, document
  indices); uint16 below 65,500 ids, else int32, as Megatron's own
  preprocessing picks. Megatron-LM, NeMo, GPT-NeoX: `--data-path <shard>`.
* datatrove: `<shard>.ds` + `.ds.index` (uint64 document ends) +
  `.ds.metadata` (`tokenizer|token_size`, token count), what datatrove's
  DatatroveFolderDataset and nanotron's Nanoset read.
* llmc: llm.c's `<name>_train_NNNNNN.bin` / `<name>_val_NNNNNN.bin`, a header
  of 256 int32 (magic, version, token count) then the tokens: uint16 under
  the GPT-2 header (20240520, v1), uint32 under the Llama-3 one (20240801, v7).
* nanogpt: nanoGPT's `train.bin` and `val.bin` (uint16, no header) and
  `meta.pkl` with the vocabulary size; a vocabulary over 65,536 ids is
  refused, since nanoGPT reads uint16 only.
* flat: `<shard>.bin` (uint16/uint32) + `<shard>.idx` (int64 offsets, rows + 1):
  every row a document, an empty text one of no tokens, so row i of the
  shard is document i. The other layouts leave rows with no text out and
  count them (`empty` in the manifest: documents + empty = rows).

Every document is wrapped in the document separators (attninf.docstart:
SmolLM2 gets `<|endoftext|>` after each document, Llama `<s>` before and
`</s>` after), overridable with --eos/--bos; `attninf train` packs with the
same rule. --val-frac holds out documents by a hash of their id (the rule of
compare's split), so the copies of a selected document land together. A
phased mixture gives one set per phase (OUT/stable/, OUT/decay/).
OUT/.manifest.json, written last, records the layout, tokenizer, separators,
and per file its documents, tokens and sha256 (a dot-file: `datasets` does
not take it for data). `attninf export OUT --verify` checks every file.
"""
from __future__ import annotations

import hashlib
import pickle
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .artifacts import TOKENS_FORMAT, TOKENS_MANIFEST, Mixture
from .errors import AttninfError
from .storage import check_replaceable, replaced_dir, write_json
from .stores import absolute, readable

FORMATS = ("megatron", "datatrove", "llmc", "nanogpt", "flat")
READ_ROWS = 2048
MEGATRON_HEADER = b"MMIDIDX\x00\x00"
LLMC = {"uint16": (20240520, 1), "uint32": (20240801, 7)}  # dtype -> (magic, version) of llm.c's headers
LLMC_HEADER_INTS = 256
VAL_SALT = "heldout"  # the salt of compare's held-out split: one rule for "held out by id"


@dataclass
class ExportConfig:
    data: str = field(default="mixed", metadata={"help": "Mixture from `attninf mix` (plain or phased)."})
    out: str = field(default="tokens", metadata={"help": "Output directory."})
    format: str = field(default="megatron", metadata={
        "choices": FORMATS,
        "help": "Layout of the trainer that reads it: megatron (Megatron-LM, NeMo, GPT-NeoX), datatrove "
                "(nanotron), llmc (llm.c), nanogpt, flat (.bin + int64 offsets)."})
    tokenizer: str = field(default="smollm2-135m", metadata={"help": "Model name or path of the tokenizer."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    id_column: str = field(default="id", metadata={"help": "Id column (the validation split hashes it)."})
    eos: str | None = field(default=None, metadata={
        "metavar": "TOKEN|none", "help": "Token after every document.",
        "default_help": "the document separator, e.g. <|endoftext|> for SmolLM2"})
    bos: str | None = field(default=None, metadata={
        "metavar": "TOKEN|none", "help": "Token before every document.",
        "default_help": "what the tokenizer puts first by itself, e.g. <s> for Llama; none for SmolLM2"})
    val_frac: float | None = field(default=None, metadata={
        "help": "Fraction of documents (by a hash of the id) written as the validation split.",
        "default_help": "0.005 for llmc and nanogpt, whose trainers read a validation file; else 0"})
    max_tokens_per_file: int | None = field(default=None, metadata={
        "help": "Start a new file past this many tokens (megatron, datatrove, llmc, flat).",
        "default_help": "one file per mixture shard and split"})
    workers: int | None = field(default=None, metadata={
        "help": "Shards tokenized at once (threads).", "default_help": "the cores"})
    progress: bool = field(default=True, metadata={"cli": False, "help": "A progress bar with tokens/s."})


def token_dtype(fmt: str, vocab_size: int) -> np.dtype:
    """The token type the format's reader expects for this vocabulary; a
    vocabulary the format cannot hold is refused."""
    if fmt == "megatron":  # Megatron's own preprocessing: DType.optimal_dtype
        return np.dtype("<u2") if vocab_size < 65500 else np.dtype("<i4")
    if vocab_size <= 1 << 16:
        return np.dtype("<u2")
    if fmt == "nanogpt":
        raise AttninfError(f"nanoGPT reads uint16 token ids only, and this tokenizer has {vocab_size:,} ids: "
                           "export --format megatron, datatrove or llmc instead")
    return np.dtype("<u4")


def _val_frac(cfg: ExportConfig) -> float:
    frac = cfg.val_frac if cfg.val_frac is not None else (0.005 if cfg.format in ("llmc", "nanogpt") else 0.0)
    if not 0 <= frac < 1:
        raise AttninfError(f"--val-frac must be in [0, 1), got {frac}")
    if frac == 0 and cfg.format in ("llmc", "nanogpt"):
        raise AttninfError(f"{cfg.format} trainers read a validation file: --val-frac must be above 0")
    return frac


# ------------------------------------------------------------------ writers


class _Writer:
    """One output file set of a layout, filled document by document; every
    file's sha256 is taken from the bytes as they are written (no re-read)."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype = path, dtype
        self.lengths: list[int] = []
        self.tokens = 0
        self.sha256: dict[str, str] = {}
        self._hash = hashlib.sha256()
        self.f = open(self._data_path(), "wb")

    def _data_path(self) -> Path:
        return self.path.with_name(self.path.name + ".bin")

    def add(self, docs: list[np.ndarray]) -> None:
        if docs:
            data = np.concatenate(docs).astype(self.dtype).tobytes()
            self.f.write(data)
            self._hash.update(data)
        for d in docs:
            self.lengths.append(len(d))
            self.tokens += len(d)

    def _side_file(self, role: str, path: Path, data: bytes) -> Path:
        path.write_bytes(data)
        self.sha256[role] = hashlib.sha256(data).hexdigest()
        return path

    def close(self) -> dict[str, Path]:
        """{role: path} of the files written."""
        self.f.close()
        self.sha256["data"] = self._hash.hexdigest()
        return {"data": self._data_path()}


class _FlatWriter(_Writer):
    def close(self):
        files = super().close()
        offsets = np.concatenate([[0], np.cumsum(self.lengths, dtype=np.int64)]).astype("<i8")
        return {**files, "index": self._side_file("index", self.path.with_name(self.path.name + ".idx"),
                                                  offsets.tobytes())}


class _MegatronWriter(_Writer):
    CODES = {"uint16": 8, "int32": 4}  # Megatron's DType codes

    def close(self):
        files = super().close()
        n = len(self.lengths)
        lengths = np.asarray(self.lengths, dtype="<i4")
        pointers = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)]).astype("<i8") * self.dtype.itemsize
        index = (MEGATRON_HEADER + struct.pack("<Q", 1) + struct.pack("<B", self.CODES[self.dtype.name])
                 + struct.pack("<Q", n) + struct.pack("<Q", n + 1)  # one sequence per document
                 + lengths.tobytes() + pointers[:n].tobytes() + np.arange(n + 1, dtype="<i8").tobytes())
        return {**files, "index": self._side_file("index", self.path.with_name(self.path.name + ".idx"), index)}


class _DatatroveWriter(_Writer):
    def __init__(self, path, dtype, tokenizer_name: str):
        self.tokenizer_name = tokenizer_name
        super().__init__(path, dtype)

    def _data_path(self):
        return self.path.with_name(self.path.name + ".ds")

    def close(self):
        files = super().close()
        ds = self._data_path()
        ends = np.cumsum(self.lengths, dtype=np.uint64).astype("<u8").tobytes()
        meta = f"{self.tokenizer_name}|{self.dtype.itemsize}\n{self.tokens}\n".encode()
        return {**files, "index": self._side_file("index", ds.with_name(ds.name + ".index"), ends),
                "metadata": self._side_file("metadata", ds.with_name(ds.name + ".metadata"), meta)}


def _writer(fmt: str, path: Path, dtype, tokenizer_name: str) -> _Writer:
    if fmt == "megatron":
        return _MegatronWriter(path, dtype)
    if fmt == "datatrove":
        return _DatatroveWriter(path, dtype, tokenizer_name)
    if fmt == "flat":
        return _FlatWriter(path, dtype)
    return _Writer(path, dtype)  # llmc's header is added when its files are named; nanogpt has none


# ---------------------------------------------------------------- one shard


def export_shard(src: Path, out: Path, stem: str, cfg: ExportConfig, tokenizer, separators, dtype, val_frac: float,
                 bar=None, stop=None) -> dict:
    """Tokenize one mixture shard into out/<stem> (train) and out/val/<stem>
    (validation) file sets of the layout (<stem>-000, -001, ... under
    --max-tokens-per-file). Returns {"files": [entry per file set], "rows",
    "empty": {split: rows with no text left out}}; a split with no document
    gets no file set (flat: empty documents count as documents). `stop`, an
    Event another shard sets on failure, ends this one at the next batch."""
    import pyarrow.parquet as pq

    from .measures import id_hash

    pf = pq.ParquetFile(readable(src))
    names = pf.schema_arrow.names
    if cfg.text_column not in names:
        raise AttninfError(f"{src}: no column {cfg.text_column!r} (columns: {', '.join(names)})")
    limit = np.iinfo(dtype).max
    cap = cfg.max_tokens_per_file if cfg.format != "nanogpt" else None
    writers: dict[str, _Writer] = {}
    done: list[dict] = []
    counts = {"train": 0, "val": 0}
    empty = {"train": 0, "val": 0}

    def writer(split: str) -> _Writer:
        if split not in writers:
            d = out if split == "train" else out / "val"  # both made by the caller
            name = f"{stem}-{counts[split]:03d}" if cap else stem  # -000 first: chunks sort in order
            counts[split] += 1
            writers[split] = _writer(cfg.format, d / name, dtype, cfg.tokenizer)
        return writers[split]

    def close(split: str) -> None:
        w = writers.pop(split)
        files = w.close()
        done.append({"split": split, "stem": str(w.path.relative_to(out)), "documents": len(w.lengths),
                     "tokens": w.tokens, "files": {k: str(p.relative_to(out)) for k, p in files.items()},
                     "sha256": w.sha256})

    cols = [cfg.text_column] + ([cfg.id_column] if val_frac and cfg.id_column in names else [])
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=READ_ROWS, columns=cols):
            if stop is not None and stop.is_set():
                return {"files": done, "rows": row, "empty": empty}
            texts = batch.column(0).to_pylist()
            ids = (batch.column(1).cast("string").to_pylist() if len(cols) > 1
                   else [f"{src.name}:{row + i}" for i in range(len(texts))])
            row += len(texts)
            keep = [i for i, t in enumerate(texts) if t]
            enc = tokenizer([texts[i] for i in keep], add_special_tokens=False)["input_ids"] if keep else []
            docs = [np.zeros(0, dtype=np.int64)] * len(texts)  # an empty or null text: a document of no tokens
            for i, ids_ in zip(keep, enc):
                docs[i] = np.asarray(separators.wrap(ids_), dtype=np.int64)
            top = max((int(d.max()) for d in docs if len(d)), default=0)
            if top > limit:
                raise AttninfError(f"token id {top} does not fit {dtype.name}: the tokenizer's vocabulary is "
                                   "larger than it says")
            for i, d in enumerate(docs):
                split = "val" if val_frac and id_hash(str(ids[i]), VAL_SALT) < val_frac else "train"
                if not len(d) and cfg.format != "flat":  # only flat keeps rows and documents aligned
                    empty[split] += 1
                    continue
                w = writer(split)
                if cap and w.tokens and w.tokens + len(d) > cap:
                    close(split)
                    w = writer(split)
                w.add([d])
                if bar is not None:
                    bar.update(len(d))
        for split in list(writers):
            close(split)
    finally:
        for w in writers.values():  # a shard that failed: its files are closed before its folder goes
            w.f.close()
    return {"files": done, "rows": row, "empty": empty}


# ---------------------------------------------------------------- the whole


def run_export(cfg: ExportConfig) -> dict:
    """Export every phase of the mixture; returns the manifest."""
    from .docstart import document_separators
    from .model import load_tokenizer

    if cfg.format not in FORMATS:
        raise AttninfError(f"unknown --format {cfg.format!r}; choose one of {', '.join(FORMATS)}")
    if cfg.max_tokens_per_file is not None and cfg.max_tokens_per_file < 1:
        raise AttninfError(f"--max-tokens-per-file must be at least 1, got {cfg.max_tokens_per_file}")
    if cfg.max_tokens_per_file and cfg.format == "nanogpt":
        raise AttninfError("nanoGPT reads one train.bin and one val.bin: --max-tokens-per-file does not apply")
    val_frac = _val_frac(cfg)
    phases = Mixture.read(cfg.data).phase_shards()
    tok = load_tokenizer(cfg.tokenizer)
    dtype = token_dtype(cfg.format, len(tok))  # refused here, before anything is written
    separators = document_separators(tok, cfg.eos, cfg.bos)
    owned = {TOKENS_MANIFEST, "manifest.json", "stable", "decay", "val", "train.bin", "val.bin", "meta.pkl"}
    # built in a new folder that replaces cfg.out whole: no file or phase of an earlier export survives
    check_replaceable(cfg.out, "export", lambda n: n in owned or n.endswith((".bin", ".idx", ".ds", ".index",
                                                                              ".metadata")),
                      {"mixture": cfg.data})
    with replaced_dir(cfg.out, last=(TOKENS_MANIFEST,)) as into:
        return _export(cfg, phases, tok, separators, dtype, val_frac, into)


def _export(cfg: ExportConfig, phases: dict, tok, separators, dtype, val_frac: float, out: Path) -> dict:
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor, wait

    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    bar = tqdm(unit="tok", unit_scale=True, desc="export", disable=not cfg.progress, dynamic_ncols=True)
    stop = threading.Event()
    jobs = []
    for name, files in phases.items():
        d = out if name == "main" else out / name
        (d / "val").mkdir(parents=True, exist_ok=True)
        jobs += [(name, d, f) for f in files]

    def one(job):
        name, d, f = job
        try:
            return export_shard(f, d, f.stem, cfg, tok, separators, dtype, val_frac, bar, stop)
        except BaseException:
            stop.set()  # the other shards end at their next batch
            raise

    # threads: the fast tokenizer releases the GIL; every thread has ended before an error leaves this block,
    # so the folder replaced_dir removes is not written into any more
    with ThreadPoolExecutor(max_workers=cfg.workers or os.cpu_count() or 1) as pool:
        futures = [pool.submit(one, job) for job in jobs]
        try:
            wait(futures)
        except BaseException:  # Ctrl-C: the shards stop at their next batch, then the folder goes
            stop.set()
            raise
    bar.close()
    results = [fut.result() for fut in futures]  # the first failure, after all have stopped
    manifest = {"format": TOKENS_FORMAT, "layout": cfg.format, "tokenizer": cfg.tokenizer, "vocab_size": len(tok),
                "dtype": dtype.name, "byteorder": "little", "separators": separators.to_json(),
                "val_frac": val_frac, "source": absolute(cfg.data), "phases": {}}
    for name in phases:
        d = out if name == "main" else out / name
        mine = [r for (n, _, _), r in zip(jobs, results) if n == name]
        entries = [e for r in mine for e in r["files"]]
        if cfg.format in ("llmc", "nanogpt"):
            entries = _single_stream_files(cfg, d, entries, dtype, len(tok))
        if not any((d / "val").iterdir()):
            (d / "val").rmdir()
        manifest["phases"][name] = {"path": "." if name == "main" else name, "files": entries,
                                    "rows": sum(r["rows"] for r in mine),
                                    "documents": sum(e["documents"] for e in entries),
                                    "empty": sum(sum(r["empty"].values()) for r in mine),
                                    "tokens": sum(e["tokens"] for e in entries)}
    for key in ("rows", "documents", "empty", "tokens"):  # rows = documents + empty
        manifest[key] = sum(v[key] for v in manifest["phases"].values())
    manifest["seconds"] = round(time.perf_counter() - t0, 2)
    manifest["tokens_per_s"] = round(manifest["tokens"] / max(manifest["seconds"], 1e-9), 1)
    write_json(manifest, out / TOKENS_MANIFEST)
    return manifest


def _single_stream_files(cfg: ExportConfig, d: Path, entries: list[dict], dtype, vocab_size: int) -> list[dict]:
    """llm.c and nanoGPT read one token stream per split and name its files
    themselves: the per-shard parts are joined in shard order into nanoGPT's
    train.bin / val.bin (+ meta.pkl), or llm.c's attninf_{train,val}_NNNNNN.bin
    (header added; one file per split, or files of at most
    --max-tokens-per-file tokens: llm.c refuses a file too small for one batch,
    so parts are not kept one file each)."""
    out = []
    for split in ("train", "val"):
        mine = [e for e in entries if e["split"] == split and e["tokens"]]
        groups: list[list[dict]] = []
        for e in mine:  # consecutive parts, each group within the cap (a part is, by the rollover)
            if (cfg.format == "llmc" and cfg.max_tokens_per_file and groups
                    and sum(x["tokens"] for x in groups[-1]) + e["tokens"] > cfg.max_tokens_per_file):
                groups.append([e])
            elif groups:
                groups[-1].append(e)
            else:
                groups.append([e])
        for k, group in enumerate(groups or [[]]):
            target = d / (f"{split}.bin" if cfg.format == "nanogpt" else f"attninf_{split}_{k:06d}.bin")
            tokens = sum(e["tokens"] for e in group)
            h = hashlib.sha256()
            with open(target, "wb") as f:
                if cfg.format == "llmc":
                    header = np.zeros(LLMC_HEADER_INTS, dtype="<i4")
                    header[0], header[1] = LLMC[dtype.name]
                    header[2] = tokens
                    f.write(header.tobytes())
                    h.update(header.tobytes())
                for e in group:
                    src = d / e["files"]["data"]
                    with open(src, "rb") as part:
                        for block in iter(lambda: part.read(1 << 22), b""):
                            f.write(block)
                            h.update(block)
                    src.unlink()
            out.append({"split": split, "stem": target.stem, "documents": sum(e["documents"] for e in group),
                        "tokens": tokens, "files": {"data": target.name}, "sha256": {"data": h.hexdigest()}})
    if cfg.format == "nanogpt":
        meta = pickle.dumps({"vocab_size": vocab_size})
        (d / "meta.pkl").write_bytes(meta)
        out.append({"split": "meta", "stem": "meta", "documents": 0, "tokens": 0, "files": {"meta": "meta.pkl"},
                    "sha256": {"meta": hashlib.sha256(meta).hexdigest()}})
    for split in ("train", "val"):
        if not any(e["split"] == split and e["tokens"] for e in out):
            raise AttninfError(f"no document fell in the {split} split: " + (
                "raise --val-frac (a few documents need a larger fraction)" if split == "val" else
                "lower --val-frac"))
    return out
