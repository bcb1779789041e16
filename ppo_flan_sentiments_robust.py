"""ZYN ensemble: PPO teaches GPT-2 to write movie reviews, rewarded by two yes/no questions (Eq. 4).

The judge (Flan-T5-large in the paper) reads prompt + continuation and is asked "Is this movie review
from FilmAffinity?" (target Yes) and "Is this text too repetitive?" (target No); the reward is
(p - 0.5) * 10, p the mean probability of the target answers (Eq. 3, 4 of arXiv 2308.06385). Logged at
each evaluation: reward/mean, metrics/prob_positive (P(Yes) to the first question, the original's name),
metrics/prob_ensemble (p), metrics/prob_<question> for each question, and checks from outside the judge:
metrics/external_sentiment (lvwerra/distilbert-imdb P(POSITIVE); paper) or external_vader (cpu),
metrics/external_not_repetitive (distinct bigrams of the continuation), metrics/ontask_film (a film word) and
metrics/ontask_review (P(movie review) of a probe fitted on real text).

    python ppo_flan_sentiments_robust.py --preset cpu                 # offline, ~6 min on 2 CPU cores
    python ppo_flan_sentiments_robust.py --preset cpu --print-config  # what it would load, then exit
    python ppo_flan_sentiments_robust.py                              # the paper: hub models, IMDB, a GPU
    accelerate launch ppo_flan_sentiments_robust.py                   # the paper on several GPUs
    python ppo_flan_sentiments_robust.py --preset cpu --no-question "Does this text contain spoilers?"
"""

from __future__ import annotations

from dataclasses import dataclass

from zyn_ppo import presets, script
from zyn_reward import TEMPLATES, YesNoQuestion

SENTIMENT = "lvwerra/distilbert-imdb"
PRESETS = {
    "paper": script.Preset(judge="google/flan-t5-large", config="configs/ppo_flan_sentiments.yml", tracker="wandb",
                           prompts="imdb (train+test): the first 4 words of each review", external=SENTIMENT,
                           hub=["imdb", SENTIMENT]),
    "cpu": script.Preset(judge="smollm2-135m-instruct", policy="smollm2-135m-instruct",
                         prompts="data/movie_review_openers.txt", external="vaderSentiment"),
}

NUM_EVAL = 64  # the last 64 prompts are held out for evaluation, as in ppo_flan_sentiments.py


@dataclass
class Args(script.ScriptArgs):
    question: str = "Is this movie review from FilmAffinity?"
    """first question, target Yes; logged as metrics/prob_positive"""
    no_question: str = "Is this text too repetitive?"
    """second question, target No"""


def make_reward(args: Args) -> script.Judge:
    template = TEMPLATES["flan_review_robust"]
    return script.Judge(args.judge, [YesNoQuestion(args.question, target="yes", template=template),
                                     YesNoQuestion(args.no_question, target="no", template=template)])


def external_check(args: Args):
    """Checks from outside the judge: sentiment (a classifier, paper; VADER, cpu), how little the continuation
    repeats itself (external_not_repetitive: its distinct word bigrams / all its bigrams, the second question
    checked by counting) and whether it is still about a film (ontask_film, ontask_review)."""
    sentiment = (script.classifier_check(SENTIMENT, "POSITIVE", "external_sentiment") if args.preset == "paper"
                 else script.vader_check())
    film = presets.film_checks()

    def checks(samples: list[str], outputs: list[str] | None = None, **kwargs) -> dict[str, list[float]]:
        texts = samples if outputs is None else outputs
        # a text of under two words repeats nothing: 1
        not_repetitive = [script.distinct_n([t], 2) if len(t.split()) > 1 else 1.0 for t in texts]
        return {**sentiment(samples), "external_not_repetitive": not_repetitive, **film(samples, outputs=outputs)}

    return checks


def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """The sentiment experiment's prompts: the first 4 words of each IMDB review, or the cpu prompt file."""
    return script.movie_review_openers(args.preset, NUM_EVAL)


if __name__ == "__main__":
    script.main(Args, PRESETS, load_prompts, make_reward, external_check, __doc__)
