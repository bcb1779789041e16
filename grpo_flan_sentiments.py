"""ZYN sentiment on TRL's GRPO trainer: the policy learns to write positive movie reviews, rewarded by a
yes/no question, with TRL's maintained GRPOTrainer instead of the project's PPO engine.

Same experiment, flags and presets as ppo_flan_sentiments.py: the judge reads prompt + continuation and
answers "Is this movie review positive?"; the reward is (P(Yes) - 0.5) * 10 (Eq. 3 of arXiv 2308.06385),
given to GRPOTrainer through `ZeroShotRewardModel.as_trl_reward()`. Written for trl==1.16.0 (the version
pinned in requirements.txt). A callback evaluates the current policy on the held-out prompts at step 0,
every --eval-interval steps and at the end, and writes metrics.jsonl in the same format and with the same
names as the PPO runs (reward/mean, metrics/prob_positive, metrics/external_vader in the cpu preset,
time/elapsed), so plots/plot_curves.py and plots/compare_ppo_grpo.py overlay PPO and GRPO runs.

    python grpo_flan_sentiments.py --preset cpu                  # offline: SmolLM2-135M judge and policy
    python grpo_flan_sentiments.py --preset cpu --print-config   # show what a run would load, then exit
    python grpo_flan_sentiments.py                               # the paper's models and data (hub; a GPU)
    accelerate launch grpo_flan_sentiments.py                    # several GPUs
    python grpo_flan_sentiments.py --preset cpu --question "Is this movie review funny?"

Training lines of metrics.jsonl carry TRL's own statistics renamed where the PPO runs have the same
quantity (loss/total, lr, rollout/score_mean = mean reward of the sampled completions) and prefixed with
grpo/ otherwise (grpo/kl is TRL's mean per-token KL to the reference, grpo/reward_std, grpo/entropy, ...).
Running the same command again resumes from the latest checkpoint in the run directory.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro
import yaml

import zyn_ppo
from zyn_reward import TEMPLATES, YesNoQuestion, ZeroShotRewardModel

HERE = Path(__file__).resolve().parent
PRESETS = {
    # the paper's models; batch schedule, optimiser, KL weight and generation as configs/ppo_flan_sentiments.yml
    "paper": dict(judge="google/flan-t5-large", policy="lvwerra/gpt2-imdb", tokenizer="gpt2", tracker="wandb",
                  prompts="imdb", total_steps=10000, num_rollouts=128, batch_size=64, num_iterations=4,
                  num_generations=8, max_new_tokens=40, learning_rate=1e-4, eval_interval=50,
                  checkpoint_interval=10000, eval_batch_size=128),
    # offline on 2 CPU cores: the same judge, policy, prompts and schedule as ppo_flan_sentiments.py --preset cpu
    "cpu": dict(judge="smollm2-135m-instruct", policy="smollm2-135m-instruct", tokenizer=None, tracker="none",
                prompts="data/movie_review_openers.txt", total_steps=160, num_rollouts=64, batch_size=16,
                num_iterations=4, num_generations=4, max_new_tokens=24, learning_rate=3e-4, eval_interval=16,
                checkpoint_interval=64, eval_batch_size=32),
}


@dataclass
class Args:
    exp_name: str = Path(__file__).stem
    """name of this experiment (names the run directory)"""
    preset: Literal["paper", "cpu"] = "paper"
    """paper: the paper's models and data from the hub; cpu: offline, embedded SmolLM2-135M-Instruct"""
    question: str = "Is this movie review positive?"
    """yes/no question asked about prompt + continuation; P(Yes) is logged as metrics/prob_positive"""
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
    """run directory: metrics.jsonl, samples, checkpoints (None: runs/<exp_name>__<preset>__seed<seed>)"""
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
    """train only the last N transformer blocks (and the final norm); -1 trains everything"""
    eval_interval: int | None = None
    """evaluate on the held-out prompts every this many steps (and at step 0 and the end)"""
    eval_batch_size: int | None = None
    """eval prompts per generate call (PPO's method.chunk_size)"""
    checkpoint_interval: int | None = None
    """save a checkpoint every this many steps (the latest is kept, for resuming)"""
    print_config: bool = False
    """print the resolved config and the models and data a run would load, then exit"""


def resolve(args: Args) -> Args:
    """Fill in the preset's defaults."""
    own_policy = args.policy is not None  # a policy of one's own brings its own tokenizer
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None and not (key == "tokenizer" and own_policy):
            setattr(args, key, value)
    args.logging_dir = args.logging_dir or f"runs/{args.exp_name}__{args.preset}__seed{args.seed}"
    if args.num_rollouts % args.batch_size or args.num_rollouts % args.num_generations:
        sys.exit(f"--num-rollouts ({args.num_rollouts}) must be a multiple of --batch-size ({args.batch_size}) "
                 f"and of --num-generations ({args.num_generations})")
    return args


# ------------------------------------------------------------------------------------------------- data
def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """The first 4 words of every IMDB review (train + test), or the lines of the cpu prompt file."""
    if args.prompts == "imdb":
        from datasets import load_dataset

        reviews = load_dataset("imdb", split="train+test")["text"]
        prompts = [" ".join(review.split()[:4]) for review in reviews]
    else:
        path = Path(args.prompts) if Path(args.prompts).is_absolute() else HERE / args.prompts
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return prompts[:-args.num_eval], prompts[-args.num_eval:]


# ----------------------------------------------------------------------------------------------- reward
def make_reward(args: Args) -> ZeroShotRewardModel:
    question = YesNoQuestion(args.question, target="yes", template=TEMPLATES["flan_review"], name="positive")
    return ZeroShotRewardModel(args.judge, questions=question)


def external_check(args: Args) -> Callable[[list[str]], dict[str, list[float]]]:
    """An independent score of the samples, logged beside the judge's: VADER in the cpu preset."""
    if args.preset == "paper":
        return lambda samples: {}
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    return lambda samples: {"external_vader": [(vader.polarity_scores(s)["compound"] + 1) / 2 for s in samples]}


# ------------------------------------------------------------------------------------------------ train
def freeze_bottom_layers(model, num_layers_unfrozen: int) -> None:
    """Freeze the input embeddings and all but the last N transformer blocks (N = -1: train everything)."""
    if num_layers_unfrozen < 0:
        return
    blocks = max((m for m in model.modules() if isinstance(m, torch.nn.ModuleList)), key=len)
    model.get_input_embeddings().requires_grad_(False)
    for block in blocks[: len(blocks) - num_layers_unfrozen]:
        block.requires_grad_(False)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def make_eval_callback(args: Args, tokenizer, eval_prompts: list[str], rm: ZeroShotRewardModel,
                       external: Callable, run_dir: Path, resume_step: int | None):
    from transformers import TrainerCallback

    class ZynEvalCallback(TrainerCallback):
        """Held-out evaluation and metrics.jsonl in the project's format (one line per step, eval and
        training keys of a step merged), also sent to W&B / TensorBoard under the same names."""

        def __init__(self):
            self.path = run_dir / "metrics.jsonl"
            kept = [m for m in read_lines(self.path) if resume_step is not None and m["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(m) + "\n" for m in kept))  # no step twice after a resume
            self.n_evals = sum("eval/index" in m for m in kept)
            self.offset = max([m["time/elapsed"] for m in kept if "time/elapsed" in m], default=0.0)
            self.t0, self.pending, self.tb = time.time(), {}, None

        def elapsed(self) -> float:
            return self.offset + time.time() - self.t0

        @torch.no_grad()
        def evaluate(self, model, step: int) -> dict:
            t0, was_training = time.time(), model.training
            model.eval()
            outputs = []
            with torch.random.fork_rng(devices=[]):  # same sampling noise at every evaluation
                torch.manual_seed(args.seed)
                for i in range(0, len(eval_prompts), args.eval_batch_size):
                    chunk = eval_prompts[i:i + args.eval_batch_size]
                    enc = tokenizer(chunk, return_tensors="pt", padding=True, padding_side="left")
                    out = model.generate(**enc.to(model.device), do_sample=True, top_k=0, top_p=1.0,
                                         temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                         pad_token_id=tokenizer.pad_token_id)
                    outputs += tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
            model.train(was_training)
            samples = [p + o for p, o in zip(eval_prompts, outputs)]
            rewards = rm.reward_fn(samples)
            metrics = {**rm.metric_fn(samples), **external(samples)}
            (run_dir / "samples").mkdir(exist_ok=True)
            with open(run_dir / "samples" / f"eval_{step}.jsonl", "w") as f:
                for j, (p, o) in enumerate(zip(eval_prompts, outputs)):
                    row = dict(prompt=p, output=o, reward=rewards[j], metrics={k: v[j] for k, v in metrics.items()})
                    f.write(json.dumps(row) + "\n")
            stats = {"reward/mean": float(np.mean(rewards))}
            stats.update({f"metrics/{k}": float(np.mean(v)) for k, v in metrics.items()})
            stats.update({"eval/index": self.n_evals, "time/eval": time.time() - t0})
            print(f"evaluation #{self.n_evals} (step {step}): "
                  + " ".join(f"{k} {v:.4g}" for k, v in stats.items() if k.startswith(("reward", "metrics"))))
            print(f"  {samples[0]!r}", flush=True)
            self.n_evals += 1
            return stats

        def write(self, line: dict) -> None:
            with open(self.path, "a") as f:
                f.write(json.dumps(line) + "\n")
            scalars = {k: v for k, v in line.items() if k != "step" and isinstance(v, (int, float))}
            if args.tracker == "wandb":
                import wandb

                if wandb.run is not None:
                    wandb.log({**scalars, "train/global_step": line["step"]})
            elif self.tb is not None:
                for k, v in scalars.items():
                    self.tb.add_scalar(k, v, line["step"])

        def on_train_begin(self, targs, state, control, model=None, **kwargs):
            if args.tracker == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            if state.global_step == 0:
                self.write({"step": 0, **self.evaluate(model, 0), "time/elapsed": self.elapsed()})

        def on_step_end(self, targs, state, control, model=None, **kwargs):
            if state.global_step % args.eval_interval == 0 or state.global_step >= state.max_steps:
                self.pending = self.evaluate(model, state.global_step)

        def on_log(self, targs, state, control, logs=None, **kwargs):
            if "loss" not in logs:  # the end-of-training summary
                return
            renamed = {"loss": "loss/total", "learning_rate": "lr", "reward": "rollout/score_mean"}
            train = {renamed.get(k, f"grpo/{k}"): v for k, v in logs.items() if isinstance(v, (int, float))}
            self.write({"step": state.global_step, **train, **self.pending, "time/elapsed": self.elapsed()})
            self.pending = {}

        def on_train_end(self, targs, state, control, **kwargs):
            if self.pending:
                self.write({"step": state.global_step, **self.pending, "time/elapsed": self.elapsed()})
            if self.tb is not None:
                self.tb.close()

    return ZynEvalCallback()


def train(args: Args) -> None:
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, GRPOTrainer

    if trl.__version__ != "1.16.0":
        print(f"warning: written for trl==1.16.0 (requirements.txt), found {trl.__version__}", file=sys.stderr)

    run_dir = Path(args.logging_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(asdict(args), sort_keys=False))
    checkpoint = get_last_checkpoint(str(run_dir / "checkpoints")) if (run_dir / "checkpoints").is_dir() else None
    if args.tracker == "wandb":
        if not os.environ.get("WANDB_API_KEY"):
            os.environ.setdefault("WANDB_MODE", "offline")  # tracking never blocks a run
        os.environ.setdefault("WANDB_PROJECT", "zyn-flan-sentiments")  # the PPO runs' project
        os.environ.setdefault("WANDB_DIR", str(run_dir))
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run_dir / "tensorboard"))

    prompts, eval_prompts = load_prompts(args)
    rm, external = make_reward(args), external_check(args)
    tokenizer = AutoTokenizer.from_pretrained(zyn_ppo.resolve_model_path(args.tokenizer or args.policy),
                                              padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(zyn_ppo.resolve_model_path(args.policy))
    freeze_bottom_layers(model, args.num_layers_unfrozen)

    on_gpu = torch.cuda.is_available()
    config = GRPOConfig(
        output_dir=str(run_dir / "checkpoints"), run_name=run_dir.name, seed=args.seed, max_steps=args.total_steps,
        per_device_train_batch_size=args.batch_size, steps_per_generation=args.num_rollouts // args.batch_size,
        num_iterations=args.num_iterations, num_generations=args.num_generations,
        max_completion_length=args.max_new_tokens, temperature=args.temperature, top_k=0, top_p=1.0,
        beta=args.beta, epsilon=args.epsilon, learning_rate=args.learning_rate, lr_scheduler_type="constant",
        adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, weight_decay=1e-6,
        logging_steps=1, save_strategy="steps", save_steps=args.checkpoint_interval, save_total_limit=1,
        report_to="none" if args.tracker == "none" else args.tracker, use_cpu=not on_gpu,
        bf16=on_gpu and torch.cuda.is_bf16_supported(), gradient_checkpointing=False, disable_dropout=True,
        disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=rm.as_trl_reward(), args=config,
                          train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer)
    resume_step = None
    if checkpoint:
        resume_step = json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"]
        print(f"resuming from {checkpoint} (step {resume_step})")
    trainer.add_callback(make_eval_callback(args, tokenizer, eval_prompts, rm, external, run_dir, resume_step))
    trainer.train(resume_from_checkpoint=checkpoint)


# ------------------------------------------------------------------------------------------------- main
def main(args: Args) -> None:
    args = resolve(args)
    print(yaml.safe_dump({"args": asdict(args), "trl": "1.16.0 (GRPOTrainer)"}, sort_keys=False))
    if args.print_config:
        return
    zyn_ppo.check_hub([args.judge, args.policy, args.tokenizer] + (["imdb"] if args.prompts == "imdb" else []))
    train(args)


if __name__ == "__main__":
    main(tyro.cli(Args))
