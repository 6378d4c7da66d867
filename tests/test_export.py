"""`attninf export`: every layout read back with the reader of the trainer
it is for (megatron-core's IndexedDataset and a GPTDataset on it,
datatrove's DatatroveFileDataset / DatatroveFolderDataset; for llm.c and
nanoGPT, whose readers are scripts, readers written here from their
published source), every document token for token with its separators, on
a small vocabulary and on one of more than 65,536 ids; the validation
split, file size caps, phases, refusals, and damage caught by --verify."""
import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from transformers import AutoTokenizer

from attninf.artifacts import TokenShards
from attninf.cli import main
from attninf.errors import AttninfError
from attninf.export import token_dtype
from attninf.measures import id_hash
from attninf.pipelines.mix import MixConfig, run_mix
from attninf.pipelines.select import SelectConfig, run_select

from helpers import make_scored_corpus


@pytest.fixture
def mixed(tmp_path):
    corpus, scores = make_scored_corpus(tmp_path, files=3, rows=30)
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel"), frac=0.25))
    run_mix(MixConfig(corpus=str(corpus), selected=str(tmp_path / "sel"), out=str(tmp_path / "mix"), shard_rows=40))
    p = sorted((tmp_path / "mix").glob("part-*.parquet"))[0]
    t = pq.read_table(p).to_pydict()
    t["text"][1], t["text"][2] = "", None  # rows with no text
    pq.write_table(pa.table(t), p)
    return tmp_path / "mix"


@pytest.fixture(scope="module")
def big_tokenizer_dir(tmp_path_factory):
    """A word-level tokenizer of 70,002 ids: words w0..w69999, then the
    separator; the test texts use ids above 65,536."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(70_000)} | {"[UNK]": 70_000, "<|endoftext|>": 70_001}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="[UNK]")
    d = tmp_path_factory.mktemp("big-tok")
    fast.save_pretrained(d)
    return d


@pytest.fixture
def big_mixed(tmp_path):
    """A mixture whose texts are words of the big tokenizer, many above id 65,536."""
    rng = np.random.default_rng(0)
    d = tmp_path / "bigmix"
    d.mkdir()
    names = []
    for s in range(2):
        texts = [" ".join(f"w{i}" for i in rng.integers(60_000, 70_000, rng.integers(5, 40))) for _ in range(25)]
        name = f"part-{s:05d}-of-00002.parquet"
        pq.write_table(pa.table({"text": texts, "id": [f"s{s}-{i}" for i in range(25)], "domain": ["w"] * 25}),
                       d / name)
        names.append(name)
    (d / ".manifest.json").write_text(json.dumps({"shards": 2, "files": names}))
    return d


def _megatron_docs(prefix) -> list[list[int]]:
    """Every document of a Megatron file set, read by megatron-core (kept
    open while its arrays, views of its memory map, are copied out)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(prefix))
    return [ds[i].tolist() for i in range(len(ds))]


def _export(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def _exported(request, tmp_path, fmt, tokenizer, *flags):
    """Export the small-vocabulary or the >65,536-id mixture in a layout;
    (mixture, tokenizer, separator id) to check it against."""
    mix, tok_dir = ((request.getfixturevalue("mixed"), request.getfixturevalue("tiny_model_dir")) if tokenizer == "tiny"
                    else (request.getfixturevalue("big_mixed"), request.getfixturevalue("big_tokenizer_dir")))
    res = _export(mix, "--out", tmp_path / "tok", "--tokenizer", tok_dir, "--format", fmt, *flags)
    assert res.exit_code == 0, res.output
    tok = AutoTokenizer.from_pretrained(tok_dir)
    return mix, tok, tok.convert_tokens_to_ids("<|endoftext|>")


def _expected(mix_dir, tok, eos, val_frac=0.0, split="train", keep_empty=False):
    """Per shard, per row of the split: [ids of the text] + [eos]; a row with no
    text is an empty document (flat) or no document (every other layout)."""
    out = []
    for p in sorted(mix_dir.glob("part-*.parquet")):
        t = pq.read_table(p)
        for i, text in zip(t["id"].to_pylist(), t["text"].to_pylist()):
            in_val = bool(val_frac) and id_hash(str(i), "heldout") < val_frac
            if in_val != (split == "val"):
                continue
            if text:
                out.append(tok(text, add_special_tokens=False)["input_ids"] + [eos])
            elif keep_empty:
                out.append([])
    return out


# ---------------------------------------------------------------- megatron


@pytest.mark.parametrize("tokenizer", ["tiny", "big"])
def test_megatron_layout_reads_with_megatron_core(request, tmp_path, tokenizer):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    mix, tok, eos = _exported(request, tmp_path, "megatron", tokenizer)
    want = _expected(mix, tok, eos)
    got = []
    for idx in sorted((tmp_path / "tok").glob("part-*.idx")):
        ds = IndexedDataset(str(idx.with_suffix("")))  # the prefix Megatron's --data-path takes
        got += [ds[i].tolist() for i in range(len(ds))]
    assert got == want
    if tokenizer == "big":
        assert max(max(d) for d in want) > 65_536 and ds.index.dtype == np.int32  # Megatron's own dtype rule
    else:
        assert ds.index.dtype == np.uint16
    assert _export(tmp_path / "tok", "--verify").exit_code == 0


def test_a_megatron_gpt_dataset_yields_samples(mixed, tmp_path, tiny_model_dir):
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.megatron_tokenizer import MegatronLegacyTokenizer
    from megatron.core.datasets.utils import Split

    assert _export(mixed, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir).exit_code == 0  # the default
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")

    class Tok(MegatronLegacyTokenizer):  # what GPTDataset asks of a tokenizer: its size and end-of-document id
        def __init__(self):
            super().__init__("test")

        def tokenize(self, text):
            return tok(text)["input_ids"]

        def detokenize(self, ids):
            return tok.decode(ids)

        @property
        def vocab(self):
            return tok.get_vocab()

        @property
        def inv_vocab(self):
            return {v: k for k, v in tok.get_vocab().items()}

        @property
        def vocab_size(self):
            return len(tok)

        @property
        def eod(self):
            return eos

    prefix = str(sorted((tmp_path / "tok").glob("part-*.idx"))[0].with_suffix(""))
    ds = IndexedDataset(prefix)
    cfg = GPTDatasetConfig(random_seed=0, sequence_length=16, tokenizer=Tok(), reset_position_ids=False,
                           reset_attention_mask=False, eod_mask_loss=False, path_to_cache=str(tmp_path / "cache"),
                           split="1,0,0")
    gpt = GPTDataset(ds, prefix, np.arange(len(ds.document_indices) - 1), None, Split.train, cfg)
    stream = set(np.concatenate([ds[i] for i in range(len(ds))]).tolist())
    assert len(gpt) > 3
    for k in range(len(gpt)):
        tokens = gpt[k]["tokens"].tolist()
        assert len(tokens) == 16 and set(tokens) <= stream
    assert any(eos in gpt[k]["tokens"].tolist() for k in range(len(gpt)))  # documents end with the separator


def test_phased_mixture_gives_a_set_per_phase(tmp_path, tiny_model_dir):
    corpus, scores = make_scored_corpus(tmp_path, files=2, rows=20)
    run_select(SelectConfig(scores=str(scores), out=str(tmp_path / "sel"), frac=0.25))
    run_mix(MixConfig(corpus=str(corpus), selected=str(tmp_path / "sel"), out=str(tmp_path / "mix"),
                      phases="stable,decay", decay_weight=2))
    assert _export(tmp_path / "mix", "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir).exit_code == 0
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    for phase in ("stable", "decay"):
        got = [d for p in sorted((tmp_path / "tok" / phase).glob("*.idx")) for d in _megatron_docs(p.with_suffix(""))]
        assert got == _expected(tmp_path / "mix" / phase, tok, eos)
    m = TokenShards.read(tmp_path / "tok").manifest
    assert m["phases"]["decay"]["documents"] > m["phases"]["stable"]["documents"]


# --------------------------------------------------------------- datatrove


@pytest.mark.parametrize("tokenizer", ["tiny", "big"])
def test_datatrove_layout_reads_with_datatrove(request, tmp_path, tokenizer):
    from datatrove.utils.dataset import DatatroveFileDataset, DatatroveFolderDataset

    mix, tok, eos = _exported(request, tmp_path, "datatrove", tokenizer)
    want = _expected(mix, tok, eos)
    token_size = 2 if tokenizer == "tiny" else 4
    got = []
    for ds_path in sorted((tmp_path / "tok").glob("*.ds")):
        n = ds_path.stat().st_size // token_size
        f = DatatroveFileDataset(str(ds_path), seq_len=n - 1, token_size=token_size, return_positions=True)
        item = f[0]  # one window of the whole file; positions from the .ds.index, 0 where a document starts
        ids, pos = item["input_ids"].tolist(), item["positions"].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(ids)]
        got += [ids[a:b] for a, b in zip(starts[:-1], starts[1:])]
    assert got == want
    folder = DatatroveFolderDataset(str(tmp_path / "tok"), seq_len=7, token_size=token_size)
    first = sorted((tmp_path / "tok").glob("*.ds"))[0]
    assert folder[0]["input_ids"].tolist() == [t for d in want for t in d][:8]
    assert len(folder) == sum(p.stat().st_size // token_size // 8 for p in (tmp_path / "tok").glob("*.ds"))
    meta = (first.parent / (first.name + ".metadata")).read_text().splitlines()
    assert meta[0] == f"{tok.name_or_path}|{token_size}"
    assert _export(tmp_path / "tok", "--verify").exit_code == 0


# ------------------------------------------------------------- llm.c, nanoGPT


def _llmc_tokens(path):
    """llm.c's data shard, as its train_gpt2.py reads one: a header of 256
    int32 (magic, version, token count), then the tokens: uint16 under magic
    20240520 version 1 (GPT-2), uint32 under 20240801 version 7 (Llama 3)."""
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(256 * 4), dtype=np.int32)
        kinds = {(20240520, 1): np.uint16, (20240801, 7): np.uint32}
        assert (int(header[0]), int(header[1])) in kinds, "magic number mismatch in the data .bin file"
        ntok = int(header[2])
        tokens = np.frombuffer(f.read(), dtype=kinds[(int(header[0]), int(header[1]))])
    assert len(tokens) == ntok, "number of tokens read does not match header"
    return tokens.tolist()


@pytest.mark.parametrize("tokenizer", ["tiny", "big"])
def test_llmc_layout_reads_as_llmc_does(request, tmp_path, tokenizer):
    mix, tok, eos = _exported(request, tmp_path, "llmc", tokenizer, "--val-frac", 0.1)
    for split in ("train", "val"):
        files = sorted((tmp_path / "tok").glob(f"attninf_{split}_*.bin"))  # the glob llm.c's -i/-j take
        assert files
        got = [t for f in files for t in _llmc_tokens(f)]
        assert got == [t for d in _expected(mix, tok, eos, 0.1, split) for t in d]
    assert _export(tmp_path / "tok", "--verify").exit_code == 0


def test_nanogpt_layout_reads_as_nanogpt_does(mixed, tmp_path, tiny_model_dir):
    res = _export(mixed, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir, "--format", "nanogpt",
                  "--val-frac", 0.1)
    assert res.exit_code == 0, res.output
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    for split in ("train", "val"):  # nanoGPT's get_batch: np.memmap(data_dir/'<split>.bin', dtype=np.uint16)
        data = np.memmap(tmp_path / "tok" / f"{split}.bin", dtype=np.uint16, mode="r")
        assert data.tolist() == [t for d in _expected(mixed, tok, eos, 0.1, split) for t in d]
    with open(tmp_path / "tok" / "meta.pkl", "rb") as f:  # train.py reads meta['vocab_size'] from it
        assert pickle.load(f)["vocab_size"] == len(tok)
    assert _export(tmp_path / "tok", "--verify").exit_code == 0


def test_nanogpt_refuses_a_vocabulary_beyond_uint16(big_mixed, tmp_path, big_tokenizer_dir):
    res = _export(big_mixed, "--out", tmp_path / "tok", "--tokenizer", big_tokenizer_dir, "--format", "nanogpt")
    assert res.exit_code == 2 and "nanoGPT reads uint16 token ids only" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "tok").exists()  # nothing written


# -------------------------------------------------------------------- flat


def test_flat_layout_keeps_rows_and_documents_aligned(mixed, tmp_path, tiny_model_dir):
    res = _export(mixed, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir, "--format", "flat",
                  "--workers", 2)
    assert res.exit_code == 0, res.output
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    want = _expected(mixed, tok, tok.convert_tokens_to_ids("<|endoftext|>"), keep_empty=True)
    got = []
    for b in sorted((tmp_path / "tok").glob("part-*.bin")):  # no attninf code: numpy and the file layout
        tokens, idx = np.fromfile(b, dtype=np.uint16), np.fromfile(b.with_suffix(".idx"), dtype=np.int64)
        got += [tokens[idx[i]:idx[i + 1]].tolist() for i in range(len(idx) - 1)]
    assert got == want and want[1] == want[2] == []
    shards = TokenShards.read(tmp_path / "tok")
    assert [d.tolist() for d in shards.documents()] == want
    assert shards.manifest["documents"] == len(want) and shards.manifest["empty"] == 0


# ------------------------------------------------------------ the contract


def test_rows_without_text_are_counted(mixed, tmp_path, tiny_model_dir):
    assert _export(mixed, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir).exit_code == 0
    m = TokenShards.read(tmp_path / "tok").manifest
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in mixed.glob("part-*.parquet"))
    assert m["empty"] == 2 and m["documents"] + m["empty"] == rows  # every row accounted for


def test_separators_follow_the_document_rule_and_the_flags(mixed, tmp_path, tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    first = next(t for t in pq.read_table(sorted(mixed.glob("part-*.parquet"))[0])["text"].to_pylist() if t)
    ids = tok(first, add_special_tokens=False)["input_ids"]
    res = _export(mixed, "--out", tmp_path / "a", "--tokenizer", tiny_model_dir, "--format", "flat",
                  "--eos", "none", "--bos", "<|endoftext|>")
    assert res.exit_code == 0, res.output
    shards = TokenShards.read(tmp_path / "a")
    assert next(d for d in shards.documents() if len(d)).tolist() == [eos] + ids
    assert shards.manifest["separators"] == {"bos": [eos], "eos": [], "bos_tokens": ["<|endoftext|>"],
                                             "eos_tokens": []}
    res = _export(mixed, "--out", tmp_path / "b", "--tokenizer", tiny_model_dir, "--eos", "<nope>")
    assert res.exit_code == 2 and "--eos '<nope>' is not a token of this tokenizer" in res.output


def test_max_tokens_per_file_starts_new_files(mixed, tmp_path, tiny_model_dir):
    res = _export(mixed, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir, "--max-tokens-per-file", 500)
    assert res.exit_code == 0, res.output
    m = TokenShards.read(tmp_path / "tok").manifest
    files = m["phases"]["main"]["files"]
    assert len(files) > 3 and all(e["tokens"] <= 500 or e["documents"] == 1 for e in files)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    got = [d for e in files for d in _megatron_docs(tmp_path / "tok" / e["stem"])]
    assert got == _expected(mixed, tok, tok.convert_tokens_to_ids("<|endoftext|>"))


def test_the_manifest_is_not_taken_for_data_by_datasets(mixed, tmp_path, tiny_model_dir):
    import datasets

    assert _export(mixed, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir, "--format", "flat").exit_code == 0
    assert (tmp_path / "tok" / ".manifest.json").is_file() and not (tmp_path / "tok" / "manifest.json").exists()
    with pytest.raises(Exception, match="(?i)no .*data files|doesn't contain any data files|unable to find"):
        datasets.load_dataset(str(tmp_path / "tok"))


def test_damaged_files_are_caught(mixed, tmp_path, tiny_model_dir):
    assert _export(mixed, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir).exit_code == 0
    b = sorted((tmp_path / "tok").glob("part-*.bin"))[0]
    data = b.read_bytes()
    b.write_bytes(data[:-6])  # truncated
    res = _export(tmp_path / "tok", "--verify")
    assert res.exit_code != 0 and "truncated" in res.output, res.output
    b.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])  # one bit flipped, same size
    res = _export(tmp_path / "tok", "--verify")
    assert res.exit_code != 0 and "sha256 differs" in res.output, res.output
    (tmp_path / "tok" / ".manifest.json").unlink()
    with pytest.raises(AttninfError, match="not a finished `attninf export`"):
        TokenShards.read(tmp_path / "tok")


def test_dtype_by_vocabulary():
    assert token_dtype("flat", 49_152) == np.uint16 and token_dtype("flat", 65_536) == np.uint16
    assert token_dtype("flat", 65_537) == np.uint32 and token_dtype("llmc", 151_936) == np.uint32
    assert token_dtype("megatron", 65_499) == np.uint16 and token_dtype("megatron", 65_500) == np.int32
    with pytest.raises(AttninfError, match="nanoGPT reads uint16"):
        token_dtype("nanogpt", 65_537)


@pytest.mark.slow
def test_smollm2_documents_end_with_endoftext_not_the_chat_turn_token(mixed, tmp_path, smollm2_dir):
    """SmolLM2-135M-Instruct's eos is <|im_end|> (id 2), a chat turn's end; its
    pretraining documents are separated by <|endoftext|> (id 0)."""
    res = _export(mixed, "--out", tmp_path / "tok", "--tokenizer", smollm2_dir)
    assert res.exit_code == 0, res.output
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tok.eos_token == "<|im_end|>" and tok.convert_tokens_to_ids("<|endoftext|>") == 0
    got = [d for p in sorted((tmp_path / "tok").glob("*.idx")) for d in _megatron_docs(p.with_suffix(""))]
    assert got == _expected(mixed, tok, 0) and all(d[-1] == 0 and 2 not in d for d in got)


# ------------------------------------------------ found in review: edge cases


def _write_mix(d, shards):
    """A mixture from {name: (texts, ids)}, as `attninf mix` leaves one."""
    d.mkdir()
    for name, (texts, ids) in shards.items():
        pq.write_table(pa.table({"text": pa.array(texts, pa.string()), "id": pa.array(ids, pa.string())}),
                       d / name)
    (d / ".manifest.json").write_text(json.dumps({"shards": len(shards), "files": list(shards)}))
    return d


def test_empty_shards_and_textless_rows_make_no_empty_files(tmp_path, tiny_model_dir):
    """An empty mixture shard, and a shard whose rows all lack text, give no
    file set (Megatron cannot map an empty .bin); their rows are counted."""
    from attninf.probes import sentences

    pool = list(sentences())[:40]
    mix = _write_mix(tmp_path / "mix", {
        "part-00000-of-00003.parquet": ([" ".join(pool[i:i + 3]) for i in range(0, 30, 3)],
                                        [f"a{i}" for i in range(10)]),
        "part-00001-of-00003.parquet": ([], []),
        "part-00002-of-00003.parquet": (["", None, ""], ["b0", "b1", "b2"]),
    })
    res = _export(mix, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir, "--val-frac", 0.3)
    assert res.exit_code == 0, res.output
    m = TokenShards.read(tmp_path / "tok").manifest
    assert m["rows"] == 13 and m["documents"] == 10 and m["empty"] == 3
    bins = sorted((tmp_path / "tok").rglob("*.bin"))
    assert bins and all(b.stat().st_size > 0 for b in bins)
    for b in bins:
        assert _megatron_docs(b.with_suffix(""))  # megatron-core opens every file
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    got = [d for b in sorted((tmp_path / "tok").glob("*.bin")) for d in _megatron_docs(b.with_suffix(""))]
    assert got == _expected(mix, tok, eos, 0.3)


def test_llmc_joins_parts_into_files_llmc_can_load(mixed, tmp_path, tiny_model_dir):
    """llm.c refuses a file smaller than one batch: one file per split, not
    one per mixture shard; --max-tokens-per-file groups whole parts."""
    res = _export(mixed, "--out", tmp_path / "a", "--tokenizer", tiny_model_dir, "--format", "llmc", "--val-frac", 0.1)
    assert res.exit_code == 0, res.output
    assert [p.name for p in sorted((tmp_path / "a").glob("attninf_*.bin"))] == ["attninf_train_000000.bin",
                                                                                "attninf_val_000000.bin"]
    assert not (tmp_path / "a" / "val").exists()
    res = _export(mixed, "--out", tmp_path / "b", "--tokenizer", tiny_model_dir, "--format", "llmc", "--val-frac", 0.1,
                  "--max-tokens-per-file", 2000)
    assert res.exit_code == 0, res.output
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    train = sorted((tmp_path / "b").glob("attninf_train_*.bin"))
    assert len(train) > 1 and all(0 < len(_llmc_tokens(f)) <= 2000 for f in train)
    assert [t for f in train for t in _llmc_tokens(f)] == [t for d in _expected(mixed, tok, eos, 0.1) for t in d]


def test_a_failing_export_leaves_nothing_and_the_old_export_stands(mixed, tmp_path, tiny_model_dir):
    assert _export(mixed, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir).exit_code == 0
    before = sorted(p.name for p in (tmp_path / "tok").iterdir())
    bad = sorted(mixed.glob("part-*.parquet"))[-1]
    pq.write_table(pa.table({"body": ["x"] * 5}), bad)  # one shard without the text column
    res = _export(mixed, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir, "--workers", 3)
    assert res.exit_code == 2 and "no column 'text'" in res.output
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tok.")]  # no temporary folder left


def test_an_export_made_by_the_previous_version_is_replaced(mixed, tmp_path, tiny_model_dir):
    old = tmp_path / "tok"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"format": "attninf-tokens-1"}))
    (old / "part-00000-of-00001.bin").write_bytes(b"\0\0")
    (old / "part-00000-of-00001.idx").write_bytes(b"\0" * 16)
    with pytest.raises(AttninfError, match="made by|not a finished|attninf-tokens-1"):
        TokenShards.read(old)
    res = _export(mixed, "--out", old, "--tokenizer", tiny_model_dir)
    assert res.exit_code == 0, res.output
    assert not (old / "manifest.json").exists() and TokenShards.read(old).layout == "megatron"


def test_verify_names_a_truncated_megatron_index(mixed, tmp_path, tiny_model_dir):
    assert _export(mixed, "--out", tmp_path / "tok", "--tokenizer", tiny_model_dir).exit_code == 0
    idx = sorted((tmp_path / "tok").glob("*.idx"))[0]
    idx.write_bytes(idx.read_bytes()[:-20])
    res = _export(tmp_path / "tok", "--verify")
    assert res.exit_code == 2 and "truncated?" in res.output and len(res.output.strip().splitlines()) == 1
