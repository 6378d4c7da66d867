"""What score needs to know about a corpus before any work: its Parquet
files, their rows, the text column checked, and where domains come from."""
from __future__ import annotations

from pathlib import Path

from attninf.storage import parquet_files
from attninf.errors import AttninfError, one_line

DOMAIN_MODES = ("auto", "column", "dir", "none")


def list_files(corpus: str | Path) -> list[str]:
    root = Path(corpus)
    if not root.is_dir():
        raise AttninfError(f"corpus directory not found: {root}")
    files = parquet_files(root)
    if not files:
        raise AttninfError(f"no .parquet files under {root}")
    return files


def inspect(corpus: str | Path, files: list[str], text_column: str,
            domain_column: str | None = None) -> tuple[dict[str, int], dict[str, str], set[str]]:
    """Rows per readable file, {file: error} for unreadable ones, and the
    files that have the domain column. A text column missing from a readable
    file is an error before any work starts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, bad, with_domain = {}, {}, set()
    for rel in files:
        try:
            pf = pq.ParquetFile(Path(corpus) / rel)
            schema = pf.schema_arrow
            rows[rel] = pf.metadata.num_rows
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not fatal
            bad[rel] = one_line(e)
            continue
        if text_column not in schema.names:
            raise AttninfError(f"{rel} has no column {text_column!r}; its columns are: "
                               f"{', '.join(schema.names)} (choose one with --text-column)")
        t = schema.field(text_column).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)):
            raise AttninfError(f"{rel}: column {text_column!r} holds {t}, not text (choose one with --text-column)")
        if domain_column and domain_column in schema.names:
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


