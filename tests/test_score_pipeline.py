"""`attninf score` end to end on a tiny model: outputs, row accounting, bad
input, resume after SIGKILL, fingerprint guard, 1 vs 2 workers, and a real
`dask scheduler` + `dask worker` cluster on 127.0.0.1."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from attninf.cli import main
from attninf.model import load_model
from attninf.scoring import Scorer

from helpers import SCORE_HEADS as HEADS
from helpers import docs, free_port, make_corpus


def run(args, **kw):
    return CliRunner().invoke(main, ["score", *map(str, args), "--quiet"], **kw)


def read_scores(out: Path):
    return {p.relative_to(out).as_posix(): pq.read_table(p).to_pydict()
            for p in sorted(out.rglob("*.parquet"))}


def test_scores_every_row_in_order(tmp_path, heads_file, tiny_model_dir):
    corpus = make_corpus(tmp_path / "corpus")
    # bad rows: null, empty, whitespace
    t = pq.read_table(corpus / "prose" / "part-0.parquet").to_pydict()
    t["text"][2], t["text"][3], t["text"][5] = None, "", "  \n"
    pq.write_table(pa.table(t), corpus / "prose" / "part-0.parquet")
    out = tmp_path / "scores"
    # float32: --dtype auto is bf16 on a CPU with AVX512-BF16/AMX, and the reference below is float32
    res = run([corpus, "--heads", heads_file, "--out", out, "--workers", "0", "--max-tokens", "64",
               "--batch-tokens", "256", "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    got = read_scores(out)
    assert sorted(got) == ["code/part-1.parquet", "code/part-3.parquet", "prose/part-0.parquet", "prose/part-2.parquet"]
    for rel, cols in got.items():
        src = pq.read_table(corpus / rel).to_pydict()
        assert len(cols["id"]) == len(src["text"])  # every input row, once
        assert set(cols) == {"id", "score", "loss_base", "loss_masked", "n_tokens", "status", "domain", "repetition"}
        if "id" in src:
            assert cols["id"] == src["id"]  # input order
        else:
            assert cols["id"] == [f"{rel}:{i}" for i in range(len(src["text"]))]
        assert cols["domain"] == src["domain"]
    p0 = got["prose/part-0.parquet"]
    assert [p0["status"][i] for i in (2, 3, 5)] == ["empty"] * 3
    assert all(p0["score"][i] is None for i in (2, 3, 5))
    # numbers equal the engine on the same texts (its own reference test covers the math)
    lm = load_model(str(tiny_model_dir), dtype="float32")
    direct = Scorer(lm, HEADS, max_tokens=64).score_texts(pq.read_table(corpus / "code/part-1.parquet")["text"].to_pylist())
    np.testing.assert_allclose(got["code/part-1.parquet"]["score"], direct["score"], rtol=1e-5)
    man = json.loads((out / "manifest.json").read_text())
    assert man["complete"] and man["summary"]["documents"] == 36 and man["summary"]["empty"] == 3
    assert man["fingerprint"]["model"] == json.loads(heads_file.read_text())["model"]["fingerprint"]
    assert not list(out.rglob(".*tmp*"))


def test_bad_input(tmp_path, heads_file):
    corpus = make_corpus(tmp_path / "corpus", files=3)
    (corpus / "prose" / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    out = tmp_path / "scores"
    res = run([corpus, "--heads", heads_file, "--out", out, "--workers", "0"])
    assert res.exit_code == 1
    assert "prose/broken.parquet" in res.output and "FAILED" in res.output
    assert len(read_scores(out)) == 3  # every other file still scored
    # missing text column: one line naming the columns that exist, before any work
    res = CliRunner().invoke(main, ["score", str(corpus), "--heads", str(heads_file), "--out",
                                    str(tmp_path / "s2"), "--text-column", "body", "--workers", "0"])
    assert res.exit_code == 2
    assert "no column 'body'" in res.output and "text, domain" in res.output
    assert not (tmp_path / "s2").exists()
    # the corpus is never written into
    res = run([corpus, "--heads", heads_file, "--out", corpus / "scores", "--workers", "0"])
    assert res.exit_code == 2 and "inside the corpus" in res.output


def test_duplicate_ids_reported(tmp_path, heads_file):
    corpus = tmp_path / "c"
    corpus.mkdir()
    pq.write_table(pa.table({"text": ["a b c", "d e f", "g h"], "id": ["x", "y", "x"]}), corpus / "f.parquet")
    res = run([corpus, "--heads", heads_file, "--out", tmp_path / "s", "--workers", "0"])
    assert res.exit_code == 0 and "1 duplicate" in res.output


def test_fingerprint_guard_and_resume_skip(tmp_path, heads_file):
    corpus = make_corpus(tmp_path / "corpus", files=2)
    out = tmp_path / "scores"
    assert run([corpus, "--heads", heads_file, "--out", out, "--workers", "0"]).exit_code == 0
    first = read_scores(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    res = run([corpus, "--heads", heads_file, "--out", out, "--workers", "0"])
    assert res.exit_code == 0 and "2 file(s) already done" in res.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == mtimes
    res = run([corpus, "--heads", heads_file, "--out", out, "--workers", "0", "--max-tokens", "32"])
    assert res.exit_code == 2 and "different run" in res.output and "max_tokens" in res.output
    res = run([corpus, "--heads", heads_file, "--out", out, "--workers", "0", "--max-tokens", "32", "--overwrite"])
    assert res.exit_code == 0
    assert read_scores(out).keys() == first.keys()
    # the document start and the window context decide the numbers too
    for flag, value, key in (("--doc-prefix", "none", "doc_prefix"), ("--context-overlap", "4", "context_overlap"),
                             ("--domain-from", "dir", "domain_from")):
        res = run([corpus, "--heads", heads_file, "--out", out, "--workers", "0", "--max-tokens", "32", flag, value])
        assert res.exit_code == 2 and key in res.output, (flag, res.output)


def _flat_corpus(root: Path, layout: dict):
    """layout: relative path -> domain column values (None: no column)."""
    rng = random.Random(3)
    for rel, dom in layout.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        cols = {"text": docs(rng, 3)}
        if dom is not None:
            cols["domain"] = dom
        pq.write_table(pa.table(cols), p)
    return root


@pytest.mark.parametrize("layout,mode,want", [
    # folders, no column: auto takes the first folder under the root
    ({"cosmopedia/a/0.parquet": None, "cosmopedia/1.parquet": None, "python-edu/0.parquet": None},
     "auto", {"cosmopedia/a/0.parquet": "cosmopedia", "cosmopedia/1.parquet": "cosmopedia",
              "python-edu/0.parquet": "python-edu"}),
    # a column wins over folders in auto
    ({"x/0.parquet": ["m", "m", "n"], "y/0.parquet": ["n", "n", "n"]}, "auto",
     {"x/0.parquet": ["m", "m", "n"], "y/0.parquet": "n"}),
    # and the folder when asked
    ({"x/0.parquet": ["m", "m", "n"], "y/0.parquet": ["n", "n", "n"]}, "dir", {"x/0.parquet": "x", "y/0.parquet": "y"}),
    # one folder, no column: no domain, said as such
    ({"only/0.parquet": None, "only/1.parquet": None}, "auto", {"only/0.parquet": None, "only/1.parquet": None}),
])
def test_domain_from(tmp_path, heads_file, layout, mode, want):
    corpus = _flat_corpus(tmp_path / "c", layout)
    out = tmp_path / "s"
    res = run([corpus, "--heads", heads_file, "--out", out, "--workers", "0", "--domain-from", mode])
    assert res.exit_code == 0, res.output
    assert "domains: " in res.output
    got = read_scores(out)
    for rel, dom in want.items():
        assert got[rel]["domain"] == (dom if isinstance(dom, list) else [dom] * 3)
    man = json.loads((out / "manifest.json").read_text())
    # the mode the run resolved to: no domain at all, each file's first folder, or the column
    if all(v is None for v in want.values()):
        resolved = "none"
    elif all(isinstance(v, str) and rel.split("/")[0] == v for rel, v in want.items()):
        resolved = "dir"
    else:
        resolved = "column"
    assert man["domains"]["from"] == resolved


@pytest.mark.parametrize("layout,mode,message", [
    ({"a.parquet": ["x"] * 3, "b.parquet": None}, "auto", "b.parquet has no 'domain' column"),
    ({"a.parquet": None, "d/b.parquet": None}, "dir", "a.parquet sits at the corpus root"),
    ({"a.parquet": None}, "column", "a.parquet has no 'domain' column"),
])
def test_domain_from_errors(tmp_path, heads_file, layout, mode, message):
    corpus = _flat_corpus(tmp_path / "c", layout)
    res = run([corpus, "--heads", heads_file, "--out", tmp_path / "s", "--workers", "0", "--domain-from", mode])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "s").exists()


def test_domains_reach_select(tmp_path, heads_file):
    corpus = _flat_corpus(tmp_path / "c", {"web/0.parquet": None, "code/0.parquet": None})
    assert run([corpus, "--heads", heads_file, "--out", tmp_path / "s", "--workers", "0"]).exit_code == 0
    res = CliRunner().invoke(main, ["select", str(tmp_path / "s"), "--out", str(tmp_path / "o"), "--frac", "0.34"])
    assert res.exit_code == 0 and "ranking within domains: 2 domain(s): code, web" in res.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["by"] == "domain" and {g: v["selected"] for g, v in m["groups"].items()} == {"code": 1, "web": 1}


def test_dry_run_writes_nothing(tmp_path, heads_file):
    corpus = make_corpus(tmp_path / "corpus", files=2)
    res = CliRunner().invoke(main, ["score", str(corpus), "--heads", str(heads_file), "--out",
                                    str(tmp_path / "s"), "--limit", "5"])
    assert res.exit_code == 0, res.output
    assert "dry run: 5 documents" in res.output and "projected" in res.output
    assert not (tmp_path / "s").exists()


def _cli(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "attninf.cli", "score", *map(str, args), "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.heavy
def test_kill_and_resume_identical(tmp_path, heads_file):
    corpus = make_corpus(tmp_path / "corpus", files=16, rows=12)
    common = ["--heads", heads_file, "--workers", "1", "--max-tokens", "48"]
    ref = _cli([corpus, "--out", tmp_path / "ref", *common])
    assert ref.wait(timeout=600) == 0, ref.stdout.read()
    out = tmp_path / "killed"
    p = _cli([corpus, "--out", out, *common], start_new_session=True)
    # kill -9 the whole process group at a random moment once work has begun
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.rglob("*.parquet")):
        time.sleep(0.2)
    time.sleep(random.uniform(0, 0.3))
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done_before = len(list(out.rglob("*.parquet")))
    assert done_before < 16, "the run finished before the kill: nothing was tested"
    again = _cli([corpus, "--out", out, *common])
    assert again.wait(timeout=600) == 0, again.stdout.read()
    assert read_scores(out) == read_scores(tmp_path / "ref")


@pytest.mark.heavy
def test_one_vs_two_workers(tmp_path, heads_file):
    corpus = make_corpus(tmp_path / "corpus", files=4)
    for w in (1, 2):
        res = run([corpus, "--heads", heads_file, "--out", tmp_path / f"w{w}", "--workers", w])
        assert res.exit_code == 0, res.output
    assert read_scores(tmp_path / "w1") == read_scores(tmp_path / "w2")


@pytest.mark.heavy
def test_external_dask_cluster(tmp_path, heads_file):
    pytest.importorskip("distributed")
    corpus = make_corpus(tmp_path / "corpus", files=3)
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([str(bindir / "dask"), "worker", addr, "--nthreads", "1", "--nworkers", "1",
                                           "--no-dashboard", "--host", "127.0.0.1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(addr, timeout="60s") as c:
            c.wait_for_workers(2, timeout=120)
        res = run([corpus, "--heads", heads_file, "--out", tmp_path / "ext", "--scheduler", addr])
        assert res.exit_code == 0, res.output
        res = run([corpus, "--heads", heads_file, "--out", tmp_path / "local", "--workers", "0"])
        assert res.exit_code == 0, res.output
        assert read_scores(tmp_path / "ext") == read_scores(tmp_path / "local")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.mark.heavy
def test_worker_killed_is_replaced(tmp_path, heads_file):
    """SIGKILL a Dask worker process mid-run: its file is redone elsewhere and
    the output equals an undisturbed run."""
    psutil = pytest.importorskip("psutil")
    corpus = make_corpus(tmp_path / "corpus", files=12, rows=12)
    common = ["--heads", heads_file, "--max-tokens", "48"]
    assert run([corpus, "--out", tmp_path / "ref", "--workers", "0", *common]).exit_code == 0
    out = tmp_path / "out"
    p = _cli([corpus, "--out", out, "--workers", "2", *common])
    proc = psutil.Process(p.pid)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.rglob("*.parquet")):
        time.sleep(0.2)
    workers = [c for c in proc.children(recursive=True)
               if "spawn_main" in " ".join(c.cmdline()) and "resource_tracker" not in " ".join(c.cmdline())
               and not c.children()]
    assert workers, "no worker process found"
    workers[0].kill()
    assert p.wait(timeout=600) == 0, p.stdout.read()
    assert len(list(out.rglob("*.parquet"))) == 12
    assert read_scores(out) == read_scores(tmp_path / "ref")


def test_mix_uses_the_domain_the_selection_ranked_by(tmp_path, heads_file):
    """--domain-from dir on a corpus that also has a domain column: the
    mixture carries the folder, the domain that select ranked within."""
    corpus = _flat_corpus(tmp_path / "c", {"web/0.parquet": ["x", "y", "x"], "code/0.parquet": ["x", "x", "y"]})
    assert run([corpus, "--heads", heads_file, "--out", tmp_path / "s", "--workers", "0",
                "--domain-from", "dir"]).exit_code == 0
    r = CliRunner()
    assert r.invoke(main, ["select", str(tmp_path / "s"), "--out", str(tmp_path / "o")]).exit_code == 0
    res = r.invoke(main, ["mix", str(corpus), "--selected", str(tmp_path / "o"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    t = pq.read_table(tmp_path / "m").to_pydict()
    assert sorted(set(t["domain"])) == ["code", "web"] and len(t["domain"]) == 6 + 2
