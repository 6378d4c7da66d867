"""A training run's checkpoints: RUN/checkpoints/step-NNNNNNN/ in Hugging
Face format (loadable by AutoModelForCausalLM.from_pretrained) plus
trainer_state.pt (optimizer, scheduler, each phase's data position, RNG, the
run's settings digest and inputs key), each written under a temporary name
and renamed; the newest `keep_last` are kept, and those marked KEEP (the end
of each WSD-S decay) for good."""
from __future__ import annotations

import shutil
from pathlib import Path

from .errors import AttninfError
from .storage import atomic_path

STATE = "trainer_state.pt"


def checkpoint_dir(run: str | Path, step: int) -> Path:
    """Where a run keeps the checkpoint of a step: RUN/checkpoints/step-NNNNNNN."""
    return Path(run) / "checkpoints" / f"step-{step:07d}"


def save_checkpoint(out: Path, step: int, model, state: dict, keep: bool, keep_last: int) -> Path:
    """Write step's checkpoint (the model, and `state` with the RNG states
    and `keep` added) atomically, then rotate the older ones."""
    import torch

    final = checkpoint_dir(out, step)
    ck = final.parent
    ck.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp:
        model.save_pretrained(tmp)
        torch.save({"step": step, **state, "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "keep": keep}, tmp / STATE)
        if final.exists():  # the same step saved again (a resumed run): replaced whole
            shutil.rmtree(final)
    steps = sorted(p for p in ck.glob("step-*") if p.is_dir())
    rotating = [p for p in steps if not (p / "KEEP").exists()]
    if keep:
        (final / "KEEP").write_text("end of a WSD-S decay\n")
    for p in rotating[:-keep_last] if keep_last > 0 else []:
        if p != final and not (p / "KEEP").exists():
            shutil.rmtree(p)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    steps = sorted(p for p in checkpoint_dir(out, 0).parent.glob("step-*") if (p / STATE).exists())
    return steps[-1] if steps else None


def load_state(checkpoint: Path, out: Path, digest: str, inputs: str) -> dict:
    """The trainer state of a checkpoint of a run with these settings
    (digest) on these inputs (inputs key); another run's is refused."""
    import torch

    st = torch.load(checkpoint / STATE, weights_only=False, map_location="cpu")
    if st["digest"] != digest:
        raise AttninfError(f"{out} holds a run with other settings; choose another --out or remove it")
    if st.get("inputs", inputs) != inputs:  # checkpoints from before this key: not checked
        raise AttninfError(f"{out} holds a run started on another mixture, model config, tokenizer or document "
                           "separators (rewritten at the same path, or a new attninf); choose another --out or remove it")
    return st


def restore_rng(st: dict, device) -> None:
    import torch

    torch.set_rng_state(st["rng"])
    if st.get("cuda_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all(st["cuda_rng"])
