"""The report's PNG figures, one panel per domain, drawn from the exact
histograms and the bounded sample that attninf.scorestats collects."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .artifacts import ALL
from .scorestats import ONE_BLOCK, DomainStats, Histogram


def _stairs(ax, h, density: bool = False, **kw) -> None:
    counts, edges = h.counts.astype(float), h.edges
    if density and counts.sum():
        counts = counts / (counts.sum() * np.diff(edges))
    ax.stairs(counts, edges, fill=True, **kw)


class Figures:
    """PNG figures of one panel per domain, from the exact histograms and the
    sample of ReportStats."""

    def __init__(self, out: Path, domains: list[DomainStats], thresholds: dict):
        self.out, self.domains, self.thresholds = out, domains, thresholds
        self.images: list[tuple[str, str]] = []

    def figure(self, name: str, caption: str, draw) -> None:
        """One panel per domain: draw(ax, DomainStats)."""
        import matplotlib.pyplot as plt

        cols = min(3, len(self.domains))
        nrows = -(-len(self.domains) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
        for ax, ds in zip(axes.flat, self.domains):
            draw(ax, ds)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(self.domains):]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(self.out / name, dpi=100)
        plt.close(fig)
        self.images.append((name, caption))

    def scores(self, ax, ds: DomainStats):
        _stairs(ax, ds.scores["all"], color="#4c72b0", alpha=0.85, label="all")
        if ds.selected:
            _stairs(ax, ds.scores["selected"], color="#dd8452", alpha=0.8, label="selected")
        thr = self.thresholds.get(ds.name, self.thresholds.get(ALL))
        if thr is not None:
            ax.axvline(thr, color="crimson", ls="--", lw=1.4, label=f"threshold {thr:.4f}")
        ax.set_title(f"{ds.name} ({ds.ok:,} docs)", fontsize=10)
        ax.set_xlabel("score (L_masked − L_base) / L_base")

    def lengths(self, ax, ds: DomainStats):
        if not ds.ok:
            ax.set_title(f"{ds.name} (no scored document)", fontsize=10)
            return
        _stairs(ax, ds.lengths["all"], density=True, alpha=0.6, color="#4c72b0",
                label=f"all (median {ds.median_tokens('all'):.0f})")
        if ds.selected:
            _stairs(ax, ds.lengths["selected"], density=True, alpha=0.6, color="#dd8452",
                    label=f"selected (median {ds.median_tokens('selected'):.0f})")
        ax.set_xscale("log")
        ax.set_title(ds.name, fontsize=10)
        ax.set_xlabel("tokens per document")

    def repetition(self, ax, ds: DomainStats):
        p, c = ds.points, ds.points["selected"]
        shown = f" ({len(c):,} of {ds.ok:,} shown)" if len(c) < ds.ok else ""
        ax.scatter(p["repetition"], p["score"], s=6, alpha=0.5, color="#4c72b0", label="all" + shown)
        if c.any():
            ax.scatter(p["repetition"][c], p["score"][c], s=8, alpha=0.7, color="#dd8452", label="selected")
        ax.set_title(ds.name, fontsize=10)
        ax.set_xlabel("repetition (repeated word 4-grams)")
        ax.set_ylabel("score")

    def token_share(self, ax, ds: DomainStats):
        for k, color in (("all", "#4c72b0"), ("selected", "#dd8452")):
            h = ds.share[k]
            if h.counts.sum():
                coarse = Histogram(h.edges[::20])
                coarse.counts = h.counts.reshape(-1, 20).sum(axis=1)
                _stairs(ax, coarse, density=True, alpha=0.6, color=color, label=f"{k} (median {h.median():.2f})")
        ax.axvline(ONE_BLOCK, color="crimson", ls="--", lw=1)
        ax.set_title(ds.name, fontsize=10)
        ax.set_xlabel("share of the loss rise in the top 1% of tokens")

    def draw_all(self) -> list[tuple[str, str]]:
        self.figure("scores.png", "Score distribution per domain, with the selection threshold", self.scores)
        self.figure("lengths.png", "Document length, all vs selected (the method favours long documents)",
                    self.lengths)
        self.figure("repetition.png", "Score against repetition: repeated text inflates the score "
                                      "(exclude it with `attninf select --max-repetition`)", self.repetition)
        if any(ds.has_token_stats for ds in self.domains):
            self.figure("token_share.png", "Share of each document's loss rise carried by its top 1% of tokens: "
                                           f"beyond {ONE_BLOCK:.0%} (dashed) the score comes from a few tokens, "
                                           "often one copied block", self.token_share)
        return self.images
