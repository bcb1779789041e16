"""A markdown table of runs: first -> last evaluation of each metric, one row per run and the mean of the runs.

    python -m plots.results_table results/ppo_flan_sentiments_cpu/*__seed* \\
        --metrics metrics/prob_positive metrics/external_vader metrics/ontask_film reward/mean

Each run is a run directory (its metrics.jsonl); a row is named after the run's seed and reward (the oracle
runs, trained with --reward external, are marked). The mean row averages the rows that are not oracles; the noise row is the standard deviation of their
first evaluation (the same policy sampled with other seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from zyn_ppo import runio


def first_last(run_dir: Path, metrics: list[str], until_step: int | None = None) -> dict[str, tuple[float, float, int, int]]:
    """metric -> (first, last, first step, last step) over the evaluations of a run (those at or before
    until_step, when given: two trainers compared at equal judge calls); metrics scored afterwards from the
    run's samples (runio.RESCORED) are merged into the evaluations of their step."""
    rescored = {r["step"]: r for r in runio.read_jsonl(run_dir / runio.RESCORED)}
    evals = [{**rescored.get(r["step"], {}), **r} for r in runio.read_metrics(run_dir / "metrics.jsonl")
             if "reward/mean" in r and (until_step is None or r["step"] <= until_step)]
    out = {}
    for m in metrics:
        values = [(r["step"], r[m]) for r in evals if r.get(m) is not None]
        if values:
            out[m] = (values[0][1], values[-1][1], values[0][0], values[-1][0])
    return out


def label(run_dir: Path) -> tuple[str, bool]:
    record = json.loads((run_dir / runio.RUN_RECORD).read_text()) if (run_dir / runio.RUN_RECORD).exists() else {}
    seed = record.get("config", {}).get("train", {}).get("seed", "?")
    oracle = record.get("run", {}).get("reward") == "external"
    named = record.get("run", {}).get("oracle")  # --oracle: another check than the preset's
    what = f"`{named}`" if named else "the external check"
    return (f"{seed} (oracle: trained on {what})" if oracle else str(seed)), oracle


def table(run_dirs: list[Path], metrics: list[str], until_step: int | None = None) -> str:
    rows, sums = [], {m: [] for m in metrics}
    for run_dir in run_dirs:
        values = first_last(run_dir, metrics, until_step)
        name, oracle = label(run_dir)
        cells = []
        for m in metrics:
            if m in values:
                a, b, _, _ = values[m]
                cells.append(f"{runio.significant(a, 3)} → {runio.significant(b, 3)}")
                if not oracle:
                    sums[m].append((a, b))
            else:
                cells.append("—")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    steps = {v[3] for d in run_dirs for v in first_last(d, metrics[:1], until_step).values()}
    head = ["| seed | " + " | ".join(f"`{m}` first → last" for m in metrics) + " |",
            "|---|" + "---|" * len(metrics)]
    mean = []
    for m in metrics:
        pairs = sums[m]
        if pairs:
            a, b = sum(p[0] for p in pairs) / len(pairs), sum(p[1] for p in pairs) / len(pairs)
            mean.append(f"**{runio.significant(a, 3)} → {runio.significant(b, 3)}** "
                        f"({'+' if b >= a else ''}{runio.significant(b - a, 2)})")
        else:
            mean.append("—")
    n = len(sums[metrics[0]]) if metrics else 0
    tail = [f"| mean of {n} seeds | " + " | ".join(mean) + " |"] if n > 1 else []
    if n > 1:  # the same policy sampled with other seeds: how much one evaluation moves by chance
        tail.append("| evaluation noise (sd of the first evaluation across seeds) | "
                    + " | ".join(f"{runio.significant(statistics.stdev(p[0] for p in sums[m]), 2)}" if len(sums[m]) > 1
                                 else "—" for m in metrics) + " |")
    note = f"\n\n(last evaluation at step {', '.join(map(str, sorted(steps)))})" if steps else ""
    return "\n".join(head + rows + tail) + note


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    parser.add_argument("--metrics", nargs="+", default=["metrics/prob_positive", "reward/mean"])
    parser.add_argument("--until-step", type=int, default=None,
                        help="last = the last evaluation at or before this step (compare runs at equal judge calls)")
    args = parser.parse_args(argv)
    print(table(args.runs, args.metrics, args.until_step))


if __name__ == "__main__":
    main()
