"""ZYN sentiment on TRL's GRPO trainer: the policy learns to write positive movie reviews, rewarded by a
yes/no question, with TRL's maintained GRPOTrainer instead of the project's PPO engine.

Same experiment, flags and presets as ppo_flan_sentiments.py: the judge reads prompt + continuation and
answers "Is this movie review positive?" (cpu preset: "Sentiment:", answered positive or negative); the
reward is (P(Yes) - 0.5) * 10 (Eq. 3 of arXiv 2308.06385; cpu preset: the log-odds), the very reward
function the PPO run trains on (guards and --reward external included), given to GRPOTrainer as a TRL
reward function of prompt + completion. Written for trl==1.16.0 (the version
pinned in requirements.txt). A callback evaluates the current policy on the held-out prompts at step 0,
every --eval-interval steps and at the end, and writes metrics.jsonl in the same format and with the same
names as the PPO runs (reward/mean, metrics/prob_positive, metrics/external_vader in the cpu preset,
time/elapsed), so plots/plot_curves.py and plots/compare_ppo_grpo.py overlay PPO and GRPO runs.

    python grpo_flan_sentiments.py --preset cpu                  # offline: gemma-3-270m judge, SmolLM2 policy
    python grpo_flan_sentiments.py --preset cpu --print-config   # show what a run would load, then exit
    python grpo_flan_sentiments.py                               # the paper's models and data (hub; a GPU)
    accelerate launch grpo_flan_sentiments.py                    # several GPUs
    python grpo_flan_sentiments.py --preset cpu --question "Is this movie review funny?" --answers Yes No \
        --template flan_review

Training lines of metrics.jsonl carry TRL's own statistics renamed where the PPO runs have the same
quantity (loss/total, lr, rollout/score_mean = mean reward of the sampled completions) and prefixed with
grpo/ otherwise (grpo/kl is TRL's mean per-token KL to the reference, grpo/reward_std, grpo/entropy, ...).

The script layer is PPO's (zyn_ppo/script.py): the same presets (zyn_ppo/presets.py), config YAML with the
cpu overlay, run directory, run.json and checks; only the trainer differs. GRPO reads the PPO config's
settings where the two trainers share a meaning: the step budget (script.step_budget), batch size,
rollouts per round, passes over them (method.ppo_epochs), lr and AdamW settings, generation length, which
blocks train, evaluation and checkpoint intervals. Its own flags (--batch-size, --learning-rate, ...) set
those settings; --num-generations, --beta, --epsilon and --temperature are GRPO's alone.
Running the same command again resumes from the latest checkpoint in the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, ClassVar

import numpy as np
import torch
from transformers import TrainerCallback

import zyn_ppo
from zyn_ppo import UserError, presets, runio, script

TRL_VERSION = "1.16.0"
GROUP = {"paper": 8, "cpu": 4}  # completions per prompt (--num-generations) in each preset
# the sentiment experiment's judge, prompts and step budget: the very presets ppo_flan_sentiments.py runs
PRESETS = {name: dataclasses.replace(preset, defaults={"num_generations": GROUP[name]})
           for name, preset in presets.sentiment().items()}


@dataclass
class Args(script.QuestionArgs):
    # flags that stand for settings of the PPO config (None: the config's, see --print-config)
    CONFIG_FLAGS: ClassVar[dict[str, str]] = {
        "num_rollouts": "method.num_rollouts", "batch_size": "train.batch_size",
        "num_iterations": "method.ppo_epochs", "max_new_tokens": "method.gen_kwargs.max_new_tokens",
        "learning_rate": "optimizer.kwargs.lr", "num_layers_unfrozen": "model.num_layers_unfrozen",
        "freeze_embeddings": "model.freeze_embeddings", "eval_interval": "train.eval_interval",
        "eval_batch_size": "method.chunk_size", "checkpoint_interval": "train.checkpoint_interval"}
    num_rollouts: int | None = None
    """completions sampled per generation round (method.num_rollouts)"""
    batch_size: int | None = None
    """completions per optimiser step (train.batch_size)"""
    num_iterations: int | None = None
    """passes over each round's completions (method.ppo_epochs): a round serves
    num_rollouts / batch_size * num_iterations optimiser steps"""
    max_new_tokens: int | None = None
    """maximum length of a continuation (method.gen_kwargs.max_new_tokens)"""
    learning_rate: float | None = None
    """AdamW learning rate, constant (optimizer.kwargs.lr; betas, eps and weight decay from the config too)"""
    num_layers_unfrozen: int | None = None
    """train only the last N blocks (plus embeddings, final norm and LM head, as the PPO runs); -1: everything
    (model.num_layers_unfrozen)"""
    freeze_embeddings: bool | None = None
    """freeze the input embeddings (and a tied LM head) as the PPO runs do (model.freeze_embeddings)"""
    eval_interval: int | None = None
    """evaluate on the held-out prompts every this many steps, and at step 0 and the end (train.eval_interval)"""
    eval_batch_size: int | None = None
    """eval prompts per generate call (method.chunk_size)"""
    checkpoint_interval: int | None = None
    """save a checkpoint every this many steps, the latest two kept for resuming (train.checkpoint_interval)"""
    num_generations: int | None = None
    """completions per prompt: GRPO's group, whose mean and std normalise the rewards (None: paper 8, cpu 4)"""
    beta: float = 0.05
    """weight of the per-token KL to the initial policy in the loss (PPO's init_kl_coef puts it in the reward)"""
    epsilon: float = 0.2
    """clipping range of the probability ratio (PPO's cliprange)"""
    temperature: float = 1.0
    """sampling temperature (top_k 0, top_p 1: the policy's own distribution, as the PPO runs sample)"""


def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """The first 4 words of every IMDB review (train + test), or the lines of the cpu prompt file."""
    return script.movie_review_openers(args.preset, presets.NUM_EVAL)


def make_reward(args: Args) -> script.Judge:
    return script.ask(args)  # the same judge and questions as the PPO run


def external_check(args: Args):
    """The PPO run's checks from outside the judge: VADER (cpu preset), metrics/ontask_film and
    metrics/ontask_review."""
    return presets.sentiment_checks(args.preset)


def extra_info(args: Args) -> dict:
    """GRPO's own settings: part of what defines the run (run.json)."""
    return {"trl": f"{TRL_VERSION} (GRPOTrainer)",
            "grpo": {k: getattr(args, k) for k in ("num_generations", "beta", "epsilon", "temperature")}}


# ------------------------------------------------------------------------------------------------ train
class Evaluator:
    """The held-out evaluation of the PPO runs: same prompts, same metric names, same samples files."""

    def __init__(self, settings: SimpleNamespace, tokenizer, eval_prompts: list[str], reward_fn: Callable,
                 metric_fn: Callable, logger: runio.RunLogger):
        self.s, self.tokenizer, self.prompts, self.reward_fn, self.metric_fn = settings, tokenizer, eval_prompts, reward_fn, metric_fn
        self.logger, self.n_evals = logger, 0

    @torch.no_grad()
    def __call__(self, model, step: int) -> dict:
        t0, was_training = time.time(), model.training
        model.eval()
        outputs = []
        with torch.random.fork_rng(devices=[]):  # same sampling noise at every evaluation
            torch.manual_seed(self.s.seed)
            for i in range(0, len(self.prompts), self.s.eval_batch_size):
                chunk = self.prompts[i:i + self.s.eval_batch_size]
                enc = self.tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left")
                out = model.generate(**enc.to(model.device), do_sample=True, top_k=0, top_p=1.0,
                                     temperature=self.s.temperature, max_new_tokens=self.s.max_new_tokens,
                                     pad_token_id=self.tokenizer.pad_token_id)
                outputs += self.tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
        model.train(was_training)
        samples = [p + o for p, o in zip(self.prompts, outputs)]
        rewards = self.reward_fn(samples, prompts=self.prompts, outputs=outputs)
        metrics = self.metric_fn(samples, prompts=self.prompts, outputs=outputs)
        rows = [dict(prompt=p, output=o, reward=rewards[j], metrics={k: v[j] for k, v in metrics.items()})
                for j, (p, o) in enumerate(zip(self.prompts, outputs))]
        stats = {"reward/mean": float(np.mean(rewards)), **{f"metrics/{k}": float(np.mean(v)) for k, v in metrics.items()},
                 "eval/index": self.n_evals, "time/eval": time.time() - t0}
        self.logger.log_samples(rows, step)
        runio.print_evaluation(rows, stats, self.n_evals, step)
        self.n_evals += 1
        return stats


class ZynCallback(TrainerCallback):
    """metrics.jsonl in the PPO runs' format (one line per step, evaluation and training keys of a step
    merged, TRL's names mapped to the PPO names), the PPO runs' progress bar and evaluations."""

    RENAMED = {"loss": "loss/total", "learning_rate": "lr", "reward": "rollout/score_mean"}

    def __init__(self, evaluate: Evaluator, logger: runio.RunLogger, elapsed_before: float, eval_interval: int):
        self.evaluate, self.logger, self.elapsed_before, self.eval_interval = evaluate, logger, elapsed_before, eval_interval
        self.t0, self.pending, self.bar = time.time(), {}, None

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t0

    def on_train_begin(self, targs, state, control, model=None, **kwargs):
        self.bar = runio.progress_bar(state.max_steps, state.global_step, True, desc="grpo")
        if state.global_step == 0:
            self.logger.log({**self.evaluate(model, 0), "time/elapsed": self.elapsed()}, step=0)

    def on_step_end(self, targs, state, control, model=None, **kwargs):
        self.bar.update(1)
        if state.global_step % self.eval_interval == 0 or state.global_step >= state.max_steps:
            self.pending = self.evaluate(model, state.global_step)

    def on_log(self, targs, state, control, logs=None, **kwargs):
        if "loss" not in logs:  # the end-of-training summary
            return
        train = {self.RENAMED.get(k, f"grpo/{k}"): v for k, v in logs.items() if isinstance(v, (int, float))}
        self.bar.set_postfix(reward=f"{train.get('rollout/score_mean', float('nan')):.3g}", refresh=False)
        self.logger.log({**train, **self.pending, "time/elapsed": self.elapsed()}, step=state.global_step)
        self.pending = {}

    def on_train_end(self, targs, state, control, **kwargs):
        if self.pending:
            self.logger.log({**self.pending, "time/elapsed": self.elapsed()}, step=state.global_step)
        self.bar.close()


def train(args: Args, reward_fn: Callable, prompts: list[str], eval_prompts: list[str], metric_fn: Callable,
          config: zyn_ppo.TRLConfig, run_info: dict, overwrite: bool = False) -> SimpleNamespace:
    """script.main's trainer: check the run directory as the PPO engine does (one run, one writer, nothing
    lost), then train with TRL's GRPOTrainer on the config's budget. Returns the run (run_dir)."""
    tc, mc = config.train, config.method
    if args.push_to_hub:
        raise UserError("--push-to-hub: grpo_flan_sentiments.py does not upload; its checkpoints are in the run "
                        "directory")
    if mc.num_rollouts % tc.batch_size or mc.num_rollouts % args.num_generations:
        raise UserError(f"--num-rollouts ({mc.num_rollouts}) must be a multiple of --batch-size ({tc.batch_size}) "
                        f"and of --num-generations ({args.num_generations})")
    # run.json as the PPO engine writes it: the config, the run, and what the prompts were
    record = {"config": config.to_dict(), "run": {**run_info, "prompts_sha256": runio.content_hash(list(prompts)),
                                                  "eval_prompts_sha256": runio.content_hash(list(eval_prompts))}}
    run_dir = Path(tc.logging_dir)
    with runio.RunLock(run_dir):
        mode = runio.check_run_dir(run_dir, record, resume=True, overwrite=overwrite)
        run_dir.mkdir(parents=True, exist_ok=True)
        runio.write_json_atomic(run_dir / runio.RUN_RECORD, {**record, "environment": runio.environment()})
        runio.write_text_atomic(run_dir / "config.yaml", str(config))
        checkpoint = last_complete_checkpoint(run_dir / "checkpoints") if mode == "continue" else None
        resume_step = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"] if checkpoint else -1
        kept = runio.keep_metrics_until(run_dir / "metrics.jsonl", resume_step) if (run_dir / "metrics.jsonl").exists() else []
        elapsed = max([m["time/elapsed"] for m in kept if m.get("time/elapsed") is not None], default=0.0)
        if checkpoint:
            print(f"continuing {run_dir} from {checkpoint} (step {resume_step})", file=sys.stderr)
        _train(args, config, record, run_dir, checkpoint, elapsed, prompts, eval_prompts, reward_fn, metric_fn)
    print(runio.summarize(run_dir), flush=True)
    return SimpleNamespace(run_dir=run_dir)


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint-<step> folder that TRL finished writing (its trainer_state.json is written last);
    a half-written one, left by a crash or a full disk while saving, is skipped with a note."""
    steps = sorted((int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit()) if folder.is_dir() else []
    found = runio.newest_checkpoint(
        (path for _, path in reversed(steps)),
        lambda path: None if (path / "trainer_state.json").is_file() else
        "incomplete (no trainer_state.json, a crash while saving?)",
        report=lambda line: print(f"note: {line}", file=sys.stderr))
    return str(found) if found else None


def trl_reward(reward_fn: Callable, name: str) -> Callable[..., list[float]]:
    """The experiment's reward as a TRL reward function, f(prompts, completions) -> rewards of prompt + completion."""
    def reward(prompts=None, completions=None, **kwargs) -> list[float]:
        return reward_fn([p + c for p, c in zip(prompts, completions)], prompts=list(prompts), outputs=list(completions))

    reward.__name__ = reward.__qualname__ = name  # TRL logs rewards/<name>/mean
    return reward


def _train(args: Args, config: zyn_ppo.TRLConfig, record: dict, run_dir: Path, checkpoint: str | None, elapsed: float,
           prompts: list[str], eval_prompts: list[str], reward_fn: Callable, metric_fn: Callable) -> None:
    import trl
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    if trl.__version__ != TRL_VERSION:
        print(f"warning: written for trl=={TRL_VERSION} (requirements.txt), found {trl.__version__}", file=sys.stderr)
    tc, mc, opt = config.train, config.method, config.optimizer.kwargs
    policy = config.model.model_path
    tokenizer = zyn_ppo.load_tokenizer(config.tokenizer.tokenizer_path or policy)
    model = zyn_ppo.load_causal_lm(policy)
    zyn_ppo.freeze_layers(model, config.model.num_layers_unfrozen, config.model.freeze_embeddings)  # as PPO trains
    logger = runio.RunLogger(run_dir, tc.tracker, record, project=tc.project_name)
    on_gpu = torch.cuda.is_available()
    max_new_tokens = mc.gen_kwargs["max_new_tokens"]
    (beta1, beta2), judge = opt.get("betas", (0.9, 0.999)), record["run"]["judge"]
    rewarded = judge["questions"] + judge.get("guards", [])
    name = ("external" if record["run"]["reward"] == "external" else
            "zyn_" + ("ensemble" if len(rewarded) > 1 else judge["questions"][0]["name"]))
    grpo_config = GRPOConfig(
        output_dir=str(run_dir / "checkpoints"), run_name=run_dir.name, seed=tc.seed,
        max_steps=script.step_budget(config),  # PPO's budget, by PPO's rule
        per_device_train_batch_size=tc.batch_size, steps_per_generation=mc.num_rollouts // tc.batch_size,
        num_iterations=mc.ppo_epochs, num_generations=args.num_generations,
        max_completion_length=max_new_tokens, temperature=args.temperature, top_k=0, top_p=1.0,
        beta=args.beta, epsilon=args.epsilon, learning_rate=opt["lr"], lr_scheduler_type="constant",
        adam_beta1=beta1, adam_beta2=beta2, adam_epsilon=opt.get("eps", 1e-8), weight_decay=opt.get("weight_decay", 0.0),
        logging_steps=1, save_strategy="steps", save_steps=tc.checkpoint_interval, save_total_limit=2,
        report_to="none", use_cpu=not on_gpu, bf16=on_gpu and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=False, disable_dropout=True, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=trl_reward(reward_fn, name), args=grpo_config,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer)
    settings = SimpleNamespace(seed=tc.seed, eval_batch_size=mc.chunk_size, temperature=args.temperature,
                               max_new_tokens=max_new_tokens)
    evaluate = Evaluator(settings, tokenizer, eval_prompts, reward_fn, metric_fn, logger)
    trainer.add_callback(ZynCallback(evaluate, logger, elapsed, tc.eval_interval))
    try:
        with runio.on_disk_full(run_dir / "checkpoints", "a checkpoint in"):  # one line, and the run resumes
            trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        logger.close()


if __name__ == "__main__":
    script.main(Args, PRESETS, load_prompts, make_reward, external_check, __doc__, extra_info=extra_info, train=train)
