"""The head sets of `score --head-fracs` (docs/design.md, "Scoring engine"):
the top fraction of heads.json's ranking for each fraction, their column
tags and the columns a scores file gets for them."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import AttninfError

if TYPE_CHECKING:
    from .artifacts import Heads


def head_set_columns(tags) -> list[str]:
    """The columns of the extra head sets of `score --head-fracs` (docs/design.md):
    per set tag, its score and its masked loss."""
    return [c for t in tags for c in (f"score_{t}", f"loss_masked_{t}")]


def head_set_tag(frac: float) -> str:
    """The column tag of a head fraction: 0.1 -> top10pct, 0.025 -> top2p5pct."""
    return f"top{frac * 100:.6g}pct".replace(".", "p")


def head_sets(fracs, heads: Heads) -> list[tuple[str | None, list]]:
    """(tag, heads) of every head set `score --head-fracs` scores: the first
    is `score`'s (tag None); with no fracs, heads.json's own selection alone.
    Heads are taken by rank, so the sets of larger fractions hold those of
    smaller ones: by the exact per-probe counts where heads.json keeps them
    (the rule detect-heads selected by, so the fraction it used gives its
    heads), else by its rounded retrieval scores (heads.select_top)."""
    if not fracs:
        return [(None, heads.heads)]
    import numpy as np

    from .heads import select_top

    fracs = [float(f) for f in fracs]
    bad = [f for f in fracs if not 0 < f <= 1]
    if bad:
        raise AttninfError(f"--head-fracs must each be in (0, 1], got {bad[0]}")
    tags = [head_set_tag(f) for f in fracs]
    if len(set(tags)) != len(tags):
        raise AttninfError(f"--head-fracs lists a fraction twice: {','.join(map(str, fracs))}")
    if heads.data.get("per_probe"):
        from .stability import counts_from, selected_heads

        counts = counts_from(heads.data, str(heads.path))
        pick = lambda f: selected_heads(counts, f)  # noqa: E731
    elif "scores" in heads.data:
        scores = np.asarray(heads.data["scores"], dtype=np.float64)
        pick = lambda f: select_top(scores, f)  # noqa: E731
    else:
        raise AttninfError(f"{heads.path} has no retrieval scores to rank heads by: run detect-heads again")
    return [(None if k == 0 else t, pick(f)) for k, (t, f) in enumerate(zip(tags, fracs))]
