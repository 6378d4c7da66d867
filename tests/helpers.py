"""Builders the tests share: small corpora on disk, and scores as `attninf
score` would leave them. Tests import these; they never import each other."""
import json
import random
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from attninf.corpus import corpus_signature
from attninf.probes import sentences

SCORE_HEADS = [[1, 2], [2, 0], [3, 3]]  # masked heads of the tiny model in the scoring tests (heads_file)


def docs(rng, n):
    pool = sentences()
    out = []
    for _ in range(n):
        k = rng.randint(1, 12)
        out.append(" ".join(rng.choice(pool) for _ in range(k)))
    return out


def make_corpus(root: Path, seed=0, files=4, rows=9):
    """files Parquet files under prose/ and code/ (text, domain, id; file 1 has no id column)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        texts = docs(rng, rows)
        sub = root / ("code" if f % 2 else "prose")
        sub.mkdir(exist_ok=True)
        cols = {"text": texts, "domain": ["code" if f % 2 else "prose"] * rows}
        if f != 1:  # file 1 has no id column: ids become <file>:<row>
            cols["id"] = [f"doc-{f}-{i}" for i in range(rows)]
        pq.write_table(pa.table(cols), sub / f"part-{f}.parquet", row_group_size=4)
    return root


def make_scored_corpus(tmp: Path, files=3, rows=40, seed=0, with_ids=True):
    """A corpus and row-aligned scores, as `attninf score` would leave them."""
    rng = random.Random(seed)
    corpus, scores = tmp / "corpus", tmp / "scores"
    for f in range(files):
        sub = "a" if f % 2 == 0 else "b/c"
        (corpus / sub).mkdir(parents=True, exist_ok=True)
        (scores / sub).mkdir(parents=True, exist_ok=True)
        rel = f"{sub}/part-{f}.parquet"
        n = rows + f
        dom = [rng.choice(["web", "code"]) for _ in range(n)]
        ids = [f"d{f}-{i}" for i in range(n)]
        cols = {"text": [f"text of {ids[i]} " * rng.randint(1, 5) for i in range(n)], "domain": dom}
        if with_ids:
            cols["id"] = ids
        pq.write_table(pa.table(cols), corpus / rel)
        sid = ids if with_ids else [f"{rel}:{i}" for i in range(n)]
        pq.write_table(pa.table({"id": sid, "score": [rng.random() for _ in range(n)], "loss_base": [1.0] * n,
                                 "loss_masked": [1.1] * n, "n_tokens": [rng.randint(5, 50) for _ in range(n)],
                                 "status": ["ok"] * n, "repetition": [0.0] * n, "domain": dom}), scores / rel)
    rels = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*.parquet"))
    (scores / "manifest.json").write_text(json.dumps({
        "fingerprint": {"model": "x"}, "corpus": str(corpus.resolve()),
        "corpus_files": corpus_signature(corpus, rels),
        "config": {"text_column": "text", "id_column": "id", "domain_column": "domain"}}))
    return corpus, scores


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
