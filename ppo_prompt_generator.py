"""ZYN prompt generator: PPO tunes a text-to-image prompt generator to a person's taste (paper Sec. 4.1.5).

The policy continues a short subject ("a cat", "a city at night") into a prompt for Stable Diffusion or
Midjourney; the judge (Flan-T5-large in the paper) reads the whole prompt and is asked each of the
person's yes/no questions ("Does this prompt describe a watercolor painting?", "Is this prompt about
nature?"); the reward is (p - 0.5) * 10 with p the mean probability of the target answers (Eq. 3 and 4 of
arXiv 2308.06385). The paper released no code for this experiment: the paper preset tunes the public GPT-2
prompt generator Gustavosta/MagicPrompt-Stable-Diffusion (with its own tokenizer), judged by
google/flan-t5-large, with the settings of configs/ppo_flan_sentiments.yml. Logged to metrics.jsonl in the
run directory at each evaluation: reward/mean, metrics/prob_<name> per question, metrics/prob_ensemble
(Eq. 4; with one question, that question's) and the diversity of the generated text, metrics/distinct_1
and metrics/distinct_2: distinct word n-grams / all word n-grams over the continuations of one scoring
batch (method.chunk_size evaluation samples). metric_fn returns one value per sample, so each batch's
value is repeated for its samples and the logged number is the mean over batches. A generator that
repeats one prompt is useless however well it scores: read distinct_n beside prob_ensemble.

    python ppo_prompt_generator.py --preset cpu                 # offline, ~13 min on 2 CPU cores
    python ppo_prompt_generator.py --preset cpu --print-config  # what it would load, then exit
    python ppo_prompt_generator.py                              # the paper: hub models, a GPU
    accelerate launch ppo_prompt_generator.py                   # the paper on several GPUs
    python ppo_prompt_generator.py --render                     # then draw first and last evaluation (diffusers, GPU)
    python ppo_prompt_generator.py --preset cpu --question "Is this prompt about space?" "Is this prompt too long?" --target yes no --name space long
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro
import yaml

import zyn_ppo
from zyn_reward import YesNoQuestion, ZeroShotRewardModel

HERE = Path(__file__).resolve().parent
PAPER = {"judge": "google/flan-t5-large", "policy": "Gustavosta/MagicPrompt-Stable-Diffusion",
         "config": "configs/ppo_flan_sentiments.yml", "tracker": "wandb", "prompts": "data/image_subjects.txt",
         "external": "distinct-n"}
CPU = {"prompts": "data/image_subjects.txt", "external": "distinct-n", "tracker": "none"}
CPU_CONFIG = {  # the paper's config scaled to 12-14 minutes on 2 CPU cores: 640 rollouts, 11 evaluations
    "train.total_steps": 160, "train.eval_interval": 16, "train.checkpoint_interval": 64,
    "train.batch_size": 16, "train.seq_length": 64, "method.num_rollouts": 64, "method.chunk_size": 32,
    "method.gen_kwargs.max_new_tokens": 24, "model.num_layers_unfrozen": 2,
    "optimizer.kwargs.lr": 3.0e-4, "scheduler.kwargs.eta_min": 3.0e-4,  # 3x the paper's, for so short a run
}
NUM_EVAL = 64  # the last 64 subjects are held out for evaluation
TEMPLATE = "Prompt: {text}\n\n {question} Response:"


@dataclass
class Args:
    exp_name: str = Path(__file__).stem
    """name of this experiment (names the run directory)"""
    preset: Literal["paper", "cpu"] = "paper"
    """paper: MagicPrompt-Stable-Diffusion policy, Flan-T5-large judge and the paper's config from the hub; cpu: offline, embedded SmolLM2-135M-Instruct"""
    question: tuple[str, ...] = ("Does this prompt describe a watercolor painting?", "Is this prompt about nature?")
    """one or more yes/no questions about subject + continuation (the person's taste), ensembled as in Eq. (4)"""
    target: tuple[Literal["yes", "no"], ...] = ()
    """rewarded answer per question, yes or no (empty: yes for every question)"""
    name: tuple[str, ...] = ()
    """metric name per question, logged as metrics/prob_<name> (empty: a slug of each question)"""
    judge: str | None = None
    """reward model, hub name or folder (None: google/flan-t5-large; cpu: SmolLM2-135M-Instruct)"""
    policy: str | None = None
    """policy to train, hub name or folder (None: Gustavosta/MagicPrompt-Stable-Diffusion; cpu: SmolLM2-135M-Instruct)"""
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
    render: bool = False
    """after training, draw the first and last evaluation's prompts into <run dir>/render.png (needs diffusers and a GPU)"""
    render_model: str = "stabilityai/sd-turbo"
    """text-to-image model for --render: a diffusers pipeline, hub name or folder"""
    render_count: int = 4
    """prompts drawn from each of the two evaluations (columns of the grid)"""
    render_steps: int = 1
    """denoising steps for --render (sd-turbo: 1; Stable Diffusion 1.5: about 25)"""
    render_guidance: float = 0.0
    """classifier-free guidance scale for --render (sd-turbo: 0; Stable Diffusion 1.5: about 7.5)"""


# ------------------------------------------------------------------------------------------------ data
def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """Training and evaluation prompts: the short subjects of the prompt file (both presets)."""
    prompts = [line.strip() for line in (HERE / CPU["prompts"]).read_text().splitlines() if line.strip()]
    return prompts[:-NUM_EVAL], prompts[-NUM_EVAL:]


# ---------------------------------------------------------------------------------------------- reward
def make_questions(args: Args) -> list[YesNoQuestion]:
    targets = args.target or ("yes",) * len(args.question)
    names = args.name or (None,) * len(args.question)
    if len(targets) != len(args.question) or len(names) != len(args.question):
        sys.exit(f"--target and --name need one value per question ({len(args.question)} questions)")
    return [YesNoQuestion(q, target=t, template=TEMPLATE, name=n) for q, t, n in zip(args.question, targets, names)]


def make_reward(args: Args) -> ZeroShotRewardModel:
    return ZeroShotRewardModel(args.judge, questions=make_questions(args))


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over the texts (lower-cased, split on whitespace); 0 if none."""
    grams = [tuple(words[i:i + n]) for words in (t.lower().split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def external_check(args: Args) -> Callable[..., dict[str, list[float]]]:
    """Diversity of the continuations of one scoring batch (both presets), repeated for each sample."""

    def diversity(samples: list[str], outputs: list[str] | None = None, **kwargs) -> dict[str, list[float]]:
        texts = samples if outputs is None else outputs
        return {f"distinct_{n}": [distinct_n(texts, n)] * len(samples) for n in (1, 2)}

    return diversity


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


def render(args: Args) -> Path | None:
    """Draw the first and last evaluation's prompts (rows) into <run dir>/render.png; optional, never required."""
    try:
        from diffusers import AutoPipelineForText2Image
    except ImportError:
        print("--render skipped: it needs the diffusers library (pip install diffusers)")
        return None
    if not torch.cuda.is_available():
        print("--render skipped: it needs a GPU (Stable Diffusion on a CPU takes minutes per image)")
        return None
    run_dir = Path(args.logging_dir)
    evals = sorted(run_dir.glob("samples/eval_*.jsonl"), key=lambda p: int(p.stem.split("_")[-1]))
    if not evals:
        print(f"--render skipped: no evaluation samples in {run_dir / 'samples'}")
        return None
    rows = []
    for path in (evals[0], evals[-1]):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows.append([r["prompt"] + r["output"] for r in lines[: args.render_count]])
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(args.render_model, torch_dtype=torch.float16).to("cuda")
    except (OSError, ValueError) as error:
        print(f"--render skipped: could not load {args.render_model} ({error})")
        return None
    images = []
    for texts in rows:  # the same seeds in both rows, so only the prompts differ
        generators = [torch.Generator("cuda").manual_seed(args.seed + i) for i in range(len(texts))]
        images.append(pipe(prompt=texts, generator=generators, num_inference_steps=args.render_steps,
                           guidance_scale=args.render_guidance).images)
    from PIL import Image

    w, h = images[0][0].size
    grid = Image.new("RGB", (w * max(len(r) for r in images), h * len(images)), "white")
    for i, row in enumerate(images):
        for j, image in enumerate(row):
            grid.paste(image, (j * w, i * h))
    grid.save(run_dir / "render.png")
    (run_dir / "render.json").write_text(json.dumps({"rows": [evals[0].stem, evals[-1].stem], "prompts": rows},
                                                    indent=1))
    print(f"rendered {run_dir / 'render.png'} (rows: {evals[0].stem}, {evals[-1].stem}; prompts in render.json)")
    return run_dir / "render.png"


# ------------------------------------------------------------------------------------------------ main
def main(args: Args) -> None:
    args = resolve(args)
    config, changed = make_config(args)
    preset = PAPER if args.preset == "paper" else CPU
    run = {"judge": args.judge, "questions": {q.name: f"{q.question} (target {q.target})" for q in make_questions(args)},
           "policy": config.model.model_path, "tokenizer": config.tokenizer.tokenizer_path,
           "prompts": preset["prompts"], "external": preset["external"]}
    print(yaml.safe_dump({"config": config.to_dict(), "run": run, f"changed from {args.config}": changed}, sort_keys=False))
    if args.print_config:
        return
    zyn_ppo.check_hub([args.judge, run["policy"], run["tokenizer"] or run["policy"]] + preset.get("hub", []))

    prompts, eval_prompts = load_prompts(args)
    rm, external = make_reward(args), external_check(args)

    def metric_fn(samples: list[str], **kwargs) -> dict[str, list[float]]:
        metrics = rm.metric_fn(samples, **kwargs)
        metrics.setdefault("prob_ensemble", metrics[f"prob_{rm.questions[0].name}"])  # one question: itself
        return {**metrics, **external(samples, **kwargs)}

    zyn_ppo.train(reward_fn=rm.reward_fn, prompts=prompts, eval_prompts=eval_prompts, metric_fn=metric_fn, config=config)
    if args.render and int(os.environ.get("RANK", 0)) == 0:
        render(args)


if __name__ == "__main__":
    main(tyro.cli(Args))
