import pytest

import tiny_models  # the project and tests/ are on the path through pyproject.toml's pytest pythonpath


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_models.make_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tokenizer):
    return tiny_models.save_tiny(tiny_models.tiny_llama(tokenizer), tokenizer, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tokenizer):
    return tiny_models.save_tiny(tiny_models.tiny_gpt2(tokenizer), tokenizer, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory, tokenizer):
    return tiny_models.save_tiny(tiny_models.tiny_t5(tokenizer), tokenizer, tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="session")
def tiny_neox_dir(tmp_path_factory, tokenizer):
    return tiny_models.save_tiny(tiny_models.tiny_neox(tokenizer), tokenizer, tmp_path_factory.mktemp("neox"))
