"""ZYN sentiment on TRL's GRPO trainer: the policy learns to write positive movie reviews, rewarded by a
yes/no question, with TRL's maintained GRPOTrainer instead of the project's PPO engine.

Same experiment, flags and presets as ppo_flan_sentiments.py: the judge reads prompt + continuation and
answers "Is this movie review positive?" (cpu preset: "Sentiment:", answered positive or negative); the
reward is (P(Yes) - 0.5) * 10 (Eq. 3 of arXiv 2308.06385),
given to GRPOTrainer through `ZeroShotRewardModel.as_trl_reward()`. Written for trl==1.16.0 (the version
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
Running the same command again resumes from the latest checkpoint in the run directory.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
import yaml

from transformers import TrainerCallback

import ppo_flan_sentiments
import zyn_ppo
from zyn_ppo import UserError, runio, script

HERE = Path(__file__).resolve().parent
SAFE_TO_CHANGE = ("args.total_steps", "args.tracker", "args.logging_dir", "args.checkpoint_interval")
PPO = ppo_flan_sentiments.PRESETS
PPO_CPU = {**script.cpu_overlay(), **PPO["cpu"].changes}  # what ppo_flan_sentiments.py --preset cpu runs
PRESETS = {
    # the paper's models; batch schedule, optimiser, KL weight and generation as configs/ppo_flan_sentiments.yml
    "paper": dict(judge=PPO["paper"].judge, policy="lvwerra/gpt2-imdb", tokenizer="gpt2", tracker="wandb",
                  prompts="imdb", total_steps=10000, num_rollouts=128, batch_size=64, num_iterations=4,
                  num_generations=8, max_new_tokens=40, learning_rate=1e-4, eval_interval=50,
                  checkpoint_interval=10000, eval_batch_size=128, freeze_embeddings=False),
    # offline on 2 CPU cores: the judge, policy, prompts and schedule of ppo_flan_sentiments.py --preset cpu,
    # read from that preset (configs/cpu.yml and the preset's own changes), so the two cannot drift apart
    "cpu": dict(judge=PPO["cpu"].judge, policy=PPO["cpu"].policy, tokenizer=None, tracker="none",
                prompts=PPO["cpu"].prompts, total_steps=PPO_CPU["train.total_steps"],
                num_rollouts=PPO_CPU["method.num_rollouts"], batch_size=PPO_CPU["train.batch_size"],
                num_iterations=4, num_generations=4, max_new_tokens=PPO_CPU["method.gen_kwargs.max_new_tokens"],
                learning_rate=PPO_CPU["optimizer.kwargs.lr"], eval_interval=PPO_CPU["train.eval_interval"],
                checkpoint_interval=PPO_CPU["train.checkpoint_interval"], eval_batch_size=PPO_CPU["method.chunk_size"],
                freeze_embeddings=PPO_CPU["model.freeze_embeddings"]),
}


@dataclass
class Args(script.AskingArgs):
    exp_name: str = Path(__file__).stem
    """name of this experiment (names the run directory)"""
    preset: Literal["paper", "cpu"] = "paper"
    """paper: the paper's models and data from the hub; cpu: offline, embedded SmolLM2-135M-Instruct"""
    judge: str | None = None
    """reward model, hub name or folder (None: google/flan-t5-large; cpu: SmolLM2-135M-Instruct)"""
    policy: str | None = None
    """policy to train, hub name or folder (None: lvwerra/gpt2-imdb; cpu: SmolLM2-135M-Instruct)"""
    tokenizer: str | None = None
    """policy tokenizer (None: gpt2 for the paper's policy, else the policy's own)"""
    prompts: str | None = None
    """'imdb' (first 4 words of each review) or a text file with one prompt per line (cpu preset)"""
    num_eval: int = 64
    """the last N prompts are held out for evaluation (64, as in ppo_flan_sentiments.py)"""
    total_steps: int | None = None
    """optimiser steps (None: the preset's; see --print-config)"""
    seed: int = 1000
    """random seed"""
    logging_dir: str | None = None
    """run directory (None: runs/<exp_name>__<preset>__seed<seed>__<hash of what defines the run>)"""
    tracker: Literal["wandb", "tensorboard", "none"] | None = None
    """tracker besides metrics.jsonl (None: wandb for paper, offline without a key; none for cpu)"""
    num_rollouts: int | None = None
    """completions sampled per generation round (PPO's method.num_rollouts)"""
    batch_size: int | None = None
    """completions per optimiser step (PPO's train.batch_size)"""
    num_iterations: int | None = None
    """passes over each round's completions (PPO's method.ppo_epochs): a round serves
    num_rollouts / batch_size * num_iterations optimiser steps"""
    num_generations: int | None = None
    """completions per prompt: GRPO's group, whose mean and std normalise the rewards"""
    max_new_tokens: int | None = None
    """maximum length of a continuation"""
    learning_rate: float | None = None
    """AdamW learning rate, constant (betas 0.9, 0.95, weight decay 1e-6, as the PPO config)"""
    beta: float = 0.05
    """weight of the per-token KL to the initial policy in the loss (PPO's init_kl_coef puts it in the reward)"""
    epsilon: float = 0.2
    """clipping range of the probability ratio (PPO's cliprange)"""
    temperature: float = 1.0
    """sampling temperature (top_k 0, top_p 1: the policy's own distribution, as the PPO runs sample)"""
    num_layers_unfrozen: int = 2
    """train only the last N blocks (plus embeddings, final norm and LM head, as the PPO runs); -1: everything"""
    freeze_embeddings: bool | None = None
    """freeze the input embeddings (and a tied LM head) as model.freeze_embeddings of the PPO runs (None: the
    preset's: paper False as trlx, cpu True as configs/cpu.yml)"""
    eval_interval: int | None = None
    """evaluate on the held-out prompts every this many steps (and at step 0 and the end)"""
    eval_batch_size: int | None = None
    """eval prompts per generate call (PPO's method.chunk_size)"""
    checkpoint_interval: int | None = None
    """save a checkpoint every this many steps (the latest is kept, for resuming)"""
    overwrite: bool = False
    """where the run directory holds another run's results, move them aside (to <dir>.old-<time>) and start"""
    print_config: bool = False
    """print the resolved config and the models and data a run would load, then exit"""
    debug: bool = False
    """show the full traceback of an error (also ZYN_DEBUG=1)"""


def resolve(args: Args) -> Args:
    """Fill in the preset's defaults."""
    own_policy = args.policy is not None  # a policy of one's own brings its own tokenizer
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None and not (key == "tokenizer" and own_policy):
            setattr(args, key, value)
    note = script.resolve_asking(args, ppo_flan_sentiments.PRESETS)  # the PPO run's way of asking its question
    if note:
        print(f"note: {note}", file=sys.stderr)
    if args.num_rollouts % args.batch_size or args.num_rollouts % args.num_generations:
        raise UserError(f"--num-rollouts ({args.num_rollouts}) must be a multiple of --batch-size ({args.batch_size}) "
                        f"and of --num-generations ({args.num_generations})")
    if args.logging_dir is None:  # named after what defines the run: a changed one gets its own
        tag = runio.short_hash(record(args), safe=SAFE_TO_CHANGE)
        args.logging_dir = f"runs/{args.exp_name}__{args.preset}__seed{args.seed}__{tag}"
    return args


def record(args: Args) -> dict:
    """What defines the run (recorded in run.json; a later run into the same directory must match)."""
    return {"args": {k: v for k, v in asdict(args).items()
                     if k not in ("overwrite", "print_config", "debug", "asking")},
            "judge": make_reward(args).describe(), "trl": "1.16.0 (GRPOTrainer)",
            "model_hashes": script.model_hashes(policy=args.policy, tokenizer=args.tokenizer, judge=args.judge)}


# ------------------------------------------------------------------------------------------------- data
def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """The first 4 words of every IMDB review (train + test), or the lines of the cpu prompt file."""
    if args.prompts == "imdb":
        from datasets import load_dataset

        reviews = load_dataset("imdb", split="train+test")["text"]
        prompts = [" ".join(review.split()[:4]) for review in reviews]
    else:
        path = Path(args.prompts) if Path(args.prompts).is_absolute() else HERE / args.prompts
        prompts = script.read_prompt_lines(path, args.num_eval)
    return prompts[:-args.num_eval], prompts[-args.num_eval:]


# ----------------------------------------------------------------------------------------------- reward
def make_reward(args: Args) -> script.Judge:
    return script.ask(args)  # the same judge and questions as the PPO run


def external_check(args: Args):
    """An independent score of the samples, logged beside the judge's: VADER in the cpu preset."""
    return script.vader_check() if args.preset == "cpu" else (lambda samples: {})


# ------------------------------------------------------------------------------------------------ train
class Evaluator:
    """The held-out evaluation of the PPO runs: same prompts, same metric names, same samples files."""

    def __init__(self, args: Args, tokenizer, eval_prompts: list[str], judge: script.Judge, external, logger):
        self.args, self.tokenizer, self.prompts, self.judge, self.external = args, tokenizer, eval_prompts, judge, external
        self.logger, self.n_evals = logger, 0

    @torch.no_grad()
    def __call__(self, model, step: int) -> dict:
        t0, was_training = time.time(), model.training
        model.eval()
        outputs = []
        with torch.random.fork_rng(devices=[]):  # same sampling noise at every evaluation
            torch.manual_seed(self.args.seed)
            for i in range(0, len(self.prompts), self.args.eval_batch_size):
                chunk = self.prompts[i:i + self.args.eval_batch_size]
                enc = self.tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left")
                out = model.generate(**enc.to(model.device), do_sample=True, top_k=0, top_p=1.0,
                                     temperature=self.args.temperature, max_new_tokens=self.args.max_new_tokens,
                                     pad_token_id=self.tokenizer.pad_token_id)
                outputs += self.tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
        model.train(was_training)
        samples = [p + o for p, o in zip(self.prompts, outputs)]
        rewards = self.judge.reward_fn(samples)
        metrics = {**self.judge.metric_fn(samples), **self.external(samples)}
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

    def __init__(self, evaluate: Evaluator, logger: runio.RunLogger, elapsed_before: float):
        self.evaluate, self.logger, self.elapsed_before = evaluate, logger, elapsed_before
        self.t0, self.pending, self.bar = time.time(), {}, None

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t0

    def on_train_begin(self, targs, state, control, model=None, **kwargs):
        self.bar = runio.progress_bar(state.max_steps, state.global_step, True, desc="grpo")
        if state.global_step == 0:
            self.logger.log({**self.evaluate(model, 0), "time/elapsed": self.elapsed()}, step=0)

    def on_step_end(self, targs, state, control, model=None, **kwargs):
        self.bar.update(1)
        if state.global_step % self.evaluate.args.eval_interval == 0 or state.global_step >= state.max_steps:
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


def train(args: Args, data: tuple[list[str], list[str]] | None = None) -> Path:
    """Check the run directory (one run, one writer, nothing lost), then train with TRL's GRPOTrainer."""
    run_dir = Path(args.logging_dir)
    with runio.RunLock(run_dir):
        mode = runio.check_run_dir(run_dir, record(args), resume=True, overwrite=args.overwrite, safe=SAFE_TO_CHANGE)
        run_dir.mkdir(parents=True, exist_ok=True)
        runio.write_json_atomic(run_dir / runio.RUN_RECORD, {**record(args), "environment": runio.environment()})
        checkpoint = None
        if mode == "continue" and (run_dir / "checkpoints").is_dir():
            from transformers.trainer_utils import get_last_checkpoint

            checkpoint = get_last_checkpoint(str(run_dir / "checkpoints"))
        resume_step = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"] if checkpoint else -1
        kept = runio.keep_metrics_until(run_dir / "metrics.jsonl", resume_step) if (run_dir / "metrics.jsonl").exists() else []
        elapsed = max([m["time/elapsed"] for m in kept if m.get("time/elapsed") is not None], default=0.0)
        if checkpoint:
            print(f"continuing {run_dir} from {checkpoint} (step {resume_step})", file=sys.stderr)
        _train(args, run_dir, checkpoint, elapsed, data or load_prompts(args))
    print(runio.summarize(run_dir), flush=True)
    return run_dir


def _train(args: Args, run_dir: Path, checkpoint: str | None, elapsed: float,
           data: tuple[list[str], list[str]]) -> None:
    import trl
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    if trl.__version__ != "1.16.0":
        print(f"warning: written for trl==1.16.0 (requirements.txt), found {trl.__version__}", file=sys.stderr)
    prompts, eval_prompts = data
    judge, external = make_reward(args), external_check(args)
    tokenizer = zyn_ppo.load_tokenizer(args.tokenizer or args.policy)
    model = zyn_ppo.load_causal_lm(args.policy)
    zyn_ppo.freeze_layers(model, args.num_layers_unfrozen, args.freeze_embeddings)  # what the PPO runs train
    logger = runio.RunLogger(run_dir, None if args.tracker == "none" else args.tracker, record(args),
                             project="zyn-flan-sentiments")
    on_gpu = torch.cuda.is_available()
    config = GRPOConfig(
        output_dir=str(run_dir / "checkpoints"), run_name=run_dir.name, seed=args.seed, max_steps=args.total_steps,
        per_device_train_batch_size=args.batch_size, steps_per_generation=args.num_rollouts // args.batch_size,
        num_iterations=args.num_iterations, num_generations=args.num_generations,
        max_completion_length=args.max_new_tokens, temperature=args.temperature, top_k=0, top_p=1.0,
        beta=args.beta, epsilon=args.epsilon, learning_rate=args.learning_rate, lr_scheduler_type="constant",
        adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, weight_decay=1e-6,
        logging_steps=1, save_strategy="steps", save_steps=args.checkpoint_interval, save_total_limit=2,
        report_to="none", use_cpu=not on_gpu, bf16=on_gpu and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=False, disable_dropout=True, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=judge.rm.as_trl_reward(), args=config,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer)
    evaluate = Evaluator(args, tokenizer, eval_prompts, judge, external, logger)
    trainer.add_callback(ZynCallback(evaluate, logger, elapsed))
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        logger.close()


# ------------------------------------------------------------------------------------------------- main
def main(args: Args) -> None:
    with script.user_errors(args.debug):
        args = resolve(args)
        print(yaml.safe_dump({"args": asdict(args), "asking": args.asking.to_dict(), "trl": "1.16.0 (GRPOTrainer)"},
                             sort_keys=False))
        if args.print_config:
            return
        zyn_ppo.check_hub([args.judge, args.policy, args.tokenizer] + (["imdb"] if args.prompts == "imdb" else []))
        # what can be checked before the run directory is written
        script.check_model(args.policy, "policy", causal=True, supported=list(zyn_ppo.ARCHITECTURES))
        if args.tokenizer and args.tokenizer != args.policy:
            script.check_model(args.tokenizer, "tokenizer", config=False)
        script.check_model(args.judge, "judge")
        train(args, load_prompts(args))


if __name__ == "__main__":
    main(tyro.cli(Args))
