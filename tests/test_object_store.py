"""The chain on object storage: score -> select -> mix -> export -> report
with corpus and outputs on an S3-compatible server (moto's server mode,
which s3fs and dask test against) started on loopback by the test; a
killed score resumed from what is on the store; the same bytes as on a
local disk; one line for an unreachable store and missing credentials."""
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from attninf.cli import main

from helpers import free_port
from test_corpus_formats import make_corpus_as, write_as, _rows

pytestmark = pytest.mark.heavy
moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

BUCKET = "corpora"


@pytest.fixture(scope="module")
def s3_server():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """Credentials and endpoint as a user sets them (environment), a fresh bucket."""
    import boto3

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": s3_server, "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3")
    bucket = f"{BUCKET}-{os.urandom(4).hex()}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


def _upload(client, bucket, local, prefix):
    for p in sorted(local.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(local).as_posix()}")


def _keys(client, bucket, prefix):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"][len(prefix) + 1:] for page in pages for o in page.get("Contents", []))


def _get(client, bucket, key) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def _ok(*args):
    res = CliRunner().invoke(main, [*map(str, args)])
    assert res.exit_code == 0, res.output
    return res


def _corpus(tmp_path):
    """Two domains, Parquet and JSON Lines side by side; one file large enough for several units."""
    root = make_corpus_as(tmp_path / "corpus", "jsonl.zst", files=2, rows=23)
    write_as(root / "prose" / "big", _rows(4, 60), "parquet")
    write_as(root / "code" / "more", _rows(5, 30), "jsonl.gz")
    return root


def test_the_chain_on_s3_equals_the_chain_on_disk_and_resumes_after_a_kill(tmp_path, s3, heads_file,
                                                                          tiny_model_dir):
    client, bucket = s3
    local = _corpus(tmp_path)
    _upload(client, bucket, local, "corpus")
    url = f"s3://{bucket}"
    common = ["--heads", heads_file, "--max-tokens", "48", "--chunk-docs", "10", "--workers", "0"]

    # on disk, the reference
    _ok("score", local, "--out", tmp_path / "scores", *common, "--quiet")

    # on S3: killed while scoring, then resumed
    cmd = [sys.executable, "-m", "attninf.cli", "score", f"{url}/corpus", "--out", f"{url}/scores", *map(str, common),
           "--quiet"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and sum(k.startswith(".parts/") for k in _keys(client, bucket, "scores")) < 2:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    parts = [k for k in _keys(client, bucket, "scores") if k.startswith(".parts/")]
    assert parts, "the kill came too late: nothing was tested"
    assert ".lock" in _keys(client, bucket, "scores")  # the killed run's lock, left behind
    res = _ok("score", f"{url}/corpus", "--out", f"{url}/scores", *common, "--quiet")
    assert "took over the lock" in res.output and "resuming" in res.output, res.output
    keys = _keys(client, bucket, "scores")
    assert not any(k.startswith((".parts/", ".lock")) for k in keys), keys
    scored = sorted(k for k in keys if k.endswith(".parquet"))
    assert scored == sorted(p.relative_to(tmp_path / "scores").as_posix()
                            for p in (tmp_path / "scores").rglob("*.parquet"))
    for k in scored:  # the same bytes as on disk
        assert _get(client, bucket, f"scores/{k}") == (tmp_path / "scores" / k).read_bytes(), k
    manifest = json.loads(_get(client, bucket, "scores/manifest.json"))
    assert manifest["complete"] and manifest["corpus"] == f"{url}/corpus"

    # a rerun with nothing changed does nothing; a changed corpus file is redone
    res = _ok("score", f"{url}/corpus", "--out", f"{url}/scores", *common)
    assert "0 unit(s) scored now" in res.output
    write_as(tmp_path / "changed" / "code" / "more", _rows(6, 30), "jsonl.gz")
    _upload(client, bucket, tmp_path / "changed", "corpus")
    res = _ok("score", f"{url}/corpus", "--out", f"{url}/scores", *common)
    assert "1 corpus file(s) changed since they were scored, redone: code/more.jsonl.gz" in res.output

    # select, mix, export and report, reading and writing the store
    _ok("select", f"{url}/scores", "--out", f"{url}/sel", "--frac", "0.3")
    _ok("mix", f"{url}/corpus", "--selected", f"{url}/sel", "--out", f"{url}/mix", "--shard-rows", "40")
    mixed = _keys(client, bucket, "mix")
    assert ".manifest.json" in mixed and sum(k.startswith("part-") for k in mixed) >= 2
    rows = sum(pq.ParquetFile(io.BytesIO(_get(client, bucket, f"mix/{k}"))).metadata.num_rows
               for k in mixed if k.startswith("part-"))
    assert rows == json.loads(_get(client, bucket, "mix/.manifest.json"))["rows"]
    _ok("export", f"{url}/mix", "--tokenizer", tiny_model_dir, "--out", f"{url}/tokens",
        "--format", "flat")
    tokens = _keys(client, bucket, "tokens")
    assert ".manifest.json" in tokens and any(k.endswith(".bin") for k in tokens)
    _ok("report", f"{url}/scores", "--selected", f"{url}/sel", "--out", f"{url}/report", "--token-maps", "0")
    assert "index.html" in _keys(client, bucket, "report")


def test_unreachable_store_and_missing_credentials_are_one_line(tmp_path, s3, heads_file, monkeypatch):
    client, bucket = s3
    local = _corpus(tmp_path)
    _upload(client, bucket, local, "corpus")
    common = ["--heads", heads_file, "--workers", "0", "--quiet"]
    runner = CliRunner()

    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # fsspec keeps one per settings; a user's environment does not change
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    res = runner.invoke(main, ["score", f"s3://{bucket}/corpus", "--out", str(tmp_path / "o"), *map(str, common)])
    assert res.exit_code == 2 and "no credentials" in res.output, res.output

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    s3fs.S3FileSystem.clear_instance_cache()
    t0 = time.time()
    res = runner.invoke(main, ["score", f"s3://{bucket}/corpus", "--out", str(tmp_path / "o"), *map(str, common)])
    assert res.exit_code == 2 and "cannot reach the store" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and time.time() - t0 < 60

    res = runner.invoke(main, ["score", "nosuchproto://x/corpus", "--out", str(tmp_path / "o"), *map(str, common)])
    assert res.exit_code == 2 and "nosuchproto://x/corpus" in res.output and "Traceback" not in res.output
