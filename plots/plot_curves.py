"""Learning curves from run logs: one figure per metric, one line per run, seeds as mean + band.

    python plots/plot_curves.py runs/ppo_flan_sentiments --out figures --paper-points
    python plots/plot_curves.py runs/exp__seed0 runs/exp__seed1 runs/exp__seed2 --out figures --band std
    python plots/plot_curves.py runs/ppo runs/grpo --labels PPO GRPO --metrics reward/mean --out figures
    python plots/plot_curves.py wandb_export.csv --out figures --x time

Inputs: a run directory (reads RUN/metrics.jsonl, else RUN/metrics.csv), a metrics.jsonl file, a .csv
with a `step` column and the same keys as columns, or a CSV exported from W&B ("Step" or "_step" column;
metric columns named "reward/mean" or "<run name> - reward/mean"; "__MIN"/"__MAX" columns are ignored;
each run name becomes a line). Only lines that carry a metric are plotted for it (training lines of
metrics.jsonl have no "reward/mean" and are skipped). Runs whose names differ only by a trailing
"__seedN", "_seedN" or "-seedN" (optionally followed by the run directory's "__<hash>") are drawn as one mean line with a shaded band (min-max or +-1 std over
seeds) plus faint per-seed lines; `--group` names groups explicitly, `--no-group` draws every run.

Writes OUT/<metric with "/" replaced by "_">.png and .svg. Works from local files only (Agg backend).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: python plots/plot_curves.py
from zyn_models import UserError  # noqa: E402
from zyn_ppo import runio  # noqa: E402
from zyn_ppo.runio import RESCORED  # noqa: E402

# Reported in the original README for the sentiment run (ppo_flan_sentiments.py): evaluation #0 and #7.
PAPER_POINTS = {"reward/mean": (0.0588, 3.95), "prob_positive": (0.506, 0.895)}
PAPER_EVALS = (0, 7)
PAPER_EVAL_INTERVAL = 50  # assumed: the paper's config evaluates every 50 steps, so evaluation #7 = step 350
SEED_SUFFIX = re.compile(r"(__|_|-)seed\d+(__[0-9a-f]{8})?$")  # the scripts' run directories end in __<hash>
STEP_COLUMNS = ("step", "Step", "_step")


class PlotError(Exception):
    """A problem with the inputs, reported to the user as one line."""


@dataclass
class Run:
    """One run: `rows` maps step -> {key: value} (only numeric values are kept)."""

    name: str
    source: str
    rows: dict[int, dict[str, float]] = field(default_factory=dict)
    group: str = ""

    @property
    def keys(self) -> list[str]:
        return sorted({k for row in self.rows.values() for k in row})

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values of the lines that carry `key` (finite values only), sorted by step."""
        pts = [(s, row[key]) for s, row in sorted(self.rows.items())
               if key in row and math.isfinite(row[key])]
        return np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts], dtype=float)

    def elapsed(self, steps: np.ndarray) -> np.ndarray:
        """Wall time (s) at `steps`: time/elapsed where logged, else interpolated (from 0 s at step 0)."""
        ts, vs = self.series("time/elapsed")
        if len(ts) == 0:
            raise PlotError(f"run '{self.name}' ({self.source}) has no time/elapsed; use --x step")
        if ts[0] > 0:
            ts, vs = np.concatenate([[0.0], ts]), np.concatenate([[0.0], vs])
        return np.interp(steps, ts, vs)


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip():
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _step(value, where: str) -> int:
    x = _number(value)
    if x is None or not math.isfinite(x) or x != int(x):
        raise PlotError(f"{where}: step {value!r} is not an integer")
    return int(x)


def _run_name(path: Path) -> str:
    return path.parent.name if path.stem == "metrics" and path.parent.name else path.stem


def read_jsonl(path: Path) -> list[Run]:
    """A metrics.jsonl (or any JSON-lines file of objects with a `step`) as one run."""
    run = Run(_run_name(path), str(path))
    try:
        lines = runio.read_jsonl(path, numbered=True)
    except UserError as e:
        raise PlotError(str(e)) from None
    for i, obj in lines:
        if not isinstance(obj, dict) or "step" not in obj:
            raise PlotError(f"{path} line {i}: expected a JSON object with a 'step' key")
        step = _step(obj["step"], f"{path} line {i}")
        row = {k: x for k, v in obj.items() if k != "step" and (x := _number(v)) is not None}
        run.rows.setdefault(step, {}).update(row)
    return [run]


def read_csv(path: Path) -> list[Run]:
    """A metrics CSV (`step` + keys as columns) or a W&B export ("<run> - <metric>" columns)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise PlotError(f"{path}: unreadable CSV ({e})") from None
    if not table or not any(c.strip() for c in table[0]):
        raise PlotError(f"{path}: unreadable CSV (no header line)")
    header = [c.strip() for c in table[0]]
    step_col = next((c for c in STEP_COLUMNS if c in header), None)
    if step_col is None:
        raise PlotError(f"{path}: unreadable CSV (no step column: expected one of {', '.join(STEP_COLUMNS)}; "
                        f"columns are {', '.join(header)})")
    si = header.index(step_col)
    columns = []  # (index, run name, key)
    for i, col in enumerate(header):
        if i == si or not col or col.endswith(("__MIN", "__MAX")):
            continue
        run_name, key = col.rsplit(" - ", 1) if " - " in col else (_run_name(path), col)
        if key == "_runtime":
            key = "time/elapsed"
        columns.append((i, run_name, key))
    runs: dict[str, Run] = {}
    for n, cells in enumerate(table[1:], 2):
        if not any(c.strip() for c in cells) or (si < len(cells) and not cells[si].strip()):
            continue
        if len(cells) != len(header):
            raise PlotError(f"{path} line {n}: unreadable CSV ({len(cells)} fields, "
                            f"the header has {len(header)})")
        step = _step(cells[si], f"{path} line {n}")
        for i, run_name, key in columns:
            run = runs.setdefault(run_name, Run(run_name, str(path)))
            x = _number(cells[i])
            if x is not None:
                run.rows.setdefault(step, {})[key] = x
    return list(runs.values())


def read_path(path: str | Path) -> list[Run]:
    """The runs in one input: a run directory, a .jsonl file or a .csv file."""
    p = Path(path)
    if not p.exists():
        raise PlotError(f"{p}: no such file or directory")
    if p.is_dir():
        for fname in ("metrics.jsonl", "metrics.csv"):
            if (p / fname).is_file():
                runs = read_path(p / fname)
                if (p / RESCORED).is_file():  # metrics scored afterwards from the run's samples
                    for step, row in read_jsonl(p / RESCORED)[0].rows.items():
                        runs[0].rows.setdefault(step, {}).update(
                            {k: v for k, v in row.items() if k not in runs[0].rows.get(step, {})})
                return runs
        raise PlotError(f"{p}: a directory without metrics.jsonl (or metrics.csv)")
    if p.suffix == ".jsonl":
        runs = read_jsonl(p)
    elif p.suffix == ".csv":
        runs = read_csv(p)
    else:
        raise PlotError(f"{p}: expected a run directory, a .jsonl or a .csv file")
    runs = [r for r in runs if any(r.rows.values())]
    if not runs:
        raise PlotError(f"{p}: empty run (no logged values)")
    return runs


def load_runs(paths: list[str | Path], groups: list[str] | None = None, auto_group: bool = True) -> list[Run]:
    """Read every input; set each run's group (explicit per input or for all, else by seed suffix)."""
    if groups and len(groups) not in (1, len(paths)):
        raise PlotError(f"--group takes one name or one per input ({len(paths)}), got {len(groups)}")
    runs, seen = [], {}
    for i, path in enumerate(paths):
        for run in read_path(path):
            seen[run.name] = seen.get(run.name, 0) + 1
            if seen[run.name] > 1:  # same name from another folder: keep them apart
                run.name = f"{run.name} ({seen[run.name]})"
            if groups:
                run.group = groups[0] if len(groups) == 1 else groups[i]
            elif auto_group and SEED_SUFFIX.search(run.name) and SEED_SUFFIX.sub("", run.name):
                run.group = SEED_SUFFIX.sub("", run.name)
            else:
                run.group = run.name
            runs.append(run)
    return runs


def default_metrics(runs: list[Run]) -> list[str]:
    """reward/mean and every metrics/* key found in any run."""
    keys = {k for r in runs for k in r.keys}
    metrics = ["reward/mean"] if "reward/mean" in keys else []
    metrics += sorted(k for k in keys if k.startswith("metrics/"))
    if not metrics:
        raise PlotError(f"no reward/mean or metrics/* in the inputs; they have: {', '.join(sorted(keys))}")
    return metrics


def describe(metric: str) -> tuple[str, str]:
    """(title, y label) for a metric key."""
    name = metric.split("/", 1)[-1]
    if metric == "reward/mean":
        return "Mean reward on the eval prompts (reward/mean)", "reward (default (p - 0.5)·10, in [-5, 5])"
    if metric.startswith("metrics/prob_"):
        return (f"ZYN probability '{name[5:]}' on the eval prompts\n({metric})",
                "P(target answer), mean over eval prompts")
    if metric.startswith("metrics/external_"):
        check = name[len("external_"):]
        return (f"External check '{check}' on the eval prompts\n({metric})",
                f"{check} score, mean over eval prompts")
    return metric, metric


def paper_points(metric: str, eval_interval: int = PAPER_EVAL_INTERVAL) -> tuple[list, list] | None:
    """The paper's reported points for `metric` as (steps, values), or None when it reports none."""
    key = "reward/mean" if metric == "reward/mean" else metric.rsplit("/", 1)[-1]
    if key not in PAPER_POINTS:
        return None
    return [e * eval_interval for e in PAPER_EVALS], list(PAPER_POINTS[key])


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds < 120:
        return 1.0, "s"
    if seconds < 2 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def plot_metric(runs: list[Run], metric: str, x: str = "step", band: str = "minmax",
                labels: list[str] | None = None, show_paper: bool = False,
                paper_eval_interval: int = PAPER_EVAL_INTERVAL, title: str | None = None,
                xlabel: str | None = None) -> Figure:
    """One figure for `metric`: a line per group of runs (mean + band + faint seeds when several)."""
    if x not in ("step", "time"):
        raise PlotError(f"--x must be 'step' or 'time', got {x!r}")
    if band not in ("minmax", "std", "none"):
        raise PlotError(f"--band must be 'minmax', 'std' or 'none', got {band!r}")
    with_metric = [r for r in runs if len(r.series(metric)[0])]
    if not with_metric:
        have = sorted({k for r in runs for k in r.keys})
        sources = ", ".join(dict.fromkeys(r.source for r in runs))
        raise PlotError(f"no metric '{metric}' in {sources}; it has: {', '.join(have)}")
    for r in runs:
        if not any(r is w for w in with_metric):
            print(f"warning: run '{r.name}' ({r.source}) has no '{metric}', left out", file=sys.stderr)

    groups: dict[str, list[Run]] = {}
    for r in with_metric:
        groups.setdefault(r.group, []).append(r)
    if labels is not None and len(labels) != len(groups):
        raise PlotError(f"--labels got {len(labels)} names for {len(groups)} lines: {', '.join(groups)}")

    curves = {}  # run name -> (xs, ys) in seconds or steps
    for r in with_metric:
        steps, ys = r.series(metric)
        curves[r.name] = (r.elapsed(steps) if x == "time" else steps, ys, steps)
    scale, unit = (1.0, "")
    if x == "time":
        scale, unit = _time_unit(max(float(c[0].max()) for c in curves.values()))

    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for i, (gname, members) in enumerate(groups.items()):
        color = f"C{i % 10}"
        label = labels[i] if labels else gname
        if len(members) == 1:
            xs, ys, _ = curves[members[0].name]
            ax.plot(xs / scale, ys, color=color, marker="o", ms=3, lw=1.8, label=label)
            continue
        by_step: dict[float, list[tuple[float, float]]] = {}
        for r in members:
            xs, ys, steps = curves[r.name]
            ax.plot(xs / scale, ys, color=color, lw=0.8, alpha=0.3, label=f"_{r.name}")
            for s, xv, yv in zip(steps, xs, ys):
                by_step.setdefault(float(s), []).append((float(xv), float(yv)))
        steps = sorted(by_step)
        mx = np.array([np.mean([p[0] for p in by_step[s]]) for s in steps]) / scale
        vals = [np.array([p[1] for p in by_step[s]]) for s in steps]
        mean = np.array([v.mean() for v in vals])
        band_txt = {"minmax": ", band: min-max", "std": ", band: ±1 std", "none": ""}[band]
        ax.plot(mx, mean, color=color, marker="o", ms=3, lw=2.0,
                label=f"{label} (mean of {len(members)} runs{band_txt})")
        if band == "minmax":
            lo, hi = [v.min() for v in vals], [v.max() for v in vals]
            ax.fill_between(mx, lo, hi, color=color, alpha=0.2, lw=0)
        elif band == "std":
            sd = np.array([v.std() for v in vals])
            ax.fill_between(mx, mean - sd, mean + sd, color=color, alpha=0.2, lw=0)

    if show_paper:
        pts = paper_points(metric, paper_eval_interval)
        if pts is not None and x == "time":
            print("warning: the paper's points have no wall time; not drawn with --x time", file=sys.stderr)
        elif pts is not None:
            ax.plot(pts[0], pts[1], ls="none", marker="*", ms=13, color="black", zorder=5,
                    label=f"paper: eval #0, #7 (at step {pts[0][1]}, "
                          f"assuming eval every {paper_eval_interval} steps)")

    fig_title, ylabel = describe(metric)
    ax.set_title(f"{title}\n{fig_title}" if title else fig_title)
    ax.set_xlabel(xlabel or ("training step (optimiser updates)" if x == "step" else f"wall time ({unit})"))
    if x == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def save_figure(fig: Figure, out: str | Path, metric: str) -> list[Path]:
    """Write OUT/<metric slug>.png and .svg; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", metric)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="run directories, metrics.jsonl or CSV files (W&B exports too)")
    p.add_argument("--out", required=True, help="folder for the PNG and SVG files")
    p.add_argument("--metrics", nargs="+", help="metric keys (default: reward/mean and every metrics/*)")
    p.add_argument("--labels", nargs="+", help="legend names, one per line drawn (after grouping)")
    p.add_argument("--group", nargs="+",
                   help="group names: one for all inputs or one per input (default: name minus seed suffix)")
    p.add_argument("--no-group", action="store_true", help="draw every run as its own line")
    p.add_argument("--band", choices=("minmax", "std", "none"), default="minmax", help="band over seeds")
    p.add_argument("--x", choices=("step", "time"), default="step", help="x axis: step or time/elapsed")
    p.add_argument("--paper-points", action="store_true",
                   help="draw the paper's reported points (eval #0 and #7) on reward/mean and prob_positive")
    p.add_argument("--paper-eval-interval", type=int, default=PAPER_EVAL_INTERVAL,
                   help="steps between the paper's evaluations (places eval #7 at step 7 x this)")
    p.add_argument("--title", default=None, help="first title line of every figure, e.g. the experiment name")
    p.add_argument("--xlabel", default=None,
                   help="x-axis label (default: training step, or wall time with --x time); e.g. 'QD iteration'")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = load_runs(args.inputs, groups=args.group, auto_group=not args.no_group)
        for metric in args.metrics or default_metrics(runs):
            fig = plot_metric(runs, metric, x=args.x, band=args.band, labels=args.labels,
                              show_paper=args.paper_points, paper_eval_interval=args.paper_eval_interval,
                              title=args.title, xlabel=args.xlabel)
            for path in save_figure(fig, args.out, metric):
                print(path)
            plt.close(fig)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
