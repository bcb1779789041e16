"""Does a judge agree with VADER on the policy's own text? Spearman correlation on stored evaluation samples.

    python benchmarks/judge_agreement.py runs/ppo_flan_sentiments__cpu__seed1000__* [more run dirs] --n 600

A judge can rank real reviews well (benchmarks/results_judge.md) and still say little about the short,
odd continuations a small policy writes; what PPO can learn from it is what its reward shares with the
goal. This reads the evaluation samples of finished runs (<run>/samples/eval_*.jsonl: prompt, output and
the VADER check logged beside the judge), keeps the first --n distinct texts, scores prompt + output with
each judge configuration below, and prints the Spearman correlation of its probability with VADER's
compound score, and the spread of the probability. Runs of any judge can feed it: the texts are rescored.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
from zyn_ppo import runio  # noqa: E402
from zyn_reward import YesNoQuestion, ZeroShotRewardModel  # noqa: E402

QA = "Review: {text}\nQuestion: {question}\nAnswer:"
POSITIVE, NEGATIVE = "Is this movie review positive?", "Is this movie review negative?"
CONFIGS = {  # name -> (judge, questions, ZeroShotRewardModel options)
    "gemma, flan, Yes/No": ("gemma-3-270m", [YesNoQuestion(POSITIVE)], {}),
    "gemma, flan, question + negation": ("gemma-3-270m", YesNoQuestion.pair(POSITIVE, NEGATIVE), {}),
    "gemma, flan, question + negation, calibrated": ("gemma-3-270m", YesNoQuestion.pair(POSITIVE, NEGATIVE),
                                                     {"calibrate": True}),
    "gemma, qa, Yes/No": ("gemma-3-270m", [YesNoQuestion(POSITIVE, template=QA)], {}),
    "gemma, 'Sentiment:' positive/negative": (
        "gemma-3-270m", [YesNoQuestion("Sentiment:", template="Review: {text}\n{question}")],
        {"yes_words": ("positive",), "no_words": ("negative",), "chat_template": False}),
    "gemma, qa 'positive or negative?'": (
        "gemma-3-270m", [YesNoQuestion("Is this movie review positive or negative?", template=QA)],
        {"yes_words": ("positive", "Positive"), "no_words": ("negative", "Negative")}),
    "smollm2 chat, question + negation": ("smollm2-135m-instruct", YesNoQuestion.pair(POSITIVE, NEGATIVE), {}),
    "smollm2, 'Sentiment:' positive/negative": (
        "smollm2-135m-instruct", [YesNoQuestion("Sentiment:", template="Review: {text}\n{question}")],
        {"yes_words": ("positive",), "no_words": ("negative",), "chat_template": False}),
}


def samples(run_dirs: list[str], n: int) -> tuple[list[str], list[float]]:
    texts, vader, seen = [], [], set()
    for run in run_dirs:
        for path in sorted(glob.glob(os.path.join(run, "samples", "eval_*.jsonl"))):
            for row in runio.read_jsonl(Path(path)):
                text = row["prompt"] + row["output"]
                if text not in seen and "external_vader" in row.get("metrics", {}):
                    seen.add(text)
                    texts.append(text)
                    vader.append(row["metrics"]["external_vader"])
    if not texts:
        sys.exit("error: no evaluation samples with metrics/external_vader in the given run directories")
    return texts[:n], vader[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories with samples/eval_*.jsonl")
    parser.add_argument("--n", type=int, default=600, help="distinct texts scored (default 600)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None, help="configuration names to score (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts, vader = samples(args.runs, args.n)
    print(f"{len(texts)} distinct evaluation texts from {len(args.runs)} run(s); load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| judge configuration | Spearman with VADER | sd of P | seconds |")
    print("|---|---:|---:|---:|")
    for name, (judge, questions, options) in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        start = time.time()
        p = ZeroShotRewardModel(judge, questions, **options).probabilities(texts)
        rho = spearmanr(p, vader)[0]
        print(f"| {name} | {rho:.3f} | {np.std(p):.3f} | {time.time() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
