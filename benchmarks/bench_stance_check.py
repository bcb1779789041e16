"""How well the opinion experiment's external stance check (metrics/external_stance) tells the stances apart.

    python -m benchmarks.bench_stance_check              # print, and append to benchmarks/results_tune.md
    python -m benchmarks.bench_stance_check --output -   # print only

The check (ppo_flan_opinion.external_check: all-MiniLM-L6-v2 similarity to statements of --stance against
statements of its opposite; no judge weights) scores the 40 HAND-WRITTEN statements of data/gun_stance_check.csv
(label 1 = in favour of stricter gun control); AUROC with a stratified bootstrap 95% interval on all 40 and on
the 20 that `python -m benchmarks.bench_tune --task stance` holds out (the same split: seed 0, half).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks.report import publish

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "data" / "gun_stance_check.csv"


def main() -> None:
    import ppo_flan_opinion as opinion
    from zyn_reward import read_labeled
    from zyn_reward.tune import auroc_interval, split

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results_tune.md"),
                        help="append the report to this file (- prints only)")
    args = parser.parse_args()
    texts, labels = read_labeled(str(CHECK))
    opinion_args = opinion.Args(preset="cpu")
    pro, con = opinion.stance_statements(opinion_args.stance, opinion.counter_stance(opinion_args))
    scores = np.array(opinion.external_check(opinion_args)(texts)["external_stance"])
    labels = np.array(labels)
    _, hold = split(list(labels), 0.5, 0, True)
    rows = []
    for name, idx in (("all 40", np.arange(len(labels))), ("the 20 bench_tune holds out", np.array(hold))):
        score, lo, hi = auroc_interval(scores[idx], labels[idx], np.random.default_rng(0))
        rows.append(f"| {name} | {score:.3f} [{lo:.2f}, {hi:.2f}] | {scores[idx][labels[idx] == 1].mean():.3f} | "
                    f"{scores[idx][labels[idx] == 0].mean():.3f} |")
    report = "\n".join([
        "## stance: the external check", "",
        "Command: `python -m benchmarks.bench_stance_check` (metrics/external_stance of ppo_flan_opinion.py, "
        "no judge weights)", "",
        f"- Data: {CHECK.relative_to(ROOT)}, 40 HAND-WRITTEN statements (label 1: in favour of stricter gun "
        "control), not a real corpus.",
        f"- Statements of the stance: {pro}; of its opposite: {con}.",
        "- Score: sigmoid((mean cosine to the stance's statements - mean cosine to the opposite's) / 0.05), "
        "all-MiniLM-L6-v2.",
        "- These statements were chosen among a handful tried on the same 40 rows (the side phrases alone, \"I am "
        "in favour of X.\" and \"in favour of X\": AUROC 0.65-0.67 on all 40), so the numbers are optimistic.", "",
        "| texts | AUROC [95% CI] | mean score (in favour) | mean score (against) |", "|---|---|---:|---:|",
        *rows, ""])
    publish(report, args.output)


if __name__ == "__main__":
    main()
