"""Model loading: what loads, what is refused, and that every refusal is one
clear line from the CLI rather than a traceback."""
import json

import pytest
import torch
from click.testing import CliRunner
from transformers import BertConfig, BertModel, LlamaForCausalLM

from attninf.cli import main
from attninf.errors import AttninfError
from attninf.model import load_model
from attninf.identity import fingerprint

from conftest import tiny_llama_config


def _cli_error(args):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("attninf: error: "), res.output
    assert "Traceback" not in res.output
    return lines[0]


def test_loads_local_dir(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    assert not lm.model.training
    fp = lm.fingerprint
    assert len(fp["fingerprint"]) == 16 and len(fp["weights_sha256"]) == 64
    # the fingerprint is of the weights on disk, not of the dtype they load in
    assert load_model(str(tiny_model_dir), dtype="float32").fingerprint == fp


def test_fingerprint_tracks_weights(tiny_model_dir, tmp_path, tiny_tokenizer):
    lm = load_model(str(tiny_model_dir), dtype="float32")
    with torch.no_grad():
        lm.model.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0
    lm.model.save_pretrained(tmp_path / "m2")
    tiny_tokenizer.save_pretrained(tmp_path / "m2")
    other = load_model(str(tmp_path / "m2"), dtype="float32").fingerprint
    assert other["config_sha256"] == lm.fingerprint["config_sha256"]
    assert other["weights_sha256"] != lm.fingerprint["weights_sha256"]
    assert other["fingerprint"] != lm.fingerprint["fingerprint"]


@pytest.mark.heavy
def test_unknown_model_path(tmp_path):
    line = _cli_error(["model", "info", "--model", str(tmp_path / "nope")])
    assert "not found" in line
    line = _cli_error(["model", "info", "--model", "no-such-org/no-such-model-xyz"])
    assert "no-such-org/no-such-model-xyz" in line


def test_gguf_missing(tmp_path):
    line = _cli_error(["model", "info", "--model", str(tmp_path / "model.gguf")])
    assert "GGUF file not found" in line
    (tmp_path / "w.gguf").write_bytes(b"GGUF not really")
    line = _cli_error(["model", "info", "--model", str(tmp_path)])
    assert "w.gguf" in line  # a folder with only a GGUF: say which file to pass
    line = _cli_error(["model", "info", "--model", str(tmp_path / "w.gguf")])
    assert "cannot load GGUF" in line


def test_non_causal_model(tmp_path):
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    BertModel(cfg).save_pretrained(tmp_path / "bert")
    line = _cli_error(["detect-heads", "--model", str(tmp_path / "bert"), "--out", str(tmp_path / "h.json")])
    assert "'bert'" in line and "not a causal language model" in line


def test_pickle_refused_unless_allowed(tmp_path, tiny_tokenizer):
    torch.manual_seed(0)
    m = LlamaForCausalLM(tiny_llama_config(len(tiny_tokenizer), num_hidden_layers=1))
    d = tmp_path / "pkl"
    m.config.save_pretrained(d)
    torch.save(m.state_dict(), d / "pytorch_model.bin")  # an old-style pickle checkpoint
    tiny_tokenizer.save_pretrained(d)
    assert not list(d.glob("*.safetensors")) and list(d.glob("*.bin"))
    line = _cli_error(["model", "info", "--model", str(d)])
    assert "pickle" in line and "--allow-pickle" in line
    res = CliRunner().invoke(main, ["model", "info", "--model", str(d), "--allow-pickle"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["num_layers"] == 1


def test_config_without_weights(tmp_path):
    tiny_llama_config(10).save_pretrained(tmp_path)
    with pytest.raises(AttninfError, match="no weights"):
        load_model(str(tmp_path))


def test_unknown_offline_model():
    line = _cli_error(["model", "pull", "gpt-17"])
    assert "unknown offline model 'gpt-17'" in line and "smollm2-135m" in line


def test_fingerprint_ignores_dtype_field(tiny_model_dir):
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(tiny_model_dir)
    a = fingerprint(c, [], "x")
    c.dtype = torch.bfloat16
    assert fingerprint(c, [], "x")["config_sha256"] == a["config_sha256"]


def test_pull_help_names_every_offline_model():
    from attninf.model import OFFLINE_MODELS

    res = CliRunner().invoke(main, ["model", "pull", "--help"])
    assert res.exit_code == 0
    for name, spec in OFFLINE_MODELS.items():
        assert f"{name}: {spec.description}" in res.output
    assert "smollm2-135m" in _cli_error(["model", "pull", "gemma-17"]) and "gemma3-270m" in OFFLINE_MODELS
