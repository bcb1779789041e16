"""zyn_ppo pinned to the sampler and to trlx 206d885 (CarperAI/trlx, 2023-02-24), the PPO the paper ran.

- rollout logprobs are the sampler's own log-probabilities (left-padded prompts, GPT-2 and GPT-NeoX);
- an EOS in the middle of a response ends its mask, and the score sits on that EOS;
- the reference (hydra branch or full copy) gets no gradients, is not optimised and does not share the
  policy's tied embedding;
- the adaptive KL coefficient follows trlx's formula through the training loop;
- the PPO loss equals a plain transcription of trlx's `loss()` and `get_advantages_and_returns()`, with
  the one deliberate difference (whitening over valid tokens only; trlx whitened the padding too) and the
  approximate-KL normalisation pinned as numbers;
- the judge's tokenizer: the sentencepiece (slow) T5 tokenizer the original loaded and the fast one this
  project loads give the same ids for every prompt template.
"""

import json
import math

import pytest
import torch

import tiny_models
import zyn_ppo
import zyn_reward

PROMPTS = ["The movie was great and I loved it", "I", "A cat sat on", "Review: this film was bad and boring"]


@pytest.fixture(scope="module")
def tiny_neox_dir(tmp_path_factory, tokenizer):
    return tiny_models.save_tiny(tiny_models.tiny_neox(tokenizer), tokenizer, tmp_path_factory.mktemp("neox_parity"))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def zero_reward(samples, **kwargs):
    return [0.0] * len(samples)


def tiny_config(path, run_dir, **updates):
    settings = {
        "model.model_path": path, "model.num_layers_unfrozen": 2, "train.seq_length": 48,
        "train.batch_size": 4, "train.total_steps": 4, "train.eval_interval": 1000,
        "train.checkpoint_interval": 1000, "train.seed": 7, "train.logging_dir": str(run_dir),
        "train.resume_from_checkpoint": None, "method.num_rollouts": 4, "method.chunk_size": 4,
        "method.ppo_epochs": 1, "method.gen_kwargs.max_new_tokens": 8,
        "optimizer.kwargs.lr": 1e-2, "scheduler.name": "constant", "scheduler.kwargs": {},
    }
    settings.update(updates)
    return zyn_ppo.TRLConfig.update(zyn_ppo.TRLConfig(), settings)


def make_trainer(path, run_dir, reward_fn=zero_reward, prompts=PROMPTS, **updates):
    trainer = zyn_ppo.PPOTrainer(tiny_config(path, run_dir, **updates), reward_fn=reward_fn)
    trainer.train_prompts = trainer._tokenize_prompts(prompts, "prompts")
    return trainer


# ----------------------------------------------------------------------------------- the sampler


@pytest.mark.parametrize("arch", ["gpt2", "neox"])
def test_rollout_logprobs_equal_the_samplers_scores(arch, request, tmp_path, monkeypatch):
    path = request.getfixturevalue(f"tiny_{arch}_dir")
    trainer = make_trainer(path, tmp_path / "run")
    lm = trainer.policy.lm
    plain_generate, seen = lm.generate, {}

    def generate_with_scores(*args, **kwargs):
        out = plain_generate(*args, **kwargs, output_logits=True, return_dict_in_generate=True)
        seen.update(sequences=out.sequences, logits=out.logits, query=kwargs["input_ids"])
        return out.sequences

    monkeypatch.setattr(lm, "generate", generate_with_scores)
    store = trainer.make_experience()
    assert trainer.config.method.gen_kwargs == dict(max_new_tokens=8, top_k=0, top_p=1.0, do_sample=True)
    query, qmask, response, rmask = store["query"], store["query_mask"], store["response"], store["response_mask"]
    lengths = qmask.sum(1)
    assert len(set(lengths.tolist())) == 4 and (qmask[:, 0] == 0).sum() == 3  # left-padded, 4 different lengths
    assert torch.equal(query, seen["query"])
    generated = seen["sequences"][:, query.shape[1]:]
    assert torch.equal(response, generated[:, : response.shape[1]])
    # top_k 0, top_p 1, temperature 1: the model's raw logits are the sampling distribution's
    sampler = torch.stack(seen["logits"], 1)[:, : response.shape[1]].float().log_softmax(-1)
    sampler = sampler.gather(-1, response.unsqueeze(-1)).squeeze(-1)
    m = rmask.bool()
    assert m.sum() >= 16
    assert (store["logprobs"][m] - sampler[m]).abs().max().item() < 1e-5
    assert (store["logprobs"][~m] == 0).all()
    # trlx 206d885 ran these forwards without position ids; with GPT-2's absolute positions that is
    # another (position-shifted) policy on every left-padded row
    with torch.no_grad():
        tokens, attn = torch.cat([query, response], 1), torch.cat([qmask, rmask], 1)
        logits = lm(input_ids=tokens, attention_mask=attn).logits[:, query.shape[1] - 1:-1]
        unshifted = zyn_ppo.logprobs_of_labels(logits, response)
        with_pos = lm(input_ids=tokens, attention_mask=attn, position_ids=zyn_ppo.position_ids_from(attn)).logits
        with_pos = zyn_ppo.logprobs_of_labels(with_pos[:, query.shape[1] - 1:-1], response)
    assert (with_pos[m] - sampler[m]).abs().max().item() < 1e-5
    padded = m & (qmask[:, 0] == 0)[:, None]
    gap = (unshifted[padded] - sampler[padded]).abs().max().item()
    if arch == "gpt2":
        assert gap > 1e-2
    else:  # rotary positions: a common shift of all positions changes nothing
        assert gap < 1e-4


# ----------------------------------------------------------------------------------- EOS


class ForceEOS:
    """A logits processor: row r samples EOS exactly at response step at[r] (None: never)."""

    def __init__(self, query_length: int, eos: int, at: list):
        self.query_length, self.eos, self.at = query_length, eos, at

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.query_length
        scores = scores.clone()
        for row, when in enumerate(self.at):
            if when == step:
                scores[row] = -math.inf
                scores[row, self.eos] = 0.0
            else:
                scores[row, self.eos] = -math.inf
        return scores


def test_eos_mid_response_ends_the_mask_with_the_score_on_it(tiny_gpt2_dir, tmp_path):
    from transformers import LogitsProcessorList

    scores = [1.5, -2.0, 3.0, 0.25]
    seen = {}

    def reward_fn(samples, prompts, outputs, **kwargs):
        seen.update(samples=samples, prompts=prompts, outputs=outputs)
        return scores

    trainer = make_trainer(tiny_gpt2_dir, tmp_path / "run", reward_fn=reward_fn,
                           **{"method.gen_kwargs.max_new_tokens": 7, "method.init_kl_coef": 0.05})
    eos = trainer.tokenizer.eos_token_id
    assert eos != trainer.tokenizer.pad_token_id
    at = [2, 0, None, 5]
    query_length = max(len(p["ids"]) for p in trainer.train_prompts)
    trainer.config.method.gen_experience_kwargs = dict(
        trainer.config.method.gen_kwargs, logits_processor=LogitsProcessorList([ForceEOS(query_length, eos, at)]))
    store = trainer.make_experience()
    response, rmask, rewards = store["response"], store["response_mask"], store["rewards"]
    assert response.shape == (4, 7)
    assert rmask.tolist() == [[1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0], [1] * 7, [1, 1, 1, 1, 1, 1, 0]]
    for row, when in enumerate(at):
        n = int(rmask[row].sum())
        last = n - 1
        if when is not None:
            assert response[row, when] == eos and last == when  # the EOS is the last action
        assert (response[row, :last] != eos).all()
        # policy == reference at the start: the per-token KL terms vanish, the score sits on the last action
        assert rewards[row, last].item() == pytest.approx(scores[row], abs=1e-5)
        if last:
            assert rewards[row, :last].abs().max().item() < 1e-5
        assert (rewards[row, n:] == 0).all() and (store["logprobs"][row, n:] == 0).all()
        assert (store["values"][row, n:] == 0).all() and store["logprobs"][row, :n].lt(0).all()
        assert rewards[row].sum().item() == pytest.approx(scores[row] - 0.05 * store["kl_ref"][row].item(), abs=1e-6)
        body = response[row, : (last if when is not None else n)].tolist()
        assert seen["outputs"][row] == trainer.tokenizer.decode(body, skip_special_tokens=True)
        assert seen["samples"][row] == seen["prompts"][row] + seen["outputs"][row]
    assert store["raw_scores"].tolist() == scores


# ----------------------------------------------------------------------------------- the reference


@pytest.mark.parametrize("num_layers_unfrozen", [2, -1])
def test_reference_gets_no_gradient_and_has_its_own_head(num_layers_unfrozen, tiny_gpt2_dir, tmp_path):
    trainer = make_trainer(tiny_gpt2_dir, tmp_path / "run", **{"model.num_layers_unfrozen": num_layers_unfrozen})
    policy = trainer.policy
    wte = policy.lm.get_input_embeddings().weight
    assert policy.lm.get_output_embeddings().weight is wte  # GPT-2 ties its LM head to wte
    if num_layers_unfrozen > 0:
        assert trainer.ref_model is None
        reference = [policy.ref_blocks, policy.ref_norm, policy.ref_head]
        ref_head = policy.ref_head
    else:
        assert policy.ref_blocks is None and trainer.ref_model is not None
        reference = [trainer.ref_model]
        ref_head = trainer.ref_model.get_output_embeddings()
    ref_params = [p for module in reference for p in module.parameters()]
    assert ref_params and ref_head.weight is not wte
    before = [p.detach().clone() for p in ref_params]
    wte_before = wte.detach().clone()
    trainer.store = trainer.make_experience()
    stats = trainer.train_step(torch.arange(4))
    assert math.isfinite(stats["loss/total"])
    assert not torch.equal(wte, wte_before)  # the policy's (tied) embedding trained
    assert all(p.grad is None and not p.requires_grad for p in ref_params)
    assert all(torch.equal(p, b) for p, b in zip(ref_params, before))
    optimised = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert any(p is wte for p in optimised)
    ref_ids = {id(p) for p in ref_params}
    assert not ref_ids & {id(p) for p in optimised}
    assert not ref_ids & {id(p) for p in trainer.optimizer.state}
    ref_storage = {p.untyped_storage().data_ptr() for p in ref_params}
    assert not ref_storage & {p.untyped_storage().data_ptr() for p in optimised}
    # changing the policy's tied embedding changes its head, never the reference's
    torch.testing.assert_close(ref_head.weight, wte_before, rtol=0, atol=0)
    h = torch.randn(3, wte.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref_out, policy_out = ref_head(h), policy.lm.get_output_embeddings()(h)
        wte.add_(0.5)
        assert torch.equal(ref_head(h), ref_out)
        assert not torch.allclose(policy.lm.get_output_embeddings()(h), policy_out)


# ----------------------------------------------------------------------------------- adaptive KL


def spaces(samples, prompts, outputs, **kwargs):
    return [10 * o.count(" ") / (len(o) + 1) for o in outputs]


@pytest.mark.parametrize("target", [6.0, 0.1])
def test_kl_coefficient_follows_trlx_formula_through_the_loop(target, tiny_gpt2_dir, tmp_path):
    init, horizon, batch_size, ppo_epochs = 0.05, 50, 4, 2
    config = tiny_config(tiny_gpt2_dir, tmp_path / "run", **{
        "train.total_steps": 8, "train.batch_size": batch_size, "method.num_rollouts": 8, "method.chunk_size": 8,
        "method.ppo_epochs": ppo_epochs, "method.init_kl_coef": init, "method.target": target,
        "method.horizon": horizon, "optimizer.kwargs.lr": 3e-2})
    prompts = PROMPTS * 2
    trainer = zyn_ppo.train(reward_fn=spaces, prompts=prompts, eval_prompts=prompts[:2], metric_fn=None, config=config)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["step"] > 0]
    assert [r["step"] for r in steps] == list(range(1, 9))
    beta, errors = init, []
    for r in steps:
        # trlx: after each minibatch's ppo_epochs steps, the approximate KL of the last step updates beta
        if r["step"] % ppo_epochs == 0:
            error = min(max(r["policy/approx_kl"] / target - 1, -0.2), 0.2)
            errors.append(error)
            beta *= 1 + error * batch_size / horizon
        assert r["kl_coef"] == pytest.approx(beta, rel=1e-12, abs=0), r["step"]
    assert trainer.kl_ctl.value == pytest.approx(beta, rel=1e-12)
    assert len(errors) == 4
    if target == 6.0:  # the paper's target: always far above the signal, so beta shrinks at the floor rate
        assert errors == [-0.2] * 4 and beta == pytest.approx(init * (1 - 0.2 * batch_size / horizon) ** 4, rel=1e-12)
    else:  # both the clipped and the proportional part of the formula were used
        assert any(abs(e) == 0.2 for e in errors) and any(abs(e) < 0.2 for e in errors), errors
    # the coefficient in force when the second rollout was collected (after step 4) shaped its rewards
    beta_then = next(r["kl_coef"] for r in steps if r["step"] == 4)
    store = trainer.store
    clipped = store["raw_scores"].clamp(-10, 10)
    assert store["kl_ref"].abs().max() > 1e-3
    torch.testing.assert_close(store["rewards"].sum(1), clipped - beta_then * store["kl_ref"], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------- PPO loss vs trlx


def trlx_206d885_ppo(logprobs, values, old_logprobs, old_values, rewards, mask, *, gamma, lam, cliprange,
                     cliprange_value, vf_coef, whiten_valid_only=False):
    """trlx 206d885's PPOConfig.get_advantages_and_returns + PPOConfig.loss on a right-padded (B, T) batch,
    written out plainly. Padded entries of rewards / old values / old logprobs are 0 (trlx's collate).
    whiten_valid_only: take the whitening statistics over valid tokens (zyn_ppo's choice) instead of trlx's
    statistics over every entry of the padded batch."""
    B, T = rewards.shape
    advantages = torch.zeros(B, T, dtype=torch.float64)
    running = torch.zeros(B, dtype=torch.float64)
    for t in reversed(range(T)):  # no mask: padding carries zero rewards and zero values
        next_value = old_values[:, t + 1] if t < T - 1 else torch.zeros(B, dtype=torch.float64)
        delta = rewards[:, t] + gamma * next_value - old_values[:, t]
        running = delta + gamma * lam * running
        advantages[:, t] = running
    returns = advantages + old_values
    pool = advantages[mask.bool()] if whiten_valid_only else advantages.flatten()
    mean, var = pool.mean(), pool.var(unbiased=True)
    advantages = (advantages - mean) / torch.sqrt(var + 1e-8)

    n = mask.sum()
    clipped_values = torch.maximum(torch.minimum(values, old_values + cliprange_value), old_values - cliprange_value)
    vf1, vf2 = (values - returns) ** 2, (clipped_values - returns) ** 2
    vf_loss = 0.5 * (torch.max(vf1, vf2) * mask).sum() / n
    vf_clipfrac = ((vf2 > vf1).double() * mask).sum() / n
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    approx_kl = ((ratio - 1) - log_ratio).mean()  # a plain mean over the padded batch
    pg1 = -advantages * ratio
    pg2 = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    pg_loss = (torch.max(pg1, pg2) * mask).sum() / n
    pg_clipfrac = ((pg2 > pg1).double() * mask).sum() / n
    return dict(total=(pg_loss + vf_coef * vf_loss).item(), policy=pg_loss.item(), value=vf_loss.item(),
                approx_kl=approx_kl.item(), clipfrac=pg_clipfrac.item(), vclipfrac=vf_clipfrac.item(),
                returns=returns, n=n.item(), numel=mask.numel())


def zyn_ppo_loss(logprobs, values, old_logprobs, old_values, rewards, mask, *, gamma, lam, cliprange,
                 cliprange_value, vf_coef):
    """The engine's pure functions composed as its train_step does."""
    adv, returns = zyn_ppo.gae_advantages(rewards, old_values, mask, gamma, lam)
    adv = zyn_ppo.whiten(adv, mask)
    pl, clipfrac, approx_kl = zyn_ppo.policy_loss(logprobs, old_logprobs, adv, mask, cliprange)
    vl, vclipfrac = zyn_ppo.value_loss(values, old_values, returns, mask, cliprange_value)
    return dict(total=(pl + vf_coef * vl).item(), policy=pl.item(), value=vl.item(), approx_kl=approx_kl.item(),
                clipfrac=clipfrac.item(), vclipfrac=vclipfrac.item(), returns=returns)


def fixed_batch(lengths, T=6):
    """A fixed batch from sines (no RNG); padded entries of the stored tensors are 0, of the current
    logprobs / values arbitrary (the model's outputs there are masked out)."""
    B = len(lengths)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).float()
    k = torch.arange(B * T, dtype=torch.float32).reshape(B, T)
    old_logprobs = (-1.5 + torch.sin(1.3 * k)) * mask
    logprobs = old_logprobs + 0.35 * torch.sin(2.1 * k + 0.4)  # ratios both inside and outside 1 +- 0.2
    old_values = torch.cos(0.7 * k) * mask
    values = old_values + 0.3 * torch.sin(1.7 * k + 1.0)
    rewards = 0.1 * torch.sin(0.9 * k + 0.3) * mask
    last = mask.sum(1).long() - 1
    rewards[torch.arange(B), last] += torch.tensor([1.0, -2.0, 0.5, 3.0][:B])
    return logprobs, values, old_logprobs, old_values, rewards, mask


HYPER = dict(gamma=1.0, lam=0.95, cliprange=0.2, cliprange_value=0.2, vf_coef=1.0)  # the paper's method section
KEYS = ("total", "policy", "value", "approx_kl", "clipfrac", "vclipfrac")


def test_ppo_loss_equals_trlx_on_an_unpadded_batch():
    batch = fixed_batch([6, 6, 6, 6])
    ours = zyn_ppo_loss(*batch, **HYPER)
    theirs = trlx_206d885_ppo(*[x.double() for x in batch], **HYPER)
    for key in KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
    torch.testing.assert_close(ours["returns"].double(), theirs["returns"], atol=1e-6, rtol=0)
    assert 0 < ours["clipfrac"] < 1 and 0 < ours["vclipfrac"] < 1  # both branches of both clips are used


def test_ppo_loss_on_a_padded_batch_pins_the_differences_from_trlx():
    batch = fixed_batch([6, 4, 1, 3])
    ours = zyn_ppo_loss(*batch, **HYPER)
    theirs = trlx_206d885_ppo(*[x.double() for x in batch], **HYPER)
    valid_only = trlx_206d885_ppo(*[x.double() for x in batch], **HYPER, whiten_valid_only=True)
    mask = batch[-1]
    # the same: returns, the value loss and its clip fraction (no whitening in them)
    torch.testing.assert_close(ours["returns"].double(), theirs["returns"] * mask.double(), atol=1e-6, rtol=0)
    for key in ("value", "vclipfrac"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
    # the whole loss is trlx's once the whitening statistics are taken over valid tokens only
    for key in ("total", "policy", "clipfrac"):
        assert ours[key] == pytest.approx(valid_only[key], abs=1e-6), key
    # deliberate difference 1: trlx whitened over all 24 entries (10 of them padding)
    assert (theirs["n"], theirs["numel"]) == (14, 24)
    assert ours["policy"] == pytest.approx(POLICY_LOSS_VALID_ONLY, abs=1e-5)
    assert theirs["policy"] == pytest.approx(POLICY_LOSS_TRLX, abs=1e-5)
    assert ours["clipfrac"] == pytest.approx(CLIPFRAC_VALID_ONLY, abs=1e-6)
    assert theirs["clipfrac"] == pytest.approx(CLIPFRAC_TRLX, abs=1e-6)
    assert ours["value"] == pytest.approx(VALUE_LOSS, abs=1e-5)
    # difference 2 (unlisted in the engine's docstring): the approximate KL that feeds the adaptive
    # controller is a mean over valid tokens here, over the padded batch (padding counted as 0) in trlx
    assert ours["approx_kl"] == pytest.approx(APPROX_KL_VALID_ONLY, abs=1e-6)
    assert theirs["approx_kl"] == pytest.approx(ours["approx_kl"] * 14 / 24, abs=1e-7)


# pinned values of the padded fixed batch above (float32 engine, float64 transcription)
POLICY_LOSS_VALID_ONLY = 0.0391298  # zyn_ppo
POLICY_LOSS_TRLX = -0.0468221  # trlx 206d885: another sign on this batch
CLIPFRAC_VALID_ONLY = CLIPFRAC_TRLX = 2 / 14  # the same tokens clip here
VALUE_LOSS = 1.4792990  # both
APPROX_KL_VALID_ONLY = 0.0267036  # zyn_ppo; trlx 0.0155771 (x 14/24)


def test_train_step_loss_equals_trlx_transcription(tiny_gpt2_dir, tmp_path):
    """At trainer level: perturb the stored (rollout) logprobs and values of a real rollout store; at the first
    step the current policy's logprobs and values are the unperturbed ones, so train_step's logged losses can
    be recomputed with the trlx transcription."""
    trainer = make_trainer(tiny_gpt2_dir, tmp_path / "run", reward_fn=spaces, prompts=PROMPTS * 2, **{
        "method.num_rollouts": 8, "method.chunk_size": 8, "train.batch_size": 8, "method.init_kl_coef": 0.1,
        "method.gen_kwargs.max_new_tokens": 10})
    from transformers import LogitsProcessorList

    query_length = max(len(p["ids"]) for p in trainer.train_prompts)
    ends = ForceEOS(query_length, trainer.tokenizer.eos_token_id, [2, None, 0, 6, None, 4, 8, None])
    trainer.config.method.gen_experience_kwargs = dict(trainer.config.method.gen_kwargs,
                                                       logits_processor=LogitsProcessorList([ends]))
    store = trainer.make_experience()
    mask = store["response_mask"].float()
    width = int(mask.sum(1).max())
    assert mask.sum(1).tolist() == [3, 10, 1, 7, 10, 5, 9, 10]  # padding, so the whitening differs
    current_logprobs, current_values = store["logprobs"].clone(), store["values"].clone()
    k = torch.arange(mask.numel(), dtype=torch.float32).reshape(mask.shape)
    store["logprobs"] = (current_logprobs + 0.3 * torch.sin(1.9 * k)) * mask
    store["values"] = (current_values + 0.5 * torch.cos(1.1 * k)) * mask
    trainer.store = store
    stats = trainer.train_step(torch.arange(8))
    cut = [x[:, :width].double() for x in (current_logprobs, current_values, store["logprobs"], store["values"],
                                          store["rewards"], mask)]
    hyper = dict(gamma=1.0, lam=0.95, cliprange=0.2, cliprange_value=0.2, vf_coef=1.0)
    valid_only = trlx_206d885_ppo(*cut, **hyper, whiten_valid_only=True)
    theirs = trlx_206d885_ppo(*cut, **hyper)
    logged = {"total": "loss/total", "policy": "loss/policy", "value": "loss/value", "clipfrac": "policy/clipfrac",
              "vclipfrac": "values/clipfrac", "approx_kl": "policy/approx_kl"}
    for key in ("total", "policy", "value", "clipfrac", "vclipfrac"):
        assert stats[logged[key]] == pytest.approx(valid_only[key], abs=2e-5), key
    assert 0 < stats["policy/clipfrac"] < 1
    assert stats["loss/value"] == pytest.approx(theirs["value"], abs=2e-5)
    assert abs(stats["loss/policy"] - theirs["policy"]) > 1e-4  # trlx's padding-inclusive whitening
    assert stats["policy/approx_kl"] * valid_only["n"] / valid_only["numel"] == pytest.approx(theirs["approx_kl"], abs=1e-6)
    assert stats["returns/mean"] == pytest.approx((theirs["returns"] * cut[-1]).sum().item() / theirs["n"], abs=1e-5)


# ----------------------------------------------------------------------------------- the judge's tokenizer


def slow_t5_tokenizer(vocab_file):
    """The original's `T5Tokenizer` (transformers 4.x, sentencepiece, legacy): sentencepiece pieces, then </s>."""
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    class SentencePieceT5Tokenizer(SentencePieceBackend):
        def build_inputs_with_special_tokens(self, ids, pair=None):
            ids = ids + [self.eos_token_id]
            return ids if pair is None else ids + pair + [self.eos_token_id]

    return SentencePieceT5Tokenizer(vocab_file=vocab_file, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                                    legacy=True)


TEXTS = [
    "this movie was great and I loved it!",
    "The film. The story, the acting; the end.",
    "  two leading spaces,\ttab and  double  spaces ",
    "first line\nsecond line\n\n  third after a blank one",
    "“Curly quotes” — dashes… ½ and Ünïcödé",
    "",
]
QUESTIONS = ["Is this movie review positive?", "Does this text contain toxic speech?",
             "This review is about a funny sci-fi movie"]


def test_t5_sentencepiece_and_fast_tokenizers_agree_on_every_template(tmp_path):
    import sentencepiece as spm
    from transformers import AutoTokenizer, T5Tokenizer

    corpus = tiny_models._CORPUS * 5 + list(zyn_reward.TEMPLATES.values()) + QUESTIONS
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=str(tmp_path / "spiece"), vocab_size=160, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)  # T5's special ids
    slow = slow_t5_tokenizer(str(tmp_path / "spiece.model"))
    T5Tokenizer.from_pretrained(str(tmp_path)).save_pretrained(tmp_path / "judge")  # a folder with tokenizer.json
    fast = AutoTokenizer.from_pretrained(tmp_path / "judge")  # as zyn_reward loads a judge
    assert fast.is_fast and not slow.is_fast and (tmp_path / "judge" / "tokenizer.json").exists()
    assert fast.eos_token_id == slow.eos_token_id == 1 and fast.pad_token_id == slow.pad_token_id == 0
    assert set(zyn_reward.TEMPLATES) >= {"flan_review", "flan_review_robust", "flan_toxicity", "d5_validator"}
    n_compared = 0
    for name, template in zyn_reward.TEMPLATES.items():
        for question in QUESTIONS:
            q = zyn_reward.YesNoQuestion(question, template=template)
            prompts = [q.format(text) for text in TEXTS]
            batch = fast(prompts)["input_ids"]
            for prompt, ids in zip(prompts, batch):
                expected = slow(prompt)["input_ids"]
                assert ids == expected, (name, prompt, fast.convert_ids_to_tokens(ids), slow.convert_ids_to_tokens(expected))
                assert fast(prompt, add_special_tokens=False)["input_ids"] == expected[:-1]
                assert expected[-1] == 1 and len(expected) > 5
                n_compared += 1
    assert n_compared == len(zyn_reward.TEMPLATES) * len(QUESTIONS) * len(TEXTS)
    for word in ("Yes", "No", " Yes", " No"):  # the answer words the judge reads
        assert fast(word, add_special_tokens=False)["input_ids"] == slow(word, add_special_tokens=False)["input_ids"]
