import json
import re

import pytest

from attninf.errors import AttninfError
from attninf.probes import HEADER, KEY_LEN, NUM_SHOTS, make_probe, make_probes, sentences


def _parse(probe):
    """Recover the JSON object, the shots and the query from the prompt text."""
    assert probe.prompt.startswith(HEADER)
    body = probe.prompt[len(HEADER):]
    obj_text, rest = body.split("\n}\n\n", 1)
    obj = json.loads(obj_text + "\n}", object_pairs_hook=list)
    shots = re.findall(r'Key: "([^"]+)"\nValue: "([^"]*)"\n\n', rest)
    assert rest.endswith('Value: "')
    query = re.findall(r'Key: "([^"]+)"\nValue: "$', rest)
    return obj, shots, query[0]


@pytest.mark.parametrize("context", [800, 1024])
def test_probe_format(tiny_tokenizer, context):
    for i in range(5):
        p = make_probe(tiny_tokenizer, i, seed=3, context_tokens=context)
        pairs, shots, query = _parse(p)
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
