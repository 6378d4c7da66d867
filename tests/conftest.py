"""Shared fixtures: a tiny random Llama and a tokenizer trained on the probe
sentences, built locally (no download), and the real SmolLM2-135M for the
tests marked slow (pulled offline once into a session cache)."""
import os

# The Triton kernels run under the interpreter where there is no GPU. This must
# be set before anything imports triton (transformers does, on import).
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from attninf.probes import sentences

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(sentences())[:3000], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def tiny_llama_config(vocab_size: int, **kw):
    from transformers import LlamaConfig

    base = dict(vocab_size=vocab_size, hidden_size=96, intermediate_size=128, num_hidden_layers=4,
                num_attention_heads=6, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                initializer_range=0.2, tie_word_embeddings=False)
    base.update(kw)
    return LlamaConfig(**base)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return _tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A saved tiny Llama (GQA 6 query / 2 kv heads) with safetensors weights."""
    from transformers import LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(len(tiny_tokenizer)))
    model.save_pretrained(d, safe_serialization=True)
    tiny_tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def smollm2_dir():
    from attninf.model import pull_model

    return pull_model("smollm2-135m", quiet=True)


@pytest.fixture(scope="session")
def heads_file(tiny_model_dir, tmp_path_factory):
    """A heads.json for the tiny model, as detect-heads would write it."""
    import json

    from attninf.artifacts import HEADS_VERSION, HIT_RULE
    from attninf.model import model_fingerprint
    from helpers import SCORE_HEADS

    fp = model_fingerprint(str(tiny_model_dir))
    p = tmp_path_factory.mktemp("heads") / "heads.json"
    p.write_text(json.dumps({"model": {**fp, "name": str(tiny_model_dir)}, "heads": SCORE_HEADS,
                             "num_layers": 4, "num_heads": 6, "heads_version": HEADS_VERSION, "hit": HIT_RULE,
                             "doc_prefix": {"ids": [0], "tokens": ["<|endoftext|>"], "rule": "separator"}}))
    return p
