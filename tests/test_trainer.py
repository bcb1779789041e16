"""zyn_ppo.trainer end to end on tiny models: learning, exact resume, signals, bad inputs, two processes."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_models
import zyn_ppo
from helpers import PROMPTS, PYTHONPATH, ROOT, read_metrics, share_of_spaces, toy_config, toy_metrics, without_time

# ----------------------------------------------------------------------------------- end to end


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
        import helpers, zyn_ppo
        calls = []
        def reward(samples, prompts, outputs, **kw):
            calls.append(1)
            if len(calls) == 2:
                for _ in range({kills}):
                    os.kill(os.getpid(), signal.SIGTERM)
                print("NOT REACHED", flush=True)
            return helpers.share_of_spaces(samples, prompts, outputs)
        zyn_ppo.train(reward, helpers.PROMPTS, helpers.PROMPTS[:4], None, helpers.toy_config({model_dir!r}, {str(run_dir)!r}))
    """))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": PYTHONPATH})


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
    assert trainer.optimizer.defaults["fused"] is True  # AdamW in one kernel unless the config names fused/foreach
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


def free_port() -> int:
    """A port nobody listens on now (a fixed one fails when an earlier run or another program holds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes(tiny_gpt2_dir, tmp_path):
    script = tmp_path / "run_two.py"
    script.write_text(textwrap.dedent(f"""
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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": PYTHONPATH}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [(tmp_path / f"done_{rank}.txt").read_text() for rank in (0, 1)] == ["0 2 32", "1 2 32"]
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[1]["rollout/count"] == 16  # 8 rollouts scored on each of the two ranks
    assert len((tmp_path / "run" / "samples" / "eval_4.jsonl").read_text().splitlines()) == 3
    assert (tmp_path / "run" / "checkpoints" / "final" / "trainer_state.pt").exists()



def test_accelerate_cpu_launch_of_one_process_is_refused(tiny_gpt2_dir, tmp_path, monkeypatch):
    """`accelerate launch --cpu --num_processes 2` starts one process with MASTER_ADDR but no rank: refused."""
    from zyn_ppo.trainer import check_launch

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(zyn_ppo.UserError, match="torchrun --nproc_per_node N") as error:
        zyn_ppo.train(share_of_spaces, PROMPTS, config=toy_config(tiny_gpt2_dir, tmp_path / "run"))
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()
    check_launch({"ACCELERATE_USE_CPU": "True"})  # accelerate launch --cpu: one process asked for
    check_launch({"MASTER_ADDR": "localhost", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"})  # torchrun
    check_launch({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "h", "PMI_SIZE": "2"})  # accelerate's mpirun

def test_inverse_cdf_sampling_draws_from_the_softmax():
    from zyn_ppo.trainer import InverseCDFSampling

    logits = torch.tensor([2.0, 0.5, float("-inf"), -1.0, 1.0, float("-inf")])
    torch.manual_seed(0)
    out = InverseCDFSampling()(None, logits.repeat(60000, 1))
    assert torch.equal((out == 0).sum(1), torch.ones(60000, dtype=torch.long))  # one token per row, the rest -inf
    drawn = out.argmax(1)
    freq = torch.bincount(drawn, minlength=6).double() / len(drawn)
    assert freq[2] == 0 and freq[5] == 0  # masked tokens are never drawn
    np.testing.assert_allclose(freq.numpy(), torch.softmax(logits.double(), 0).numpy(), atol=0.006)


def warped_probabilities(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=None):
    """The sampling distribution, written out plainly: temperature, then top-k, top-p (a token goes when the
    tokens up to it in ascending order hold at most 1 - top_p) and min-p, each on the previous one's result."""
    logits = logits.double() / temperature

    def softmax_over(keep: set) -> torch.Tensor:
        return torch.softmax(torch.tensor([logits[i] if i in keep else -math.inf for i in range(len(logits))]), 0)

    order = sorted(range(len(logits)), key=lambda i: logits[i].item())  # ascending
    keep = set(order[-top_k:]) if top_k else set(order)
    probs = softmax_over(keep)
    if top_p < 1.0:
        mass = 0.0
        for i in order[:-1]:
            mass += probs[i].item()
            if mass <= 1 - top_p:
                keep.discard(i)
        probs = softmax_over(keep)
    if min_p is not None:
        keep = {i for i in keep if probs[i] >= min_p * probs.max()}
        probs = softmax_over(keep)
    return probs


@pytest.mark.parametrize("settings", [dict(top_k=0, top_p=1.0), dict(temperature=0.5, top_k=5),
                                      dict(temperature=0.3, top_p=0.8, min_p=0.05)])
def test_fast_sampling_has_the_distribution_of_transformers_sampling(tokenizer, settings):
    from transformers import GenerationConfig
    from zyn_ppo.trainer import fast_sampling_kwargs

    lm = tiny_models.sharpen(tiny_models.tiny_llama(tokenizer), std=0.5).eval()
    lm.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    ids = torch.tensor([tokenizer("the movie was")["input_ids"]]).repeat(30000, 1)
    gen_kwargs = dict(max_new_tokens=1, do_sample=True, **settings)
    fast = fast_sampling_kwargs(gen_kwargs, lm.generation_config)
    assert fast["do_sample"] is False and not set(settings) & set(fast)
    with torch.no_grad():
        expected = warped_probabilities(lm(ids[:1]).logits[0, -1], **settings)
        for kwargs in (gen_kwargs, fast):  # transformers' own sampling (checks the reference), then ours
            torch.manual_seed(0)
            drawn = lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)[:, -1]
            freq = torch.bincount(drawn, minlength=len(expected)).double() / len(drawn)
            assert freq[expected == 0].sum() == 0  # nothing outside the kept tokens
            assert (freq - expected).abs().max() < 0.012, settings  # 30000 draws: 4.5 standard errors at p=0.3


def test_fast_sampling_leaves_other_decoding_to_transformers():
    from transformers import GenerationConfig
    from zyn_ppo.trainer import fast_sampling_kwargs

    config = GenerationConfig()
    for kwargs in (dict(do_sample=False), dict(do_sample=True, num_beams=2), dict(do_sample=True, typical_p=0.9),
                   dict(max_new_tokens=4)):
        assert fast_sampling_kwargs(kwargs, config) is kwargs
    assert fast_sampling_kwargs(dict(max_new_tokens=4), GenerationConfig(do_sample=True))["do_sample"] is False
