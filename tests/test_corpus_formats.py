"""Corpora as they come: the same documents as Parquet and as JSON Lines
(plain, gzip, zstandard) give byte-identical scores, selections and
mixtures; JSON Lines files are cut into units like Parquet ones; bad input
is one line naming the file and the line."""
import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from click.testing import CliRunner

from attninf.cli import main
from attninf.corpus import Corpus, CorpusFile, corpus_name, scores_name
from attninf.jsonl import INDEX_STRIDE
from attninf.errors import AttninfError

from helpers import docs

FORMATS = ["parquet", "jsonl", "jsonl.gz", "jsonl.zst", "json.gz"]


def _rows(seed, n, with_ids=True):
    rng = random.Random(seed)
    texts = docs(rng, n)
    texts[1] = ""  # empty: scored as such, still a row
    texts[2] = None  # null text
    out = []
    for i, t in enumerate(texts):
        r = {"text": t, "domain": None if i == 3 else ("code" if seed % 2 else "prose")}
        if with_ids:
            r["id"] = f"doc-{seed}-{i}"
        out.append(r)
    return out


def write_as(path, rows, fmt):
    """rows written as one file of this format (Parquet with small row groups)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path.with_name(path.name + ".parquet"), row_group_size=7)
        return
    lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
    target = path.with_name(f"{path.name}.{fmt}")
    if fmt.endswith(".gz"):
        lines = gzip.compress(lines)
    elif fmt.endswith(".zst"):
        lines = zstandard.ZstdCompressor().compress(lines)
    target.write_bytes(lines)


def make_corpus_as(root, fmt, files=3, rows=23):
    for f in range(files):
        write_as(root / ("code" if f % 2 else "prose") / f"part-{f}", _rows(f, rows), fmt)
    return root


def _invoke(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def _ok(*args):
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    return res


def _tables(root, pattern="*.parquet"):
    """{name without the corpus-format suffix: file bytes} of an output folder."""
    out = {}
    for p in sorted(root.rglob(pattern)):
        rel = p.relative_to(root).as_posix()
        if rel.startswith((".", "_")):
            continue
        key = corpus_name(rel)
        suffix = next((f".{f}" for f in sorted(FORMATS, key=len, reverse=True) if key.endswith(f".{f}")), "")
        out[key[: len(key) - len(suffix)]] = p.read_bytes()
    return out


def test_names_of_scores_files():
    assert scores_name("a/x.parquet") == "a/x.parquet" and scores_name("a/x.jsonl.zst") == "a/x.jsonl.zst.parquet"
    for rel in ("a/x.parquet", "x.jsonl", "b/x.jsonl.gz", "x.jsonl.zst", "x.json.gz", "x.json.zst"):
        assert corpus_name(scores_name(rel)) == rel


@pytest.mark.heavy
def test_every_format_gives_the_same_bytes(tmp_path, heads_file):
    """score -> select -> mix on the same documents in five formats: the
    scores, the selection and the mixture are the same bytes."""
    got = {}
    for fmt in FORMATS:
        corpus = make_corpus_as(tmp_path / fmt / "corpus", fmt)
        w = tmp_path / fmt
        _ok("score", corpus, "--out", w / "scores", "--heads", heads_file, "--max-tokens", "48",
            "--chunk-docs", "10", "--workers", "0", "--quiet")
        stats = json.loads((w / "scores" / "_stats" / "prose" / f"part-0.{fmt}.parquet.json"
                            if fmt != "parquet" else w / "scores" / "_stats" / "prose" / "part-0.parquet.json")
                           .read_text())
        assert stats["units"] == 3 and stats["documents"] == 23  # 23 rows cut into units of at most 10
        _ok("select", w / "scores", "--out", w / "sel", "--frac", "0.3")
        _ok("mix", corpus, "--selected", w / "sel", "--out", w / "mix", "--shard-rows", "20")
        got[fmt] = {k: _tables(w / k) for k in ("scores", "sel", "mix")}
    ref = got["parquet"]
    assert len(ref["scores"]) == 3 and len(ref["mix"]) >= 3
    for fmt in FORMATS[1:]:
        for k in ref:
            assert got[fmt][k] == ref[k], (fmt, k)


def test_jsonl_rows_read_back_by_position(tmp_path, monkeypatch):
    """Units of a JSON Lines file read exactly their rows, from a seek point
    of the index (uncompressed) or by streaming (compressed); blank lines
    are no rows; texts() picks rows by position."""
    monkeypatch.setenv("ATTNINF_HOME", str(tmp_path / "home"))
    n = 2 * INDEX_STRIDE + 37
    rows = [{"text": f"t{i}", "id": i} for i in range(n)]
    for fmt in ("jsonl", "jsonl.zst"):
        body = "".join(json.dumps(r) + ("\n\n" if i == 5 else "\n") for i, r in enumerate(rows)).encode()
        path = tmp_path / f"c-{fmt}" / f"x.{fmt}"
        path.parent.mkdir()
        path.write_bytes(body if fmt == "jsonl" else zstandard.ZstdCompressor().compress(body))
        f = CorpusFile(path.parent, path.name)
        assert f.rows == n
        for start, end in ((0, 10), (INDEX_STRIDE - 3, INDEX_STRIDE + 3), (n - 5, n), (INDEX_STRIDE * 2 + 1, n)):
            got = pa.concat_tables(list(f.read(["text", "id"], start, end, step=4)))
            assert got["id"].to_pylist() == list(range(start, end)), (fmt, start)
            assert got.schema.field("id").type == pa.int64()
        assert f.texts([3, n - 1, INDEX_STRIDE], "text") == {3: "t3", n - 1: f"t{n - 1}", INDEX_STRIDE: f"t{INDEX_STRIDE}"}
        assert CorpusFile(path.parent, path.name).jsonl.index() == f.jsonl.index()  # cached, same answer


@pytest.mark.parametrize("case, body, message", [
    ("not-json", b'{"text": "a"}\n{"text": b}\n', "x.jsonl line 2: not JSON"),
    ("not-object", b'{"text": "a"}\n[1, 2]\n', "x.jsonl line 2: a JSON list, not an object"),
    ("no-text-key", b'{"body": "a"}\n', "x.jsonl has no key 'text'; its keys are: body"),
    ("text-not-text", b'{"text": 5}\n', "key 'text' holds int, not text"),
])
def test_bad_jsonl_is_one_line(tmp_path, heads_file, case, body, message):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "ok.jsonl").write_bytes(b'{"text": "fine"}\n')
    (corpus / "x.jsonl").write_bytes(body)
    res = _invoke("score", corpus, "--out", tmp_path / "o", "--heads", heads_file, "--workers", "0", "--quiet")
    assert res.exit_code != 0
    assert message in res.output, res.output
    assert "Traceback" not in res.output


def test_corrupt_and_misnamed_files_are_one_line(tmp_path, heads_file):
    rng = random.Random(0)
    good = zstandard.ZstdCompressor().compress(
        "".join(json.dumps({"text": t}) + "\n" for t in docs(rng, 400)).encode())
    mid = len(good) // 2
    cases = {
        "x.jsonl.zst": (good[:mid] + bytes(b ^ 0x5A for b in good[mid:mid + 64]) + good[mid + 64:],
                        "x.jsonl.zst: corrupt zstd"),
        "y.jsonl.gz": (b'{"text": "plain, not gzip"}\n', "y.jsonl.gz: not gzip-compressed although its name says so"),
        "z.parquet": (b'{"text": "json"}\n', "z.parquet: not Parquet although its name says so"),
        "notes.txt": (b"hello", "notes.txt is not a corpus file"),
    }
    for name, (body, message) in cases.items():
        corpus = tmp_path / f"c-{name}"
        corpus.mkdir()
        (corpus / name).write_bytes(body)
        res = _invoke("score", corpus, "--out", tmp_path / f"o-{name}", "--heads", heads_file, "--workers", "0",
                      "--quiet")
        assert res.exit_code != 0 and message in res.output, (name, res.output)
        assert "Traceback" not in res.output


def test_listing_skips_markers_and_refuses_clashes(tmp_path):
    root = tmp_path / "c"
    write_as(root / "a" / "x", _rows(0, 3), "jsonl")
    (root / "_SUCCESS").write_text("")
    (root / ".hidden.txt").write_text("")
    assert Corpus(root).files() == ["a/x.jsonl"]
    assert Corpus(f"{root}/**/*.jsonl").files() == ["a/x.jsonl"]
    (root / "README.md").write_text("about")
    with pytest.raises(AttninfError, match="README.md is not a corpus file"):
        Corpus(root).files()
    assert Corpus(f"{root}/*/*.jsonl").files() == ["a/x.jsonl"]  # a glob leaves it out
    (root / "README.md").unlink()
    write_as(root / "a" / "x.jsonl", _rows(0, 3), "parquet")  # a/x.jsonl.parquet: the scores name of a/x.jsonl
    with pytest.raises(AttninfError, match="named like the scores of a JSON Lines file"):
        Corpus(root).files()


def test_an_edit_inside_a_jsonl_file_is_seen(tmp_path, heads_file, monkeypatch):
    """Same size, same rows, one word changed in the middle of the file: it is
    rescored, not taken for the one scored."""
    monkeypatch.setenv("ATTNINF_HOME", str(tmp_path / "home"))
    corpus = tmp_path / "c"
    rows = [{"text": f"document number {i} about the moon", "id": str(i)} for i in range(30)]
    write_as(corpus / "x", rows, "jsonl")
    size = (corpus / "x.jsonl").stat().st_size
    common = ["--out", tmp_path / "o", "--heads", heads_file, "--max-tokens", "48", "--workers", "0", "--quiet"]
    _ok("score", corpus, *common)
    before = pq.read_table(tmp_path / "o" / "x.jsonl.parquet")["score"].to_pylist()
    rows[15]["text"] = rows[15]["text"].replace("moon", "mars")
    write_as(corpus / "x", rows, "jsonl")
    assert (corpus / "x.jsonl").stat().st_size == size
    res = _ok("score", corpus, *common)
    assert "1 corpus file(s) changed since they were scored, redone: x.jsonl" in res.output
    after = pq.read_table(tmp_path / "o" / "x.jsonl.parquet")["score"].to_pylist()
    assert after[15] != before[15] and after[:15] == before[:15]


def test_jsonl_ids_of_any_json_type_and_missing_ones(tmp_path, heads_file, monkeypatch):
    """Ids are read as text whatever JSON type they hold (ints, then strings,
    nulls first, a uint64), whatever the unit cut; a row without one gets
    <file>:<row>, as a Parquet file without the column."""
    monkeypatch.setenv("ATTNINF_HOME", str(tmp_path / "home"))
    ids = [None] * 12 + list(range(10)) + [f"s{i}" for i in range(10)] + [17270936128763342011, True]
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text("".join(
        json.dumps({"text": f"document number {n} about cats", **({} if i is None and n % 2 else {"id": i})}) + "\n"
        for n, i in enumerate(ids)))
    want = [f"a.jsonl:{n}" if i is None else json.dumps(i) if not isinstance(i, str) else i for n, i in enumerate(ids)]
    for chunk in (1000, 7):
        out = tmp_path / f"o{chunk}"
        _ok("score", corpus, "--out", out, "--heads", heads_file, "--max-tokens", "48", "--chunk-docs", chunk,
            "--rows-per-chunk", "5", "--workers", "0", "--quiet")
        assert pq.read_table(out / "a.jsonl.parquet")["id"].to_pylist() == want
    assert (tmp_path / "o1000" / "a.jsonl.parquet").read_bytes() == (tmp_path / "o7" / "a.jsonl.parquet").read_bytes()


def test_compare_data_from_a_jsonl_corpus(tmp_path, heads_file, monkeypatch):
    """compare's training copy of a JSON Lines corpus is Parquet under names
    read as Parquet, with the ids and held-out rows of the scores."""
    from attninf.artifacts import Scores
    from attninf.corpus import Corpus
    from attninf.pipelines.compare_data import prepare

    monkeypatch.setenv("ATTNINF_HOME", str(tmp_path / "home"))
    corpus = make_corpus_as(tmp_path / "corpus", "jsonl.zst")
    _ok("score", corpus, "--out", tmp_path / "scores", "--heads", heads_file, "--max-tokens", "48",
        "--workers", "0", "--quiet")
    prepare(str(tmp_path / "scores"), str(corpus), tmp_path / "data", heldout_frac=0.2, frac=0.3, repeat=1,
            decay_weight=2)
    files = Corpus(tmp_path / "data" / "corpus").files()
    assert files == ["code/part-1_jsonl_zst.parquet", "prose/part-0_jsonl_zst.parquet", "prose/part-2_jsonl_zst.parquet"]
    assert Scores.read(tmp_path / "data" / "scores").files() == files
    held = pq.read_table(tmp_path / "data" / "heldout" / "heldout.parquet").num_rows
    kept = sum(pq.read_table(tmp_path / "data" / "corpus" / f).num_rows for f in files)
    assert held + kept == 3 * 23 and held >= 3


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_compare_data_accepts_null_ids_as_score_wrote_them(tmp_path, heads_file, monkeypatch, fmt):
    """A null id is kept in Parquet and made `<file>:<row>` in JSON Lines by
    score; compare checks the ids by the same rule (it refused Parquet null ids)."""
    from attninf.pipelines.compare_data import prepare

    monkeypatch.setenv("ATTNINF_HOME", str(tmp_path / "home"))
    rows = _rows(0, 23)
    rows[5]["id"] = None
    rows[3]["domain"] = "prose"  # one domain, large enough to hold rows out
    write_as(tmp_path / "corpus" / "prose" / "part-0", rows, fmt)
    _ok("score", tmp_path / "corpus", "--out", tmp_path / "scores", "--heads", heads_file, "--max-tokens", "48",
        "--workers", "0", "--quiet")
    scored = pq.read_table(next((tmp_path / "scores" / "prose").glob("*.parquet")))["id"].to_pylist()
    assert scored[5] == (None if fmt == "parquet" else "prose/part-0.jsonl:5")
    prepare(str(tmp_path / "scores"), str(tmp_path / "corpus"), tmp_path / "data", heldout_frac=0.2, frac=0.3,
            repeat=1, decay_weight=2)


def test_a_glob_matches_paths_as_a_shell_does(tmp_path):
    root = tmp_path / "c"
    for rel in ("top.jsonl", "old/backup.jsonl", "old/deep/x.jsonl", "_misc/y.parquet"):
        write_as(root / rel.rsplit(".", 1)[0], _rows(0, 5), rel.rsplit(".", 1)[1])
    assert Corpus(f"{root}/*.jsonl").files() == ["top.jsonl"]
    assert Corpus(f"{root}/**/*.jsonl").files() == ["old/backup.jsonl", "old/deep/x.jsonl", "top.jsonl"]
    assert Corpus(f"{root}/old/*.jsonl").files() == ["backup.jsonl"]  # relative to the folder before the glob
    assert Corpus(root).files() == ["_misc/y.parquet", "old/backup.jsonl", "old/deep/x.jsonl", "top.jsonl"]


def test_a_copy_with_its_modification_time_kept_is_not_taken_from_the_cache(tmp_path, monkeypatch):
    """The row index is cached by path, size and modification time; a file
    replaced by another of the same size with the old time kept (cp -p) is
    recounted and signed anew."""
    import os

    from attninf.corpus import corpus_signature

    monkeypatch.setenv("ATTNINF_HOME", str(tmp_path / "home"))
    root = tmp_path / "c"
    write_as(root / "x", [{"text": "aaaa"}, {"text": "bbbb"}], "jsonl")
    p = root / "x.jsonl"
    st = p.stat()
    before = corpus_signature(root, ["x.jsonl"])
    p.write_text(json.dumps({"text": "aaaa"}) + "\n" + json.dumps({"text": "cccc"}) + "\n")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns
    assert corpus_signature(root, ["x.jsonl"]) != before
