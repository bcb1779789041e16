"""ZYN opinion: PPO steers the opinion a language model expresses about a topic, rewarded by a yes/no question.

Prompts invite an opinion on --topic ("My honest opinion about guns is that"); the judge (Flan-T5-large in
the paper) reads prompt + continuation and is asked "Is this text in favour of stricter gun control?"; the
reward is (P(Yes) - 0.5) * 10 (Eq. 3 of arXiv 2308.06385). The paper reports this experiment (on guns)
with a GPT-2 policy but released no code: the paper preset trains gpt2 (its own tokenizer) with
google/flan-t5-large as judge and the settings of configs/ppo_flan_sentiments.yml. Logged to metrics.jsonl
in the run directory at each evaluation: reward/mean, metrics/prob_stance (P(Yes) to the rewarded
question), metrics/prob_heldout (P(Yes) to a differently worded question that is never rewarded: it rises
with prob_stance if the policy learnt the stance, not one phrasing the judge likes) and, in the cpu preset,
metrics/external_vader (VADER compound score mapped to [0, 1]: tells a change of tone from a change of
stance).

    python ppo_flan_opinion.py --preset cpu                 # offline, ~13 min on 2 CPU cores
    python ppo_flan_opinion.py --preset cpu --print-config  # what it would load, then exit
    python ppo_flan_opinion.py                              # the paper: hub models, a GPU
    accelerate launch ppo_flan_opinion.py                   # the paper on several GPUs
    python ppo_flan_opinion.py --preset cpu --stance "against stricter gun control"
    python ppo_flan_opinion.py --preset cpu --topic "nuclear power" --stance "in favour of nuclear power"

Check first that the judge can tell the stances apart (the embedded 135M judge cannot: AUROC 0.52):
    python zyn_reward.py eval --labeled data/gun_stance_check.csv --template flan_toxicity \
        --question "Is this text in favour of stricter gun control?" --model smollm2-135m-instruct
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro
import yaml

import zyn_ppo
from zyn_reward import TEMPLATES, YesNoQuestion, ZeroShotRewardModel

HERE = Path(__file__).resolve().parent
PAPER = {"judge": "google/flan-t5-large", "policy": "gpt2", "config": "configs/ppo_flan_sentiments.yml",
         "tracker": "wandb", "prompts": "data/opinion_prompts.txt", "external": None}
CPU = {"prompts": "data/opinion_prompts.txt", "external": "vaderSentiment", "tracker": "none"}
CPU_CONFIG = {  # the paper's config scaled to 12-14 minutes on 2 CPU cores: 640 rollouts, 11 evaluations
    "train.total_steps": 160, "train.eval_interval": 16, "train.checkpoint_interval": 64,
    "train.batch_size": 16, "train.seq_length": 64, "method.num_rollouts": 64, "method.chunk_size": 32,
    "method.gen_kwargs.max_new_tokens": 24, "model.num_layers_unfrozen": 2,
    "optimizer.kwargs.lr": 3.0e-4, "scheduler.kwargs.eta_min": 3.0e-4,  # 3x the paper's, for so short a run
}
NUM_EVAL = 10  # the last 10 prompt wordings are held out for evaluation,
EVAL_REPEATS = 4  # each sampled 4 times: 40 evaluation samples


@dataclass
class Args:
    exp_name: str = Path(__file__).stem
    """name of this experiment (names the run directory)"""
    preset: Literal["paper", "cpu"] = "paper"
    """paper: gpt2 policy, Flan-T5-large judge and the paper's config from the hub; cpu: offline, embedded SmolLM2-135M-Instruct"""
    topic: str = "guns"
    """what the prompts ask an opinion about: fills {topic} in data/opinion_prompts.txt and in the questions"""
    stance: str = "in favour of stricter gun control"
    """the opinion to reward: fills {stance} in the questions"""
    question: str = "Is this text {stance}?"
    """rewarded yes/no question about prompt + continuation; P(Yes) is logged as metrics/prob_stance"""
    heldout_question: str = "Does the author of this text argue {stance}?"
    """differently worded question, never rewarded; P(Yes) is logged as metrics/prob_heldout"""
    judge: str | None = None
    """reward model, hub name or folder (None: google/flan-t5-large; cpu: SmolLM2-135M-Instruct)"""
    policy: str | None = None
    """policy to train, hub name or folder (None: gpt2; cpu: SmolLM2-135M-Instruct)"""
    config: str | None = None
    """PPO config YAML (None: configs/ppo_flan_sentiments.yml)"""
    overrides: tuple[str, ...] = ()
    """more config settings as dotted key=value, e.g. method.num_rollouts=64 train.batch_size=16"""
    total_steps: int | None = None
    """optimiser steps (None: the preset's, see --print-config)"""
    seed: int = 1000
    """random seed"""
    logging_dir: str | None = None
    """run directory: metrics.jsonl, samples, checkpoints (None: runs/<exp_name>__<preset>__seed<seed>)"""
    tracker: Literal["wandb", "tensorboard", "none"] | None = None
    """tracker besides metrics.jsonl (None: wandb for paper, offline without a key; none for cpu)"""
    print_config: bool = False
    """print the resolved config and the models and data a run would load, then exit"""


# ------------------------------------------------------------------------------------------------ data
def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """Training and evaluation prompts: the opinion prompts with {topic} filled in (both presets)."""
    lines = [line.strip() for line in (HERE / CPU["prompts"]).read_text().splitlines() if line.strip()]
    prompts = [line.replace("{topic}", args.topic) for line in lines]
    return prompts[:-NUM_EVAL], prompts[-NUM_EVAL:] * EVAL_REPEATS


# ---------------------------------------------------------------------------------------------- reward
def fill(text: str, args: Args) -> str:
    return text.replace("{stance}", args.stance).replace("{topic}", args.topic)


def make_reward(args: Args) -> tuple[ZeroShotRewardModel, ZeroShotRewardModel]:
    """The rewarded stance question and the held-out one, asked of the same judge (loaded once)."""
    stance = YesNoQuestion(fill(args.question, args), target="yes", template=TEMPLATES["flan_toxicity"],
                           name="stance")
    heldout = YesNoQuestion(fill(args.heldout_question, args), target="yes", template=TEMPLATES["flan_toxicity"],
                            name="heldout")
    rm = ZeroShotRewardModel(args.judge, questions=stance)
    return rm, ZeroShotRewardModel(rm.model, questions=heldout, tokenizer=rm.tokenizer)


def external_check(args: Args) -> Callable[[list[str]], dict[str, list[float]]]:
    """A score from outside the judge, logged beside it: VADER in the cpu preset, none in the paper's."""
    if args.preset == "paper":
        return lambda samples: {}
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    return lambda samples: {"external_vader": [(vader.polarity_scores(s)["compound"] + 1) / 2 for s in samples]}


# ----------------------------------------------------------------------------------------------- train
def resolve(args: Args) -> Args:
    """Fill in the preset's defaults."""
    if args.preset == "cpu":  # embedded in a PyPI package: zyn_reward.EMBEDDED_MODELS
        args.judge = args.judge or "smollm2-135m-instruct"
        args.policy = args.policy or "smollm2-135m-instruct"
    args.judge = args.judge or PAPER["judge"]
    args.policy = args.policy or PAPER["policy"]
    args.config = args.config or PAPER["config"]
    args.tracker = args.tracker or (PAPER if args.preset == "paper" else CPU)["tracker"]
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
    run = {"judge": args.judge, "questions": {"stance": fill(args.question, args),
                                              "heldout": fill(args.heldout_question, args)},
           "policy": config.model.model_path, "tokenizer": config.tokenizer.tokenizer_path,
           "prompts": f"{preset['prompts']} (topic: {args.topic})", "external": preset["external"]}
    print(yaml.safe_dump({"config": config.to_dict(), "run": run, f"changed from {args.config}": changed}, sort_keys=False))
    if args.print_config:
        return
    zyn_ppo.check_hub([args.judge, run["policy"], run["tokenizer"] or run["policy"]] + preset.get("hub", []))

    prompts, eval_prompts = load_prompts(args)
    (rm, heldout), external = make_reward(args), external_check(args)

    def metric_fn(samples: list[str], **kwargs) -> dict[str, list[float]]:
        return {**rm.metric_fn(samples, **kwargs), **heldout.metric_fn(samples, **kwargs), **external(samples)}

    zyn_ppo.train(reward_fn=rm.reward_fn, prompts=prompts, eval_prompts=eval_prompts, metric_fn=metric_fn, config=config)


if __name__ == "__main__":
    main(tyro.cli(Args))
