"""`attninf explain`: a document's score, token by token."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..devices import DTYPE_HELP, DTYPES
from ..errors import AttninfError, user_errors


@click.command("explain")
@click.argument("text", required=False)
@click.option("--file", "text_file", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Read the document from this file (- for stdin).")
@click.option("--heads", type=click.Path(dir_okay=False), default=None,
              help="heads.json from detect-heads  [default: the one the --scores were made with]")
@click.option("--scores", type=click.Path(file_okay=False), default=None,
              help="A scores directory: explain the document --id of its corpus, with its settings.")
@click.option("--id", "doc_id", default=None, help="The document's id in --scores.")
@click.option("--corpus", default=None,
              help="Where the scored corpus is now  [default: where it was scored]")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the coloured document as an HTML page.")
@click.option("--max-chars", type=int, default=4000, show_default=True, help="Characters shown in the terminal.")
@click.option("--color/--no-color", default=None, help="Colour tokens  [default: when stdout is a terminal]")
@click.option("--model", "model_spec", default=None, help="Model  [default: the one heads.json names]")
@click.option("--max-tokens", type=int, default=None, help="Window length  [default: as score]")
@click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True, help=DTYPE_HELP)
@click.option("--device", default="auto", show_default=True)
@user_errors
def explain(text, text_file, heads, scores, doc_id, corpus, html_out, max_chars, color, model_spec, max_tokens,
            dtype, device) -> None:
    """Show why a document scores what it does: its score, and every token
    coloured by how much its loss rises when the retrieval heads are masked.

    \b
      attninf explain --heads heads.json "def f(x):\\n    return x + 1"
      attninf explain --heads heads.json --file doc.txt --html doc.html
      attninf explain --scores scores/ --id doc-42
    """
    from ..explain import explain_texts, render_html, render_terminal, summary_lines
    from ..scoring import load_scorer

    text, settings, stored = _document(text, text_file, scores, doc_id, corpus)
    heads = heads or settings.get("heads")
    if not heads:
        raise AttninfError("--heads heads.json is needed (or --scores, whose heads are used)")
    scorer = load_scorer(model_spec or settings.get("model"), heads, dtype=dtype, device=device,
                         max_tokens=max_tokens or settings.get("max_tokens"),
                         context_overlap=settings.get("context_overlap"), doc_prefix=settings.get("doc_prefix"),
                         truncate=bool(settings.get("truncate")),
                         head_fracs=(settings.get("head_fracs") or [])[:1])  # `score`'s set
    ti = explain_texts(scorer, [text])[0]
    ti.stored_score = stored
    for line in summary_lines(ti):
        click.echo(line)
    if ti.status == "ok":
        use_color = color if color is not None else (sys.stdout.isatty() and "NO_COLOR" not in os.environ)
        click.echo("")
        click.echo(render_terminal(ti, use_color, max_chars), color=use_color)
    if html_out:
        Path(html_out).write_text(render_html(ti, f"attninf explain: {doc_id or 'document'}"))
        click.echo(f"wrote {html_out}")


def _document(text, text_file, scores, doc_id, corpus) -> tuple[str, dict, float | None]:
    """(text, the scoring settings to use, the stored score) from exactly one source."""
    sources = [x is not None for x in (text, text_file, scores)]
    if sum(sources) != 1:
        raise AttninfError("give the document one way: TEXT, --file PATH, or --scores DIR --id ID")
    if text_file is not None:
        return click.open_file(text_file).read(), {}, None
    if scores is None:
        return text, {}, None
    from ..artifacts import Scores
    from ..corpus import corpus_text

    if doc_id is None:
        raise AttninfError("--scores needs --id ID: the document to explain")
    sc = Scores.read(scores)
    rel, row, rec = sc.find(doc_id)
    from ..corpus import corpus_of

    root = corpus_of(corpus) if corpus else sc.corpus
    if root is None or not root.has(rel):
        raise AttninfError(f"the corpus file of {rel} is not in {root}: pass --corpus where the corpus is now")
    return corpus_text(root, rel, row, sc.column("text")) or "", sc.config, rec.get("score")

