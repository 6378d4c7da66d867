"""Where a model runs and in what precision: the one reading of --device and
--dtype for scoring, detection, explanation and training."""
from __future__ import annotations

import logging
from pathlib import Path

from .errors import AttninfError

log = logging.getLogger("attninf")

DTYPES = ("auto", "float32", "bfloat16", "float16")
TRAIN_DTYPES = ("auto", "float32", "bfloat16")  # training autocasts; its weights stay float32
DTYPE_HELP = "auto = bf16 where the hardware runs it fast (a GPU, a CPU with AVX512-BF16 or AMX), else float32."


def cpu_has_bf16() -> bool:
    """True when this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(device: str) -> str:
    """auto: a GPU when torch sees one, else cpu; a named GPU must be visible."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as e:
        raise AttninfError(f"--device {device}: not a device (auto, cpu, cuda, cuda:N)") from e
    if kind == "cuda" and not torch.cuda.is_available():
        raise AttninfError(f"--device {device}: no CUDA GPU is visible here; use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str):
    """Map a dtype name to torch; `auto` is bf16 where the hardware runs it fast."""
    import torch

    if dtype not in DTYPES:
        raise AttninfError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if str(device).startswith("cuda") or cpu_has_bf16():
            return torch.bfloat16
        log.info("this CPU has no native bf16: using float32")
        return torch.float32
    return getattr(torch, dtype)


def autocast_dtype(dtype: str, device: str):
    """Training's autocast: bf16 wherever resolve_dtype would pick it (the
    weights and the optimizer stay float32); None for plain float32."""
    import torch

    if dtype not in TRAIN_DTYPES:
        raise AttninfError(f"unknown training dtype {dtype!r}; choose one of {', '.join(TRAIN_DTYPES)}")
    return None if resolve_dtype(dtype, device) == torch.float32 else torch.bfloat16
