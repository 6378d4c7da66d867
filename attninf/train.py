"""`attninf train`: pretrain a small Llama-style model on a mixed dataset,
streaming, with a WSD-family schedule, resumable after a kill.

Data: the Parquet shards of `attninf mix` (a `text` column), read in file
order, tokenized, joined with EOS and cut into sequences of seq_len + 1
tokens. The reader's position (file, row, leftover tokens) is part of every
checkpoint, so a resumed run sees exactly the sequences it would have seen.

Checkpoints (attninf/checkpoints.py): out/checkpoints/step-N/ in Hugging
Face format plus trainer_state.pt (optimizer, scheduler, data position,
RNG), written atomically. With WSD-S, the checkpoint at the end of each
decay is kept.
"""
from __future__ import annotations

import csv
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .artifacts import Mixture
from .checkpoints import latest_checkpoint, load_state, restore_rng, save_checkpoint
from .storage import parquet_files, write_json
from .devices import TRAIN_DTYPES, autocast_dtype, resolve_device
from .errors import AttninfError
from .model import load_tokenizer, tokenizer_key
from .schedules import DECAYING, DECAYS, SCHEDULES, Schedule
from .streams import PackedStream, PhaseStreams, phase_segments


SCHEDULE_HELP = (
    "Learning-rate schedule. wsd: warmup (--warmup-steps), stable, decay over --decay-steps/--decay-frac "
    "of shape --decay to --min-lr-ratio. wsd-s: a decay before each of --budgets (--decay-frac of it), back "
    "to the stable LR after. power: lr = min(--lr, batch x --power-a x tokens^--power-b) (batch: sequences "
    "per step), warmup, then an exponential decay (--decay linear: linear) over --decay-steps/--decay-frac to "
    "--min-lr-ratio of its start (0: 0.01). cosine: to --min-lr-ratio. cyclic-cosine: 4 cycles. constant.")


@dataclass
class TrainSettings:
    """How to train, apart from on what and where: the settings `attninf
    train` and every proxy run of `attninf compare` share."""
    model_config: str = field(default="configs/model-tiny.yaml", metadata={
        "help": "YAML with the Llama sizes (hidden_size, layers, heads, ...)."})
    tokenizer: str = field(default="smollm2-135m", metadata={"help": "Model name or path of the tokenizer."})
    seq_len: int = field(default=256, metadata={"help": "Tokens per training sequence."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per micro-batch."})
    grad_accum: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    total_steps: int = field(default=200, metadata={"help": "Optimizer steps of the whole run."})
    lr: float = field(default=3e-3, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=20, metadata={"help": "Linear warmup steps."})
    schedule: str = field(default="wsd", metadata={"choices": SCHEDULES, "help": SCHEDULE_HELP})
    decay: str = field(default="1-sqrt", metadata={"choices": DECAYS, "help": "Shape of the WSD decay phase."})
    decay_steps: int | None = field(default=None, metadata={"help": "WSD decay length in steps.",
                                                            "default_help": "10% of the total"})
    decay_frac: float | None = field(default=None, metadata={"help": "WSD decay as a fraction of the total."})
    min_lr_ratio: float = field(default=0.0, metadata={"help": "Learning rate at the end, as a fraction of --lr."})
    half_life: float | None = field(default=None, metadata={"help": "Exponential decay half-life in steps."})
    budgets: list[int] | None = field(default=None, metadata={"help": "WSD-S budgets in steps, comma-separated."})
    power_a: float = field(default=4.6, metadata={"help": "Power schedule: the coefficient a."})
    power_b: float = field(default=-0.51, metadata={"help": "Power schedule: the exponent b."})
    eval_sequences: int = field(default=64, metadata={"help": "Held-out sequences evaluated."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    dtype: str = field(default="auto", metadata={
        "choices": TRAIN_DTYPES,
        "help": "auto: bf16 autocast on a GPU and where the CPU runs it fast; the weights stay float32."})
    device: str = field(default="auto", metadata={"help": "auto (a GPU when there is one), cpu, cuda, cuda:N."})
    max_steps_this_run: int | None = field(default=None, metadata={
        "cli": False, "help": "Stop after this many steps (tests of resuming)."})

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    def reads(self) -> dict:
        """What a run reads besides its data, by content: the model config's
        bytes, the tokenizer's files, and the document separators the stream
        packs with (attninf.docstart's rule: a new rule is new tokens)."""
        from . import identity
        from .docstart import document_separators

        mc = Path(self.model_config) if self.model_config else None
        return {"model_config": identity.file_key(mc) if mc and mc.is_file() else None,
                "tokenizer": tokenizer_key(self.tokenizer),
                "separators": document_separators(load_tokenizer(self.tokenizer)).to_json()}

    def lr_schedule(self) -> Schedule:
        """The schedule these settings describe (power: its batch counts sequences per optimizer step)."""
        return Schedule(name=self.schedule, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                        decay=self.decay, decay_steps=self.decay_steps, decay_frac=self.decay_frac,
                        min_lr_ratio=self.min_lr_ratio, half_life=self.half_life,
                        budgets=tuple(self.budgets) if self.budgets else None, lr_max=self.lr,
                        power_a=self.power_a, power_b=self.power_b, batch_size=self.batch_size * self.grad_accum,
                        tokens_per_step=self.tokens_per_step)


@dataclass
class TrainConfig(TrainSettings):
    """A whole `attninf train` run: the settings, the data, where it writes."""
    data: str = field(default="mixed", metadata={"help": "Mixed dataset (`attninf mix` output)."})
    out: str = field(default="run", metadata={"help": "Output directory (checkpoints, log.csv, loss.png)."})
    save_every: int = field(default=50, metadata={"help": "Checkpoint every this many steps."})
    keep_last: int = field(default=2, metadata={"help": "Checkpoints kept (WSD-S budget ends are always kept)."})
    eval_data: str | None = field(default=None, metadata={
        "help": "Held-out Parquet (text, domain): loss per domain at the end."})
    seed: int = field(default=0, metadata={"help": "Seed of the model's initialisation and the data order."})

    def inputs_key(self) -> str:
        """What the run reads, by content (attninf.identity): the mixture's
        manifest and TrainSettings.reads(). The paths are in digest(); this
        catches new contents at the same paths."""
        from . import identity
        from .artifacts import MIX_MANIFEST

        return identity.digest({"data": identity.output_key(Path(self.data) / MIX_MANIFEST), **self.reads()})

    def digest(self) -> str:
        # where it runs is not what it computes: a run may resume on another device
        from . import identity

        return identity.digest(identity.settings_of(self, ("max_steps_this_run", "out", "device")))


def build_model(model_config: str, vocab_size: int, seq_len: int, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .config import read_yaml

    sizes = read_yaml(model_config)
    sizes.setdefault("max_position_embeddings", max(seq_len, 512))
    torch.manual_seed(seed)
    try:
        cfg = LlamaConfig(vocab_size=vocab_size, **sizes)
    except TypeError as e:
        raise AttninfError(f"{model_config}: {e}") from e
    return LlamaForCausalLM(cfg)


def evaluate(model, tokenizer, data: str, seq_len: int, n_seq: int, text_column: str = "text") -> dict:
    """Mean token loss per domain on held-out Parquet (text[, domain])."""
    import pyarrow.parquet as pq
    import torch

    files = [Path(data) / rel for rel in parquet_files(data)]
    if not files:
        raise AttninfError(f"no Parquet files in --eval-data {data}")
    per: dict[str, list[float]] = {}
    budget, used = n_seq * seq_len, 0  # predicted tokens, over all files together

    def documents():
        for f in files:
            t = pq.read_table(f)
            doms = t["domain"].to_pylist() if "domain" in t.column_names else ["all"] * len(t)
            yield from zip(t[text_column].to_pylist(), doms)

    model.eval()
    with torch.no_grad():
        for text, dom in documents():
            if used >= budget:
                break
            ids = tokenizer(text or "", add_special_tokens=False)["input_ids"][: seq_len + 1]
            if len(ids) < 2:
                continue
            x = torch.tensor(ids, device=next(model.parameters()).device).view(1, -1)
            loss = model(x, labels=x).loss.item()
            s = per.setdefault(str(dom), [0.0, 0])
            s[0] += loss * (len(ids) - 1)
            s[1] += len(ids) - 1
            used += len(ids) - 1
    model.train()
    return {d: v[0] / v[1] for d, v in per.items() if v[1]}


def train(cfg: TrainConfig, progress: bool = True, say: Callable[[str], None] = print) -> dict:
    """Train (or resume) the run in cfg.out up to cfg.total_steps, or
    cfg.max_steps_this_run more steps; returns {"step", "tokens_per_s"[, "eval_loss"]}."""
    import torch
    from tqdm.auto import tqdm

    files = Mixture.read(cfg.data).phase_shards()
    schedule = cfg.lr_schedule()
    if set(files) != {"main"} and cfg.schedule not in DECAYING:
        raise AttninfError(f"{cfg.data} is a phased mixture (stable, decay): it needs a schedule with a "
                           f"decay phase ({', '.join(DECAYING)}), not {cfg.schedule}")
    tok = load_tokenizer(cfg.tokenizer)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(resolve_device(cfg.device))
    inputs = cfg.inputs_key()  # once: every checkpoint records it
    model, opt, sched, step, position = _start_or_resume(cfg, out, tok, device, say, inputs)
    streams = PhaseStreams(files, tok, cfg.seq_len, cfg.text_column, schedule.in_decay, position)
    amp = autocast_dtype(cfg.dtype, device.type)
    keep_steps = schedule.kept_steps()
    model.train()

    log_path = out / "log.csv"
    logf, writer = _open_log(log_path, step)
    tokens_per_step = cfg.tokens_per_step
    bar = tqdm(total=cfg.total_steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    t0, done_now = time.perf_counter(), 0
    end = cfg.total_steps if cfg.max_steps_this_run is None else min(cfg.total_steps, step + cfg.max_steps_this_run)
    try:
        while step < end:
            lr = opt.param_groups[0]["lr"]  # the LR this step trains with
            name = streams.phase_at(step)
            loss = _train_step(model, opt, sched, streams.streams[name], cfg, device, amp)
            step += 1
            done_now += 1
            tps = done_now * tokens_per_step / (time.perf_counter() - t0)
            writer.writerow([step, f"{lr:.8g}", f"{loss:.6f}", step * tokens_per_step, f"{tps:.1f}", name])
            logf.flush()
            bar.update(1)
            bar.set_postfix_str(f"loss {loss:.3f} lr {lr:.2e} {tps:,.0f} tok/s" + ("" if name == "main" else f" {name}"))
            # a planned stop (--max-steps-this-run) saves too, or the next call would redo these steps
            if step % cfg.save_every == 0 or step == end or step in keep_steps:
                state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "phases": streams.state(),
                         "digest": cfg.digest(), "inputs": inputs}
                save_checkpoint(out, step, model, state, keep=step in keep_steps, keep_last=cfg.keep_last)
    finally:
        bar.close()
        logf.close()

    result = {"step": step, "tokens_per_s": round(done_now * tokens_per_step / max(time.perf_counter() - t0, 1e-9), 1)}
    if step >= cfg.total_steps:
        if cfg.eval_data:
            result["eval_loss"] = evaluate(model, tok, cfg.eval_data, cfg.seq_len, cfg.eval_sequences, cfg.text_column)
        plot_log(log_path, out / "loss.png")
    write_json({"config": dataclasses.asdict(cfg), "digest": cfg.digest(), "device": str(device),
                "autocast": str(amp).replace("torch.", "") if amp else None,
                "data": {name: [str(f) for f in fs] for name, fs in files.items()},
                "phases": phase_segments(log_path), **result}, out / "run.json")
    return result


def _start_or_resume(cfg: TrainConfig, out: Path, tok, device, say: Callable[[str], None], inputs: str):
    """(model, optimizer, scheduler, step, data position): fresh at step 0, or
    restored exactly (weights, optimizer, scheduler, RNG, data position) from
    the newest checkpoint in out, which must be of a run with the same settings."""
    latest = latest_checkpoint(out)
    if latest is None:
        model = build_model(cfg.model_config, len(tok), cfg.seq_len, cfg.seed).to(device)
        opt, sched = _optimizer(model, cfg)
        return model, opt, sched, 0, None

    from transformers import LlamaForCausalLM

    st = load_state(latest, out, cfg.digest(), inputs)
    model = LlamaForCausalLM.from_pretrained(latest).to(device)
    opt, sched = _optimizer(model, cfg)
    opt.load_state_dict(st["optimizer"])  # moves the state to the parameters' device
    sched.load_state_dict(st["scheduler"])
    restore_rng(st, device)
    say(f"resuming from {latest.name}")
    return model, opt, sched, st["step"], st.get("phases", st.get("stream"))  # "stream": older checkpoints


def _optimizer(model, cfg: TrainConfig):
    """AdamW (no weight decay on norms and biases) and its LR schedule."""
    import torch

    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.dim() < 2 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    # built before a resumed run loads the optimizer's state: building a
    # LambdaLR resets the LR, loading the state restores it
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cfg.lr_schedule().fn())
    return opt, sched


def _open_log(log_path: Path, step: int):
    """log.csv open for appending, with only the rows of steps <= step: a
    fresh run starts it over, and the rows a killed run logged after its last
    checkpoint are dropped (those steps are redone). Returns (file, csv writer)."""
    if step == 0 and log_path.exists():
        log_path.unlink()
    elif log_path.exists():
        with open(log_path, newline="") as f:
            rows = list(csv.reader(f))
        kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step]
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerows(kept)
    new_log = not log_path.exists()
    logf = open(log_path, "a", newline="")
    writer = csv.writer(logf)
    if new_log:
        writer.writerow(["step", "lr", "loss", "tokens", "tokens_per_s", "phase"])
    return logf, writer


def _train_step(model, opt, sched, stream: PackedStream, cfg: TrainConfig, device, amp) -> float:
    """One optimizer step over grad_accum micro-batches; returns the mean loss."""
    import torch

    total = 0.0
    for _ in range(cfg.grad_accum):
        batch = torch.tensor([stream.next() for _ in range(cfg.batch_size)]).to(device)  # (batch, seq_len + 1)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = _lm_loss(model, batch)
        (loss / cfg.grad_accum).backward()
        total += loss.item() / cfg.grad_accum
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sched.step()
    return total


def _lm_loss(model, batch):
    """Mean next-token loss of (B, seq_len + 1) token sequences."""
    import torch.nn.functional as F

    logits = model(batch[:, :-1]).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def plot_log(log_path: Path, png: Path) -> None:
    """Loss and the learning rate (second axis) per step; the steps that read
    the decay phase of a phased mixture shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path, newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(steps, [float(r["loss"]) for r in rows], label="loss", color="#4c72b0")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(steps, [float(r["lr"]) for r in rows], label="learning rate", color="#dd8452")
    ax2.set_ylabel("learning rate")
    for k, seg in enumerate(s for s in phase_segments(log_path) if s["phase"] == "decay"):
        ax.axvspan(seg["first_step"] - 0.5, seg["last_step"] + 0.5, color="#55a868", alpha=0.15,
                   label=None if k else "decay phase")
    handles = [h for a in (ax, ax2) for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
