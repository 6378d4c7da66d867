"""The document-start rule on tokenizers built to cover each branch: one
that adds a BOS by itself, one whose eos is a chat end-of-turn token, one
with nothing at all; and the overrides."""
import copy

import pytest
from tokenizers import processors

from attninf.docstart import DocPrefix, prefix_from_json, resolve_doc_prefix
from attninf.errors import AttninfError


def _variant(tiny_tokenizer, extra=(), **special):
    from transformers import PreTrainedTokenizerFast

    backend = copy.deepcopy(tiny_tokenizer.backend_tokenizer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **special)
    if extra:
        tok.add_special_tokens({"additional_special_tokens": list(extra)})
    return tok


def test_separator_when_tokenizer_adds_nothing(tiny_tokenizer):
    p = resolve_doc_prefix(tiny_tokenizer)
    assert p == DocPrefix((0,), ("<|endoftext|>",), "separator")


def test_chat_end_of_turn_is_not_a_document_separator(tiny_tokenizer):
    # SmolLM2-Instruct's layout: eos is <|im_end|>, bos <|im_start|>, <|endoftext|> is id 0
    tok = _variant(tiny_tokenizer, extra=["<|im_start|>", "<|im_end|>"], bos_token="<|im_start|>",
                   eos_token="<|im_end|>")
    assert tok.eos_token == "<|im_end|>"
    p = resolve_doc_prefix(tok)
    assert p.tokens == ("<|endoftext|>",) and p.ids == (tok.convert_tokens_to_ids("<|endoftext|>"),)


def test_what_the_tokenizer_adds_comes_first(tiny_tokenizer):
    tok = _variant(tiny_tokenizer, extra=["<s>"], bos_token="<s>", eos_token="<|endoftext|>")
    sid = tok.convert_tokens_to_ids("<s>")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", sid)])
    assert tok("hello")["input_ids"][0] == sid
    assert resolve_doc_prefix(tok) == DocPrefix((sid,), ("<s>",), "tokenizer")


def test_no_separator_no_prefix(tiny_tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<unk>": 2}, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>")
    assert resolve_doc_prefix(tok) == DocPrefix((), (), "none")


def test_overrides(tiny_tokenizer):
    assert resolve_doc_prefix(tiny_tokenizer, "none") == DocPrefix((), (), "none")
    assert resolve_doc_prefix(tiny_tokenizer, "auto").rule == "separator"
    tid = tiny_tokenizer.convert_tokens_to_ids("the")
    assert resolve_doc_prefix(tiny_tokenizer, "the") == DocPrefix((tid,), ("the",), "override")
    with pytest.raises(AttninfError, match="not a token of this tokenizer"):
        resolve_doc_prefix(tiny_tokenizer, "<|no-such-token|>")


def test_json_round_trip(tiny_tokenizer):
    p = resolve_doc_prefix(tiny_tokenizer)
    assert prefix_from_json(p.to_json()) == p
    assert prefix_from_json(None) is None
