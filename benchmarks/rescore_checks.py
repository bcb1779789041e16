"""Score the saved samples of finished runs with the probes (zyn_ppo.script.PROBES: the movie-review probe
metrics/ontask_review, D5's genre probes metrics/external_scifi_probe and external_comedy_probe): runs made
before a probe existed get the same measure as new ones, without training again.

    python -m benchmarks.rescore_checks results/ppo_flan_sentiments_cpu results/ppo_flan_sentiments_cpu_oracle
    python -m benchmarks.rescore_checks results/ppo_d5_movies_cpu --probes external_scifi_probe external_comedy_probe \
        --mean external_d5_probe                       # and their per-sample mean, as ppo_d5_movies.py logs it
    python -m benchmarks.rescore_checks results/ppo_flan_sentiments_cpu --output benchmarks/results_probes.md

Each argument is a folder of run directories (or one run directory). Every evaluation's samples file
(samples/eval_<step>.jsonl: the held-out prompts' continuations) is scored by zyn_ppo.script.probe_check
on the continuation alone, and the scores go to the run's rescored.jsonl (runio.RESCORED; the run's own
files are never touched; metrics that the run logged itself at a step are left out; scores of other probes
already there are kept), which plots.results_table and plots.plot_curves merge into the run's metrics. One
table per folder (first -> last evaluation per seed, the seeds' mean and the evaluation noise).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.report import publish
from plots.results_table import table
from zyn_ppo import runio

METRICS = ["metrics/prob_positive", "metrics/ontask_film"]  # shown beside the probes' metrics
COMMAND = "python -m benchmarks.rescore_checks"


def run_dirs(folder: Path) -> list[Path]:
    if (folder / "metrics.jsonl").exists():
        return [folder]
    return sorted(d for d in folder.iterdir() if (d / "metrics.jsonl").exists())


def rescore(run_dir: Path, check, by: str = COMMAND) -> list[dict]:
    """Score each evaluation's samples with check (samples, outputs= -> {name: per-sample scores}); where the run
    did not log metrics/<name> at that step itself, the mean goes to the step's line of the run's runio.RESCORED
    file ({"step", "metrics/<name>"..., "by"}; lines and metrics of earlier rescorings are kept). Returns the
    file's lines."""
    logged = {r["step"]: set(r) for r in runio.read_metrics(run_dir / "metrics.jsonl")}
    path = run_dir / runio.RESCORED
    lines = {r["step"]: r for r in runio.read_jsonl(path)} if path.is_file() else {}
    changed = False
    for samples in sorted((run_dir / "samples").glob("eval_*.jsonl"), key=lambda p: int(p.stem.split("_")[1])):
        step = int(samples.stem.split("_")[1])
        rows = runio.read_jsonl(samples)
        scores = check([r["prompt"] + r["output"] for r in rows], outputs=[r["output"] for r in rows])
        new = {f"metrics/{name}": sum(v) / max(len(v), 1) for name, v in scores.items()
               if f"metrics/{name}" not in logged.get(step, ())}
        if new:
            lines[step] = {"step": step, **{k: v for k, v in lines.get(step, {}).items() if k not in ("step", "by")},
                           **new, "by": by}
            changed = True
    out = [lines[step] for step in sorted(lines)]
    if changed:
        runio.write_jsonl_atomic(path, out)
    return out


def main(argv: list[str] | None = None) -> None:
    from zyn_ppo.script import PROBES, probe_check

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders of run directories, or run directories")
    parser.add_argument("--probes", nargs="+", choices=list(PROBES), default=["ontask_review"],
                        help="which probes score the samples")
    parser.add_argument("--mean", default=None, help="also score metrics/<MEAN>: per sample, the mean of the probes")
    parser.add_argument("--metrics", nargs="+", default=None,
                        help="the table's columns (default: prob_positive, ontask_film and the probes' metrics)")
    parser.add_argument("--until-step", type=int, default=None, help="as in plots.results_table")
    parser.add_argument("--output", default="-", help="append the tables to this markdown file (- prints only)")
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not folder.is_dir() or not run_dirs(folder):
            raise SystemExit(f"error: no run directory (with metrics.jsonl) in {folder}")
    probes = [probe_check(PROBES[name], name) for name in args.probes]
    names = args.probes + ([args.mean] if args.mean else [])
    metrics = args.metrics or METRICS + [f"metrics/{name}" for name in names]

    def check(samples, outputs):
        scores = {name: s for probe in probes for name, s in probe(samples, outputs=outputs).items()}
        if args.mean:
            scores[args.mean] = [sum(x) / len(x) for x in zip(*(scores[name] for name in args.probes))]
        return scores

    parts = []
    for folder in args.folders:
        dirs = run_dirs(folder)
        for d in dirs:
            rescore(d, check)
        parts.append(f"### {folder}\n\n" + table(dirs, metrics, args.until_step))
    command = " ".join([COMMAND, *map(str, args.folders)] + (["--probes", *args.probes]
                                                              if args.probes != ["ontask_review"] else [])
                       + (["--mean", args.mean] if args.mean else []))
    report = f"Command: `{command}`\n\n" + "\n\n".join(parts) + "\n"
    publish(report, args.output)


if __name__ == "__main__":
    main()
