"""ZYN detox: PPO teaches Pythia-410m to continue toxic prompts without toxic speech.

The judge (Flan-T5-large in the paper) reads prompt + continuation and is asked "Does this text contain
toxic speech?"; with --reward judge (the default, the paper's method) the reward is (P(No) - 0.5) * 10
(Eq. 3 of arXiv 2308.06385). With --reward classifier the policy trains on what the original script
trained on: the raw "nothate" logit of facebook/roberta-hate-speech-dynabench-r4-target, clipped to +-10
(cpu preset: the logit of 1 - alt-profanity-check's P(offensive), the offline stand-in), and the judge is
only logged. Logged at each evaluation: reward/mean, metrics/prob_positive (P(No), the original's name),
metrics/prob_<question>, checks from outside the judge: metrics/external_nothate (the classifier's
P(nothate); paper) or metrics/external_not_offensive (1 - P(offensive); cpu), and metrics/ontask_prompt (the
continuation is about its own prompt: all-MiniLM-L6-v2 similarity, 0.5 = no nearer its prompt than others).

The cpu preset asks SmolLM2-135M-Instruct the way that measured best on real insults (Kaggle's "insults in
social commentary"; benchmarks/results_tune.md): in its chat template it completes "Comment: <text>\nTone:"
with "offensive" or "polite" (AUROC 0.73 held out; the paper's Yes/No question about toxic speech was at
chance, 0.47, for both embedded judges); P("polite") is the rewarded probability.

    python ppo_flan_detox.py --preset cpu                      # offline, on 2 CPU cores
    python ppo_flan_detox.py --preset cpu --print-config       # what it would load, then exit
    python ppo_flan_detox.py                                   # the paper: hub models, RealToxicityPrompts, a GPU
    python ppo_flan_detox.py --reward classifier               # the original script's reward
    accelerate launch ppo_flan_detox.py                        # the paper on several GPUs
    python ppo_flan_detox.py --preset cpu --question "Is this text rude?"
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from zyn_ppo import script
from zyn_reward import JudgeSpec

CLASSIFIER = "facebook/roberta-hate-speech-dynabench-r4-target"
QUESTION = "Does this text contain toxic speech?"  # asked of prompt + continuation; the answer No is rewarded
PRESETS = {
    "paper": script.Preset(judge="google/flan-t5-large", config="configs/ppo_flan_detox.yml", tracker="wandb",
                           prompts="allenai/real-toxicity-prompts (train): prompts with toxicity > 0.3",
                           external=CLASSIFIER, hub=["allenai/real-toxicity-prompts", CLASSIFIER],
                           asking=JudgeSpec(QUESTION, template="flan_toxicity", target="no")),
    # a laptop: SmolLM2-135M-Instruct asked the way that measured best on real insults (benchmarks/results_tune.md:
    # Kaggle's insults in social commentary, AUROC 0.73 held out; the paper's Yes/No question: 0.47, chance);
    # in its chat template it completes "Comment: <text>\nTone:" with "offensive" or "polite" (rewarded)
    "cpu": script.Preset(judge="smollm2-135m-instruct", policy="smollm2-135m-instruct",
                         prompts="data/provocative_openers.txt", external="alt-profanity-check",
                         oracle="external_not_offensive",
                         asking=JudgeSpec("Tone:", template="Comment: {text}\n{question}", answers=("offensive", "polite"),
                                          target="no", calibrate=True, chat_template=True, asks=QUESTION,
                                          model="smollm2-135m-instruct")),
}
NUM_EVAL = 64  # the last 64 prompts are held out for evaluation


@dataclass
class Args(script.QuestionArgs):  # the common flags and the judge's (--question, --template, ...): see --help
    reward: Literal["judge", "classifier", "external"] = "judge"
    """judge: the ZYN reward (the paper); classifier: the original script's reward, the classifier's logit;
    external: the oracle ceiling, trained on the external check (cpu: 1 - P(offensive)) as (x - 0.5) * 10"""


def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """Training and evaluation prompts: RealToxicityPrompts with toxicity > 0.3, or the cpu prompt file."""
    if args.preset == "paper":
        from datasets import load_dataset

        rows = load_dataset("allenai/real-toxicity-prompts", split="train")["prompt"]
        prompts = [row["text"] for row in rows if row["toxicity"] is not None and row["toxicity"] > 0.3]
    else:
        prompts = script.read_prompt_lines("data/provocative_openers.txt", NUM_EVAL)
    return prompts[:-NUM_EVAL], prompts[-NUM_EVAL:]


class ClassifierReward(script.Judge):
    """The original script's reward: the not-hate logit of a classifier, clipped to +-10; the judge is logged."""

    def __init__(self, args: Args, *judge_args, **judge_options):
        super().__init__(*judge_args, **judge_options)
        self.preset, self.logit = args.preset, None

    def describe(self) -> dict:
        source = CLASSIFIER if self.preset == "paper" else "alt-profanity-check"
        return {**super().describe(), "trained_on": f"{source} not-hate logit, clipped to +-10"}

    def reward_fn(self, samples: list[str], **kwargs) -> list[float]:
        if self.logit is None:
            self.logit = not_hate_logit(self.preset)
        return [max(-10.0, min(10.0, x)) for x in self.logit(samples)]


def not_hate_logit(preset: str):
    if preset == "paper":  # the raw logit (function_to_apply="none"), as the original script
        import torch
        from transformers import pipeline

        classify = pipeline("text-classification", model=CLASSIFIER, top_k=None, function_to_apply="none",
                            truncation=True, batch_size=32, dtype=torch.float32,
                            device=0 if torch.cuda.is_available() else -1)
        return lambda samples: [{c["label"]: c["score"] for c in out}["nothate"] for out in classify(samples)]
    from profanity_check import predict_prob

    return lambda samples: [math.log(max(1 - p, 1e-12) / max(p, 1e-12)) for p in predict_prob(samples)]


def make_reward(args: Args) -> script.Judge:
    if args.reward == "classifier":
        return ClassifierReward(args, args.judge, args.asking.questions(), **args.asking.reward_options())
    return script.ask(args)  # QUESTION asked as the preset (or --judge-spec, or the flags) says


def external_check(args: Args, eval_prompts: Sequence[str]):
    """Checks from outside the judge: the hate-speech classifier (paper) or profanity-check (cpu), and whether
    the continuation still continues its prompt among the evaluation prompts that load_prompts read (all-MiniLM-L6-v2
    similarity, see script.prompt_relevance_check)."""
    ontask = script.prompt_relevance_check(eval_prompts, "ontask_prompt")
    if args.preset == "paper":
        toxicity = script.classifier_check(CLASSIFIER, "nothate", "external_nothate")
    else:
        from profanity_check import predict_prob

        toxicity = lambda samples: {"external_not_offensive": (1 - predict_prob(samples)).tolist()}  # noqa: E731

    def checks(samples: list[str], **kwargs) -> dict[str, list[float]]:
        return {**toxicity(samples), **ontask(samples, **kwargs)}

    return checks


if __name__ == "__main__":
    script.main(Args, PRESETS, load_prompts, make_reward, external_check, __doc__)
