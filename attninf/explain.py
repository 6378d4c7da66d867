"""Why a document scores what it does: the loss of every token, plain and
with the retrieval heads masked, aligned to the text.

A document's score is (L_masked - L_base) / L_base with L the mean NLL over
its predicted tokens, so it is exactly sum(delta) / sum(nll_base) over the
tokens, delta = nll_masked - nll_base. A token with a large delta is one the
model predicts by retrieving it from earlier in the document (a variable
used forty lines after its definition, a name that comes back, or a repeated
block that only looks like reasoning).
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


def token_summary(nll_base: np.ndarray, nll_masked: np.ndarray, frac: float = 0.01) -> tuple[float, float, float]:
    """Where a document's score sits among its tokens (NaN entries: tokens
    nothing predicts, skipped):

    * top1_share: the share of its loss rises (positive nll_masked - nll_base)
      carried by its top `frac` of predicted tokens (at least one). Near 1 the
      score comes from a few tokens, e.g. one copied block; NaN with no rise;
    * the score, (sum masked - sum base) / sum base, of the first and of the
      second half of its predicted tokens (NaN for an empty half)."""
    ok = ~(np.isnan(nll_base) | np.isnan(nll_masked))
    base, masked = nll_base[ok], nll_masked[ok]
    delta = masked - base
    rises = np.sort(delta[delta > 0])[::-1]
    share = float(rises[:max(1, int(np.ceil(frac * len(delta))))].sum() / rises.sum()) if len(rises) else np.nan
    half = len(delta) // 2
    out = [share]
    for b, m in ((base[:half], masked[:half]), (base[half:], masked[half:])):
        sb = b.sum()
        out.append(float((m.sum() - sb) / sb) if len(b) and sb > 0 else np.nan)
    return out[0], out[1], out[2]


@dataclass
class TokenInfluence:
    text: str
    status: str
    score: float
    loss_base: float
    loss_masked: float
    n_tokens: int
    pieces: list[str]  # the document's tokens as its own characters (prefix excluded)
    offsets: list[tuple[int, int]]  # each token's [start, end) in text
    nll_base: np.ndarray  # per token, NaN where nothing predicts it (the first token)
    nll_masked: np.ndarray
    stored_score: float | None = field(default=None)  # the score a scores file holds, when explained from one

    @property
    def delta(self) -> np.ndarray:
        return self.nll_masked - self.nll_base

    def top_share(self, frac: float = 0.01) -> float:
        """Share of the document's loss rises (the positive deltas) carried by
        its top `frac` of predicted tokens (at least one): near 1, the score
        comes from a few tokens, e.g. one copied block."""
        return token_summary(self.nll_base, self.nll_masked, frac)[0]

    def halves(self) -> tuple[float, float]:
        """The score of the first and of the second half of the predicted tokens."""
        return token_summary(self.nll_base, self.nll_masked)[1:]

    def top_tokens(self, k: int = 10) -> list[tuple[int, float]]:
        d = np.where(np.isnan(self.delta), -np.inf, self.delta)
        order = np.argsort(-d, kind="stable")[:k]
        return [(int(i), float(self.delta[i])) for i in order if np.isfinite(d[i])]


def _offsets(tokenizer, text: str, ids: list[int]) -> tuple[list[str], list[tuple[int, int]]]:
    """Each token's characters in text. Fast tokenizers give offsets; a slow
    one falls back to decoding token by token and finding the pieces in order."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if list(enc["input_ids"]) == list(ids):
            offs = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
            return [text[a:b] for a, b in offs], offs
    except (NotImplementedError, ValueError, TypeError):
        pass
    pieces, offs, at = [], [], 0
    for t in ids:
        piece = tokenizer.decode([t])
        start = text.find(piece, at) if piece else -1
        start = at if start < 0 else start
        offs.append((start, min(len(text), start + len(piece))))
        pieces.append(text[offs[-1][0]:offs[-1][1]])
        at = offs[-1][1]
    return pieces, offs


def explain_texts(scorer, texts: Sequence[str | None]) -> list[TokenInfluence]:
    """Per text: its score and every token's NLL, plain and masked, with the
    same windows and forward as Scorer.score_texts."""
    res, ids, per = scorer.token_nll(texts)
    P = len(scorer.doc_prefix.ids)
    out = []
    for i, text in enumerate(texts):
        doc_ids = ids[i][P:] if ids[i] else []
        pieces, offs = _offsets(scorer.tok, text, doc_ids) if doc_ids else ([], [])
        nll = per[i][:, P:] if ids[i] else np.zeros((2, 0))
        out.append(TokenInfluence(text=text if isinstance(text, str) else "", status=str(res["status"][i]),
                                  score=float(res["score"][i]), loss_base=float(res["loss_base"][i]),
                                  loss_masked=float(res["loss_masked"][i]), n_tokens=int(res["n_tokens"][i]),
                                  pieces=pieces, offsets=offs, nll_base=nll[0], nll_masked=nll[1]))
    return out


def segments(ti: TokenInfluence) -> list[tuple[str, int | None]]:
    """The text cut into (characters, token index or None for text between
    tokens): concatenated, exactly the document's text."""
    out, cursor = [], 0
    for j, (a, b) in enumerate(ti.offsets):
        a = max(a, cursor)
        if a > cursor:
            out.append((ti.text[cursor:a], None))
        if b > a:
            out.append((ti.text[a:b], j))
            cursor = b
    if cursor < len(ti.text):
        out.append((ti.text[cursor:], None))
    return out


def _scale(ti: TokenInfluence) -> float:
    d = ti.delta[~np.isnan(ti.delta)]
    return float(np.abs(d).max()) if len(d) and np.abs(d).max() > 0 else 1.0


def summary_lines(ti: TokenInfluence) -> list[str]:
    if ti.status != "ok":
        why = {"empty": "the document is empty (or only whitespace): nothing to score",
               "too_short": "the document is a single token: nothing is predicted from context"}
        return [f"score: - ({why.get(ti.status, ti.status)})"]
    first, second = ti.halves()
    lines = [f"score {ti.score:.5f} = (L_masked {ti.loss_masked:.4f} - L_base {ti.loss_base:.4f}) / L_base, "
             f"over {ti.n_tokens:,} predicted token{'s' if ti.n_tokens != 1 else ''}"]
    if ti.stored_score is not None:
        lines.append(f"the scores file holds {ti.stored_score:.5f}")
    lines.append(f"top 1% of tokens carry {100 * ti.top_share():.0f}% of the loss rise; "
                 f"first half scores {first:.4f}, second half {second:.4f}")
    top = ", ".join(f"{ti.pieces[j]!r} {d:+.2f}" for j, d in ti.top_tokens(8))
    lines.append(f"largest rises (nats): {top}")
    return lines


def render_terminal(ti: TokenInfluence, color: bool, max_chars: int = 4000) -> str:
    """The text with each token coloured by its loss rise (red: the masked
    heads helped predict it; blue: masking helped), or, without colour, the
    top 5% of tokens by rise marked [[like this]]."""
    import click

    scale = _scale(ti)
    d = ti.delta[~np.isnan(ti.delta)]
    mark = np.quantile(d, 0.95) if len(d) else math.inf
    out, shown = [], 0
    for piece, j in segments(ti):
        if shown >= max_chars:
            out.append(f"\n... ({len(ti.text) - shown:,} more characters; --html shows the whole document)")
            break
        piece = piece[: max_chars - shown]
        shown += len(piece)
        v = None if j is None or math.isnan(ti.delta[j]) else ti.delta[j]
        if v is None or not piece.strip():
            out.append(piece)
        elif color:
            level = min(4, int(abs(v) / scale * 5))
            reds, blues = (224, 217, 210, 203, 196), (195, 153, 117, 81, 45)
            out.append(click.style(piece, bg=(reds if v > 0 else blues)[level], fg="black") if level else piece)
        else:
            out.append(f"[[{piece}]]" if v >= mark and v > 0 else piece)
    return "".join(out)


def heat_spans(ti: TokenInfluence) -> str:
    """The text as HTML, each token's background by its loss rise, its numbers on hover."""
    e = html.escape
    scale = _scale(ti)
    spans = []
    for piece, j in segments(ti):
        if j is None or math.isnan(ti.delta[j]):
            spans.append(e(piece))
            continue
        v = ti.delta[j]
        a = min(1.0, abs(v) / scale)
        rgb = "220,40,40" if v > 0 else "40,90,220"
        spans.append(f"<span style='background:rgba({rgb},{a:.2f})' title='nll {ti.nll_base[j]:.3f} -> "
                     f"{ti.nll_masked[j]:.3f} (delta {v:+.3f})'>{e(piece)}</span>")
    return "".join(spans)


HEAT_KEY = ("<p class=key>Each token's background: <span style='background:rgba(220,40,40,.8)'>loss rises</span> "
            "when the retrieval heads are masked (they retrieve it from earlier in the document), "
            "<span style='background:rgba(40,90,220,.6)'>loss falls</span>; hover a token for its numbers.</p>")


def render_html(ti: TokenInfluence, title: str = "attninf explain") -> str:
    """A self-contained page: the summary and the coloured text."""
    e = html.escape
    summary = "".join(f"<p>{e(line)}</p>" for line in summary_lines(ti))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
pre {{ white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 13px; line-height: 1.5;
       border: 1px solid #ddd; padding: 1em; }}
.key span {{ padding: 0 .4em; }}
</style></head><body>
<h1>{e(title)}</h1>{summary}
{HEAT_KEY}
<pre>{heat_spans(ti)}</pre>
</body></html>
"""
