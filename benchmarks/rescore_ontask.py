"""Score the saved samples of finished runs with the movie-review probe (metrics/ontask_review), next to the
film-word check they logged (metrics/ontask_film): runs made before the probe existed get the same on-task
measure as new ones, without training again.

    python -m benchmarks.rescore_ontask results/ppo_flan_sentiments_cpu results/ppo_flan_sentiments_cpu_oracle
    python -m benchmarks.rescore_ontask results/ppo_flan_sentiments_cpu --output benchmarks/results_review_check.md

Each argument is a folder of run directories (or one run directory). Every evaluation's samples file
(samples/eval_<step>.jsonl: the held-out prompts' continuations) is scored by zyn_ppo.script.probe_check
on the continuation alone; a run that logged ontask_review itself is shown as logged. One table per folder
(plots.results_table: first -> last evaluation per seed, the seeds' mean and the evaluation noise).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from plots.results_table import table
from zyn_ppo import runio

METRICS = ["metrics/prob_positive", "metrics/ontask_film", "metrics/ontask_review"]


def run_dirs(folder: Path) -> list[Path]:
    if (folder / "metrics.jsonl").exists():
        return [folder]
    return sorted(d for d in folder.iterdir() if (d / "metrics.jsonl").exists())


def rescore(run_dir: Path, check) -> dict[int, dict[str, float]]:
    """step -> {"metrics/ontask_review": mean probe score of that evaluation's continuations}."""
    logged = {r["step"] for r in runio.read_metrics(run_dir / "metrics.jsonl") if "metrics/ontask_review" in r}
    out = {}
    for path in sorted((run_dir / "samples").glob("eval_*.jsonl")):
        step = int(path.stem.split("_")[1])
        if step in logged:
            continue
        rows = runio.read_jsonl(path)
        scores = check([r["prompt"] + r["output"] for r in rows], outputs=[r["output"] for r in rows])["ontask_review"]
        out[step] = {"metrics/ontask_review": sum(scores) / max(len(scores), 1)}
    return out


def main(argv: list[str] | None = None) -> None:
    from zyn_ppo.script import probe_check

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of run directories, or run directories")
    parser.add_argument("--metrics", nargs="+", default=METRICS)
    parser.add_argument("--until-step", type=int, default=None, help="as in plots.results_table")
    parser.add_argument("--output", default="-", help="append the tables to this markdown file (- prints only)")
    args = parser.parse_args(argv)
    check = probe_check()
    parts = []
    for folder in args.folders:
        dirs = run_dirs(folder)
        if not dirs:
            raise SystemExit(f"error: no run directory (with metrics.jsonl) in {folder}")
        extra = {d: rescore(d, check) for d in dirs}
        parts.append(f"### {folder}\n\n" + table(dirs, args.metrics, args.until_step, extra))
    command = "python -m benchmarks.rescore_ontask " + " ".join(str(f) for f in args.folders)
    report = f"Command: `{command}`\n\n" + "\n\n".join(parts) + "\n"
    print(report)
    if args.output != "-":
        with open(args.output, "a") as f:
            f.write("\n" + report)


if __name__ == "__main__":
    main()
