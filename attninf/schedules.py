"""Learning-rate schedules as pure functions of the step (or of tokens seen)
returning the multiplier of the peak LR, plus LambdaLR factories for PyTorch
and the Hugging Face Trainer (`optimizers=(opt, make_scheduler(opt, ...))`).

* WSD, Warmup-Stable-Decay (MiniCPM, arXiv 2404.06395): linear warmup, flat,
  then a decay of shape linear / cosine / 1-sqrt / exponential / inverse.
* WSD-S (arXiv 2410.05192): decays that end at each budget B_k and go back to
  the stable LR from the decayed weights.
* Power (arXiv 2408.13359): lr = min(lr_max, batch * a * tokens^b).
* cosine to a floor, and cyclic cosine with hard restarts, as baselines.

Formulas and reference values: docs/method.md, "Learning-rate schedules".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .errors import AttninfError

DECAYS = ("linear", "cosine", "1-sqrt", "exponential", "inverse")
DECAY_FRAC = 0.1  # MiniCPM: the decay takes the last 10% of the steps (of each budget for WSD-S)


def decay_value(p: float, shape: str, min_lr_ratio: float = 0.0, steps_into: float = 0.0,
                half_life: float | None = None) -> float:
    """Multiplier at progress p in [0, 1] of a decay phase ending at min_lr_ratio.

    exponential is MiniCPM's 0.5 ** (steps_into / half_life) (it never reaches
    the floor by itself); inverse is 1 / (1 + p (1/m - 1)), which ends at m."""
    m = min_lr_ratio
    p = min(max(p, 0.0), 1.0)
    if shape == "linear":
        f = 1.0 - p
    elif shape == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * p))
    elif shape == "1-sqrt":
        f = 1.0 - math.sqrt(p)
    elif shape == "exponential":
        if not half_life or half_life <= 0:
            raise AttninfError("the exponential decay needs --half-life (steps), e.g. 5000 as in MiniCPM")
        f = 0.5 ** (steps_into / half_life)
    elif shape == "inverse":
        if m <= 0:
            raise AttninfError("the inverse decay needs --min-lr-ratio > 0")
        return 1.0 / (1.0 + p * (1.0 / m - 1.0))
    else:
        raise AttninfError(f"unknown decay {shape!r}; choose one of {', '.join(DECAYS)}")
    return f * (1.0 - m) + m


def decay_length(total_steps: int, decay_steps: int | None, decay_frac: float | None) -> int:
    if decay_steps is None:
        decay_steps = round((DECAY_FRAC if decay_frac is None else decay_frac) * total_steps)
    return int(decay_steps)


def wsd(step: int, total_steps: int, warmup_steps: int = 0, decay_steps: int | None = None,
        decay_frac: float | None = None, decay: str = "linear", min_lr_ratio: float = 0.0,
        half_life: float | None = None, warmup_from: float = 0.0) -> float:
    """WSD multiplier at `step` (0-based). The decay takes the last
    decay_steps (or decay_frac of total_steps, 10% by default) of the run;
    warmup rises linearly from warmup_from (0; transformers' get_wsd_schedule
    starts it at min_lr_ratio)."""
    D = decay_length(total_steps, decay_steps, decay_frac)
    if warmup_steps + D > total_steps:
        raise AttninfError(f"warmup ({warmup_steps}) + decay ({D}) steps exceed the total ({total_steps})")
    T = total_steps - D
    if step < warmup_steps:
        return warmup_from + (1.0 - warmup_from) * step / warmup_steps
    if step < T:
        return 1.0
    if step < total_steps:
        return decay_value((step - T) / D, decay, min_lr_ratio, step - T, half_life)
    if decay == "exponential":
        return decay_value(1.0, decay, min_lr_ratio, total_steps - T, half_life)
    return decay_value(1.0, decay, min_lr_ratio)


def wsd_s_decays(budgets: list[int], decay_frac: float) -> list[tuple[int, int]]:
    """[(start, end)] of each decay: it takes decay_frac of its budget and ends at it."""
    out, prev = [], 0
    for b in sorted(budgets):
        start = b - max(1, round(decay_frac * b))
        if start < prev:
            raise AttninfError(f"the decay ending at budget {b} starts at step {start}, inside the previous "
                               f"budget ({prev}): use a smaller --decay-frac or budgets further apart")
        out.append((start, b))
        prev = b
    return out


def wsd_s(step: int, budgets: list[int], decay_frac: float = 0.1, warmup_steps: int = 0, decay: str = "linear",
          min_lr_ratio: float = 0.0, half_life: float | None = None) -> float:
    """WSD-S multiplier: stable at 1, except inside the decay before each
    budget; after a budget, back to 1 from the decayed weights. The weights
    after `end` steps are the model for that budget (`decay_ends`)."""
    if step < warmup_steps:
        return step / warmup_steps
    for start, end in wsd_s_decays(budgets, decay_frac):
        if start <= step < end:
            return decay_value((step - start) / (end - start), decay, min_lr_ratio, step - start, half_life)
    return 1.0


def decay_ends(budgets: list[int], decay_frac: float = 0.1) -> list[int]:
    """Steps after which WSD-S keeps a checkpoint (one per budget)."""
    return [end for _, end in wsd_s_decays(budgets, decay_frac)]


def cosine(step: int, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> float:
    if step < warmup_steps:
        return step / warmup_steps
    p = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return decay_value(p, "cosine", min_lr_ratio)


def cyclic_cosine(step: int, cycle_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0) -> float:
    """Cosine within each cycle, back to the peak at the start of the next."""
    if step < warmup_steps:
        return step / warmup_steps
    p = ((step - warmup_steps) % cycle_steps) / cycle_steps
    return decay_value(p, "cosine", min_lr_ratio)


def power(tokens: float, lr_max: float, a: float = 4.6, b: float = -0.51, batch_size: int = 1,
          warmup_tokens: float = 0, decay_tokens: float = 0, total_tokens: float | None = None,
          decay: str = "exponential", final_ratio: float = 0.01) -> float:
    """Power scheduler (arXiv 2408.13359), as a multiplier of lr_max.

    lr(n) = min(lr_max, batch_size * a * n^b) with n = tokens seen; a and b
    are the paper's fit (b = -0.51, a about 4.6 with lr in units where batch
    size counts sequences); batch_size enters linearly, so doubling the batch
    doubles the LR until it hits lr_max. Warmup rises linearly to the curve's
    value at warmup_tokens. The optional final decay over the last
    decay_tokens of total_tokens multiplies the curve's value at its start by
    (1 - p) (linear) or final_ratio ** p (exponential, the paper's choice)."""
    def curve(n: float) -> float:
        return min(lr_max, batch_size * a * max(n, 1.0) ** b)

    if warmup_tokens and tokens < warmup_tokens:
        return curve(warmup_tokens) * tokens / warmup_tokens / lr_max
    if decay_tokens and total_tokens is not None and tokens >= total_tokens - decay_tokens:
        start = total_tokens - decay_tokens
        p = min(1.0, (tokens - start) / decay_tokens)
        f = (1.0 - p) if decay == "linear" else final_ratio ** p
        return curve(start) * f / lr_max
    return curve(tokens) / lr_max


SCHEDULES = ("wsd", "wsd-s", "cosine", "cyclic-cosine", "power", "constant")
DECAYING = ("wsd", "wsd-s", "power")  # the ones with a decay phase: a phased mixture can follow them


def lr_lambda(name: str, **kw) -> Callable[[int], float]:
    """step -> multiplier for a named schedule (power: kw tokens_per_step)."""
    if name == "wsd":
        return lambda s: wsd(s, **kw)
    if name == "wsd-s":
        return lambda s: wsd_s(s, **kw)
    if name == "cosine":
        return lambda s: cosine(s, **kw)
    if name == "cyclic-cosine":
        return lambda s: cyclic_cosine(s, **kw)
    if name == "power":
        tps = kw.pop("tokens_per_step")
        return lambda s: power(s * tps, **kw)
    if name == "constant":
        warm = kw.get("warmup_steps", 0)
        return lambda s: min(1.0, s / warm) if warm else 1.0
    raise AttninfError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


@dataclass(frozen=True)
class Schedule:
    """A named schedule with every setting any schedule reads: the one place
    that turns settings into a step -> multiplier function, for `attninf
    train` and `attninf schedules` alike. decay_frac None is DECAY_FRAC;
    cycle_steps None is a quarter of the run."""
    name: str = "wsd"
    total_steps: int = 1000
    warmup_steps: int = 0
    decay: str = "linear"
    decay_steps: int | None = None
    decay_frac: float | None = None
    min_lr_ratio: float = 0.0
    half_life: float | None = None
    budgets: tuple[int, ...] | None = None
    cycle_steps: int | None = None
    lr_max: float = 0.02          # power: the cap, in the LR's units
    power_a: float = 4.6
    power_b: float = -0.51
    batch_size: int = 1           # power: sequences per optimizer step
    tokens_per_step: float = 1.0  # power: n = step x this

    @property
    def frac(self) -> float:
        return DECAY_FRAC if self.decay_frac is None else self.decay_frac

    def decay_length(self) -> int:
        """Steps of the final decay of wsd and power."""
        return decay_length(self.total_steps, self.decay_steps, self.decay_frac)

    def fn(self) -> Callable[[int], float]:
        """step (0-based) -> multiplier of the peak LR."""
        n = self.name
        if n == "wsd":
            return lr_lambda(n, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                             decay_steps=self.decay_steps, decay_frac=self.decay_frac, decay=self.decay,
                             min_lr_ratio=self.min_lr_ratio, half_life=self.half_life)
        if n == "wsd-s":
            return lr_lambda(n, budgets=self._budgets(), decay_frac=self.frac, warmup_steps=self.warmup_steps,
                             decay=self.decay, min_lr_ratio=self.min_lr_ratio, half_life=self.half_life)
        if n == "power":
            tps = self.tokens_per_step
            return lr_lambda(n, tokens_per_step=tps, lr_max=self.lr_max, a=self.power_a, b=self.power_b,
                             batch_size=self.batch_size, warmup_tokens=self.warmup_steps * tps,
                             decay_tokens=self.decay_length() * tps, total_tokens=self.total_steps * tps,
                             decay="linear" if self.decay == "linear" else "exponential",
                             final_ratio=self.min_lr_ratio or 0.01)
        if n == "cosine":
            return lr_lambda(n, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                             min_lr_ratio=self.min_lr_ratio)
        if n == "cyclic-cosine":
            return lr_lambda(n, cycle_steps=self.cycle_steps or max(1, self.total_steps // 4),
                             warmup_steps=self.warmup_steps, min_lr_ratio=self.min_lr_ratio)
        if n == "constant":
            return lr_lambda(n, warmup_steps=self.warmup_steps)
        raise AttninfError(f"unknown schedule {n!r}; choose one of {', '.join(SCHEDULES)}")

    def in_decay(self, step: int) -> bool:
        """Whether step (0-based) trains inside a decay phase."""
        if self.name == "wsd-s":
            return any(a <= step < b for a, b in wsd_s_decays(self._budgets(), self.frac))
        if self.name in ("wsd", "power"):
            return step >= self.total_steps - self.decay_length()
        return False

    def kept_steps(self) -> set[int]:
        """Steps whose checkpoints a run keeps for good: the end of each WSD-S decay."""
        return set(decay_ends(self._budgets(), self.frac)) if self.name == "wsd-s" else set()

    def _budgets(self) -> list[int]:
        if not self.budgets:
            raise AttninfError("--schedule wsd-s needs --budgets (steps, comma-separated), e.g. 200,500,1000")
        return list(self.budgets)


def make_scheduler(optimizer, name: str, **kw):
    """A torch LambdaLR: `Trainer(..., optimizers=(optimizer, make_scheduler(optimizer, "wsd", ...)))`."""
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, lr_lambda(name, **kw))
