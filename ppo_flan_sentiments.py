"""ZYN sentiment: PPO teaches GPT-2 to write positive movie reviews, rewarded by a yes/no question.

The judge (Flan-T5-large in the paper) reads prompt + continuation and is asked "Is this movie review
positive?"; the reward is (P(Yes) - 0.5) * 10 (Eq. 3 of arXiv 2308.06385). Logged at each evaluation:
reward/mean, metrics/prob_positive (P(Yes), the original's name), metrics/prob_<question> and, in the cpu
preset, metrics/external_vader (VADER compound score mapped to [0, 1], a check from outside the judge).

The cpu preset asks a small judge the way that measured best on real reviews (benchmarks/results_judge.md):
gemma-3-270m (not the policy's own weights) reads "Review: <text>\nSentiment:" and the reward is Eq. (3)
with the answer words "positive" and "negative" in place of Yes and No (AUROC 0.89 on drugs.com reviews,
against 0.79 for the best Yes/No question), and the reward is its log-odds log(P / (1 - P)).

    python ppo_flan_sentiments.py --preset cpu                 # offline, ~10 min on 2 CPU cores
    python ppo_flan_sentiments.py --preset cpu --print-config  # what it would load, then exit
    python ppo_flan_sentiments.py                              # the paper: hub models, IMDB, a GPU
    accelerate launch ppo_flan_sentiments.py                   # the paper on several GPUs
    python ppo_flan_sentiments.py --preset cpu --question "Is this movie review funny?" --answers Yes No \
        --template flan_review                                 # your own yes/no question
"""

from __future__ import annotations

from dataclasses import dataclass

from zyn_ppo import script
from zyn_reward import JudgeSpec

QUESTION = "Is this movie review positive?"  # what the judge is asked about prompt + continuation (yes: rewarded)
PRESETS = {
    # the paper: Flan-T5-large asked QUESTION in a Flan template, P(Yes) vs P(No), reward (P - 0.5) * 10
    "paper": script.Preset(judge="google/flan-t5-large", config="configs/ppo_flan_sentiments.yml", tracker="wandb",
                           prompts="imdb (train+test): the first 4 words of each review", hub=["imdb"],
                           asking=JudgeSpec(QUESTION, template="flan_review")),
    # a laptop: gemma-3-270m asked the same question the way that measured best on real reviews
    # (benchmarks/results_judge.md, results_tune.md): it completes "Sentiment:" with positive or negative
    "cpu": script.Preset(judge="gemma-3-270m", policy="smollm2-135m-instruct",
                         prompts="data/movie_review_openers.txt", external="vaderSentiment", oracle="external_vader",
                         changes={"train.total_steps": 320},  # configs/cpu.yml has 160: VADER still rose there
                         asking=JudgeSpec("Sentiment:", template="Review: {text}\n{question}",
                                          answers=("positive", "negative"), transform="logodds",
                                          asks="Is this movie review positive?", model="gemma-3-270m")),
}
NUM_EVAL = 64  # the last 64 prompts are held out for evaluation


@dataclass
class Args(script.QuestionArgs):
    pass  # the common flags and the judge's (--question, --template, --answers, ...): see --help


def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """Training and evaluation prompts: the first 4 words of each IMDB review, or the cpu prompt file."""
    return script.movie_review_openers(args.preset, NUM_EVAL)


def make_reward(args: Args) -> script.Judge:
    return script.ask(args)  # QUESTION asked as the preset (or --judge-spec, or the flags) says


def external_check(args: Args):
    """Checks from outside the judge, logged beside it: the VADER sentiment lexicon (cpu preset; what
    --reward external trains on) and whether the continuation still talks about a film (both presets)."""
    vader, film = script.vader_check() if args.preset == "cpu" else (lambda samples: {}), script.film_check()

    def checks(samples: list[str], **kwargs) -> dict[str, list[float]]:
        return {**vader(samples), **film(samples, **kwargs)}

    return checks


if __name__ == "__main__":
    script.main(Args, PRESETS, load_prompts, make_reward, external_check, __doc__)
