"""Score the saved samples of finished runs with the movie-review probe (metrics/ontask_review), next to the
film-word check they logged (metrics/ontask_film): runs made before the probe existed get the same on-task
measure as new ones, without training again.

    python -m benchmarks.rescore_ontask results/ppo_flan_sentiments_cpu results/ppo_flan_sentiments_cpu_oracle
    python -m benchmarks.rescore_ontask results/ppo_flan_sentiments_cpu --output benchmarks/results_review_check.md

Each argument is a folder of run directories (or one run directory). Every evaluation's samples file
(samples/eval_<step>.jsonl: the held-out prompts' continuations) is scored by zyn_ppo.script.probe_check
on the continuation alone, and the scores go to the run's rescored.jsonl (runio.RESCORED; the run's own
files are never touched; steps that the run scored itself are left out), which plots.results_table and
plots.plot_curves merge into the run's metrics. One table per folder (first -> last evaluation per seed,
the seeds' mean and the evaluation noise).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.report import publish
from plots.results_table import table
from zyn_ppo import runio

METRICS = ["metrics/prob_positive", "metrics/ontask_film", "metrics/ontask_review"]
COMMAND = "python -m benchmarks.rescore_ontask"


def run_dirs(folder: Path) -> list[Path]:
    if (folder / "metrics.jsonl").exists():
        return [folder]
    return sorted(d for d in folder.iterdir() if (d / "metrics.jsonl").exists())


def rescore(run_dir: Path, check, by: str = COMMAND) -> list[dict]:
    """Score each evaluation's continuations that the run did not score itself; write the lines
    {"step", "metrics/ontask_review" (the mean of the evaluation's samples), "by"} to the run's runio.RESCORED
    file and return them."""
    logged = {r["step"] for r in runio.read_metrics(run_dir / "metrics.jsonl") if "metrics/ontask_review" in r}
    out = []
    for path in sorted((run_dir / "samples").glob("eval_*.jsonl"), key=lambda p: int(p.stem.split("_")[1])):
        step = int(path.stem.split("_")[1])
        if step in logged:
            continue
        rows = runio.read_jsonl(path)
        scores = check([r["prompt"] + r["output"] for r in rows], outputs=[r["output"] for r in rows])["ontask_review"]
        out.append({"step": step, "metrics/ontask_review": sum(scores) / max(len(scores), 1), "by": by})
    if out:
        runio.write_jsonl_atomic(run_dir / runio.RESCORED, out)
    return out


def main(argv: list[str] | None = None) -> None:
    from zyn_ppo.script import probe_check

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of run directories, or run directories")
    parser.add_argument("--metrics", nargs="+", default=METRICS)
    parser.add_argument("--until-step", type=int, default=None, help="as in plots.results_table")
    parser.add_argument("--output", default="-", help="append the tables to this markdown file (- prints only)")
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not folder.is_dir() or not run_dirs(folder):
            raise SystemExit(f"error: no run directory (with metrics.jsonl) in {folder}")
    check, parts = probe_check(), []
    for folder in args.folders:
        dirs = run_dirs(folder)
        for d in dirs:
            rescore(d, check)
        parts.append(f"### {folder}\n\n" + table(dirs, args.metrics, args.until_step))
    command = COMMAND + " " + " ".join(str(f) for f in args.folders)
    report = f"Command: `{command}`\n\n" + "\n\n".join(parts) + "\n"
    publish(report, args.output)


if __name__ == "__main__":
    main()
