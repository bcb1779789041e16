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

The cpu policy (SmolLM2-135M-Instruct) drifts off the film to please the judge (metrics/ontask_review falls).
What stays on it (3 seeds, docs/results.md): a policy that writes movie reviews first, as the paper's
gpt2-imdb does, and the paper's Eq. (4) with a measured film guard question (at half weight: VADER +0.24,
64% of the oracle, while the review probe rises 0.73 -> 0.85):

    OMP_NUM_THREADS=1 python -m tools.sft_reviews --out runs/smollm2-imdb
    python ppo_flan_sentiments.py --preset cpu --policy runs/smollm2-imdb --guard-spec configs/sentiment_film_guard_half.json
"""

from __future__ import annotations

from dataclasses import dataclass

from zyn_ppo import presets, script

QUESTION = "Is this movie review positive?"  # what the judge is asked about prompt + continuation (yes: rewarded)
PRESETS = presets.sentiment(QUESTION)  # judge, prompts and step budget, shared with grpo_flan_sentiments.py


@dataclass
class Args(script.QuestionArgs):
    pass  # the common flags and the judge's (--question, --template, --answers, ...): see --help


def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """Training and evaluation prompts: the first 4 words of each IMDB review, or the cpu prompt file."""
    return script.movie_review_openers(args.preset, presets.NUM_EVAL)


def make_reward(args: Args) -> script.Judge:
    return script.ask(args)  # QUESTION asked as the preset (or --judge-spec, or the flags) says


def external_check(args: Args):
    """Checks from outside the judge, logged beside it: VADER (cpu preset; what --reward external trains on)
    and whether the continuation is still about a film (metrics/ontask_film: a film word; metrics/ontask_review:
    P(movie review) of a probe fitted on real text)."""
    return presets.sentiment_checks(args.preset)


if __name__ == "__main__":
    script.main(Args, PRESETS, load_prompts, make_reward, external_check, __doc__)
