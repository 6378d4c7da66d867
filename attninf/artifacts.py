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

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .errors import AttninfError
from .identity import file_sha256, scores_digest
from .storage import atomic_path, parquet_files, read_json, write_json

NO_DOMAIN = "(none)"  # the group of documents without a domain, in select, mix and report
ALL = "(all)"  # the one group of a global ranking (select --by global), in select, compare and report
HEADS_VERSION = 2  # of heads.json; 2: hits only inside the needle, documents start with the doc prefix
HIT_RULE = "needle-span"
COMPARE_SUMMARY = "summary.json"  # of `attninf compare`, beside its index.html
TOKENS_FORMAT, TOKENS_MANIFEST = "attninf-tokens-1", "manifest.json"  # of `attninf export`
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


def scores_schema(id_type=None, token_stats: bool = False):
    """The Arrow schema of a scores file; `id` keeps the corpus column's type
    (string when score made the ids). token_stats: with the TOKEN_STATS
    columns of `score --save-token-stats` at the end."""
    import pyarrow as pa

    f64, s = pa.float64(), pa.string()
    return pa.schema([("id", id_type or s), ("score", f64), ("loss_base", f64), ("loss_masked", f64),
                      ("n_tokens", pa.int64()), ("status", s), ("repetition", f64), ("domain", s)]
                     + [(c, f64) for c in (TOKEN_STATS if token_stats else ())])


def scores_table(ids, result: dict | None = None, domain=None):
    """Rows of a scores file: ids (an Arrow array), Scorer.score_texts'
    result, the domain (an Arrow array, or one value for every row). With no
    result, the empty table of the schema."""
    import pyarrow as pa

    if result is None:
        return scores_schema().empty_table()
    n = len(ids)
    if not isinstance(domain, (pa.Array, pa.ChunkedArray)):
        domain = pa.array([domain] * n, pa.string())
    schema = scores_schema(ids.type, token_stats=TOKEN_STATS[0] in result)
    cols = ([ids] + [pa.array(result[c] if c != "status" else result[c].tolist(), t, from_pandas=True)
                     for c, t in zip(SCORE_COLUMNS[1:7], schema.types[1:7])] + [domain.cast(pa.string())]
            + [pa.array(result[c], pa.float64(), from_pandas=True) for c in schema.names[len(SCORE_COLUMNS):]])
    return pa.Table.from_arrays(cols, schema=schema)


@dataclass
class Heads:
    """heads.json from detect-heads: the model it was made with (name,
    fingerprint), its shape, the selected heads [[layer, head], ...], the
    probes' document prefix, the copy scores and the ablation."""

    path: Path
    data: dict

    @classmethod
    def read(cls, path: str | Path) -> "Heads":
        p = Path(path)
        rerun = f"run `attninf detect-heads --out {p}` again"
        data = read_json(p, f"heads file not found: {p} (run `attninf detect-heads --out {p}` first)", rerun)
        for key in ("model", "heads", "num_layers", "num_heads"):
            if key not in data:
                raise AttninfError(f"{p} is not a heads.json from detect-heads (no {key!r})")
        version = data.get("heads_version", 1)
        if version != HEADS_VERSION or data.get("hit") != HIT_RULE:
            raise AttninfError(f"{p} was made by an older detect-heads (heads version {version}, copies counted "
                               f"anywhere in the prompt); its heads are not the retrieval heads of version "
                               f"{HEADS_VERSION}: {rerun}")
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


@dataclass
class _StageOutput:
    """A stage's output directory and its manifest: read checked, written atomically."""

    root: Path
    manifest: dict

    MANIFEST_NAME = MANIFEST
    WHAT = "a stage output"  # what the directory should be, for the error
    FIX = ""  # how to make one

    @classmethod
    def read(cls, root: str | Path):
        root = Path(root)
        out = cls(root, _read_manifest(root / cls.MANIFEST_NAME, cls.WHAT, cls.FIX))
        out.check()
        return out

    def check(self) -> None:
        """Refuse a manifest that is not of this kind of output (per type)."""

    @classmethod
    def write_manifest(cls, root: str | Path, manifest: dict) -> None:
        write_json(manifest, Path(root) / cls.MANIFEST_NAME)


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

    @property
    def corpus(self) -> Path | None:
        return Path(self.manifest["corpus"]) if self.manifest.get("corpus") else None

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
            t = pq.read_table(self.root / rel)
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
        return pq.read_table(p, columns=["row"])["row"].to_numpy(zero_copy_only=False).astype(np.int64)

    def scores(self) -> Scores:
        """The scores the selection was made from, checked to hold the same
        scores still: found beside the selection (a moved or copied workdir)
        or where they were; refused when rescored since."""
        rec = self.manifest["scores"]
        candidates = ([self.root / rec["relpath"]] if rec.get("relpath") else []) + [Path(rec["path"])]
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
    def read(cls, root: str | Path) -> "Mixture":
        root = Path(root)
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
    """An export read back (`attninf export`): its manifest, and each shard
    as numpy arrays."""

    MANIFEST_NAME = TOKENS_MANIFEST
    WHAT, FIX = "a finished `attninf export`", "export again"

    def check(self) -> None:
        if self.manifest.get("format") != TOKENS_FORMAT:
            raise AttninfError(f"{self.root / TOKENS_MANIFEST}: format {self.manifest.get('format')!r}, "
                               f"expected {TOKENS_FORMAT!r}")

    @property
    def dtype(self):
        import numpy as np

        return np.dtype(self.manifest["dtype"]).newbyteorder("<")

    @property
    def phases(self) -> dict:
        """{phase: its shards and counts} ("streams" in exports made before the word was phase)."""
        return self.manifest.get("phases") or self.manifest.get("streams") or {}

    def shard_paths(self, phase: str = "main"):
        s = self.phases[phase]
        d = self.root / s["path"]
        return [(d / e["bin"], d / e["idx"], e) for e in s["shards"]]

    def verify(self) -> None:
        """Sizes against the manifest's counts, offsets that add up, and the
        sha256 of every file; the first problem is an error."""
        import numpy as np

        for phase in self.phases:
            for b, i, e in self.shard_paths(phase):
                for p in (b, i):
                    if not p.is_file():
                        raise AttninfError(f"{p} is missing: export again")
                want_b, want_i = e["tokens"] * self.dtype.itemsize, (e["documents"] + 1) * 8
                for p, want in ((b, want_b), (i, want_i)):
                    got = p.stat().st_size
                    if got != want:
                        raise AttninfError(f"{p}: {got:,} bytes, the manifest says {want:,} "
                                           f"({'truncated' if got < want else 'grown'}): export again")
                idx = np.fromfile(i, dtype="<i8")
                if idx[0] != 0 or idx[-1] != e["tokens"] or np.any(np.diff(idx) < 0):
                    raise AttninfError(f"{i}: offsets do not run from 0 to {e['tokens']:,}: export again")
                for p, key in ((b, "sha256_bin"), (i, "sha256_idx")):
                    if file_sha256(p) != e[key]:
                        raise AttninfError(f"{p}: sha256 differs from the manifest (damaged): export again")

    def documents(self, phase: str = "main"):
        """Every document's token ids (numpy views), shard by shard, in row order."""
        import numpy as np

        for b, i, _ in self.shard_paths(phase):
            tokens = np.memmap(b, dtype=self.dtype, mode="r") if b.stat().st_size else np.zeros(0, self.dtype)
            idx = np.fromfile(i, dtype="<i8")
            for k in range(len(idx) - 1):
                yield tokens[idx[k]:idx[k + 1]]


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
