"""The scoring engine (docs/method.md, step 3), with no Dask inside: a batch of
texts in, per document `loss_base`, `loss_masked`, `score`, `n_tokens`,
`status` out, where score = (L_masked - L_base) / L_base (AttentionInfluence,
arXiv 2505.07293).

Where the time goes, and what the scorer does about it (the forward
strategies are in forward.py, windows and packing in windows.py):

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
from typing import Sequence

import numpy as np
import torch

from .artifacts import TOKEN_STATS, Status
from .docstart import DocPrefix, resolve_doc_prefix
from .errors import AttninfError
from .explain import token_summary
from .model import LoadedModel
from .forward import DocSums, SharedPrefix, TokenNLL, TwoPass
from .plugin import check_model, first_masked_layer, install
from .windows import Window, check_overlap, default_batch_tokens, window_ids

log = logging.getLogger("attninf")




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
                 context_overlap: int | None = None, doc_prefix: DocPrefix | str | None = None,
                 more_heads: dict[str, list] | None = None):
        self.lm = lm
        self.model = lm.model
        self.tok = lm.tokenizer
        cfg = self.model.config
        self.heads = sorted([int(l), int(h)] for l, h in heads)
        if not self.heads:
            raise AttninfError("heads.json selects no head: there is nothing to mask")
        # head sets scored beside `heads` in the same pass, by tag (score_<tag>, loss_masked_<tag>)
        self.more_heads = {t: sorted([int(l), int(h)] for l, h in hs) for t, hs in (more_heads or {}).items()}
        if any(not hs for hs in self.more_heads.values()):
            raise AttninfError("a head set selects no head: there is nothing to mask")
        ctx = getattr(cfg, "max_position_embeddings", None) or 4096
        self.max_tokens = int(max_tokens or min(ctx, 4096))
        if self.max_tokens < 2:
            raise AttninfError(f"--max-tokens must be at least 2, got {self.max_tokens}")
        self.batch_tokens = max(int(batch_tokens or default_batch_tokens(self.model)), self.max_tokens)
        self.truncate = truncate
        self.context_overlap = int(context_overlap if context_overlap is not None else self.max_tokens // 2)
        check_overlap(self.max_tokens, self.context_overlap)  # fail before any document is read
        self.doc_prefix = (doc_prefix if isinstance(doc_prefix, DocPrefix)
                           else resolve_doc_prefix(self.tok, doc_prefix))
        if len(self.doc_prefix.ids) >= self.max_tokens:
            raise AttninfError(f"--max-tokens {self.max_tokens} leaves no room after the document prefix")
        install(self.model)
        # refuses an attention or output layer attninf does not reproduce; each layer's window
        self.layer_windows = check_model(self.model)
        more = list(self.more_heads.values())
        why_not = (SharedPrefix.check(self.model, self.heads, self.tok.pad_token_id, more)
                   if layered is not False else None)
        if layered and why_not:
            raise AttninfError(f"the shared-prefix path does not support this {cfg.model_type} model: {why_not}")
        if layered is None:
            layered = why_not is None
        if why_not:
            log.warning("%s: no shared-prefix path (%s); scoring with two full passes over padded batches",
                        cfg.model_type, why_not)
        self.forward = (SharedPrefix if layered else TwoPass)(self.model, self.heads, self.batch_tokens,
                                                              self.tok.pad_token_id,
                                                              more=more)

    @property
    def layered(self) -> bool:
        return isinstance(self.forward, SharedPrefix)

    @property
    def first_masked(self) -> int:
        return min(first_masked_layer(s) for s in [self.heads, *self.more_heads.values()])

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
        turns them into rows of a scores file), and score_<tag>,
        loss_masked_<tag> per head set of more_heads. token_stats adds the
        TOKEN_STATS columns (token_summary of each text, for `heads`), at the
        cost of keeping every token's NLL of the batch."""
        if not token_stats:
            windows, status = self.windows(self.encode(texts))
            sink = DocSums(len(texts), 1 + len(self.more_heads))
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
        token, plain (row 0) and with the heads masked (row 1; rows 2.. with
        the sets of more_heads); NaN for tokens
        nothing predicts (the first, or all of an empty or one-token text).
        The same windows, packing and forward as score_texts."""
        encoded = self.encode(texts)
        windows, status = self.windows(encoded)
        sink = TokenNLL([0 if ids is None else len(ids) for ids in encoded], 1 + len(self.more_heads))
        self.forward.run(windows, sink)
        return self._result(texts, sink, status), [ids or [] for ids in encoded], sink.per_token

    def _result(self, texts, sink: "DocSums", status: np.ndarray) -> dict[str, np.ndarray]:
        sums, counts = sink.sums, sink.counts
        bad = status != Status.OK.value
        with np.errstate(invalid="ignore", divide="ignore"):
            losses = sums / counts  # (1 + sets, docs)
            losses[:, bad] = np.nan
            scores = (losses[1:] - losses[0]) / losses[0]
        res = {"loss_base": losses[0], "loss_masked": losses[1], "score": scores[0], "n_tokens": counts,
               "status": status.astype(str),
               "repetition": np.array([repetition(t) for t in texts], dtype=np.float64)}
        for k, tag in enumerate(self.more_heads, start=1):
            res[f"score_{tag}"], res[f"loss_masked_{tag}"] = scores[k], losses[1 + k]
        return res


def load_scorer(model_spec: str | None, heads_path: str, dtype: str = "auto", device: str = "auto",
                max_tokens: int | None = None, batch_tokens: int | None = None, truncate: bool = False,
                allow_pickle: bool = False, trust_remote_code: bool = False,
                context_overlap: int | None = None, doc_prefix: str | None = None,
                head_fracs: Sequence[float] | None = None) -> Scorer:
    """Load the model named by --model, or the one heads.json was made with, and its heads:
    those heads.json selected, or with head_fracs the top fraction of its
    ranking for each (headsets.head_sets: the first for `score`, the others
    scored beside it).

    Refuses a model whose fingerprint differs from the heads file's: the heads
    of one model mean nothing in another. Documents start the way the probes
    of heads.json did, unless doc_prefix says otherwise."""
    from .artifacts import Heads
    from .headsets import head_sets
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
    (_, first), *more = head_sets(head_fracs, heads)
    scorer = Scorer(lm, first, max_tokens=max_tokens, batch_tokens=batch_tokens, truncate=truncate,
                    context_overlap=context_overlap, doc_prefix=prefix, more_heads=dict(more))
    heads.check_windows(spec, scorer.layer_windows)
    return scorer
