"""Scoring in units of rows: the plan, the reader, identical bytes whatever
the workers, load balance, resume after SIGKILL, a failing unit, the lock."""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from attninf.cli import main
from attninf.pipelines.score import ScoreConfig
from attninf.pipelines.units import PARTS_DIR, Unit, UnitReader, plan_units
from attninf.pipelines.lock import LOCK
from attninf.scoring import Scorer

from helpers import docs, free_port, make_corpus


def _check_plan(groups, chunk):
    units = plan_units(groups, chunk, "f")
    starts = [0]
    for n in groups:
        starts.append(starts[-1] + n)
    assert [u.start for u in units][:1] == ([0] if starts[-1] else [])
    for a, b in zip(units, units[1:]):
        assert a.end == b.start  # contiguous
    assert (units[-1].end if units else 0) == starts[-1]  # every row, once
    bounds = set(starts)
    for u in units:
        assert 0 < u.rows <= chunk
        inside = [n for s, n in zip(starts, groups) if s <= u.start < s + n]
        if u.start not in bounds or u.end not in bounds:  # only a row group larger than chunk is cut
            assert inside and inside[0] > chunk
    # whole row groups are grouped greedily: a unit and the next row group would not fit
    for a, b in zip(units, units[1:]):
        if a.end in bounds and b.start in bounds and a.start in bounds:
            nxt = next(n for s, n in zip(starts, groups) if s == b.start and n)  # the next non-empty group
            assert a.rows + nxt > chunk or nxt > chunk


def test_plan_units_cover_every_row_once():
    rng = random.Random(0)
    for _ in range(500):
        groups = [rng.choice([0, 1, 3, 7, 20, 64, 200]) for _ in range(rng.randint(0, 12))]
        _check_plan(groups, rng.randint(1, 80))
    assert plan_units([1000], 300) == [Unit("", 0, 250), Unit("", 250, 500), Unit("", 500, 750),
                                       Unit("", 750, 1000)]  # one giant row group: equal row ranges
    assert plan_units([5, 5, 5, 5, 5], 10) == [Unit("", 0, 10), Unit("", 10, 20), Unit("", 20, 25)]


def test_reader_returns_exact_rows_in_batches(tmp_path):
    rng = random.Random(1)
    n = 157
    t = pa.table({"text": [f"doc {i}" for i in range(n)], "id": [f"id{i}" for i in range(n)]})
    pq.write_table(t, tmp_path / "f.parquet", row_group_size=23)
    cfg = ScoreConfig(corpus=str(tmp_path), domain_from="none")
    for _ in range(60):
        a = rng.randint(0, n)
        b = rng.randint(a, n)
        step = rng.randint(1, 40)
        cfg.rows_per_chunk = step
        got = list(UnitReader(cfg, "f.parquet").batches(a, b))
        texts = [x for texts, _, _ in got for x in texts]
        assert texts == t["text"].to_pylist()[a:b]
        assert [x for _, ids, _ in got for x in ids.to_pylist()] == t["id"].to_pylist()[a:b]
        assert all(len(texts) == step for texts, _, _ in got[:-1])


def _corpus(root: Path, big_rows=60, group=5):
    """The usual small files plus one file of many row groups."""
    make_corpus(root, files=3, rows=7)
    rng = random.Random(5)
    texts = docs(rng, big_rows)
    pq.write_table(pa.table({"text": texts, "domain": ["prose"] * big_rows}), root / "prose" / "big.parquet",
                   row_group_size=group)
    return root


def _score(args):
    res = CliRunner().invoke(main, ["score", *map(str, args), "--quiet"])
    assert res.exit_code == 0, res.output
    return res


def _bytes(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


@pytest.mark.heavy
def test_same_bytes_whatever_the_workers_and_spread(tmp_path, heads_file):
    corpus = _corpus(tmp_path / "c")
    common = ["--heads", heads_file, "--max-tokens", "48", "--chunk-docs", "10"]
    _score([corpus, "--out", tmp_path / "w0", "--workers", "0", *common])
    _score([corpus, "--out", tmp_path / "w2", "--workers", "2", *common])
    _score([corpus, "--out", tmp_path / "w3", "--workers", "3", *common])
    ref = _bytes(tmp_path / "w0")
    assert len(ref) == 4 and _bytes(tmp_path / "w2") == ref and _bytes(tmp_path / "w3") == ref
    assert not (tmp_path / "w2" / PARTS_DIR).exists() or not list((tmp_path / "w2" / PARTS_DIR).rglob("*.parquet"))
    stats = json.loads((tmp_path / "w2" / "_stats" / "prose" / "big.parquet.json").read_text())
    assert stats["units"] == 6 and stats["documents"] == 60
    assert len(stats["workers"]) == 2, stats["workers"]  # both workers took units of the big file
    assert pq.read_table(tmp_path / "w0" / "prose" / "big.parquet")["id"].to_pylist() == \
        [f"prose/big.parquet:{i}" for i in range(60)]  # every row, in input order


def test_failed_unit_is_reported_and_redone_alone(tmp_path, heads_file, monkeypatch):
    corpus = _corpus(tmp_path / "c")
    common = ["--heads", heads_file, "--max-tokens", "48", "--chunk-docs", "10", "--workers", "0"]
    _score([corpus, "--out", tmp_path / "ref", *common])
    boom = pq.read_table(corpus / "prose" / "big.parquet")["text"][23].as_py()  # in unit [20:30]
    real = Scorer.score_texts

    def flaky(self, texts):
        if boom in texts:
            raise RuntimeError("CUDA error: device-side assert")
        return real(self, texts)

    monkeypatch.setattr(Scorer, "score_texts", flaky)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["score", str(corpus), "--out", str(out), *map(str, common), "--quiet"])
    assert res.exit_code == 1, res.output
    assert "prose/big.parquet[20:30]" in res.output and "device-side assert" in res.output
    assert not (out / "prose" / "big.parquet").exists()  # never assembled with a hole
    parts = sorted(p.name for p in (out / PARTS_DIR / "prose" / "big.parquet").glob("*.parquet"))
    assert len(parts) == 5 and not any(p.startswith("000000000020-") for p in parts)
    assert len([p for p in out.rglob("*.parquet") if PARTS_DIR not in p.parts]) == 3  # the others finished
    monkeypatch.setattr(Scorer, "score_texts", real)
    res = _score([corpus, "--out", out, *common])
    assert "1 unit(s) scored now" in res.output
    assert _bytes(out) == _bytes(tmp_path / "ref")


def test_chunk_change_after_a_crash_is_refused(tmp_path, heads_file):
    corpus = _corpus(tmp_path / "c")
    common = ["--heads", heads_file, "--max-tokens", "48", "--workers", "0"]
    _score([corpus, "--out", tmp_path / "o", "--chunk-docs", "10", *common])
    res = CliRunner().invoke(main, ["score", str(corpus), "--out", str(tmp_path / "o"), "--chunk-docs", "20",
                                    *map(str, common)])
    assert res.exit_code == 2 and "differs in: chunk_docs" in res.output


def test_second_run_on_the_same_out_is_refused_and_a_dead_lock_taken_over(tmp_path, heads_file):
    corpus = make_corpus(tmp_path / "c", files=2, rows=4)
    out = tmp_path / "o"
    out.mkdir()
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-11-29 08:00:00 UTC"}
    (out / LOCK).write_text(json.dumps(me))
    res = CliRunner().invoke(main, ["score", str(corpus), "--out", str(out), "--heads", str(heads_file),
                                    "--workers", "0"])
    assert res.exit_code == 2 and f"pid {os.getpid()}" in res.output and "started 2026-11-29 08:00" in res.output
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK).write_text(json.dumps({**me, "pid": dead.pid}))
    res = _score([corpus, "--out", out, "--heads", heads_file, "--workers", "0"])
    assert "took over the lock" in res.output and not (out / LOCK).exists()
    assert len(list(out.rglob("*.parquet"))) == 2


@pytest.mark.heavy
def test_sigkill_loses_only_units_in_flight(tmp_path, heads_file):
    corpus = _corpus(tmp_path / "c", big_rows=120)
    common = ["--heads", str(heads_file), "--max-tokens", "48", "--chunk-docs", "10", "--workers", "0"]
    _score([corpus, "--out", tmp_path / "ref", *common])
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "attninf.cli", "score", str(corpus), "--out", str(out), *common,
                          "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    parts = out / PARTS_DIR / "prose" / "big.parquet"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(parts.glob("*.parquet"))) < 3:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    kept = sorted(parts.glob("*.parquet"))
    assert 3 <= len(kept) < 12, "the kill came too late: nothing was tested"
    assert not (out / "prose" / "big.parquet").exists()  # parts are never a finished file
    assert (out / "code" / "part-1.parquet").exists()  # the first file was finished before
    res = _score([corpus, "--out", out, *common])
    assert "took over the lock" in res.output
    # only what was not written: the big file's missing units and the two small files after it
    assert f"{12 - len(kept) + 2} unit(s) scored now" in res.output
    assert _bytes(out) == _bytes(tmp_path / "ref")


@pytest.mark.parametrize("size_mb", [1])
@pytest.mark.heavy
def test_one_long_document_among_small_ones(tmp_path, heads_file, size_mb):
    """A long document is scored over many windows, in a unit of its own batch."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    rng = random.Random(9)
    small = docs(rng, 5)
    long_text = " ".join(docs(rng, 4000))[: size_mb * 1_000_000]
    pq.write_table(pa.table({"text": small[:2] + [long_text] + small[2:]}), corpus / "f.parquet")
    _score([corpus, "--out", tmp_path / "o", "--heads", heads_file, "--max-tokens", "256", "--workers", "0",
            "--rows-per-chunk", "2"])
    t = pq.read_table(tmp_path / "o" / "f.parquet").to_pydict()
    assert t["status"] == ["ok"] * 6 and t["n_tokens"][2] > 100_000


def test_gpu_out_of_memory_retries_with_smaller_batches():
    import torch

    from attninf.pipelines.workers import _score_batch

    class Fake:
        max_tokens = 256

        def __init__(self, fits):
            self.forward = type("F", (), {"batch_tokens": 4096})()
            self.fits, self.tried = fits, []

        def score_texts(self, texts):
            self.tried.append(self.forward.batch_tokens)
            if self.forward.batch_tokens > self.fits:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return {"n": len(texts)}

    s = Fake(fits=1000)
    assert _score_batch(s, ["a", "b"]) == {"n": 2}
    assert s.tried == [4096, 2048, 1024, 512] and s.forward.batch_tokens == 4096  # restored for the next batch
    s = Fake(fits=100)  # not even one window fits: the unit fails, reported like any other
    with pytest.raises(torch.cuda.OutOfMemoryError):
        _score_batch(s, ["a"])
    assert s.tried == [4096, 2048, 1024, 512, 256]


@pytest.mark.heavy
def test_resources_send_units_only_to_workers_that_have_them(tmp_path, heads_file):
    """An external cluster: one worker declares GPU=1, one does not; with
    --resources GPU=1 every unit runs on the first."""
    pytest.importorskip("distributed")
    corpus = _corpus(tmp_path / "c", big_rows=30)
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    try:
        for name, extra in (("gpu", ["--resources", "GPU=1"]), ("cpu", [])):
            procs.append(subprocess.Popen([str(bindir / "dask"), "worker", addr, "--nthreads", "1", "--name", name,
                                           "--no-dashboard", "--host", "127.0.0.1", *extra], **quiet))
        from distributed import Client

        with Client(addr, timeout="60s") as c:
            c.wait_for_workers(2, timeout=120)
        _score([corpus, "--heads", heads_file, "--out", tmp_path / "o", "--scheduler", addr, "--resources",
                "GPU=1", "--chunk-docs", "10", "--max-tokens", "48"])
        ran = {}
        for p in (tmp_path / "o" / "_stats").rglob("*.json"):
            for w, n in json.loads(p.read_text())["workers"].items():
                ran[w] = ran.get(w, 0) + n
        assert ran == {"gpu": 3 + 3}, ran  # 3 small files + 3 units of the big one, all on the worker with GPU=1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.mark.parametrize("workers", [0, pytest.param(1, marks=pytest.mark.heavy)])
def test_progress_moves_inside_a_unit(tmp_path, heads_file, monkeypatch, workers):
    """The bar advances per batch of --rows-per-chunk documents, in process
    and from a Dask worker, and ends at the corpus's row count exactly."""
    from attninf.pipelines import executors

    seen = []
    real_advance, real_finished = executors.Tracker.advance, executors.Tracker.finished

    moved = []

    def count(self):  # what the bar is told to move, whether it is shown or not (--quiet)
        if not moved:
            moved.append(0)
            self.bar.update = lambda n: moved.__setitem__(0, moved[0] + n)

    def advance(self, unit, rows, tokens):
        count(self)
        seen.append(("batch", str(unit), rows))
        real_advance(self, unit, rows, tokens)

    def finished(self, unit, result=None, error=None):
        count(self)
        seen.append(("unit", str(unit), unit.rows))
        real_finished(self, unit, result, error)

    monkeypatch.setattr(executors.Tracker, "advance", advance)
    monkeypatch.setattr(executors.Tracker, "finished", finished)
    corpus = _corpus(tmp_path / "c")
    _score([corpus, "--out", tmp_path / "o", "--heads", heads_file, "--max-tokens", "48", "--chunk-docs", "30",
            "--rows-per-chunk", "10", "--workers", workers])
    big = [e for e in seen if e[0] == "batch" and e[1].startswith("prose/big.parquet")]
    assert [e[2] for e in big] == [10] * 6  # 2 units of 30 rows, 3 batches each, reported as they end
    first_unit_end = seen.index(next(e for e in seen if e[0] == "unit" and e[1].startswith("prose/big.parquet")))
    assert any(e[0] == "batch" and e[1].startswith("prose/big.parquet") for e in seen[:first_unit_end])
    assert moved == [60 + 3 * 7]  # every row once, none twice
