import json
import re

import pytest

from attninf.errors import AttninfError
from attninf.probes import (HEADER, KEY_LEN, NUM_SHOTS, PAPER_HEADER, WORDINGS, make_probe, make_probes,
                            sentences)

BOTH = pytest.mark.parametrize("wording", ["paper", "attninf"])


def _parse(probe, wording="paper"):
    """Recover the JSON object, the shots and the query from the prompt text."""
    head = WORDINGS[wording]
    assert probe.prompt.startswith(head)
    body = probe.prompt[len(head):]
    obj_text, rest = body.split("\n}\n\n", 1)
    obj = json.loads(obj_text + "\n}", object_pairs_hook=list)
    shots = re.findall(r'Key: "([^"]+)"\nValue: "([^"]*)"\n\n', rest)
    assert rest.endswith('Value: "')
    query = re.findall(r'Key: "([^"]+)"\nValue: "$', rest)
    return obj, shots, query[0]


def test_wordings():
    """The paper's Appendix A instruction, word for word, is the default; attninf's own is kept."""
    assert PAPER_HEADER == ("Please extract the value corresponding to the specified key from the following "
                            "JSON object. Output only the value of the corresponding key and nothing else. "
                            "The JSON data is as follows: ")
    assert WORDINGS == {"paper": PAPER_HEADER, "attninf": HEADER}
    assert HEADER.startswith("Extract the value corresponding to the specified key in the JSON object below.")
    from attninf.heads import DetectConfig

    assert DetectConfig().probe_wording == "paper"


def test_unknown_wording(tiny_tokenizer):
    with pytest.raises(AttninfError, match="unknown probe wording 'plain': one of paper, attninf"):
        make_probes(tiny_tokenizer, 1, context_tokens=800, wording="plain")


@BOTH
@pytest.mark.parametrize("context", [800, 1024])
def test_probe_format(tiny_tokenizer, context, wording):
    for i in range(5):
        p = make_probe(tiny_tokenizer, i, seed=3, context_tokens=context, wording=wording)
        assert p.meta["wording"] == wording
        pairs, shots, query = _parse(p, wording)
        d = dict(pairs)
        assert len(d) == len(pairs) == p.num_pairs  # keys are unique
        for k, v in pairs:
            assert len(k) == KEY_LEN and k.isalnum() and k.isascii()
            assert v in set(sentences())  # values are real sentences from the source file
        assert len(shots) == NUM_SHOTS
        for k, v in shots:  # solved examples are correct and are not the query
            assert d[k] == v and k != query
        assert d[query] == p.answer
        assert pairs[p.query_index][0] == query
        assert len(p) < context
        # prompt and answer are tokenized as one text, the answer closed by its quote
        full = tiny_tokenizer(p.prompt + p.answer + '"', add_special_tokens=False)["input_ids"]
        assert p.prompt_ids + p.answer_ids == full
        assert tiny_tokenizer.decode(p.answer_ids) == p.answer + '"'
        assert tiny_tokenizer.decode(p.prompt_ids) == p.prompt
        assert 0 < len(p.answer_ids) <= 32


def test_probe_fills_context(tiny_tokenizer):
    p = make_probe(tiny_tokenizer, 0, seed=0, context_tokens=2000)
    assert 0.85 * 2000 < len(p) < 2000  # close to, but under, the budget


def test_probes_deterministic(tiny_tokenizer):
    a = make_probes(tiny_tokenizer, 4, seed=1, context_tokens=700)
    b = make_probes(tiny_tokenizer, 4, seed=1, context_tokens=700)
    c = make_probes(tiny_tokenizer, 4, seed=2, context_tokens=700)
    assert [p.prompt for p in a] == [p.prompt for p in b]
    assert [p.prompt for p in a] != [p.prompt for p in c]
    # probe i does not depend on how many probes are built
    assert make_probes(tiny_tokenizer, 2, seed=1, context_tokens=700)[1].prompt == a[1].prompt
    # query positions vary across probes (depth in the context is not fixed)
    many = make_probes(tiny_tokenizer, 12, seed=0, context_tokens=800)
    assert len({p.query_index for p in many}) > 3


def test_probe_budget_too_small(tiny_tokenizer):
    with pytest.raises(AttninfError, match="too small"):
        make_probe(tiny_tokenizer, 0, context_tokens=64)


def _check_needle(tok, p):
    """The needle is the smallest token span of the prompt that holds the
    queried value and its closing quote, inside the JSON object."""
    s, e = p.needle
    ids = p.input_ids
    assert len(p.prefix_ids) <= s < e <= p.prompt_len
    want = p.answer + '"'
    assert want in tok.decode(ids[s:e])
    assert want not in tok.decode(ids[s + 1:e]) and want not in tok.decode(ids[s:e - 1])
    # it is the copy in the JSON object (before the solved examples), not a shot or the query
    json_end = len(p.prefix_ids) + len(tok(p.prompt[:p.prompt.index("\n}\n\n")], add_special_tokens=False)["input_ids"])
    assert e <= json_end + 1


@BOTH
@pytest.mark.parametrize("prefix", [[], [0]])
def test_needle_span_tiny_tokenizer(tiny_tokenizer, prefix, wording):
    for i in range(6):
        p = make_probe(tiny_tokenizer, i, seed=4, context_tokens=900, prefix_ids=prefix, wording=wording)
        assert p.prefix_ids == prefix and p.input_ids[:len(prefix)] == prefix
        assert len(p) < 900
        _check_needle(tiny_tokenizer, p)
        # the needle's tokens decode to the value, its closing quote, and at most what merged with them:
        # the opening quote before, the pair's comma or line end after
        text = tiny_tokenizer.decode(p.input_ids[p.needle[0]:p.needle[1]])
        at = text.index(p.answer + '"')
        assert text[:at].strip() in ("", '"') and text[at + len(p.answer) + 1:].strip() in ("", ","), text
    # the prefix shifts the span, nothing else
    a = make_probe(tiny_tokenizer, 2, seed=4, context_tokens=900, wording=wording)
    b = make_probe(tiny_tokenizer, 2, seed=4, context_tokens=900 + 1, prefix_ids=[0], wording=wording)
    assert a.prompt_ids == b.prompt_ids and b.needle == (a.needle[0] + 1, a.needle[1] + 1)


def test_needle_span_merged_quote():
    """A tokenizer that merges the value's opening quote with its first word
    (`"Hark` as one token): the merged token still belongs to the needle."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from attninf.probes import encode_probe, render

    words = ['"Hark', '"', 'Hark', ' ye', '.",', '."', '.', ',', '\n', ' ', ':', '{', '}', 'Key', 'Value', 'k1', 'k2',
             'Extract', 'Answer']
    vocab = {w: i for i, w in enumerate(["<unk>"] + words)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=1000))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_next")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    pairs = [("k1", "Hark ye."), ("k2", "Hark.")]
    prompt, chars = render(pairs, [], "k1")
    assert prompt[chars[0] - 1:chars[1]] == '"Hark ye."'
    _, _, (s, e) = encode_probe(fast, prompt, "Hark ye.", chars)
    enc = fast(prompt, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    first, last = prompt[slice(*offsets[s])], prompt[slice(*offsets[e - 1])]
    assert offsets[s][0] < chars[0] and first.endswith('"Hark')  # merged across the opening quote: kept
    assert '."' in last and offsets[s - 1][1] <= chars[0] and offsets[e][0] >= chars[1]


def test_compare_probe_loss_keeps_attninf_wording(monkeypatch, tiny_tokenizer):
    """attninf compare's probe loss stays on attninf's own wording, whatever
    detect-heads' default: finished compare runs stay comparable with new ones."""
    import attninf.probes
    from attninf.measures import probe_loss

    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise LookupError("stop")

    monkeypatch.setattr(attninf.probes, "make_probe", fake)
    with pytest.raises(LookupError):
        probe_loss(None, tiny_tokenizer, 512, n=1)
    assert seen["wording"] == "attninf" != attninf.probes.DEFAULT_WORDING
