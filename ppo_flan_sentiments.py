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
from pathlib import Path
from typing import Literal

from zyn_ppo import script
from zyn_reward import TEMPLATES, YesNoQuestion

HERE = Path(__file__).resolve().parent
PRESETS = {
    "paper": script.Preset(judge="google/flan-t5-large", config="configs/ppo_flan_sentiments.yml", tracker="wandb",
                           prompts="imdb (train+test): the first 4 words of each review", hub=["imdb"],
                           defaults=dict(question="Is this movie review positive?", template="flan_review",
                                         answers=("Yes", "No"), transform="centered", negation="", shots="",
                                         calibrate=False)),
    "cpu": script.Preset(judge="gemma-3-270m", policy="smollm2-135m-instruct",
                         prompts="data/movie_review_openers.txt", external="vaderSentiment",
                         changes={"train.total_steps": 320},  # configs/cpu.yml has 160: VADER still rose there
                         defaults=dict(question="Sentiment:", template="Review: {text}\n{question}",
                                       answers=("positive", "negative"), transform="logodds", negation="",
                                       shots="", calibrate=False)),
}
NUM_EVAL = 64  # the last 64 prompts are held out for evaluation


@dataclass
class Args(script.ScriptArgs):
    question: str | None = None
    """question about prompt + continuation, its rewarded answer first in --answers; logged as
    metrics/prob_positive. None: the preset's (paper: "Is this movie review positive?"; cpu: "Sentiment:")"""
    template: str | None = None
    """the judge's prompt, a TEMPLATES name or a string with {text} and {question}; None: the preset's
    (paper: flan_review; cpu: "Review: {text}\n{question}")"""
    answers: tuple[str, str] | None = None
    """the judge's answer words, the rewarded one first (Eq. 3 with them for Yes and No); None: the
    preset's (paper: Yes No; cpu: positive negative)"""
    transform: Literal["centered", "logodds", "prob"] | None = None
    """reward from P: centered = (P - 0.5) * 10 (Eq. 3), logodds = log(P / (1 - P)), prob = P; None: the
    preset's (paper: centered; cpu: logodds, which keeps rewarding "more positive" where P nears 1)"""
    negation: str | None = None
    """a negated question, rewarded for the second answer and averaged with the question (Eq. 4); None: the
    preset's (none in both)"""
    shots: str | None = None
    """CSV (text,label) of labelled examples the judge reads first, e.g. data/movie_review_shots.csv; None:
    the preset's (none in both: few-shot examples made gemma-3-270m a worse judge of real reviews)"""
    calibrate: bool | None = None
    """contextual calibration of the judge (content-free texts); None: the preset's (no in both)"""


def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """Training and evaluation prompts: the first 4 words of each IMDB review, or the cpu prompt file."""
    if args.preset == "paper":
        from datasets import load_dataset

        reviews = load_dataset("imdb", split="train+test")["text"]
        prompts = [" ".join(review.split()[:4]) for review in reviews]
    else:
        prompts = script.read_prompt_lines(HERE / "data/movie_review_openers.txt", NUM_EVAL)
    return prompts[:-NUM_EVAL], prompts[-NUM_EVAL:]


def make_reward(args: Args) -> script.Judge:
    shots = script.read_shots(args.shots) if args.shots else ()
    if shots and [a.lower() for a in args.answers] != ["yes", "no"]:
        raise script.UserError(f"--shots are answered Yes/No, so they need --answers Yes No (got {args.answers})")
    template = TEMPLATES.get(args.template, args.template)
    if args.negation:
        questions = YesNoQuestion.pair(args.question, args.negation, template=template, examples=shots)
    else:
        questions = [YesNoQuestion(args.question, target="yes", template=template, examples=shots)]
    rewarded, other = args.answers
    return script.Judge(args.judge, questions, calibrate=bool(args.calibrate), yes_words=(rewarded,),
                        no_words=(other,), chat_template=False, transform=args.transform)


def external_check(args: Args):
    """A score from outside the judge, logged beside it (cpu preset: the VADER sentiment lexicon)."""
    if args.preset == "paper":
        return lambda samples: {}  # no external check in the paper's sentiment run
    return script.vader_check()


if __name__ == "__main__":
    script.main(Args, PRESETS, load_prompts, make_reward, external_check, __doc__)
