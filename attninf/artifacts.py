"""The on-disk contracts between stages, in one place: how a file is written
(atomically), how a directory's Parquet files are listed, the scores schema
and statuses, and one type per stage output (Scores, Selection, Mixture)
that reads its manifest; the digests that tie a selection to the scores it
was made from and scores to the corpus they were made of. docs/design.md
describes each.

The corpus signature reads only Parquet footers (paths, sizes, row counts,
a hash of the footer bytes), the scores digest the score column; neither depends on modification times or
absolute paths: a workdir copied or moved elsewhere keeps its digests, a
rescore or a changed corpus does not.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .errors import AttninfError
from .headsets import head_set_columns
from .identity import file_sha256, scores_digest
from .storage import atomic_path, parquet_files, read_json, write_json
from .stores import location, readable

NO_DOMAIN = "(none)"  # the group of documents without a domain, in select, mix and report
ALL = "(all)"  # the one group of a global ranking (select --by global), in select, compare and report
HEADS_VERSION = 2  # of heads.json; 2: hits only inside the needle, documents start with the doc prefix
HIT_RULE = "needle-span"
COMPARE_SUMMARY = "summary.json"  # of `attninf compare`, beside its index.html
# of `attninf export`: a dot-file, so that `datasets` does not take it for data; format 2 has a layout per trainer
TOKENS_FORMAT, TOKENS_MANIFEST = "attninf-tokens-2", ".manifest.json"
MIX_MANIFEST = ".manifest.json"  # a dot-file, so that `datasets` does not take it for data


class Status(str, Enum):
    """Why a document has (or lacks) a score; written as its value."""

    OK = "ok"
    EMPTY = "empty"  # null, empty or whitespace-only text
    TOO_SHORT = "too_short"  # a single token: nothing to predict


def domain_name(value) -> str:
    """The group name of a domain value: its text, or NO_DOMAIN for null."""
    return NO_DOMAIN if value is None else str(value)


# ------------------------------------------------------------ stage outputs

MANIFEST = "manifest.json"  # of a scores directory and of a selection
STATS_DIR = "_stats"  # per scored file counters, beside the scores
SCORE_COLUMNS = ("id", "score", "loss_base", "loss_masked", "n_tokens", "status", "repetition", "domain")
TOKEN_STATS = ("top1_share", "score_first_half", "score_second_half")  # score --save-token-stats


def _read_manifest(path: Path, what: str, fix: str) -> dict:
    return read_json(path, f"{path.parent} is not {what} (no {path.name}): {fix}", fix)


def scores_schema(id_type=None, token_stats: bool = False, head_sets=()):
    """The Arrow schema of a scores file; `id` keeps the corpus column's type
    (string when score made the ids). head_sets: the tags of the extra head
    sets of `score --head-fracs`, two columns each (head_set_columns);
    token_stats: with the TOKEN_STATS columns of `score --save-token-stats`
    at the end."""
    import pyarrow as pa

    f64, s = pa.float64(), pa.string()
    return pa.schema([("id", id_type or s), ("score", f64), ("loss_base", f64), ("loss_masked", f64),
                      ("n_tokens", pa.int64()), ("status", s), ("repetition", f64), ("domain", s)]
                     + [(c, f64) for c in head_set_columns(head_sets)]
                     + [(c, f64) for c in (TOKEN_STATS if token_stats else ())])


def scores_table(ids, result: dict | None = None, domain=None, head_sets=()):
    """Rows of a scores file: ids (an Arrow array), Scorer.score_texts'
    result, the domain (an Arrow array, or one value for every row), the tags
    of the extra head sets the result holds. With no result, the empty table
    of the schema."""
    import pyarrow as pa

    if result is None:
        return scores_schema(head_sets=head_sets).empty_table()
    n = len(ids)
    if not isinstance(domain, (pa.Array, pa.ChunkedArray)):
        domain = pa.array([domain] * n, pa.string())
    schema = scores_schema(ids.type, token_stats=TOKEN_STATS[0] in result, head_sets=head_sets)
    cols = ([ids] + [pa.array(result[c] if c != "status" else result[c].tolist(), t, from_pandas=True)
                     for c, t in zip(SCORE_COLUMNS[1:7], schema.types[1:7])] + [domain.cast(pa.string())]
            + [pa.array(result[c], pa.float64(), from_pandas=True) for c in schema.names[len(SCORE_COLUMNS):]])
    return pa.Table.from_arrays(cols, schema=schema)


@dataclass
class Heads:
    """heads.json from detect-heads: the model it was made with (name,
    fingerprint), its shape, the selected heads [[layer, head], ...], the
    probes' document prefix, the copy rule ("hit", one of HIT_RULES), the
    copy scores, the per-probe copy counts and their stability (both absent
    from files made before them) and the ablation."""

    path: Path
    data: dict

    HIT_RULES = ("needle-span", "paper")  # heads.DetectConfig.hit

    @classmethod
    def read(cls, path) -> "Heads":
        p = location(path)
        rerun = f"run `attninf detect-heads --out {p}` again"
        data = read_json(p, f"heads file not found: {p} (run `attninf detect-heads --out {p}` first)", rerun)
        for key in ("model", "heads", "num_layers", "num_heads"):
            if key not in data:
                raise AttninfError(f"{p} is not a heads.json from detect-heads (no {key!r})")
        version = data.get("heads_version", 1)
        if version != HEADS_VERSION:
            raise AttninfError(f"{p} was made by an older detect-heads (heads version {version}, copies counted "
                               f"anywhere in the prompt); its heads are not the retrieval heads of version "
                               f"{HEADS_VERSION}: {rerun}")
        if data.get("hit") not in cls.HIT_RULES:
            raise AttninfError(f"{p} has copy rule {data.get('hit')!r}, not one of {', '.join(cls.HIT_RULES)}: "
                               f"{rerun}")
        return cls(p, data)

    @property
    def heads(self) -> list[list[int]]:
        return self.data["heads"]

    @property
    def model_spec(self) -> str:
        """The model the heads were found in, as detect-heads was given it."""
        return self.data["model"].get("name") or self.data["model"].get("path")

    def check_model(self, spec: str, fingerprint: str, shape: tuple[int, int] | None = None) -> None:
        """Refuse a model other than the one the heads were found in: the
        heads of one model mean nothing in another."""
        want = self.data["model"].get("fingerprint")
        if want and fingerprint != want:
            raise AttninfError(f"{self.path} was made with model fingerprint {want}, but {spec} has "
                               f"{fingerprint}: detect heads for this model first")
        have = (self.data["num_layers"], self.data["num_heads"])
        if shape is not None and have != tuple(shape):
            raise AttninfError(f"{self.path} is for a {have[0]}x{have[1]} model, {spec} is {shape[0]}x{shape[1]}")

    def check_windows(self, spec: str, windows: list) -> None:
        """For a model with sliding windows (each layer's, as its attention
        receives it: plugin.check_model), refuse heads found before copies
        were counted within them (no "windows" in heads.json: sliding-layer
        heads were credited with copies they cannot make), or under other
        windows."""
        if not any(windows):
            return
        rerun = f"run `attninf detect-heads --out {self.path}` again"
        if "windows" not in self.data:
            raise AttninfError(f"{self.path} was made before copies were counted within each layer's sliding "
                               f"window, which {spec} has: {rerun}")
        if self.data["windows"] != list(windows):
            raise AttninfError(f"{self.path} was made with sliding windows {self.data['windows']}, {spec} has "
                               f"{list(windows)}: {rerun}")


@dataclass
class _StageOutput:
    """A stage's output directory and its manifest: read checked, written atomically."""

    root: Path
    manifest: dict

    MANIFEST_NAME = MANIFEST
    WHAT = "a stage output"  # what the directory should be, for the error
    FIX = ""  # how to make one

    @classmethod
    def read(cls, root):
        root = location(root)
        out = cls(root, _read_manifest(root / cls.MANIFEST_NAME, cls.WHAT, cls.FIX))
        out.check()
        return out

    def check(self) -> None:
        """Refuse a manifest that is not of this kind of output (per type)."""

    @classmethod
    def write_manifest(cls, root, manifest: dict) -> None:
        write_json(manifest, location(root) / cls.MANIFEST_NAME)


class Scores(_StageOutput):
    """A scores directory: scores/<corpus file's relative path> in the
    scores schema, rows in input order; manifest.json (fingerprint, config,
    corpus signature, summary); _stats/<file>.json per scored file."""

    WHAT, FIX = "a scores directory", "run `attninf score` first"

    def files(self) -> list[str]:
        files = parquet_files(self.root, skip=(".", "_"))
        if not files:
            raise AttninfError(f"{self.root} holds no scores")
        return files

    @property
    def config(self) -> dict:
        """The ScoreConfig the scores were made with, as a mapping."""
        return self.manifest.get("config") or {}

    def column(self, name: str) -> str:
        """The corpus column the scores read for text, id or domain."""
        return self.config.get(f"{name}_column", name)

    @functools.cached_property
    def corpus(self):
        """The corpus where it was scored (attninf.corpus.Corpus: a folder, a URL or a glob), or None.
        One Corpus per Scores: its files are opened (a JSON Lines file indexed) once."""
        from .corpus import Corpus

        return Corpus(self.manifest["corpus"]) if self.manifest.get("corpus") else None

    @property
    def corpus_files(self) -> dict | None:
        return self.manifest.get("corpus_files")

    @property
    def fingerprint(self) -> dict:
        return self.manifest.get("fingerprint") or {}

    @property
    def summary(self) -> dict:
        return self.manifest.get("summary") or {}

    def find(self, doc_id: str) -> tuple[str, int, dict]:
        """(file, row, scores row) of the document with this id (ids compared as text)."""
        import pyarrow.parquet as pq

        for rel in self.files():
            t = pq.read_table(readable(self.root / rel))
            for row, x in enumerate(t["id"].to_pylist()):
                if x is not None and str(x) == str(doc_id):
                    return rel, row, t.slice(row, 1).to_pylist()[0]
        raise AttninfError(f"no document with id {doc_id!r} in {self.root}")

    def file_stats(self, rel: str) -> dict | None:
        p = self.root / STATS_DIR / f"{rel}.json"
        return json.loads(p.read_text()) if p.is_file() else None


def write_selection_rows(path: Path, rows, ids, domains, scores, n_tokens) -> None:
    """One file of a selection: the kept rows of a scores file (row, id,
    domain, score, n_tokens), written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"row": pa.array(rows, pa.int64()), "id": pa.array(ids, pa.string()),
                      "domain": pa.array(domains, pa.string()), "score": pa.array(scores, pa.float64()),
                      "n_tokens": pa.array(n_tokens, pa.int64())})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


class Selection(_StageOutput):
    """A selection directory: selected/<scores file> holding the kept rows
    (row, id, domain, score, n_tokens); manifest.json with the cut per
    group and where the scores are."""

    WHAT, FIX = "a selection", "run `attninf select` first"

    @property
    def files(self) -> list[str]:
        """The scores files the selection ranked (each has a file here)."""
        return self.manifest["files"]

    @property
    def groups(self) -> dict:
        return self.manifest["groups"]

    def thresholds(self) -> dict:
        return {g: v.get("threshold") for g, v in self.groups.items()}

    def rows(self, rel: str):
        """Selected row indices (into the corpus file) of one file, ascending."""
        import numpy as np
        import pyarrow.parquet as pq

        p = self.root / rel
        if not p.exists():
            return np.zeros(0, dtype=np.int64)
        return pq.read_table(readable(p), columns=["row"])["row"].to_numpy(zero_copy_only=False).astype(np.int64)

    def scores(self) -> Scores:
        """The scores the selection was made from, checked to hold the same
        scores still: found beside the selection (a moved or copied workdir)
        or where they were; refused when rescored since."""
        rec = self.manifest["scores"]
        candidates = ([self.root / rec["relpath"]] if rec.get("relpath") else []) + [location(rec["path"])]
        root = next((c for c in candidates if (c / MANIFEST).is_file()), None)
        if root is None:
            raise AttninfError(f"the scores behind {self.root} are gone: {rec['path']}")
        self.check_scores(root, scores_digest(root, self.files) if self.manifest["scores"].get("digest") else None)
        return Scores.read(root)

    def check_scores(self, root: Path, digest: str | None) -> None:
        """Refuse scores (at root, of this digest, identity.scores_digest over
        this selection's files) other than the ones it was selected from:
        thresholds and kept rows would be drawn over the wrong documents."""
        want = self.manifest.get("scores", {}).get("digest")
        if want and digest != want:
            raise AttninfError(f"the scores in {root} changed since {self.root} was selected from them "
                               "(rescored?): run `attninf select` again")


def shard_name(shard: int, shards: int) -> str:
    return f"part-{shard:05d}-of-{shards:05d}.parquet"


class Mixture(_StageOutput):
    """A training mixture: mixed/part-NNNNN-of-MMMMM.parquet (text, id,
    domain, source) and mixed/.manifest.json, written last: a directory
    without it is a mix that did not finish."""

    MANIFEST_NAME = MIX_MANIFEST
    WHAT, FIX = "a mixture", "rerun `attninf mix`"

    @classmethod
    def read(cls, root) -> "Mixture":
        root = location(root)
        if not (root / MIX_MANIFEST).is_file():
            if not root.is_dir():
                raise AttninfError(f"--data {root}: no such directory (run `attninf mix` first)")
            raise AttninfError(f"{root} has no {MIX_MANIFEST}: not a finished `attninf mix` output "
                               "(rerun the mix; a killed one leaves no manifest)")
        return super().read(root)

    def phases(self) -> dict[str, "Mixture"] | None:
        """{phase: its mixture} of a phased mixture (`mix --phases`), each read
        checked; None for a plain one."""
        if "phases" not in self.manifest:
            return None
        return {p: Mixture.read(self.root / v.get("path", p)) for p, v in self.manifest["phases"].items()}

    def phase_shards(self) -> dict[str, list[Path]]:
        """{phase: its shard files}: {"main": ...} for a plain mixture (its one
        phase), {"stable": ..., "decay": ...} for a phased one."""
        phases = self.phases()
        if phases is None:
            return {"main": self.shards()}
        return {name: m.shards() for name, m in phases.items()}

    def shards(self) -> list[Path]:
        """The shard files the manifest lists, all present."""
        m = self.manifest
        if "phases" in m:
            raise AttninfError(f"{self.root} is a phased mixture ({', '.join(m['phases'])}): read one of its "
                               f"phases, e.g. {self.root}/stable")
        try:
            names = m.get("files") or [shard_name(i, m["shards"]) for i in range(m["shards"])]
        except (KeyError, TypeError) as e:
            raise AttninfError(f"{self.root / MIX_MANIFEST} is damaged ({e!r}): rerun `attninf mix`") from e
        files = [self.root / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise AttninfError(f"{self.root}: {len(missing)} shard(s) its manifest lists are missing, "
                               f"e.g. {missing[0]}")
        return files


class TokenShards(_StageOutput):
    """An export read back (`attninf export`): its manifest, each file set
    checked against it, and the tokens (and, for the layouts that index
    them, the documents) as numpy arrays. attninf's own reading, for
    --verify and the tests' round trips; trainers read the files with theirs."""

    MANIFEST_NAME = TOKENS_MANIFEST
    WHAT, FIX = "a finished `attninf export`", "export again"

    def check(self) -> None:
        if self.manifest.get("format") != TOKENS_FORMAT:
            raise AttninfError(f"{self.root / TOKENS_MANIFEST}: format {self.manifest.get('format')!r}, this "
                               f"attninf reads {TOKENS_FORMAT!r}: export again")

    @property
    def layout(self) -> str:
        return self.manifest["layout"]

    @property
    def dtype(self):
        import numpy as np

        return np.dtype(self.manifest["dtype"]).newbyteorder("<")

    @property
    def phases(self) -> dict:
        return self.manifest["phases"]

    def file_sets(self, phase: str = "main", split: str = "train") -> list[tuple[Path, dict]]:
        """[(folder, entry)] of a phase's file sets of one split, in order."""
        d = self.root / self.phases[phase]["path"]
        return [(d, e) for e in self.phases[phase]["files"] if e["split"] == split]

    def _header_bytes(self) -> int:
        return 256 * 4 if self.layout == "llmc" else 0

    def verify(self) -> None:
        """Every file present with the sha256 the manifest records, and the
        data files' sizes, headers and indices consistent with its counts;
        the first problem is an error."""
        for phase in self.phases:
            for d, e in (x for split in ("train", "val", "meta") for x in self.file_sets(phase, split)):
                for role, rel in e["files"].items():
                    p = d / rel
                    if not p.is_file():
                        raise AttninfError(f"{p} is missing: export again")
                if e["split"] != "meta":
                    p = d / e["files"]["data"]
                    want, got = self._header_bytes() + e["tokens"] * self.dtype.itemsize, p.stat().st_size
                    if got != want:
                        raise AttninfError(f"{p}: {got:,} bytes, the manifest says {want:,} "
                                           f"({'truncated' if got < want else 'grown'}): export again")
                    if self.layout in ("flat", "megatron", "datatrove"):
                        lengths = self._lengths(d, e)
                        if len(lengths) != e["documents"] or int(lengths.sum()) != e["tokens"]:
                            raise AttninfError(f"{d / e['files']['index']}: the index does not hold "
                                               f"{e['documents']:,} documents of {e['tokens']:,} tokens: export again")
                for role, rel in e["files"].items():
                    if file_sha256(d / rel) != e["sha256"][role]:
                        raise AttninfError(f"{d / rel}: sha256 differs from the manifest (damaged): export again")

    def _lengths(self, d: Path, e: dict):
        """Document lengths from the layout's own index."""
        import struct

        import numpy as np

        idx = d / e["files"]["index"]
        if self.layout == "flat":
            return np.diff(np.fromfile(idx, dtype="<i8"))
        if self.layout == "datatrove":
            return np.diff(np.concatenate([[0], np.fromfile(idx, dtype="<u8").astype(np.int64)]))
        raw = idx.read_bytes()  # megatron: header, version, dtype code, counts, then int32 lengths
        if raw[:9] != b"MMIDIDX\x00\x00" or len(raw) < 34:
            raise AttninfError(f"{idx}: not a Megatron index (bad header): export again")
        n = struct.unpack("<Q", raw[18:26])[0]
        if len(raw) != 34 + n * (4 + 8) + (n + 1) * 8:
            raise AttninfError(f"{idx}: {len(raw):,} bytes, not the index of {n:,} documents (truncated?): "
                               "export again")
        return np.frombuffer(raw, dtype="<i4", count=n, offset=34).astype(np.int64)

    def tokens(self, phase: str = "main", split: str = "train"):
        """The split's token stream, file set by file set (numpy arrays)."""
        import numpy as np

        for d, e in self.file_sets(phase, split):
            p = d / e["files"]["data"]
            yield np.fromfile(p, dtype=self.dtype, offset=self._header_bytes())

    def documents(self, phase: str = "main", split: str = "train"):
        """Every document's token ids, in order (flat, megatron, datatrove:
        the layouts that index documents)."""
        import numpy as np

        if self.layout not in ("flat", "megatron", "datatrove"):
            raise AttninfError(f"a {self.layout} export keeps no document index: read its token stream")
        for (d, e), toks in zip(self.file_sets(phase, split), self.tokens(phase, split)):
            ends = np.cumsum(self._lengths(d, e))
            yield from np.split(toks, ends[:-1]) if len(ends) else []


HELDOUT = "heldout loss (mean of domains)"  # compare's headline measure


class CompareSummary(_StageOutput):
    """`attninf compare`'s output, read through its summary.json: the arms,
    the seeds, mean and sd per arm and measure (stats[arm][measure]), the
    paired differences against each reference arm (paired[ref][arm][measure]:
    mean, verdict)."""

    MANIFEST_NAME = COMPARE_SUMMARY
    WHAT, FIX = "the output of `attninf compare`", "run `attninf compare` first"

    def check(self) -> None:
        for key in ("arms", "seeds", "stats", "paired"):
            if key not in self.manifest:
                raise AttninfError(f"{self.root / COMPARE_SUMMARY} is not a summary of `attninf compare` "
                                   f"(no {key!r})")

    @property
    def page(self) -> Path:
        return self.root / "index.html"
