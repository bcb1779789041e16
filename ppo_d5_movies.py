"""ZYN with the D5 validator: PPO teaches GPT-2 to write movie reviews that have a given property.

The judge (the D5 validator in the paper: a Flan-T5 fine-tuned to tell whether a TEXT satisfies a
PROPERTY) reads prompt + continuation with the PROPERTY "This review is about a funny sci-fi"; the reward
is (P(Yes) - 0.5) * 10 (Eq. 3 of arXiv 2308.06385). Logged at each evaluation: reward/mean,
metrics/prob_positive (P(Yes), the original's name), metrics/prob_<property> and, as checks from outside
the judge, metrics/external_scifi_probe and metrics/external_comedy_probe (P(a sci-fi film's review), P(a
comedy's review): linear probes on another model's sentence embeddings, fitted on Rotten Tomatoes critics'
consensus texts; benchmarks/results_probes.md), external_d5_probe (their mean; what --reward external trains
on unless --oracle names another), metrics/external_scifi_words and metrics/external_funny_words (share of
samples with such words), external_d5_words (their mean), metrics/ontask_film (a film word) and
metrics/ontask_review (P(movie review) of a probe fitted on real text).

The cpu preset asks gemma-3-270m the property's two halves the ways that measured best on real texts
(Rotten Tomatoes critics' consensus, IMDb genres; benchmarks/results_tune.md): "Text: <text>\nGenre:"
answered "science" vs "drama" (sci-fi films vs the rest, AUROC 0.88 held out; the Yes/No questions were
weaker) and answered "comedy" vs "drama" (comedies vs the rest, 0.84; "Tone:" funny/serious 0.79); the reward
is Eq. (4) over both, (p - 0.5) * 10, the comedy half at weight 2 (at weight 1 only the sci-fi probe rose in
training; docs/results.md). There metrics/prob_positive and prob_<property> are the sci-fi half,
metrics/prob_is_this_movie_a_comedy the comedy half and metrics/prob_ensemble p, the property.

    python ppo_d5_movies.py --preset cpu                 # offline, ~8 min on 2 CPU cores
    python ppo_d5_movies.py --preset cpu --print-config  # what it would load, then exit
    python ppo_d5_movies.py                              # the paper: hub models, IMDB, a GPU
    accelerate launch ppo_d5_movies.py                   # the paper on several GPUs
    python ppo_d5_movies.py --preset cpu --question "This review is about a sad romance"
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from zyn_ppo import presets, script
from zyn_reward import JudgeSpec

PROPERTY = "This review is about a funny sci-fi"  # checked on prompt + continuation; the answer Yes is rewarded
PRESETS = {
    "paper": script.Preset(judge="ruiqi-zhong/d5_t5_validator_700M", config="configs/ppo_flan_sentiments.yml",
                           tracker="wandb", prompts="imdb (train+test): the first 4 words of each review",
                           external="keywords", hub=["imdb", "google/flan-t5-large"],
                           asking=JudgeSpec(PROPERTY, template="d5_validator")),
    # a laptop: gemma-3-270m asked the property's two halves the ways that measured best on real critics' texts
    # (benchmarks/results_tune.md: sci-fi vs other films AUROC 0.88, comedies vs the rest 0.84, held out), the
    # reward Eq. (4) over both: P("science" after "Genre:") and, at weight 2, P("comedy" after "Genre:")
    "cpu": script.Preset(judge="gemma-3-270m", policy="smollm2-135m-instruct",
                         prompts="data/movie_review_openers.txt", external="keywords", oracle="external_d5_probe",
                         asking=presets.scifi_genre(asks=PROPERTY), guards=[presets.comedy_genre(weight=2.0)]),
}
D5_TOKENIZER = "google/flan-t5-large"  # the D5 validator ships without its own tokenizer files
SCIFI = re.compile(r"(?i)sci-?fi|science fiction|space|alien|robot|planet|galax|future|time travel")
FUNNY = re.compile(r"(?i)funny|comed|hilarious|laugh|humou?r|joke|witty|amusing")

NUM_EVAL = 64  # the last 64 prompts are held out for evaluation, as in ppo_flan_sentiments.py


@dataclass
class Args(script.QuestionArgs):  # --question is the PROPERTY; the common and the judge's flags: see --help
    judge_tokenizer: str | None = None
    """the judge's tokenizer (None: google/flan-t5-large for the D5 validator, else the judge's own)"""


def make_reward(args: Args) -> script.Judge:
    tokenizer = args.judge_tokenizer or (D5_TOKENIZER if args.judge == PRESETS["paper"].judge else None)
    return script.ask(args, tokenizer=tokenizer)


def external_check(args: Args):
    """Checks from outside the judge: does the continuation read like a sci-fi film's and a comedy's review
    (external_d5_probe: the mean of both probes), does the sample use sci-fi words, humour words
    (external_d5_words: the mean of both), and does the continuation still talk about a film."""
    words = script.keyword_check({"external_scifi_words": SCIFI, "external_funny_words": FUNNY},
                                 mean="external_d5_words", text="samples")
    genres = [script.probe_check(script.PROBES[name], name) for name in ("external_scifi_probe", "external_comedy_probe")]
    film = presets.film_checks()

    def checks(samples: list[str], **kwargs) -> dict[str, list[float]]:
        scifi, comedy = (probe(samples, **kwargs) for probe in genres)
        both = [(a + b) / 2 for a, b in zip(scifi["external_scifi_probe"], comedy["external_comedy_probe"])]
        return {**scifi, **comedy, "external_d5_probe": both, **words(samples, **kwargs), **film(samples, **kwargs)}

    return checks


def load_prompts(args: Args) -> tuple[list[str], list[str]]:
    """The sentiment experiment's prompts: the first 4 words of each IMDB review, or the cpu prompt file."""
    return script.movie_review_openers(args.preset, NUM_EVAL)


if __name__ == "__main__":
    script.main(Args, PRESETS, load_prompts, make_reward, external_check, __doc__)
