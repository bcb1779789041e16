"""Finding and loading a judge: an embedded short name, a local folder or a hub name (offline-aware, with
errors that say what was tried), the device it runs on and the precision it computes in."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import torch

from zyn_models import (EMBEDDED_MODELS, embedded_model_path, hub_cache_dir, hub_cached, hub_offline,
                        hub_unreachable)

from .errors import ModelLoadError, UserError


def bf16_is_fast(device: str | torch.device = "cpu") -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU with bf16 support, or a CPU with
    AVX512-BF16 or AMX (the CPU flags avx512_bf16 / amx_bf16). dtype="auto" picks bf16 exactly then."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(check) for check in checks):
        return any(bool(check()) for check in checks)
    try:  # older torch: read the flags
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags



_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)?$")


def looks_like_path(name: str) -> bool:
    """Whether a model name can only be a local path (it cannot be a hub name such as org/name)."""
    return (os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.endswith("/")
            or name.count("/") > 1 or not _HUB_ID.match(name))


def locate_model(name: str) -> tuple[str, dict]:
    """(path or hub name, extra from_pretrained kwargs) for a judge name, or a ModelLoadError that says
    what was tried: the embedded names, a local folder, the Hugging Face cache and hub."""
    if name in EMBEDDED_MODELS:
        try:
            return embedded_model_path(name), {}
        except FileNotFoundError as error:
            raise ModelLoadError(str(error)) from None
    embedded = ", ".join(sorted(EMBEDDED_MODELS))
    close = difflib.get_close_matches(name, list(EMBEDDED_MODELS), n=1, cutoff=0.6)
    not_embedded = f"not an embedded model name ({embedded})"
    if close:
        not_embedded += f"; did you mean {close[0]!r}?"
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path), {}
        raise ModelLoadError(f"model folder {name!r} has no config.json; give a folder saved with "
                             "save_pretrained (config.json, weights, tokenizer)")
    if path.exists():
        raise ModelLoadError(f"model {name!r} is a file; give the folder that holds its config.json")
    if looks_like_path(name):
        raise ModelLoadError(f"model {name!r}: no such local folder, and {not_embedded}; check the path")
    cached = hub_cached(name)
    if hub_offline():
        if cached:
            return name, {"local_files_only": True}
        raise ModelLoadError(
            f"model {name!r}: {not_embedded}, not a local folder, and not in the Hugging Face cache "
            f"({hub_cache_dir()}) while HF_HUB_OFFLINE is set; unset it to download, or give a folder")
    unreachable = hub_unreachable()
    if unreachable:
        if cached:
            return name, {"local_files_only": True}
        raise ModelLoadError(
            f"model {name!r}: {not_embedded}, not a local folder, not in the Hugging Face cache "
            f"({hub_cache_dir()}), and the hub is unreachable ({unreachable}); connect, or give a folder")
    return name, {}


def torch_device(device) -> torch.device:
    """`device` as a torch.device that exists here, else a one-line ValueError."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UserError(f"device {device!r} is not a torch device ({error}); use cpu, cuda or "
                         "cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {str(device)!r} asked for, but torch sees no CUDA GPU; use "
                         "--device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device {str(device)!r} asked for, but torch sees {torch.cuda.device_count()} CUDA "
                         "GPU(s)")
    return device


def load_judge(model, tokenizer, device, dtype):
    """(model, tokenizer, autocast dtype or None) of a judge given by name, folder or as a loaded model;
    a judge loaded by name is loaded in fp32 (see ZeroShotRewardModel's dtype)."""
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer,
                              PreTrainedModel)

    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise UserError("dtype must be a torch dtype or one of 'float32', 'bfloat16', 'float16', 'auto'")
    if dtype not in (None, "auto", torch.float32, torch.bfloat16, torch.float16):
        raise UserError(f"dtype must be float32, bfloat16, float16 or 'auto', got {dtype}")
    if device is not None:
        device = torch_device(device)
    extra: dict = {}
    if isinstance(model, (str, Path)):
        name = str(model)
        path, extra = locate_model(name)
        try:
            config = AutoConfig.from_pretrained(path, **extra)
            seq2seq = getattr(config, "is_encoder_decoder", False)
            cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
            model = cls.from_pretrained(path, dtype=torch.float32, **extra)
        except (OSError, ValueError, KeyError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(f"cannot load model {name!r} from {path}: {first}") from error
        tokenizer = path if tokenizer is None else tokenizer
        # under accelerate/torchrun each process scores on its own GPU
        if device is None:
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    elif not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a name, a folder or a PreTrainedModel, got {type(model).__name__}")
    if tokenizer is None:
        if not model.name_or_path:
            raise UserError("pass tokenizer= for a model that was not loaded from a name or folder")
        tokenizer = model.name_or_path
    if isinstance(tokenizer, (str, Path)):
        name = str(tokenizer)
        name = embedded_model_path(name) if name in EMBEDDED_MODELS else name
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, **extra)
        except (OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(f"cannot load the tokenizer of {name!r}: {first}") from error
    if device is not None:
        model.to(device)
    if dtype == "auto":
        dtype = torch.bfloat16 if bf16_is_fast(next(model.parameters()).device) else None
    if dtype == torch.float32:
        model.float()
    return model, tokenizer, (dtype if dtype in (torch.bfloat16, torch.float16) else None)

