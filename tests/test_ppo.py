"""zyn_ppo: PPO maths against plain loops, the hydra reference, configs, end-to-end runs on tiny models."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_models
import zyn_ppo

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------- PPO maths


def random_batch(seed=0, B=5, T=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 1, 5, 6])[:B]
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    return (torch.randn(B, T, generator=g), torch.randn(B, T, generator=g), mask, lengths)


def test_gae_matches_plain_loop():
    rewards, values, mask, lengths = random_batch()
    gamma, lam = 0.9, 0.8
    adv, ret = zyn_ppo.gae_advantages(rewards, values, mask, gamma, lam)
    for i, n in enumerate(lengths.tolist()):
        r, v = rewards[i, :n].tolist(), values[i, :n].tolist()
        expected, last = [0.0] * n, 0.0
        for t in reversed(range(n)):
            next_v = v[t + 1] if t + 1 < n else 0.0
            last = r[t] + gamma * next_v - v[t] + gamma * lam * last
            expected[t] = last
        assert torch.allclose(adv[i, :n], torch.tensor(expected), atol=1e-5)
        assert torch.allclose(ret[i, :n], torch.tensor(expected) + values[i, :n], atol=1e-5)
        assert (adv[i, n:] == 0).all() and (ret[i, n:] == 0).all()


def test_gae_gamma1_lam1_is_reward_to_go_minus_value():
    rewards, values, mask, _ = random_batch(1)
    adv, _ = zyn_ppo.gae_advantages(rewards, values, mask, 1.0, 1.0)
    to_go = torch.flip(torch.cumsum(torch.flip(rewards * mask, [1]), 1), [1])
    assert torch.allclose(adv, (to_go - values) * mask, atol=1e-5)


def test_whiten_masked_entries_only():
    x, _, mask, _ = random_batch(2)
    out = zyn_ppo.whiten(x * 3 + 1, mask)
    vals = np.array([v for v, m in zip((x * 3 + 1).flatten().tolist(), mask.flatten().tolist()) if m])
    expected = (vals - vals.mean()) / math.sqrt(vals.var(ddof=1) + 1e-8)
    got = np.array([v for v, m in zip(out.flatten().tolist(), mask.flatten().tolist()) if m])
    assert np.allclose(got, expected, atol=1e-5)
    assert (out[mask == 0] == 0).all()
    shifted = zyn_ppo.whiten(x, mask, shift_mean=False)
    assert abs(shifted[mask == 1].mean().item() - x[mask == 1].mean().item()) < 1e-5


def test_clipped_losses_match_plain_loop():
    logp, old_logp, mask, _ = random_batch(3)
    logp, old_logp = logp * 0.3, old_logp * 0.3
    adv, returns = torch.randn(5, 7), torch.randn(5, 7)
    values, old_values = torch.randn(5, 7), torch.randn(5, 7)
    c, cv = 0.2, 0.3
    pl, clipfrac, approx_kl = zyn_ppo.policy_loss(logp, old_logp, adv, mask, c)
    vl, vclipfrac = zyn_ppo.value_loss(values, old_values, returns, mask, cv)
    p_terms, p_clip, kls, v_terms, v_clip = [], [], [], [], []
    for i in range(5):
        for t in range(7):
            if not mask[i, t]:
                continue
            ratio = math.exp(logp[i, t] - old_logp[i, t])
            a = adv[i, t].item()
            unclipped, clipped = -a * ratio, -a * min(max(ratio, 1 - c), 1 + c)
            p_terms.append(max(unclipped, clipped))
            p_clip.append(clipped > unclipped)
            kls.append(ratio - 1 - math.log(ratio))
            v, vo, R = values[i, t].item(), old_values[i, t].item(), returns[i, t].item()
            vc = min(max(v, vo - cv), vo + cv)
            v_terms.append(0.5 * max((v - R) ** 2, (vc - R) ** 2))
            v_clip.append((vc - R) ** 2 > (v - R) ** 2)
    assert pl.item() == pytest.approx(np.mean(p_terms), abs=1e-5)
    assert clipfrac.item() == pytest.approx(np.mean(p_clip), abs=1e-6)
    assert approx_kl.item() == pytest.approx(np.mean(kls), abs=1e-5)
    assert vl.item() == pytest.approx(np.mean(v_terms), abs=1e-5)
    assert vclipfrac.item() == pytest.approx(np.mean(v_clip), abs=1e-6)


def test_kl_penalty_rewards_put_score_at_last_token():
    logp, ref, mask, lengths = random_batch(4)
    scores = torch.tensor([1.0, -2.0, 3.0, 0.5, 4.0])
    r = zyn_ppo.kl_penalty_rewards(logp, ref, mask, scores, 0.1)
    for i, n in enumerate(lengths.tolist()):
        expected = [-0.1 * (logp[i, t] - ref[i, t]).item() for t in range(n)]
        expected[-1] += scores[i].item()
        assert torch.allclose(r[i, :n], torch.tensor(expected), atol=1e-6)
        assert (r[i, n:] == 0).all()


def test_kl_controllers_match_formula():
    ctl, beta = zyn_ppo.AdaptiveKLController(0.05, target=6.0, horizon=10000), 0.05
    for kl in [0.01, 3.0, 6.0, 9.0, 100.0, 0.0]:
        ctl.update(kl, n_steps=64)
        beta *= 1 + min(max(kl / 6.0 - 1, -0.2), 0.2) * 64 / 10000
        assert ctl.value == pytest.approx(beta, rel=1e-12)
    fixed = zyn_ppo.FixedKLController(0.3)
    fixed.update(100.0, 64)
    assert fixed.value == 0.3


def test_running_moments_match_numpy():
    rm, seen = zyn_ppo.RunningMoments(), []
    g = torch.Generator().manual_seed(5)
    for n in (4, 7, 1, 10):
        xs = torch.randn(n, generator=g) * 2 + 3
        seen += xs.tolist()
        rm.update(xs)
    assert rm.mean == pytest.approx(np.mean(seen), abs=1e-6)
    assert rm.std == pytest.approx(np.std(seen, ddof=1), abs=1e-6)


# ----------------------------------------------------------------------------------- model


@pytest.fixture(scope="session")
def tiny_neox_dir(tmp_path_factory, tokenizer):
    return tiny_models.save_tiny(tiny_models.tiny_neox(tokenizer), tokenizer, tmp_path_factory.mktemp("neox"))


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


def test_value_head_shape_and_full_reference(tiny_gpt2_dir):
    policy, _ = zyn_ppo.load_policy(model_config(tiny_gpt2_dir))
    assert not policy.has_hydra
    assert all(p.requires_grad for p in policy.parameters())
    first, _, last = policy.v_head
    assert first.in_features == 32 and first.out_features == 64 and last.out_features == 1


def test_unknown_architecture_is_named(tiny_t5_dir):
    with pytest.raises(ValueError, match="t5"):
        zyn_ppo.load_policy(model_config(tiny_t5_dir))


# ----------------------------------------------------------------------------------- config

TRLX_YAML = """
train:
  seq_length: 48
  epochs: 100
  total_steps: 1600
  batch_size: 2
  checkpoint_interval: 10000
  eval_interval: 100
  save_best: False
  save_optimizer: True
  project_name: "trlx-demo"
  entity_name: "someone"
  group_name: "Pythia20B"
  tags: ["a", "b"]
  checkpoint_dir: "ckpts"
  rollout_logging_dir: null
  minibatch_size: 1
  tracker: "wandb"
  logging_dir: null
  trainer_kwargs: {}
  pipeline: "PromptPipeline"
  trainer: "AcceleratePPOTrainer"
model:
  model_path: "EleutherAI/gpt-neox-20b"
  model_arch_type: "causal"
  num_layers_unfrozen: 2
  peft_config: null
  model_extra_configs: {}
tokenizer:
  tokenizer_path: "EleutherAI/gpt-neox-20b"
  padding_side: "left"
  truncation_side: "right"
  tokenizer_extra_configs: {}
optimizer:
  name: "adamw"
  kwargs: {lr: 1.0e-6, betas: [0.9, 0.95], eps: 1.0e-8, weight_decay: 1.0e-6}
scheduler:
  name: "cosine_annealing"
  kwargs: {T_max: 10000, eta_min: 1.0e-6}
method:
  name: "ppoconfig"
  num_rollouts: 128
  chunk_size: 8
  ppo_epochs: 4
  init_kl_coef: 0.05
  target: 6
  horizon: 10000
  gamma: 1
  lam: 0.95
  cliprange: 0.2
  cliprange_value: 0.2
  vf_coef: 1
  scale_reward: False
  ref_mean: null
  ref_std: null
  cliprange_reward: 10
  gen_kwargs: {max_new_tokens: 40, top_k: 0, top_p: 1.0, do_sample: True}
  gen_experience_kwargs: null
"""


def test_config_files_and_trlx_yaml(tmp_path):
    s = zyn_ppo.TRLConfig.load_yaml(ROOT / "configs" / "ppo_flan_sentiments.yml")
    assert (s.train.batch_size, s.model.model_path, s.model.num_layers_unfrozen) == (64, "lvwerra/gpt2-imdb", 2)
    assert s.method.gen_kwargs == dict(max_new_tokens=40, top_k=0, top_p=1.0, do_sample=True)
    assert s.optimizer.kwargs["lr"] == 1e-4 and s.scheduler.kwargs == dict(T_max=10000, eta_min=1e-4)
    d = zyn_ppo.TRLConfig.load_yaml(ROOT / "configs" / "ppo_flan_detox.yml")
    assert (d.train.seq_length, d.train.total_steps, d.train.batch_size) == (192, 30000, 16)
    assert (d.model.model_path, d.model.num_layers_unfrozen) == ("EleutherAI/pythia-410m", 1)
    (tmp_path / "trlx.yml").write_text(TRLX_YAML)
    t = zyn_ppo.TRLConfig.load_yaml(tmp_path / "trlx.yml")
    assert t.train.tags == ["a", "b"] and t.method.chunk_size == 8
    assert zyn_ppo.TRLConfig.from_dict(t.to_dict()) == t


def test_config_update_and_unknown_keys():
    base = zyn_ppo.TRLConfig.load_yaml(ROOT / "configs" / "ppo_flan_sentiments.yml").to_dict()
    c = zyn_ppo.TRLConfig.update(base, {"train.total_steps": 100, "method.init_kl_coef": 0.1,
                                        "method.gen_kwargs.max_new_tokens": 8, "optimizer": {"name": "adam"}})
    assert (c.train.total_steps, c.method.init_kl_coef, c.method.gen_kwargs["max_new_tokens"]) == (100, 0.1, 8)
    assert c.optimizer.name == "adam" and c.optimizer.kwargs["lr"] == 1e-4
    assert base["train"]["total_steps"] == 10000  # the base is not modified
    with pytest.raises(ValueError, match="train.totl_steps"):
        zyn_ppo.TRLConfig.update(base, {"train.totl_steps": 1})
    with pytest.raises(ValueError, match="trian.seed"):
        zyn_ppo.TRLConfig.update(base, {"trian.seed": 1})
    with pytest.raises(ValueError, match="method.foo"):
        zyn_ppo.TRLConfig.from_dict({**base, "method": {**base["method"], "foo": 1}})


def test_configure_changes_then_overrides():
    path = ROOT / "configs" / "ppo_flan_sentiments.yml"
    config, changed = zyn_ppo.configure(path, {"train.total_steps": 100, "train.seed": 7,
                                               "train.checkpoint_interval": 7}, (
        "optimizer.kwargs.lr=3e-4",  # JSON first: a number (YAML alone reads "3e-4" as a string)
        "train.checkpoint_interval=8",  # overrides come after the changes
        "train.project_name=my run",  # not JSON: YAML
        "method.gen_kwargs.do_sample=false", "train.batch_size=64"))  # the last one equals the YAML's value
    assert config.optimizer.kwargs["lr"] == 3e-4 and isinstance(config.optimizer.kwargs["lr"], float)
    assert (config.train.total_steps, config.train.seed, config.train.project_name) == (100, 7, "my run")
    assert config.train.checkpoint_interval == 8
    assert config.method.gen_kwargs["do_sample"] is False
    assert changed["optimizer.kwargs.lr"] == "0.0001 -> 0.0003" and changed["train.total_steps"] == "10000 -> 100"
    assert changed["method.gen_kwargs.do_sample"] == "True -> False" and changed["train.checkpoint_interval"].endswith("-> 8")
    assert "train.batch_size" not in changed  # unchanged settings are not reported
    with pytest.raises(ValueError, match="train.batch_size"):
        zyn_ppo.configure(path, {}, ["train.batch_size"])  # no "=": named in the error
    with pytest.raises(ValueError, match="train.seed has its own flag, use --seed"):
        zyn_ppo.configure(path, {}, ["train.seed=8"])
    with pytest.raises(ValueError, match="train.totl_steps"):
        zyn_ppo.configure(path, {}, ["train.totl_steps=1"])


def test_check_hub_skips_local_and_embedded_and_names_what_it_needed(tmp_path, monkeypatch):
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("check_hub should not have contacted the hub")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with monkeypatch.context() as m:
        m.setattr(urllib.request, "urlopen", no_network)
        zyn_ppo.check_hub([str(tmp_path), "smollm2-135m-instruct", None])  # a folder, an embedded model
        m.setenv("HF_HUB_OFFLINE", "1")  # the local cache only
        zyn_ppo.check_hub(["some-org/some-model"])
    with pytest.raises(SystemExit) as error:
        zyn_ppo.check_hub(["some-org/some-model", str(tmp_path), "some-org/some-model", "imdb"])
    message = str(error.value.code)
    assert "cannot reach http://127.0.0.1:9" in message and "--preset cpu" in message
    assert message.count("some-org/some-model") == 1 and "imdb" in message and str(tmp_path) not in message


# ----------------------------------------------------------------------------------- end to end


def share_of_spaces(samples, prompts, outputs, **kw):
    """A learnable toy reward: 10 x the share of spaces in the output (about a third of the tiny vocabulary)."""
    return [10 * o.count(" ") / (len(o) + 1) for o in outputs]


def toy_metrics(samples, prompts, outputs, **kw):
    return {"length": [float(len(o)) for o in outputs]}


PROMPTS = ["The movie was", "I think", "A cat", "The story", "this film", "good acting and", "It", "My"] * 4


def toy_config(path, run_dir, **updates):
    settings = {
        "model.model_path": path, "model.num_layers_unfrozen": 2, "train.seq_length": 32, "train.total_steps": 8,
        "train.batch_size": 16, "train.eval_interval": 4, "train.checkpoint_interval": 4, "train.seed": 3,
        "train.logging_dir": str(run_dir), "method.num_rollouts": 32, "method.chunk_size": 32,
        "method.ppo_epochs": 2, "method.init_kl_coef": 0.01, "method.gen_kwargs.max_new_tokens": 6,
        "optimizer.kwargs.lr": 3e-3, "scheduler.name": "constant", "scheduler.kwargs": {},
    }
    settings.update(updates)
    return zyn_ppo.TRLConfig.update(zyn_ppo.TRLConfig(), settings)


def read_metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def without_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_reward_rises_on_toy_task(tiny_gpt2_dir, tmp_path):
    torch.set_num_threads(1)
    cfg = toy_config(tiny_gpt2_dir, tmp_path / "run", **{
        "train.total_steps": 128, "train.eval_interval": 64, "train.checkpoint_interval": 1000, "train.batch_size": 32,
        "method.num_rollouts": 64, "method.chunk_size": 64, "method.ppo_epochs": 4, "method.gen_kwargs.max_new_tokens": 8})
    trainer = zyn_ppo.train(share_of_spaces, PROMPTS * 2, PROMPTS[:16], toy_metrics, cfg)
    rows = read_metrics(tmp_path / "run")
    steps = [r["step"] for r in rows]
    assert steps == list(range(129)) and trainer.step == 128
    scores = [r["rollout/score_mean"] for r in rows if "rollout/count" in r]
    assert len(scores) == 16 and np.mean(scores[-2:]) > np.mean(scores[:2]) + 1.0, scores  # about 1.1 -> 3+
    evals = [r for r in rows if "reward/mean" in r]
    assert [r["eval/index"] for r in evals] == [0, 1, 2] and [r["step"] for r in evals] == [0, 64, 128]
    assert evals[-1]["reward/mean"] > evals[0]["reward/mean"] + 1.0
    assert all("metrics/length" in r for r in evals)
    train_keys = {"loss/total", "loss/policy", "loss/value", "policy/approx_kl", "policy/clipfrac", "kl/ref",
                  "kl_coef", "rollout/score_mean", "lr", "time/elapsed"}
    assert all(train_keys <= set(r) for r in rows[1:])
    assert rows[1]["policy/approx_kl"] == pytest.approx(0, abs=1e-6)  # first step: current == rollout policy
    assert (tmp_path / "run" / "config.yaml").exists() and (tmp_path / "run" / "checkpoints" / "final").exists()
    sample = json.loads((tmp_path / "run" / "samples" / "eval_128.jsonl").read_text().splitlines()[0])
    assert set(sample) == {"prompt", "output", "reward", "metrics"}


def test_resume_after_interrupt_continues_the_same_curve(tiny_gpt2_dir, tmp_path):
    torch.set_num_threads(1)
    zyn_ppo.train(share_of_spaces, PROMPTS, PROMPTS[:4], toy_metrics, toy_config(tiny_gpt2_dir, tmp_path / "a"))
    uninterrupted = read_metrics(tmp_path / "a")

    calls = {"n": 0}

    def interrupting_reward(samples, prompts, outputs, **kw):
        calls["n"] += 1
        if calls["n"] == 4:  # inside the rollout of step 5: Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
        return share_of_spaces(samples, prompts, outputs)

    cfg = toy_config(tiny_gpt2_dir, tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        zyn_ppo.train(interrupting_reward, PROMPTS, PROMPTS[:4], toy_metrics, cfg)
    assert (tmp_path / "b" / "checkpoints" / "step_5").exists()
    assert read_metrics(tmp_path / "b")[-1]["step"] == 5
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:  # a line written after the checkpoint is dropped
        f.write(json.dumps({"step": 6, "stale": 1}) + "\n")
    trainer = zyn_ppo.train(share_of_spaces, PROMPTS, PROMPTS[:4], toy_metrics, cfg)
    resumed = read_metrics(tmp_path / "b")
    assert trainer.step == 8 and [r["step"] for r in resumed] == list(range(9))
    assert without_time(resumed) == without_time(uninterrupted)  # same seed, same curve
    elapsed = [r["time/elapsed"] for r in resumed if "time/elapsed" in r]
    assert elapsed == sorted(elapsed)
    # the last two periodic checkpoints stay beside the final one
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["final", "step_4", "step_5"]


def train_with_sigterms(model_dir: str, run_dir: Path, kills: int) -> subprocess.CompletedProcess:
    """Train the toy run in a subprocess that sends itself `kills` SIGTERMs while the second rollout is scored
    (after step 1); the script prints NOT REACHED if it gets past them."""
    script = run_dir.parent / f"{run_dir.name}_term.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / "tests")!r})
        import test_ppo, zyn_ppo
        calls = []
        def reward(samples, prompts, outputs, **kw):
            calls.append(1)
            if len(calls) == 2:
                for _ in range({kills}):
                    os.kill(os.getpid(), signal.SIGTERM)
                print("NOT REACHED", flush=True)
            return test_ppo.share_of_spaces(samples, prompts, outputs)
        zyn_ppo.train(reward, test_ppo.PROMPTS, test_ppo.PROMPTS[:4], None, test_ppo.toy_config({model_dir!r}, {str(run_dir)!r}))
    """))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_sigterm_saves_a_checkpoint(tiny_gpt2_dir, tmp_path):
    out = train_with_sigterms(tiny_gpt2_dir, tmp_path / "run", kills=1)
    assert out.returncode == 128 + signal.SIGTERM, out.stderr[-2000:]
    assert (tmp_path / "run" / "checkpoints" / "step_1" / "trainer_state.pt").exists()
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [0, 1]


def test_second_sigterm_quits_without_saving(tiny_gpt2_dir, tmp_path):
    out = train_with_sigterms(tiny_gpt2_dir, tmp_path / "run", kills=2)
    assert out.returncode == 128 + signal.SIGTERM, out.stderr[-2000:]
    assert "NOT REACHED" not in out.stdout
    assert not (tmp_path / "run" / "checkpoints" / "step_1").exists()


def test_full_reference_copy_and_kl_signal_ref(tiny_llama_dir, tmp_path):
    cfg = toy_config(tiny_llama_dir, tmp_path / "r", **{"model.num_layers_unfrozen": -1, "method.kl_signal": "ref",
                                                        "train.total_steps": 4, "train.minibatch_size": 8,
                                                        "method.scale_reward": "running"})
    trainer = zyn_ppo.train(share_of_spaces, PROMPTS, None, None, cfg)
    rows = read_metrics(tmp_path / "r")
    assert trainer.ref_model is not None and [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[-1]["kl_coef"] != 0.01 and rows[-1]["kl/ref"] >= 0


def test_frozen_trunk_fast_path(tiny_neox_dir, tmp_path):
    cfg = toy_config(tiny_neox_dir, tmp_path / "f", **{"model.freeze_embeddings": True, "train.total_steps": 4})
    trainer = zyn_ppo.train(share_of_spaces, PROMPTS, PROMPTS[:4], None, cfg)
    policy = trainer.policy
    before = tiny_models.tiny_neox(tiny_models.make_tokenizer()).state_dict()
    after = policy.lm.state_dict()
    assert policy.cache_trunk and "query_trunk" in trainer.store
    assert torch.equal(after["gpt_neox.embed_in.weight"], before["gpt_neox.embed_in.weight"])
    assert torch.equal(after["gpt_neox.layers.1.mlp.dense_h_to_4h.weight"], before["gpt_neox.layers.1.mlp.dense_h_to_4h.weight"])
    assert not torch.equal(after["gpt_neox.layers.3.mlp.dense_h_to_4h.weight"], before["gpt_neox.layers.3.mlp.dense_h_to_4h.weight"])
    rows = read_metrics(tmp_path / "f")
    assert rows[1]["policy/approx_kl"] == pytest.approx(0, abs=1e-6)  # cached states reproduce the rollout's logprobs


def test_stop_sequences_cut_outputs(tiny_gpt2_dir, tmp_path):
    seen = []

    def reward(samples, prompts, outputs, **kw):
        seen.extend(outputs)
        return [0.0] * len(samples)

    cfg = toy_config(tiny_gpt2_dir, tmp_path / "stop", **{"train.total_steps": 1, "method.gen_kwargs.max_new_tokens": 12})
    trainer = zyn_ppo.train(reward, PROMPTS, PROMPTS[:4], None, cfg, stop_sequences=["e"])
    assert seen and not any("e" in o for o in seen)
    lengths = trainer.store["response_mask"].sum(1)
    assert (lengths < 12).any() and (lengths >= 1).all()


def test_bad_inputs(tiny_gpt2_dir, tmp_path):
    cfg = toy_config(tiny_gpt2_dir, tmp_path / "bad", **{"train.total_steps": 1})
    with pytest.raises(ValueError, match="prompts is empty"):
        zyn_ppo.train(share_of_spaces, [], None, None, cfg)
    with pytest.raises(ValueError, match="eval_prompts is empty"):
        zyn_ppo.train(share_of_spaces, PROMPTS, [], None, cfg)
    with pytest.raises(ValueError, match="returned 1 values for 4 samples"):
        zyn_ppo.train(lambda samples, **kw: [1.0], PROMPTS, PROMPTS[:4], None, cfg)
    with pytest.raises(ValueError, match="nan for sample 0"):
        zyn_ppo.train(lambda samples, **kw: [float("nan")] * len(samples), PROMPTS, PROMPTS[:4], None, cfg)
    with pytest.raises(TypeError, match="non-number for sample 1"):
        zyn_ppo.train(lambda samples, **kw: [0.0, "high"] + [0.0] * (len(samples) - 2), PROMPTS, PROMPTS[:4], None, cfg)
    with pytest.raises(ValueError, match="metric_fn"):
        zyn_ppo.train(share_of_spaces, PROMPTS, PROMPTS[:4], lambda samples, **kw: {"m": [1.0]}, cfg)
    with pytest.raises(ValueError, match="seq_length"):
        zyn_ppo.train(share_of_spaces, PROMPTS, None, None, zyn_ppo.TRLConfig.update(cfg, {"train.seq_length": 6}))


def test_long_prompts_and_missing_pad_token(tmp_path, tokenizer):
    tok = tiny_models.make_tokenizer()
    tok.pad_token = None
    path = tiny_models.save_tiny(tiny_models.tiny_gpt2(tokenizer), tok, tmp_path / "nopad")
    cfg = toy_config(path, tmp_path / "long", **{"train.total_steps": 1, "tokenizer.truncation_side": "left"})
    long_prompt = "the movie was good and the story " * 20
    seen = []

    def reward(samples, prompts, outputs, **kw):
        seen.extend(prompts)
        return [0.0] * len(samples)

    with pytest.warns(UserWarning) as record:
        trainer = zyn_ppo.train(reward, [long_prompt, "A cat"], [long_prompt], None, cfg)
    messages = " ".join(str(w.message) for w in record)
    assert "no pad token" in messages and "longer than seq_length" in messages
    assert trainer.tokenizer.pad_token_id == trainer.tokenizer.eos_token_id
    cut = [p for p in seen if p != "A cat"]
    assert cut and all(long_prompt.rstrip().endswith(p.strip()) for p in cut)
    assert all(len(trainer.tokenizer(p, add_special_tokens=False).input_ids) <= 32 - 6 for p in cut)


def test_two_processes(tiny_gpt2_dir, tmp_path):
    script = tmp_path / "run_two.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import zyn_ppo
        def reward_fn(samples, prompts, outputs, **kw):
            return [o.count(" ") / (len(o) + 1) for o in outputs]
        cfg = zyn_ppo.TRLConfig.update(zyn_ppo.TRLConfig(), {{
            "model.model_path": {tiny_gpt2_dir!r}, "model.num_layers_unfrozen": 2, "train.total_steps": 4,
            "train.batch_size": 8, "train.eval_interval": 2, "train.checkpoint_interval": 3, "train.seq_length": 32,
            "train.logging_dir": {str(tmp_path / "run")!r}, "method.num_rollouts": 8, "method.chunk_size": 8,
            "method.ppo_epochs": 2, "method.gen_kwargs.max_new_tokens": 6}})
        trainer = zyn_ppo.train(reward_fn, ["The movie", "I think", "A cat", "The story"] * 4, ["A", "B", "C"], None, cfg)
        # one file per rank: both ranks share stdout, where their lines can interleave
        with open({str(tmp_path)!r} + f"/done_{{trainer.rank}}.txt", "w") as f:
            f.write(f"{{trainer.rank}} {{trainer.world}} {{trainer.episodes}}")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [(tmp_path / f"done_{rank}.txt").read_text() for rank in (0, 1)] == ["0 2 32", "1 2 32"]
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[1]["rollout/count"] == 16  # 8 rollouts scored on each of the two ranks
    assert len((tmp_path / "run" / "samples" / "eval_4.jsonl").read_text().splitlines()) == 3
    assert (tmp_path / "run" / "checkpoints" / "final" / "trainer_state.pt").exists()
