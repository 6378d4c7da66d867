"""The token streams of an `attninf train` run: Parquet shards of a mixture
read in a fixed order, tokenized, joined with EOS and cut into sequences of
seq_len + 1 tokens, with a position every checkpoint saves; and, for a
phased mixture (`attninf mix --phases stable,decay`), which stream each step
reads.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from .artifacts import Mixture
from .errors import AttninfError
from .schedules import DECAYING

if TYPE_CHECKING:
    from .train import TrainConfig


class PackedStream:
    """Token sequences of seq_len + 1 from Parquet shards, in a fixed order,
    with a position that can be saved and restored exactly."""

    def __init__(self, files: list[Path], tokenizer, seq_len: int, text_column: str = "text", state=None):
        self.files, self.tok, self.n, self.col = files, tokenizer, seq_len + 1, text_column
        self.eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
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
                self.buffer.extend(self.tok(text, add_special_tokens=False)["input_ids"] + [self.eos])
        seq, self.buffer = self.buffer[:self.n], self.buffer[self.n:]
        return seq


def mixture_files(data: str | Path) -> list[Path]:
    """The shards a complete `attninf mix` wrote, as its manifest lists them.
    A directory without the manifest (written last) is a mixture that did not
    finish, or not a mixture: refused, never trained on."""
    return Mixture.read(data).shards()


def mixture_streams(data: str | Path) -> dict[str, list[Path]]:
    """{stream: its shards}: {"main": ...} for a mixture, {"stable": ...,
    "decay": ...} for a phased one (`attninf mix --phases stable,decay`)."""
    mix = Mixture.read(data)
    phases = mix.phases()
    if phases is None:
        return {"main": mix.shards()}
    return {name: m.shards() for name, m in phases.items()}


class Streams:
    """The token streams of a run and which one each step reads: the decay
    stream inside the schedule's decay phases, the stable one elsewhere (or
    the one stream of a plain mixture). Each keeps its own position."""

    def __init__(self, cfg: "TrainConfig", files: dict[str, list[Path]], tokenizer, state: dict | None = None):
        if set(files) != {"main"} and cfg.schedule not in DECAYING:
            raise AttninfError(f"{cfg.data} is a phased mixture (stable, decay): it needs a schedule with a "
                               f"decay phase ({', '.join(DECAYING)}), not {cfg.schedule}")
        if state is not None and "file" in state:  # a checkpoint of a single-stream run
            state = {"main": state}
        state = state or {}
        self.cfg = cfg
        self.streams = {name: PackedStream(f, tokenizer, cfg.seq_len, cfg.text_column, state.get(name))
                        for name, f in files.items()}

    def name_at(self, step: int) -> str:
        """The stream step (0-based) reads."""
        if "main" in self.streams:
            return "main"
        return "decay" if self.cfg.in_decay(step) else "stable"

    def state(self) -> dict:
        return {name: st.state() for name, st in self.streams.items()}


def stream_segments(log_path: Path) -> list[dict]:
    """[{"stream", "first_step", "last_step"}] of consecutive steps of log.csv
    that read the same stream."""
    with open(log_path, newline="") as f:
        rows = [(int(r["step"]), r.get("stream") or "main") for r in csv.DictReader(f)]
    out: list[dict] = []
    for step, name in rows:
        if out and out[-1]["stream"] == name and out[-1]["last_step"] == step - 1:
            out[-1]["last_step"] = step
        else:
            out.append({"stream": name, "first_step": step, "last_step": step})
    return out
