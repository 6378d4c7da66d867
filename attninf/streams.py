"""The token streams of an `attninf train` run: Parquet shards of a mixture
read in a fixed order, tokenized, each document wrapped in the document
separators of attninf.docstart (SmolLM2: <|endoftext|> after it) and cut into sequences of
seq_len + 1 tokens, with a position every checkpoint saves; and, for a
phased mixture (`attninf mix --phases stable,decay`), which phase each step
reads. Knows nothing of the trainer: it is given the files, the tokenizer
and a step -> in-decay function.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

from .errors import AttninfError
from .docstart import document_separators


class PackedStream:
    """Token sequences of seq_len + 1 from Parquet shards, in a fixed order,
    with a position that can be saved and restored exactly."""

    def __init__(self, files: list[Path], tokenizer, seq_len: int, text_column: str = "text", state=None):
        self.files, self.tok, self.n, self.col = files, tokenizer, seq_len + 1, text_column
        self.separators = document_separators(tokenizer)  # the document rule, as export writes it
        st = state or {"file": 0, "row": 0, "buffer": [], "epoch": 0}
        self.file, self.row, self.buffer, self.epoch = st["file"], st["row"], list(st["buffer"]), st["epoch"]
        self._rows: list | None = None

    def state(self) -> dict:
        return {"file": self.file, "row": self.row, "buffer": list(self.buffer), "epoch": self.epoch}

    def _load(self):
        import pyarrow.parquet as pq

        self._rows = pq.read_table(self.files[self.file], columns=[self.col])[self.col].to_pylist()

    def next(self) -> list[int]:
        barren = 0  # files read in a row that gave no token: a whole pass of them means no text at all
        while len(self.buffer) < self.n:
            if self._rows is None:
                self._load()
            if self.row >= len(self._rows):
                self.file, self.row, self._rows = self.file + 1, 0, None
                if self.file >= len(self.files):
                    self.file, self.epoch = 0, self.epoch + 1
                barren += 1
                if barren > len(self.files):
                    raise AttninfError(f"no text in column {self.col!r} of any of the {len(self.files)} "
                                       "training shard(s): every row is null or empty")
                continue
            text = self._rows[self.row]
            self.row += 1
            if text:
                barren = 0
                self.buffer.extend(self.separators.wrap(self.tok(text, add_special_tokens=False)["input_ids"]))
        seq, self.buffer = self.buffer[:self.n], self.buffer[self.n:]
        return seq


class PhaseStreams:
    """One stream per phase of the mixture and which phase each step reads:
    decay inside the schedule's decay phases, stable elsewhere (or "main",
    the one phase of a plain mixture). Each stream keeps its own position."""

    def __init__(self, files: dict[str, list[Path]], tokenizer, seq_len: int, text_column: str,
                 in_decay: Callable[[int], bool], state: dict | None = None):
        if state is not None and "file" in state:  # a checkpoint of a single-phase run
            state = {"main": state}
        state = state or {}
        self.in_decay = in_decay
        self.streams = {name: PackedStream(f, tokenizer, seq_len, text_column, state.get(name))
                        for name, f in files.items()}

    def phase_at(self, step: int) -> str:
        """The phase step (0-based) reads."""
        if "main" in self.streams:
            return "main"
        return "decay" if self.in_decay(step) else "stable"

    def state(self) -> dict:
        return {name: st.state() for name, st in self.streams.items()}


def phase_segments(log_path: Path) -> list[dict]:
    """[{"phase", "first_step", "last_step"}] of consecutive steps of log.csv
    that read the same phase (logs written before the column was named
    phase call it stream)."""
    with open(log_path, newline="") as f:
        rows = [(int(r["step"]), r.get("phase") or r.get("stream") or "main") for r in csv.DictReader(f)]
    out: list[dict] = []
    for step, name in rows:
        if out and out[-1]["phase"] == name and out[-1]["last_step"] == step - 1:
            out[-1]["last_step"] = step
        else:
            out.append({"phase": name, "first_step": step, "last_step": step})
    return out
