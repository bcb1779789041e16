"""zyn_ppo.model: which parameters train (one rule for PPO and GRPO), and the dtype every model loads in."""

from __future__ import annotations

import json

import pytest
import tiny_models
import torch

import zyn_ppo

from helpers import ROOT  # noqa: F401


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


# ----------------------------------------------------------------------------------- model



def model_config(path, **updates):
    return zyn_ppo.TRLConfig.update(zyn_ppo.TRLConfig(), {"model.model_path": path, **updates})


@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
def test_hydra_reference_equals_policy_at_start(arch, request):
    path = request.getfixturevalue(f"tiny_{arch}_dir")
    policy, tok = zyn_ppo.load_policy(model_config(path, **{"model.num_layers_unfrozen": 2}))
    assert policy.has_hydra and len(policy.ref_blocks) == 2
    enc = [tok(p, add_special_tokens=False).input_ids for p in ["The movie was", "I", "A cat sat on the mat"]]
    width = max(map(len, enc))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in enc])
    mask = (ids != tok.pad_token_id).long()
    ids, mask = torch.cat([ids, ids[:, :4]], 1), torch.cat([mask, torch.ones(3, 4, dtype=torch.long)], 1)
    pos = zyn_ppo.position_ids_from(mask)
    logits, values, ref, trunk = policy(ids, mask, pos, logits_from=width - 1, with_ref=True)
    full = policy.lm(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, width - 1:-1]
    assert torch.allclose(logits, full, atol=1e-5)
    assert torch.allclose(ref, logits, atol=1e-5)
    assert values.shape == (3, 4)
    # only the top 2 blocks (plus embeddings, final norm, heads) train; the branch is frozen
    blocks = zyn_ppo.arch_parts(policy.lm)[1]
    assert not any(p.requires_grad for b in blocks[:-2] for p in b.parameters())
    assert all(p.requires_grad for b in blocks[-2:] for p in b.parameters())
    assert not any(p.requires_grad for p in policy.ref_blocks.parameters())
    # after a change to the policy's top block the reference stays put
    with torch.no_grad():
        for p in blocks[-1].parameters():
            p.add_(0.1)
    logits2, values2, ref2, _ = policy(ids, mask, pos, logits_from=width - 1, with_ref=True)
    assert torch.allclose(ref2, ref, atol=1e-5) and not torch.allclose(logits2, logits, atol=1e-3)
    # the cached trunk state gives the same outputs as the full forward pass
    logits3, values3, _, _ = policy(ids, mask, pos, logits_from=width - 1, trunk=trunk)
    assert torch.allclose(logits3, logits2, atol=1e-5) and torch.allclose(values3, values2, atol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
def test_generation_keeps_the_trunk_a_full_forward_computes(arch, request):
    """With a frozen trunk the rollout forward starts from the states generation computed: they, and the
    logits, values and reference logits from them, equal a full forward pass at every position that counts."""
    from zyn_ppo.trainer import Sampler

    path = request.getfixturevalue(f"tiny_{arch}_dir")
    policy, tok = zyn_ppo.load_policy(model_config(path, **{"model.num_layers_unfrozen": 2, "model.freeze_embeddings": True}))
    prompts = ["The movie was", "I", "A cat sat on the mat"]
    items = [dict(ids=tok(p, add_special_tokens=False).input_ids, text=p, meta={}) for p in prompts]
    torch.manual_seed(0)
    gen = Sampler(policy, tok, [], torch.autocast("cpu", enabled=False), "cpu")(
        items, dict(max_new_tokens=6, do_sample=True, top_k=0), keep_trunk=True)
    ids = torch.cat([gen["query"], gen["response"]], 1)
    mask = torch.cat([gen["query_mask"], gen["response_mask"]], 1)
    assert gen["trunk"].shape == (*ids.shape, policy.lm.config.hidden_size)
    pos, start = zyn_ppo.position_ids_from(mask), gen["query"].shape[1] - 1
    with torch.no_grad():
        full = policy(ids, mask, pos, logits_from=start, with_ref=True)
        cached = policy(ids, mask, pos, logits_from=start, with_ref=True, trunk=gen["trunk"])
    counted = mask.bool().clone()
    counted[:, -1] = False  # the last token's state feeds nothing
    assert torch.allclose(cached[3][counted], full[3][counted], atol=1e-5)
    rmask = gen["response_mask"].bool()
    for a, b in zip(cached[:3], full[:3]):  # logits, values, reference logits where the loss reads them
        assert torch.allclose(a[rmask], b[rmask], atol=1e-5)
    assert gen["response"].shape[1] >= 4 and rmask.sum() >= 8  # several generated positions were compared


def test_value_head_shape_and_full_reference(tiny_gpt2_dir):
    policy, _ = zyn_ppo.load_policy(model_config(tiny_gpt2_dir))
    assert not policy.has_hydra
    assert all(p.requires_grad for p in policy.parameters())
    first, _, last = policy.v_head
    assert first.in_features == 32 and first.out_features == 64 and last.out_features == 1


def test_unknown_architecture_is_named(tiny_t5_dir):
    with pytest.raises(ValueError, match="t5"):
        zyn_ppo.load_policy(model_config(tiny_t5_dir))


