"""Presets that more than one experiment script runs: defined once here, so that two trainers of the same
experiment cannot drift apart in judge, prompts or step budget (experiment scripts import no other script).

The sentiment experiment: ppo_flan_sentiments.py trains it with PPO, grpo_flan_sentiments.py with TRL's GRPO;
qd_zyn.py asks its question too. The measured ways of asking gemma-3-270m about genre and tone: ppo_d5_movies.py
and qd_zyn.py.
"""

from __future__ import annotations

from zyn_reward import JudgeSpec

from .script import Preset

SENTIMENT_QUESTION = "Is this movie review positive?"
NUM_EVAL = 64  # the last 64 prompts are held out for evaluation


def sentiment(question: str = SENTIMENT_QUESTION) -> dict[str, Preset]:
    """The sentiment experiment's presets; `question` is the paper's (a copy of the script may ask another)."""
    return {
        # the paper: Flan-T5-large asked the question in a Flan template, P(Yes) vs P(No), reward (P - 0.5) * 10
        "paper": Preset(judge="google/flan-t5-large", config="configs/ppo_flan_sentiments.yml", tracker="wandb",
                        prompts="imdb (train+test): the first 4 words of each review", hub=["imdb"],
                        asking=JudgeSpec(question, template="flan_review")),
        # a laptop: gemma-3-270m asked the paper's question the way that measured best on real reviews
        # (benchmarks/results_judge.md, results_tune.md): it completes "Sentiment:" with positive or negative
        "cpu": Preset(judge="gemma-3-270m", policy="smollm2-135m-instruct",
                      prompts="data/movie_review_openers.txt", external="vaderSentiment", oracle="external_vader",
                      changes={"train.total_steps": 320},  # configs/cpu.yml has 160: VADER still rose there
                      asking=JudgeSpec("Sentiment:", template="Review: {text}\n{question}",
                                       answers=("positive", "negative"), transform="logodds",
                                       asks=SENTIMENT_QUESTION, model="gemma-3-270m")),
    }


def scifi_genre(asks: str = "Is this movie science fiction?") -> JudgeSpec:
    """gemma-3-270m completing "Text: <text>\nGenre:" with "science" against "drama" (calibrated): sci-fi films
    from the rest at held-out AUROC 0.88 on Rotten Tomatoes consensus texts (benchmarks/results_tune.md).
    `asks`: the plain question it stands for in a run (D5: its whole property)."""
    return JudgeSpec("Genre:", template="Text: {text}\n{question}", answers=("science", "drama"), calibrate=True,
                     asks=asks, model="gemma-3-270m")


def funny_tone(asks: str = "Is this movie funny?") -> JudgeSpec:
    """gemma-3-270m completing "Text: <text>\nTone:" with "funny" against "serious": comedies from the rest at
    held-out AUROC 0.79 on Rotten Tomatoes consensus texts (benchmarks/results_tune.md)."""
    return JudgeSpec("Tone:", template="Text: {text}\n{question}", answers=("funny", "serious"), asks=asks,
                     model="gemma-3-270m")


def comedy_genre(asks: str = "Is this movie a comedy?", weight: float = 1.0) -> JudgeSpec:
    """gemma-3-270m completing "Text: <text>\nGenre:" with "comedy" against "drama" (calibrated): comedies from the
    rest at held-out AUROC 0.84 on Rotten Tomatoes consensus texts, above "Tone:" funny/serious's 0.79
    (benchmarks/results_tune.md). `weight`: its share in Eq. (4) beside the other rewarded questions."""
    return JudgeSpec("Genre:", template="Text: {text}\n{question}", answers=("comedy", "drama"), calibrate=True,
                     asks=asks, model="gemma-3-270m", weight=weight)


def film_checks():
    """On task for the movie-review experiments: the continuation uses a film word (ontask_film, a word list)
    and reads as a movie review (ontask_review, P(movie review) of a probe fitted on real text)."""
    from .script import film_check, probe_check

    words, probe = film_check(), probe_check()

    def checks(samples: list[str], **kwargs) -> dict[str, list[float]]:
        return {**words(samples, **kwargs), **probe(samples, **kwargs)}

    return checks


def sentiment_checks(preset: str):
    """The sentiment experiment's checks from outside the judge: the VADER sentiment lexicon (cpu preset; what
    --reward external trains on) and whether the continuation is still about a film (both presets: a film word,
    ontask_film, and the movie-review probe, ontask_review)."""
    from .script import vader_check

    vader, on_task = vader_check() if preset == "cpu" else (lambda samples: {}), film_checks()

    def checks(samples: list[str], **kwargs) -> dict[str, list[float]]:
        return {**vader(samples), **on_task(samples, **kwargs)}

    return checks
