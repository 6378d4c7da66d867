"""Outputs on a store without rename (fsspec's memory:// here): what
docs/design.md says "complete" means there, checked in the order of the
store's own operations."""
import fsspec
import pytest

from attninf import stores
from attninf.errors import AttninfError
from attninf.storage import atomic_path, replaced_dir
from attninf.stores import RemotePath, location

from helpers import make_scored_corpus


@pytest.fixture
def store(monkeypatch, tmp_path):
    """A fresh memory:// prefix, and the log of uploads and deletions on it."""
    root = f"memory://t{tmp_path.name}"
    log = []
    real_upload, real_unlink = RemotePath.upload, RemotePath.unlink

    def upload(self, local):
        log.append(("put", str(self)[len(root) + 1:]))
        real_upload(self, local)

    def unlink(self, missing_ok=False):
        log.append(("del", str(self)[len(root) + 1:]))
        real_unlink(self, missing_ok)

    monkeypatch.setattr(RemotePath, "upload", upload)
    monkeypatch.setattr(RemotePath, "unlink", unlink)
    yield root, log
    fsspec.filesystem("memory").rm(root[len("memory://"):], recursive=True)


def test_location_and_atomic_file(store):
    root, log = store
    assert location("file:///x/y") == location("/x/y") and isinstance(location(f"{root}/a"), RemotePath)
    with atomic_path(f"{root}/a/f.txt") as tmp:
        tmp.write_text("hello")
        assert not location(f"{root}/a/f.txt").exists()  # nothing there until the block ends
    assert location(f"{root}/a/f.txt").read_text() == "hello" and log == [("put", "a/f.txt")]
    with pytest.raises(RuntimeError), atomic_path(f"{root}/a/g.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not location(f"{root}/a/g.txt").exists()


def test_a_replaced_folder_is_published_manifests_last(store):
    root, log = store
    for name in ("old.bin", ".manifest.json", "stable/.manifest.json", "stable/x.bin"):
        (location(root) / "out" / name).write_text("old")
    with replaced_dir(f"{root}/out", last=(".manifest.json",)) as d:
        for name in ("a.bin", ".manifest.json", "stable/.manifest.json", "stable/b.bin"):
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_text("new")
    dels = [k.removeprefix("out/") for op, k in log if op == "del"]
    puts = [k.removeprefix("out/") for op, k in log if op == "put"]
    assert dels[:2] == [".manifest.json", "stable/.manifest.json"]  # the old output is unfinished first
    assert set(dels) == {"old.bin", ".manifest.json", "stable/.manifest.json", "stable/x.bin"}
    assert set(puts[:2]) == {"a.bin", "stable/b.bin"}  # the data, then the manifests, a folder's after its subfolders'
    assert puts[2:] == ["stable/.manifest.json", ".manifest.json"]
    assert log.index(("put", "out/a.bin")) > log.index(("del", "out/old.bin"))
    assert sorted(stores.all_files(location(root) / "out")) == [".manifest.json", "a.bin", "stable/.manifest.json",
                                                                "stable/b.bin"]


def test_select_unfinishes_its_old_output_first_and_report_puts_the_page_last(store, tmp_path):
    from attninf.pipelines.select import SelectConfig, run_select
    from attninf.report import ReportConfig, run_report

    root, log = store
    _, scores = make_scored_corpus(tmp_path)
    run_select(SelectConfig(scores=str(scores), out=f"{root}/sel", frac=0.3))
    log.clear()
    run_select(SelectConfig(scores=str(scores), out=f"{root}/sel", frac=0.5))
    assert log[0] == ("del", "sel/manifest.json") and log[-1] == ("put", "sel/manifest.json")
    log.clear()
    run_report(ReportConfig(scores=str(scores), selected=f"{root}/sel", out=f"{root}/report", token_maps=0))
    puts = [k for op, k in log if op == "put"]
    assert puts[-1] == "report/index.html" and len(puts) > 1


def test_an_unknown_protocol_is_one_line():
    with pytest.raises(AttninfError, match="nosuch://x"):
        location("nosuch://x/y")
