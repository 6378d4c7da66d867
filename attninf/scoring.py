"""The scoring engine (docs/method.md, step 3), with no Dask inside: a batch of
texts in, per document `loss_base`, `loss_masked`, `score`, `n_tokens`,
`status` out, where score = (L_masked - L_base) / L_base (AttentionInfluence,
arXiv 2505.07293).

Where the time goes, and what this file does about it:

* Shared prefix. Layers below the first layer that holds a masked head
  compute the same thing in both passes: they run once, then the hidden
  states fork into a plain and a masked branch, run side by side as a batch
  of two with per-row head masks. One model in memory.
* No padding. Windows are sorted by length and packed first-fit into rows of
  `batch_tokens`; attention never crosses a document (cu_seqlens), positions
  restart at each document.
* No logits tensor. The loss comes from the final hidden states through
  token_nll, in fp32.

Long documents are scored over strided windows of `max_tokens`: every window
after the first re-reads the previous `context_overlap` tokens as context and
predicts only the new ones, so every token after the first is predicted
exactly once, never from less than `context_overlap` tokens of its document;
the document loss is the token-weighted mean over all windows. Every document
starts with the document prefix of attninf.docstart, the same as the probes
the heads were found with.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .artifacts import TOKEN_STATS, Status
from .docstart import DocPrefix, resolve_doc_prefix
from .errors import AttninfError
from .explain import token_summary
from .model import LoadedModel
from .plugin import (check_fused_loss, first_masked_layer, head_mask_tensors, head_nll, install, set_layer_masks,
                     token_losses)

log = logging.getLogger("attninf")


# families whose forward is embed -> decoder layers -> final norm, with rotary
# position embeddings computed once: the layered (shared-prefix) path runs them
LAYERED_FAMILIES = {"llama", "qwen2", "qwen3", "mistral", "olmo", "olmo2"}
SCORING_VERSION = 3  # bump when the numbers a given config produces change


@dataclass
class Window:
    doc: int  # index of the document in the batch
    ids: list[int]
    ctx: int = 1  # leading tokens that are context only: targets start at ids[ctx]
    start: int = 0  # where ids[0] sits in the document's token ids


def repetition(text: str | None, n: int = 4) -> float:
    """Fraction of the word n-grams of a text that repeat an earlier one:
    1 - distinct / total (0 for texts under n words). Repeated text inflates
    the AttentionInfluence score, so every score carries this diagnostic."""
    if not isinstance(text, str):
        return float("nan")
    words = text.split()
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    return 1.0 - len({tuple(words[i:i + n]) for i in range(total)}) / total


def _check_overlap(max_tokens: int, context_overlap: int) -> None:
    if not 1 <= context_overlap < max_tokens:
        raise AttninfError(f"--context-overlap must be in [1, max_tokens - 1 = {max_tokens - 1}], "
                           f"got {context_overlap}")


def window_ids(ids: list[int], max_tokens: int, context_overlap: int = 1,
               truncate: bool = False) -> list[tuple[list[int], int]]:
    """Strided windows: [(window ids, ctx)], where the window predicts its
    tokens ids[ctx:] and reads the ones before as context.

    Window k starts at k * (M - C) for M = max_tokens, C = context_overlap;
    the first predicts tokens 1..M-1, every later one re-reads the C tokens
    before its new ones, so each token after the first is predicted exactly
    once (C = 1: windows that overlap by one token, the shortest context)."""
    if len(ids) < 2:
        return []
    _check_overlap(max_tokens, context_overlap)
    stride = max_tokens - context_overlap
    out, start = [(ids[:max_tokens], 1)], 0
    while start + max_tokens < len(ids) and not truncate:
        start += stride
        out.append((ids[start:start + max_tokens], context_overlap))
    return out


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices grouped into bins of at most `capacity`
    tokens. Deterministic: ties keep input order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        for b, r in enumerate(room):
            if n <= r:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(capacity - n)
    return bins


def default_batch_tokens(model) -> int:
    """Tokens per packed row: 4,096 on CPU (activations that stay in cache ran
    7-12% faster than 16k-token rows, benchmarks/RESULTS.md), 16,384 on a GPU."""
    return 4096 if next(model.parameters()).device.type == "cpu" else 16384


class Scorer:
    """Scores texts with one loaded model and a set of masked heads.

    >>> scorer = Scorer(load_model("smollm2-135m"), heads=[[17, 3], [20, 5]])
    >>> scorer.score_texts(["some text", "def f(x): return x"])

    The forward passes are a strategy: SharedPrefix where the architecture
    allows it (layers below the first masked one run once), TwoPass otherwise.
    Both add the same per-document NLL sums; only their cost differs.
    """

    def __init__(self, lm: LoadedModel, heads: list, max_tokens: int | None = None,
                 batch_tokens: int | None = None, truncate: bool = False, layered: bool | None = None,
                 context_overlap: int | None = None, doc_prefix: DocPrefix | str | None = None):
        self.lm = lm
        self.model = lm.model
        self.tok = lm.tokenizer
        cfg = self.model.config
        self.heads = sorted([int(l), int(h)] for l, h in heads)
        if not self.heads:
            raise AttninfError("heads.json selects no head: there is nothing to mask")
        ctx = getattr(cfg, "max_position_embeddings", None) or 4096
        self.max_tokens = int(max_tokens or min(ctx, 4096))
        if self.max_tokens < 2:
            raise AttninfError(f"--max-tokens must be at least 2, got {self.max_tokens}")
        self.batch_tokens = max(int(batch_tokens or default_batch_tokens(self.model)), self.max_tokens)
        self.truncate = truncate
        self.context_overlap = int(context_overlap if context_overlap is not None else self.max_tokens // 2)
        _check_overlap(self.max_tokens, self.context_overlap)  # fail before any document is read
        self.doc_prefix = (doc_prefix if isinstance(doc_prefix, DocPrefix)
                           else resolve_doc_prefix(self.tok, doc_prefix))
        if len(self.doc_prefix.ids) >= self.max_tokens:
            raise AttninfError(f"--max-tokens {self.max_tokens} leaves no room after the document prefix")
        install(self.model)
        check_fused_loss(self.model)  # refuses an output layer the fused loss does not reproduce
        can_share = SharedPrefix.supports(self.model, self.max_tokens)
        if layered and not can_share:
            raise AttninfError(f"the shared-prefix path does not support {cfg.model_type} models")
        if layered is None:
            layered = can_share
        if not layered:
            log.warning("%s: no shared-prefix path for this architecture; scoring with two full passes "
                        "over padded batches", cfg.model_type)
        self.forward = (SharedPrefix if layered else TwoPass)(self.model, self.heads, self.batch_tokens,
                                                              self.tok.pad_token_id)

    @property
    def layered(self) -> bool:
        return isinstance(self.forward, SharedPrefix)

    @property
    def first_masked(self) -> int:
        return first_masked_layer(self.heads)

    def encode(self, texts: Sequence[str | None]) -> list[list[int] | None]:
        """Token ids per text, the document prefix first; None for empty text."""
        keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        out: list[list[int] | None] = [None] * len(texts)
        prefix = list(self.doc_prefix.ids)
        if keep:
            enc = self.tok([texts[i] for i in keep], add_special_tokens=False)["input_ids"]
            for i, ids in zip(keep, enc):
                out[i] = prefix + list(ids)
        return out

    def windows(self, encoded: list[list[int] | None]) -> tuple[list[Window], np.ndarray]:
        """The windows of every document and each document's status."""
        windows: list[Window] = []
        status = np.array([Status.OK.value] * len(encoded), dtype=object)
        for d, ids in enumerate(encoded):
            if ids is None:
                status[d] = Status.EMPTY.value
                continue
            ws = window_ids(ids, self.max_tokens, self.context_overlap, self.truncate)
            if not ws:
                status[d] = Status.TOO_SHORT.value
            stride = self.max_tokens - self.context_overlap
            windows.extend(Window(d, w, ctx, k * stride) for k, (w, ctx) in enumerate(ws))
        return windows, status

    @torch.inference_mode()
    def score_texts(self, texts: Sequence[str | None], token_stats: bool = False) -> dict[str, np.ndarray]:
        """Per text: loss_base, loss_masked, score (NaN where status != ok),
        n_tokens, status, repetition (numpy arrays; artifacts.scores_table
        turns them into rows of a scores file). token_stats adds the
        TOKEN_STATS columns (token_summary of each text), at the cost of
        keeping every token's NLL of the batch."""
        if not token_stats:
            windows, status = self.windows(self.encode(texts))
            sink = DocSums(len(texts))
            self.forward.run(windows, sink)
            return self._result(texts, sink, status)
        res, _, per_token = self.token_nll(texts)
        stats = np.array([token_summary(p[0], p[1]) for p in per_token], dtype=np.float64).reshape(-1, 3)
        stats[res["status"] != Status.OK.value] = np.nan
        return {**res, **{c: stats[:, k] for k, c in enumerate(TOKEN_STATS)}}

    @torch.inference_mode()
    def token_nll(self, texts: Sequence[str | None]) -> tuple[dict[str, np.ndarray], list, list]:
        """score_texts' result, plus per text its token ids (document prefix
        first) and a (2, len(ids)) float64 array: the NLL of predicting each
        token, plain (row 0) and with the heads masked (row 1); NaN for tokens
        nothing predicts (the first, or all of an empty or one-token text).
        The same windows, packing and forward as score_texts."""
        encoded = self.encode(texts)
        windows, status = self.windows(encoded)
        sink = TokenNLL([0 if ids is None else len(ids) for ids in encoded])
        self.forward.run(windows, sink)
        return self._result(texts, sink, status), [ids or [] for ids in encoded], sink.per_token

    @staticmethod
    def _result(texts, sink: "DocSums", status: np.ndarray) -> dict[str, np.ndarray]:
        sums, counts = sink.sums, sink.counts
        with np.errstate(invalid="ignore", divide="ignore"):
            base = sums[0] / counts
            masked = sums[1] / counts
            score = (masked - base) / base
        bad = status != Status.OK.value
        for arr in (base, masked, score):
            arr[bad] = np.nan
        return {"loss_base": base, "loss_masked": masked, "score": score, "n_tokens": counts,
                "status": status.astype(str),
                "repetition": np.array([repetition(t) for t in texts], dtype=np.float64)}


class DocSums:
    """Where the forward strategies put their per-position NLL: summed per
    document (row 0 plain, row 1 masked), with the count of predicted tokens."""

    wants_positions = False  # the token index of each position is not needed

    def __init__(self, n_docs: int):
        self.sums = np.zeros((2, n_docs), dtype=np.float64)
        self.counts = np.zeros(n_docs, dtype=np.int64)

    def add(self, nll: torch.Tensor, docs: torch.Tensor, valid: torch.Tensor, pos: torch.Tensor | None = None):
        """nll (2, P) of P positions, their documents (P,), which are scored (P,) bool."""
        d = docs[valid].cpu().numpy()
        vals = nll[:, valid].double().cpu().numpy()  # (2, P')
        np.add.at(self.sums[0], d, vals[0])
        np.add.at(self.sums[1], d, vals[1])
        np.add.at(self.counts, d, 1)


class TokenNLL(DocSums):
    """DocSums, and each predicted token's NLL at its index in the document."""

    wants_positions = True

    def __init__(self, lengths: list[int]):
        super().__init__(len(lengths))
        self.per_token = [np.full((2, n), np.nan) for n in lengths]

    def add(self, nll, docs, valid, pos=None):
        super().add(nll, docs, valid)
        d, p = docs[valid].cpu().numpy(), pos[valid].cpu().numpy()  # pos: index of the predicted token
        vals = nll[:, valid].double().cpu().numpy()
        for doc in np.unique(d):
            m = d == doc
            self.per_token[doc][:, p[m]] = vals[:, m]


class SharedPrefix:
    """Windows packed first-fit into rows of batch_tokens, no padding; layers
    below the first masked one run once, then the hidden states fork into a
    plain and a masked row, run as a batch of two with per-row head masks."""

    def __init__(self, model, heads: list, batch_tokens: int, pad_id: int | None = None):
        self.model = model
        cfg = model.config
        self.L = cfg.num_hidden_layers
        self.first_masked = first_masked_layer(heads)
        self.batch_tokens = batch_tokens
        self.device = next(model.parameters()).device
        masks = head_mask_tensors(self.L, cfg.num_attention_heads, heads)
        # the forked batch: row 0 plain, row 1 with the retrieval heads masked, per layer (2, Hq)
        self.fork_masks = [None if m is None else torch.stack([torch.zeros_like(m), m]).to(self.device)
                           for m in masks]

    @staticmethod
    def supports(model, max_tokens: int) -> bool:
        """embed -> decoder layers -> final norm with rotary embeddings computed
        once, and no sliding window shorter than a scoring window."""
        cfg = model.config
        if cfg.model_type not in LAYERED_FAMILIES:
            return False
        base = model.base_model
        if not all(hasattr(base, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
            return False
        window = getattr(cfg, "sliding_window", None)
        uses_window = cfg.model_type == "mistral" or getattr(cfg, "use_sliding_window", False)
        return not (uses_window and window and window < max_tokens)

    def run(self, windows: list[Window], sink: DocSums) -> None:
        for bin_ in pack([len(w.ids) for w in windows], self.batch_tokens):
            self._row([windows[i] for i in bin_], sink)

    def _row(self, ws: list[Window], sink: DocSums) -> None:
        """One packed row: shared layers once, then plain and masked branches as a batch of 2."""
        dev = self.device
        lens = [len(w.ids) for w in ws]
        ids = torch.tensor([t for w in ws for t in w.ids], device=dev).view(1, -1)
        pos = torch.cat([torch.arange(n, device=dev) for n in lens]).view(1, -1)
        cu = torch.tensor([0, *np.cumsum(lens).tolist()], device=dev, dtype=torch.int32)
        hidden = self._hidden(ids, pos, cu)  # (2, T, H)
        # position j predicts j+1 inside its window; the last position of each window predicts nothing,
        # and in a later window the positions before ctx-1 predict context tokens, already scored
        targets = torch.roll(ids[0], -1)
        targets[cu[1:].long() - 1] = -100
        for w, start in zip(ws, cu[:-1].tolist()):
            if w.ctx > 1:
                targets[start:start + w.ctx - 1] = -100
        nll = self._nll(hidden, targets)  # (2, T) fp32
        doc_of_pos = torch.repeat_interleave(torch.tensor([w.doc for w in ws], device=dev),
                                             torch.tensor(lens, device=dev))
        pos = None
        if sink.wants_positions:  # position j of a window predicts document token start + j + 1
            pos = torch.cat([torch.arange(n, device=dev) + w.start + 1 for w, n in zip(ws, lens)])
        sink.add(nll, doc_of_pos, targets != -100, pos)

    def _hidden(self, ids: torch.Tensor, pos: torch.Tensor, cu: torch.Tensor) -> torch.Tensor:
        """(1, T) packed ids -> (2, T, H) final hidden states: row 0 plain, row 1 masked."""
        base = self.model.base_model
        hidden = base.embed_tokens(ids)
        pe = base.rotary_emb(hidden, position_ids=pos)
        kw = dict(attention_mask=None, position_ids=pos, position_embeddings=pe, attninf_cu_seqlens=cu)
        set_layer_masks(self.model, [None] * self.L)
        layers = base.layers
        for i in range(self.first_masked):
            hidden = _out(layers[i](hidden, **kw))
        hidden = torch.cat([hidden, hidden], dim=0)  # fork
        set_layer_masks(self.model, self.fork_masks)
        try:
            for i in range(self.first_masked, self.L):
                hidden = _out(layers[i](hidden, **kw))
        finally:
            set_layer_masks(self.model, [None] * self.L)
        return base.norm(hidden)

    def _nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        B, T, Hd = hidden.shape
        return head_nll(self.model, hidden.reshape(B * T, Hd), targets.repeat(B)).view(B, T)


class TwoPass:
    """Any architecture: two full forward passes (plain, then with the heads
    masked) over right-padded batches of windows of similar lengths."""

    def __init__(self, model, heads: list, batch_tokens: int, pad_id: int | None = None):
        self.model = model
        self.heads = heads
        self.batch_tokens = batch_tokens
        self.pad = pad_id if pad_id is not None else 0
        self.device = next(model.parameters()).device

    def run(self, windows: list[Window], sink: DocSums) -> None:
        for bin_ in pack([len(w.ids) for w in windows], self.batch_tokens):
            ws = [windows[i] for i in bin_]
            S = max(len(w.ids) for w in ws)
            # padded rows cost S each: split the bin so that rows x S stays within budget
            per = max(1, self.batch_tokens // S)
            for s in range(0, len(ws), per):
                self._batch(ws[s:s + per], S, sink)

    def _batch(self, chunk: list[Window], S: int, sink: DocSums) -> None:
        from .plugin import masked_heads

        dev = self.device
        ids = torch.full((len(chunk), S), self.pad, device=dev)
        mask = torch.zeros((len(chunk), S), dtype=torch.long, device=dev)
        scored = torch.zeros((len(chunk), S - 1), dtype=torch.bool, device=dev)  # (rows, S-1) targets
        for r, w in enumerate(chunk):
            ids[r, :len(w.ids)] = torch.tensor(w.ids, device=dev)
            mask[r, :len(w.ids)] = 1
            scored[r, w.ctx - 1:len(w.ids) - 1] = True
        plain = token_losses(self.model, ids, attention_mask=mask)
        with masked_heads(self.model, self.heads):
            masked = token_losses(self.model, ids, attention_mask=mask)
        nll = torch.stack([plain.reshape(-1), masked.reshape(-1)])
        doc = torch.tensor([w.doc for w in chunk], device=dev).view(-1, 1).expand(-1, S - 1).reshape(-1)
        pos = None
        if sink.wants_positions:  # (rows, S-1): column j predicts document token start + j + 1
            pos = (torch.arange(S - 1, device=dev).view(1, -1)
                   + torch.tensor([w.start + 1 for w in chunk], device=dev).view(-1, 1)).reshape(-1)
        sink.add(nll, doc, scored.reshape(-1), pos)


def _out(x):
    """Decoder layers return a tensor in transformers 5, a tuple before."""
    return x[0] if isinstance(x, tuple) else x


def load_scorer(model_spec: str | None, heads_path: str, dtype: str = "auto", device: str = "auto",
                max_tokens: int | None = None, batch_tokens: int | None = None, truncate: bool = False,
                allow_pickle: bool = False, trust_remote_code: bool = False,
                context_overlap: int | None = None, doc_prefix: str | None = None) -> Scorer:
    """Load the model named by --model, or the one heads.json was made with, and its heads.

    Refuses a model whose fingerprint differs from the heads file's: the heads
    of one model mean nothing in another. Documents start the way the probes
    of heads.json did, unless doc_prefix says otherwise."""
    from .artifacts import Heads
    from .docstart import prefix_from_json
    from .model import load_model

    heads = Heads.read(heads_path)
    spec = model_spec or heads.model_spec
    lm = load_model(spec, dtype=dtype, device=device, allow_pickle=allow_pickle,
                    trust_remote_code=trust_remote_code)
    heads.check_model(spec, lm.fingerprint["fingerprint"], (lm.config.num_hidden_layers, lm.config.num_attention_heads))
    recorded = prefix_from_json(heads.data.get("doc_prefix"))
    prefix = resolve_doc_prefix(lm.tokenizer, doc_prefix) if doc_prefix else recorded
    if recorded is not None and prefix.ids != recorded.ids:
        log.warning("documents start with %s but the heads of %s were found with %s before every probe",
                    prefix.describe(), heads_path, recorded.describe())
    return Scorer(lm, heads.heads, max_tokens=max_tokens, batch_tokens=batch_tokens, truncate=truncate,
                  context_overlap=context_overlap, doc_prefix=prefix)
