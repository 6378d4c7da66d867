"""The layer x head heat map of a heads.json: retrieval scores, the selected
heads, and what the stability check found unstable."""
from __future__ import annotations

from pathlib import Path


def plot_heads(result: dict, path: str | Path) -> None:
    """Layer x head heatmap of retrieval scores, selected heads outlined: red
    solid; red dashed when the bootstrap selects them in fewer than half of
    the resamples; orange, the heads not selected but selected in at least
    a fifth of them (heads.json "stability"; no marks without it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    scores = result["scores"]
    L, H = len(scores), len(scores[0])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * H + 2), max(4.0, 0.22 * L + 1.5)))
    im = ax.imshow(scores, aspect="auto", cmap="viridis", origin="lower", interpolation="nearest")
    st = result.get("stability")
    shaky = {tuple(x) for x in st["unstable_selected"]["heads"]} if st else set()
    for layer, head in result["heads"]:
        ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.6,
                               linestyle="--" if (layer, head) in shaky else "-"))
    for layer, head in (st["near_misses"]["heads"] if st else []):
        ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="orange", linewidth=1.4))
    ax.set_xlabel("query head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(H))
    width = fig.get_size_inches()[0]
    ax.set_title(_title(result, chars=int(width * 11)), fontsize=9)
    fig.colorbar(im, ax=ax, label="copy rate")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _title(result: dict, chars: int) -> str:
    """The heat map's title, wrapped to the figure: a model given by path is
    named by its file or folder (the full path is in heads.json)."""
    import textwrap

    name = str(result["model"]["name"])
    if "/" in name and Path(name).expanduser().exists():
        name = Path(name).name
    lines = textwrap.wrap(f"retrieval score per head: {name}", width=chars, break_on_hyphens=False)
    legend = f"red: top {result['top_frac']:.0%} ({len(result['heads'])} heads)"
    st = result.get("stability")
    if st:
        legend += (f"; dashed: selected in < {st['unstable_selected']['below']:.0%} of {st['bootstrap']} "
                   f"bootstrap resamples; orange: others selected in >= {st['near_misses']['at_least']:.0%}")
    return "\n".join(lines + textwrap.wrap(legend, width=chars, break_on_hyphens=False))
