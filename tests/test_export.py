"""`attninf export`: token-id shards that plain numpy reads back into every
document's tokens, the dtype by vocabulary size, phased mixtures, and a
truncated or damaged shard caught by its manifest."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from transformers import AutoTokenizer

from attninf.cli import main
from attninf.errors import AttninfError
from attninf.export import token_dtype
from attninf.artifacts import TokenShards
from attninf.pipelines.mix import MixConfig, run_mix
from attninf.pipelines.select import SelectConfig, run_select

from helpers import make_scored_corpus


@pytest.fixture
def mixed(tmp_path):
    corpus, scores = make_scored_corpus(tmp_path, files=3, rows=30)
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel"), frac=0.25))
    run_mix(MixConfig(corpus=str(corpus), selected=str(tmp_path / "sel"), out=str(tmp_path / "mix"), shard_rows=40))
    return tmp_path / "mix"


def _export(args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def _expected(mix_dir, tok):
    """Per shard, per row: the tokenizer's ids of the text, then EOS (none for an empty text)."""
    out = []
    for p in sorted(mix_dir.glob("part-*.parquet")):
        for t in pq.read_table(p)["text"].to_pylist():
            out.append(tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] if t else [])
    return out


def test_round_trip_with_plain_numpy(mixed, tmp_path, tiny_model_dir):
    # an empty and a null text: documents with no tokens, so rows and documents stay aligned
    p = sorted(mixed.glob("part-*.parquet"))[0]
    t = pq.read_table(p).to_pydict()
    t["text"][1], t["text"][2] = "", None
    pq.write_table(pa.table(t), p)
    res = _export([mixed, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir, "--workers", "2"])
    assert res.exit_code == 0, res.output
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    want = _expected(mixed, tok)
    got = []
    for b in sorted((tmp_path / "tok").glob("part-*.bin")):  # no attninf code: numpy and the file layout
        tokens = np.fromfile(b, dtype=np.uint16)
        idx = np.fromfile(b.with_suffix(".idx"), dtype=np.int64)
        got += [tokens[idx[i]:idx[i + 1]].tolist() for i in range(len(idx) - 1)]
    assert got == want and want[1] == want[2] == []
    m = TokenShards.read(tmp_path / "tok").manifest
    assert m["dtype"] == "uint16" and m["eos_id"] == tok.eos_token_id
    assert m["documents"] == len(want) and m["tokens"] == sum(map(len, want))
    assert [d.tolist() for d in TokenShards.read(tmp_path / "tok").documents()] == want
    assert _export([tmp_path / "tok", "--verify"]).exit_code == 0
    # an export made when phases were called streams still reads and verifies
    (tmp_path / "tok" / "manifest.json").write_text(json.dumps({**{k: v for k, v in m.items() if k != "phases"},
                                                                "streams": m["phases"]}))
    assert [d.tolist() for d in TokenShards.read(tmp_path / "tok").documents()] == want
    assert _export([tmp_path / "tok", "--verify"]).exit_code == 0


def test_phased_mixture_exports_each_phase(tmp_path, tiny_model_dir):
    corpus, scores = make_scored_corpus(tmp_path, files=2, rows=20)
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel"), frac=0.25))
    run_mix(MixConfig(corpus=str(corpus), selected=str(tmp_path / "sel"), out=str(tmp_path / "mix"),
                      phases="stable,decay", decay_weight=2))
    assert _export([tmp_path / "mix", "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir]).exit_code == 0
    shards = TokenShards.read(tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for phase in ("stable", "decay"):
        assert [d.tolist() for d in shards.documents(phase)] == _expected(tmp_path / "mix" / phase, tok)
    assert shards.manifest["phases"]["decay"]["documents"] > shards.manifest["phases"]["stable"]["documents"]


def test_damaged_shards_are_caught(mixed, tmp_path, tiny_model_dir):
    assert _export([mixed, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir]).exit_code == 0
    b = sorted((tmp_path / "tok").glob("part-*.bin"))[0]
    data = b.read_bytes()
    b.write_bytes(data[:-6])  # truncated
    res = _export([tmp_path / "tok", "--verify"])
    assert res.exit_code != 0 and "truncated" in res.output, res.output
    b.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])  # one bit flipped, same size
    res = _export([tmp_path / "tok", "--verify"])
    assert res.exit_code != 0 and "sha256 differs" in res.output, res.output
    (tmp_path / "tok" / "manifest.json").unlink()
    with pytest.raises(AttninfError, match="not a finished `attninf export`"):
        TokenShards.read(tmp_path / "tok")


def test_dtype_by_vocabulary():
    assert token_dtype(49_152) == np.uint16 and token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32 and token_dtype(151_936) == np.uint32
