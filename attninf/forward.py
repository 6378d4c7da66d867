"""The scorer's two forward strategies. Both add the same per-document NLL
sums (plain, and masked once per head set); only their cost differs:

* SharedPrefix: windows packed into rows without padding, run through the
  model's own forward; at the first layer with a masked head the hidden
  states fork (a hook on that layer) into a plain row and one masked row per
  head set that run on as one batch, so the layers below run once. Every architecture
  whose forward passes its keyword arguments down to the attention takes
  it: the row's document boundaries reach the kernels that way, and the
  kernels apply the sliding windows themselves (SharedPrefix.check proves
  it for the loaded model at load);
* TwoPass, for any other model: the model's own forward over padded
  batches once plain and once per head set, that set's heads masked.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import AttninfError
from .windows import Window, pack
from .plugin import (first_masked_layer, head_mask_tensors, head_nll, packed_rows, set_layer_masks,
                     token_losses)


class DocSums:
    """Where the forward strategies put their per-position NLL: summed per
    document (row 0 plain, row 1 + k masked with head set k), with the count
    of predicted tokens."""

    wants_positions = False  # the token index of each position is not needed

    def __init__(self, n_docs: int, n_sets: int = 1):
        self.sums = np.zeros((1 + n_sets, n_docs), dtype=np.float64)
        self.counts = np.zeros(n_docs, dtype=np.int64)

    def add(self, nll: torch.Tensor, docs: torch.Tensor, valid: torch.Tensor, pos: torch.Tensor | None = None):
        """nll (1 + sets, P) of P positions, their documents (P,), which are scored (P,) bool."""
        d = docs[valid].cpu().numpy()
        vals = nll[:, valid].double().cpu().numpy()  # (1 + sets, P')
        for row, v in zip(self.sums, vals):
            np.add.at(row, d, v)
        np.add.at(self.counts, d, 1)


class TokenNLL(DocSums):
    """DocSums, and each predicted token's NLL at its index in the document."""

    wants_positions = True

    def __init__(self, lengths: list[int], n_sets: int = 1):
        super().__init__(len(lengths), n_sets)
        self.per_token = [np.full((1 + n_sets, n), np.nan) for n in lengths]

    def add(self, nll, docs, valid, pos=None):
        super().add(nll, docs, valid)
        d, p = docs[valid].cpu().numpy(), pos[valid].cpu().numpy()  # pos: index of the predicted token
        vals = nll[:, valid].double().cpu().numpy()
        for doc in np.unique(d):
            m = d == doc
            self.per_token[doc][:, p[m]] = vals[:, m]


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's list of decoder layers: the ModuleList of its base model
    that holds one module per layer."""
    n = model.config.num_hidden_layers
    for _, m in model.base_model.named_children():
        if isinstance(m, torch.nn.ModuleList) and len(m) == n:
            return m
    raise AttninfError(f"{type(model).__name__}: no list of {n} decoder layers in its base model")


class SharedPrefix:
    """Windows packed first-fit into rows of batch_tokens, no padding; layers
    below the first masked one run once, then the hidden states fork into a
    plain row and one masked row per head set, run as one batch with per-row
    head masks. `more`: head sets scored beside `heads`, in the same pass."""

    def __init__(self, model, heads: list, batch_tokens: int, pad_id: int | None = None, more: Sequence = ()):
        self.model = model
        cfg = model.config
        self.L = cfg.num_hidden_layers
        sets = [heads, *more]
        self.first_masked = min(first_masked_layer(s) for s in sets)
        self.fork_layer = decoder_layers(model)[self.first_masked]
        self.batch_tokens = batch_tokens
        self.device = next(model.parameters()).device
        H = cfg.num_attention_heads
        per_set = [head_mask_tensors(self.L, H, s) for s in sets]
        # the forked batch: row 0 plain, row 1 + k with head set k masked, per layer (1 + sets, Hq)
        none = torch.zeros(H, dtype=torch.bool)
        self.fork_masks = [None if all(m[layer] is None for m in per_set) else
                           torch.stack([none] + [none if m[layer] is None else m[layer] for m in per_set]).to(self.device)
                           for layer in range(self.L)]
        self.rows = 1 + len(sets)

    @staticmethod
    @torch.inference_mode()
    def check(model, heads: list, pad_id: int | None = None, more: Sequence = ()) -> str | None:
        """None when the packed path gives this model the same sums as
        padded passes of its own forward, on two short documents packed in
        one row, with every head set (`more` beside `heads`: the fork is at
        the lowest layer of all); else why not (the scorer then takes TwoPass)."""
        g = torch.Generator().manual_seed(1)
        V = int(model.config.vocab_size)
        windows = [Window(d, torch.randint(0, V, (n,), generator=g).tolist(), 1, 0) for d, n in enumerate((13, 9))]
        sums = []
        try:
            for strategy in (SharedPrefix, TwoPass):
                sink = DocSums(len(windows), 1 + len(more))
                strategy(model, heads, batch_tokens=64, pad_id=pad_id, more=more).run(windows, sink)
                sums.append(sink.sums)
        except Exception as e:  # noqa: BLE001 - a forward the fork breaks (a reshape to batch 1, an alibi bias)
            return f"{type(e).__name__}: {e}"
        low = next(model.parameters()).dtype != torch.float32
        rel = float(np.abs(sums[0] - sums[1]).max() / max(np.abs(sums[1]).max(), 1e-6))
        if rel > (2e-2 if low else 1e-5):
            return f"packed rows differ from padded passes by {rel:.2%} of the loss"
        return None

    def run(self, windows: list[Window], sink: DocSums) -> None:
        for bin_ in pack([len(w.ids) for w in windows], self.batch_tokens):
            self._row([windows[i] for i in bin_], sink)

    def _row(self, ws: list[Window], sink: DocSums) -> None:
        """One packed row: shared layers once, then the plain and the masked branches as one batch."""
        dev = self.device
        lens = [len(w.ids) for w in ws]
        ids = torch.tensor([t for w in ws for t in w.ids], device=dev).view(1, -1)
        pos = torch.cat([torch.arange(n, device=dev) for n in lens]).view(1, -1)
        cu = torch.tensor([0, *np.cumsum(lens).tolist()], device=dev, dtype=torch.int32)
        hidden = self._hidden(ids, pos, cu)  # (1 + sets, T, H)
        # position j predicts j+1 inside its window; the last position of each window predicts nothing,
        # and in a later window the positions before ctx-1 predict context tokens, already scored
        targets = torch.roll(ids[0], -1)
        targets[cu[1:].long() - 1] = -100
        for w, start in zip(ws, cu[:-1].tolist()):
            if w.ctx > 1:
                targets[start:start + w.ctx - 1] = -100
        nll = self._nll(hidden, targets)  # (1 + sets, T) fp32
        doc_of_pos = torch.repeat_interleave(torch.tensor([w.doc for w in ws], device=dev),
                                             torch.tensor(lens, device=dev))
        pos = None
        if sink.wants_positions:  # position j of a window predicts document token start + j + 1
            pos = torch.cat([torch.arange(n, device=dev) + w.start + 1 for w, n in zip(ws, lens)])
        sink.add(nll, doc_of_pos, targets != -100, pos)

    def _hidden(self, ids: torch.Tensor, pos: torch.Tensor, cu: torch.Tensor) -> torch.Tensor:
        """(1, T) packed ids -> (1 + sets, T, H) final hidden states: row 0
        plain, row 1 + k with head set k masked.

        The model's own forward: whatever it does between embedding and
        output (scaled embeddings, multipliers, per-layer rotary bases) it
        does here too. Layers below the first masked one see one row and no
        head mask; the hook on that layer copies the row into the branches."""
        handle = self.fork_layer.register_forward_pre_hook(_forker(self.rows), with_kwargs=True)
        set_layer_masks(self.model, self.fork_masks)
        try:
            with packed_rows():
                out = self.model.base_model(input_ids=ids, position_ids=pos, attninf_cu_seqlens=cu, use_cache=False)
        finally:
            handle.remove()
            set_layer_masks(self.model, [None] * self.L)
        hidden = out.last_hidden_state
        if hidden.shape[0] != self.rows:
            raise AttninfError(f"{type(self.model).__name__}: the fork at layer {self.first_masked} did not reach "
                               "the output (its layers do not take the hidden states as their first argument)")
        return hidden

    def _nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        B, T, Hd = hidden.shape
        return head_nll(self.model, hidden.reshape(B * T, Hd), targets.repeat(B)).view(B, T)


class TwoPass:
    """Any architecture: full forward passes over right-padded batches of
    windows of similar lengths, plain, then once per head set with its heads
    masked (`more`: head sets scored beside `heads`)."""

    def __init__(self, model, heads: list, batch_tokens: int, pad_id: int | None = None, more: Sequence = ()):
        self.model = model
        self.sets = [heads, *more]
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
        rows = [token_losses(self.model, ids, attention_mask=mask).reshape(-1)]
        for heads in self.sets:
            with masked_heads(self.model, heads):
                rows.append(token_losses(self.model, ids, attention_mask=mask).reshape(-1))
        nll = torch.stack(rows)
        doc = torch.tensor([w.doc for w in chunk], device=dev).view(-1, 1).expand(-1, S - 1).reshape(-1)
        pos = None
        if sink.wants_positions:  # (rows, S-1): column j predicts document token start + j + 1
            pos = (torch.arange(S - 1, device=dev).view(1, -1)
                   + torch.tensor([w.start + 1 for w in chunk], device=dev).view(-1, 1)).reshape(-1)
        sink.add(nll, doc, scored.reshape(-1), pos)


def _forker(rows: int):
    """A forward pre-hook: the layer's input hidden states (1, T, H) become
    `rows` equal rows, (rows, T, H): plain and masked from here on."""
    def fork(module, args, kwargs):
        if args:
            return (torch.cat([args[0]] * rows), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": torch.cat([kwargs["hidden_states"]] * rows)}
    return fork
