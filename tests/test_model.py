"""zyn_ppo.model: which parameters train (one rule for PPO and GRPO), and the dtype every model loads in."""

from __future__ import annotations

import json

import pytest
import tiny_models
import torch

import zyn_ppo


def trainable(module) -> set[str]:
    return {name for name, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("k", [-1, 0, 2])
def test_ppo_and_grpo_train_the_same_parameters_on_a_tied_model(tokenizer, k):
    """The GRPO script freezes its plain LM with zyn_ppo.freeze_layers, the PPO policy does the same inside
    PolicyWithValueHead: on a model whose LM head is tied to the input embeddings the sets must be equal."""
    ppo_lm = tiny_models.tiny_llama(tokenizer)
    assert ppo_lm.get_output_embeddings().weight is ppo_lm.get_input_embeddings().weight  # tied
    policy = zyn_ppo.PolicyWithValueHead(ppo_lm, k)
    grpo_lm = tiny_models.tiny_llama(tokenizer)
    zyn_ppo.freeze_layers(grpo_lm, k)
    assert trainable(policy.lm) == trainable(grpo_lm)
    names = trainable(grpo_lm)
    assert "model.embed_tokens.weight" in names and "model.norm.weight" in names  # trlx: embeddings train
    blocks = {int(n.split(".")[2]) for n in names if n.startswith("model.layers.")}
    assert blocks == {-1: {0, 1, 2, 3}, 0: set(), 2: {2, 3}}[k]


def test_freeze_embeddings_freezes_the_tied_head_too(tokenizer):
    lm = tiny_models.tiny_gpt2(tokenizer)
    zyn_ppo.freeze_layers(lm, 1, freeze_embeddings=True)
    names = trainable(lm)
    assert names and all(n.startswith(("transformer.h.3.", "transformer.ln_f.")) for n in names), names


def test_too_many_unfrozen_layers_is_a_user_error(tokenizer):
    with pytest.raises(zyn_ppo.UserError, match="num_layers_unfrozen=9 but the model has 4 blocks"):
        zyn_ppo.freeze_layers(tiny_models.tiny_llama(tokenizer), 9)


def test_a_float16_checkpoint_trains_in_float32(tokenizer, tmp_path):
    """transformers >= 5 follows the checkpoint's dtype (pythia-410m says float16); zyn_ppo loads fp32."""
    folder = tiny_models.save_tiny(tiny_models.tiny_neox(tokenizer).half(), tokenizer, tmp_path / "fp16")
    assert json.loads((tmp_path / "fp16" / "config.json").read_text())["dtype"] == "float16"
    config = zyn_ppo.TRLConfig.update(zyn_ppo.TRLConfig(), {"model.model_path": folder, "model.num_layers_unfrozen": 1,
                                                            "train.seq_length": 64})
    policy, _ = zyn_ppo.load_policy(config)
    dtypes = {p.dtype for p in policy.parameters()}
    assert dtypes == {torch.float32}
    assert zyn_ppo.load_causal_lm(folder).dtype == torch.float32
    bf16 = zyn_ppo.TRLConfig.update(config, {"model.dtype": "bfloat16"})
    assert {p.dtype for p in zyn_ppo.load_policy(bf16)[0].parameters()} == {torch.bfloat16}
