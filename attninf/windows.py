"""How documents become rows of tokens for the scorer: strided windows of
max_tokens over a long document (every token after the first predicted
exactly once), and first-fit packing of windows into rows of batch_tokens."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .errors import AttninfError


@dataclass
class Window:
    doc: int  # index of the document in the batch
    ids: list[int]
    ctx: int = 1  # leading tokens that are context only: targets start at ids[ctx]
    start: int = 0  # where ids[0] sits in the document's token ids


def check_overlap(max_tokens: int, context_overlap: int) -> None:
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
    check_overlap(max_tokens, context_overlap)
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
