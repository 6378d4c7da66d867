"""The shared on-disk helpers: atomic writes and the signatures that tie
stages' outputs together."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attninf.corpus import corpus_mismatch, corpus_signature
from attninf.identity import scores_digest
from attninf.storage import atomic_path, write_json


def test_atomic_path_file_and_failure(tmp_path):
    dst = tmp_path / "sub" / "a.json"
    write_json({"x": 1}, dst)
    assert dst.read_text().strip().startswith("{") and list(dst.parent.iterdir()) == [dst]
    with pytest.raises(RuntimeError):
        with atomic_path(dst) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert '"x": 1' in dst.read_text()  # the old file is untouched
    assert list(dst.parent.iterdir()) == [dst]  # and no temporary is left


def test_atomic_path_directory(tmp_path):
    dst = tmp_path / "ckpt"
    with atomic_path(dst) as tmp:
        tmp.mkdir()
        (tmp / "w").write_text("1")
    assert (dst / "w").read_text() == "1"
    with pytest.raises(ValueError):
        with atomic_path(tmp_path / "other") as tmp:
            tmp.mkdir()
            (tmp / "w").write_text("1")
            raise ValueError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_signatures_survive_a_copy_not_a_change(tmp_path):
    import shutil

    a = tmp_path / "a"
    a.mkdir()
    pq.write_table(pa.table({"score": [0.1, None, 0.3]}), a / "s.parquet")
    d, sig = scores_digest(a, ["s.parquet"]), corpus_signature(a, ["s.parquet"])
    shutil.copytree(a, tmp_path / "b")
    assert scores_digest(tmp_path / "b", ["s.parquet"]) == d
    assert corpus_mismatch(tmp_path / "b", sig, ["s.parquet"]) is None
    pq.write_table(pa.table({"score": [0.1, None, 0.4]}), tmp_path / "b" / "s.parquet")
    assert scores_digest(tmp_path / "b", ["s.parquet"]) != d
