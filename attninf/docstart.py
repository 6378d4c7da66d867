"""Where a document starts: the token(s) put before every document, one rule
for the retrieval probes, the ablation and the scoring (docs/method.md,
"Document start").

1. What the tokenizer adds by itself (`add_special_tokens=True`): Llama's
   `<s>`, Llama 3's `<|begin_of_text|>`.
2. Where it adds nothing: the model's end-of-text / document separator, the
   token that sat between documents in pretraining (`<|endoftext|>` for
   SmolLM2, GPT-2, Qwen2). An end-of-turn token of a chat template
   (`<|im_end|>`, `<|eot_id|>`) is not a document separator, even where the
   tokenizer config calls it eos.
3. Neither: no prefix (the first token of a document is then never predicted).

`--doc-prefix TOKEN` puts that one token first instead; `--doc-prefix none`
puts nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import AttninfError

# tokens that end a chat turn, not a pretraining document
CHAT_TURN_TOKENS = frozenset({"<|im_end|>", "<|im_start|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>",
                              "<start_of_turn>", "<|end|>", "<|user|>", "<|assistant|>"})
# document separators, in the order they are looked for in the vocabulary
SEPARATOR_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")


@dataclass(frozen=True)
class DocPrefix:
    ids: tuple[int, ...]
    tokens: tuple[str, ...]
    rule: str  # tokenizer | separator | override | none

    def to_json(self) -> dict:
        return {"ids": list(self.ids), "tokens": list(self.tokens), "rule": self.rule}

    def describe(self) -> str:
        return "nothing" if not self.ids else f"{' '.join(self.tokens)} (id {', '.join(map(str, self.ids))}; {self.rule})"


def _added_by_tokenizer(tokenizer) -> list[int]:
    """The ids the tokenizer puts before a text by itself."""
    probe = "Document"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start]
    return []


def resolve_doc_prefix(tokenizer, spec: str | None = None) -> DocPrefix:
    """The document prefix for this tokenizer: `spec` None or "auto" applies
    the rule above, "none" gives no prefix, anything else is one token that
    must be in the vocabulary."""
    if spec is not None and spec not in ("auto", ""):
        if spec.lower() == "none":
            return DocPrefix((), (), "none")
        tid = tokenizer.get_vocab().get(spec)
        if tid is None:
            raise AttninfError(f"--doc-prefix {spec!r} is not a token of this tokenizer "
                               "(give one token, e.g. '<|endoftext|>', or 'none')")
        return DocPrefix((tid,), (spec,), "override")
    added = _added_by_tokenizer(tokenizer)
    if added:
        return DocPrefix(tuple(added), tuple(tokenizer.convert_ids_to_tokens(added)), "tokenizer")
    eos = tokenizer.eos_token
    candidates = ([eos] if eos and eos not in CHAT_TURN_TOKENS else []) + list(SEPARATOR_TOKENS)
    vocab = tokenizer.get_vocab()  # built anew on every call: once here
    for tok in candidates:
        if tok in vocab:
            return DocPrefix((vocab[tok],), (tok,), "separator")
    return DocPrefix((), (), "none")


def prefix_from_json(data: dict | None) -> DocPrefix | None:
    """The DocPrefix a heads.json recorded, or None for a file that has none."""
    if not data:
        return None
    return DocPrefix(tuple(int(i) for i in data["ids"]), tuple(data["tokens"]), data.get("rule", "recorded"))


@dataclass(frozen=True)
class Separators:
    """What surrounds every document in a packed token stream (`attninf
    export`, `attninf train`, compare's measures): `bos` before it, `eos`
    after it."""
    bos: tuple[int, ...]
    eos: tuple[int, ...]
    bos_tokens: tuple[str, ...]
    eos_tokens: tuple[str, ...]

    def wrap(self, ids: list[int]) -> list[int]:
        return [*self.bos, *ids, *self.eos]

    @property
    def boundary(self) -> int | None:
        """The one token that sits between two documents (eos, else bos), for
        measures that need a document boundary; None when there is none."""
        return (self.eos or self.bos or (None,))[0]

    def to_json(self) -> dict:
        return {"bos": list(self.bos), "eos": list(self.eos), "bos_tokens": list(self.bos_tokens),
                "eos_tokens": list(self.eos_tokens)}


def _one_token(tokenizer, spec: str, flag: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    if spec.lower() == "none":
        return (), ()
    tid = tokenizer.get_vocab().get(spec)
    if tid is None:
        raise AttninfError(f"{flag} {spec!r} is not a token of this tokenizer (give one token, e.g. "
                           "'<|endoftext|>', or 'none')")
    return (tid,), (spec,)


def document_separators(tokenizer, eos: str | None = None, bos: str | None = None) -> Separators:
    """The document rule above, for packed streams: eos is the document
    separator (rule 2: the tokenizer's eos unless it ends a chat turn, else
    the first of SEPARATOR_TOKENS in the vocabulary), bos what the tokenizer
    puts before a text by itself (rule 1: Llama's `<s>`), nothing where it
    puts nothing. `eos`/`bos` override them with one token or "none"."""
    if bos not in (None, "", "auto"):
        bos_ids, bos_toks = _one_token(tokenizer, bos, "--bos")
    else:
        bos_ids = tuple(_added_by_tokenizer(tokenizer))
        bos_toks = tuple(tokenizer.convert_ids_to_tokens(list(bos_ids))) if bos_ids else ()
    if eos not in (None, "", "auto"):
        eos_ids, eos_toks = _one_token(tokenizer, eos, "--eos")
    else:
        vocab = tokenizer.get_vocab()
        own = tokenizer.eos_token
        found = next((t for t in ([own] if own and own not in CHAT_TURN_TOKENS else []) + list(SEPARATOR_TOKENS)
                      if t in vocab), None)
        if found is None:
            raise AttninfError("this tokenizer has no document separator (no end-of-text token): choose one with "
                               "--eos TOKEN, or --eos none to join documents with nothing between them")
        eos_ids, eos_toks = (vocab[found],), (found,)
    return Separators(bos_ids, eos_ids, bos_toks, eos_toks)
