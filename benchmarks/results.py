"""What every benchmark script does with its table: print it and append it
to the results file (benchmarks/RESULTS.md by default)."""
from __future__ import annotations


def append_results(lines: list[str], path: str) -> None:
    """Print a results table and append it, after a blank line, to `path`."""
    text = "\n".join(lines).rstrip() + "\n"
    print(text)
    with open(path, "a") as f:
        f.write("\n" + text)
    print(f"appended to {path}")
