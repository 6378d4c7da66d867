"""What score needs to know about a corpus before any work: its files,
their rows, the text column checked, and where domains come from."""
from __future__ import annotations

from attninf.corpus import Corpus, corpus_of
from attninf.errors import AttninfError, one_line

DOMAIN_MODES = ("auto", "column", "dir", "none")


def inspect(corpus, files: list[str], text_column: str,
            domain_column: str | None = None) -> tuple[dict[str, int], dict[str, str], set[str]]:
    """Rows per readable file, {file: error} for unreadable ones, and the
    files that have the domain column. A text column missing from a readable
    file, or holding something else than text, is an error before any work
    starts; so is a file whose content is not the format its name says."""
    corpus: Corpus = corpus_of(corpus)
    rows, bad, with_domain = {}, {}, set()
    for rel in files:
        f = corpus.file(rel)
        f.check_content()
        try:
            names = f.names()
            rows[rel] = f.rows
        except AttninfError as e:
            bad[rel] = str(e)
            continue
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not fatal
            bad[rel] = one_line(e)
            continue
        what = "column" if f.kind == "parquet" else "key"
        if f.kind != "parquet" and not rows[rel]:
            continue  # an empty JSON Lines file has no keys to check
        if text_column not in names:
            raise AttninfError(f"{rel} has no {what} {text_column!r}; its {what}s are: "
                               f"{', '.join(names) or '(none: no rows)'} (choose one with --text-column)")
        kind = f.column_kind(text_column)
        if kind:
            raise AttninfError(f"{rel}: {what} {text_column!r} holds {kind}, not text (choose one with --text-column)")
        if domain_column and domain_column in names:
            with_domain.add(rel)
    return rows, bad, with_domain


def resolve_domains(mode: str, files: list[str], with_column: set[str], column: str) -> tuple[str, str]:
    """(column | dir | none, why): where each document's domain comes from.
    The paper ranks only within a domain, so a corpus that has one in a
    column or in its folder layout must never be ranked globally by accident."""
    if mode not in DOMAIN_MODES:
        raise AttninfError(f"--domain-from must be one of {', '.join(DOMAIN_MODES)}, got {mode!r}")
    tops = {f.split("/", 1)[0] for f in files if "/" in f}
    at_root = [f for f in files if "/" not in f]
    if mode == "auto":
        if with_column:
            mode = "column"
        elif len(tops) > 1 and not at_root:
            return "dir", f"no {column!r} column; one domain per top-level folder ({', '.join(sorted(tops))})"
        else:
            return "none", (f"no {column!r} column and " + ("a single top-level folder" if not at_root else
                            "files at the corpus root") + ": one global ranking")
    if mode == "column":
        lacking = [f for f in files if f not in with_column]
        if lacking:
            raise AttninfError(f"{lacking[0]} has no {column!r} column but {sorted(with_column)[0] if with_column else 'no file'} "
                               f"has: every file needs it ({len(lacking)} lack it), or use --domain-from dir")
        return "column", f"the {column!r} column"
    if mode == "dir":
        if at_root:
            raise AttninfError(f"--domain-from dir: {at_root[0]} sits at the corpus root, not in a domain folder")
        return "dir", f"the top-level folder ({', '.join(sorted(tops))})"
    return "none", "--domain-from none: one global ranking"


