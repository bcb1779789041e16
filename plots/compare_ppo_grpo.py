"""PPO against GRPO on the same judge and budget: the judge's reward and an external metric against wall time.

    python -m plots.compare_ppo_grpo --ppo runs/ppo_flan_sentiments__cpu__seed1000 \\
        --grpo runs/grpo_flan_sentiments__cpu__seed1000 --out figures
    python -m plots.compare_ppo_grpo --ppo runs/ppo_a runs/ppo_b --grpo runs/grpo_a runs/grpo_b --out figures

One figure (OUT/ppo_vs_grpo.png and .svg) with one panel per metric (default reward/mean and
metrics/external_vader), evaluation points against time/elapsed; every run is a line, coloured by trainer.
Reads run directories, metrics.jsonl or CSV files through plots/plot_curves.py; local files only.
"""

from __future__ import annotations

import argparse
import sys

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from plots.plot_curves import PlotError, _time_unit, describe, load_runs, save_figure  # noqa: E402

METRICS = ("reward/mean", "metrics/external_vader")


def plot_comparison(ppo: list[str], grpo: list[str], metrics: tuple[str, ...] = METRICS,
                    title: str | None = None) -> Figure:
    """One panel per metric; each run a line of its trainer's colour, against wall time."""
    trainers = {"PPO (zyn_ppo)": (ppo, "C0"), "GRPO (TRL)": (grpo, "C1")}
    runs = {name: load_runs(paths, groups=[name]) for name, (paths, _) in trainers.items() if paths}
    if not runs:
        raise PlotError("give at least one run with --ppo or --grpo")
    end = max(float(r.series("time/elapsed")[1].max(initial=0.0)) for rs in runs.values() for r in rs)
    scale, unit = _time_unit(end)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), layout="constrained", squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        drawn = 0
        for name, rs in runs.items():
            color = trainers[name][1]
            for i, run in enumerate(rs):
                steps, ys = run.series(metric)
                if not len(steps):
                    print(f"warning: run '{run.name}' ({run.source}) has no '{metric}'", file=sys.stderr)
                    continue
                label = name if len(rs) == 1 else f"{name}: {run.name}"
                ax.plot(run.elapsed(steps) / scale, ys, color=color, marker="o", ms=3, lw=1.8,
                        alpha=1.0 if i == 0 else 0.6, ls="-" if i == 0 else "--", label=label)
                drawn += 1
        if not drawn:
            raise PlotError(f"no run has '{metric}'")
        panel_title, ylabel = describe(metric)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(f"wall time ({unit})")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title or "PPO vs GRPO: same judge, same prompts, against wall time")
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ppo", nargs="+", default=[], help="PPO run directories (or metrics.jsonl / CSV files)")
    p.add_argument("--grpo", nargs="+", default=[], help="GRPO run directories (or metrics.jsonl / CSV files)")
    p.add_argument("--out", required=True, help="folder for ppo_vs_grpo.png and .svg")
    p.add_argument("--metrics", nargs="+", default=list(METRICS), help="one panel per metric key")
    p.add_argument("--title", default=None, help="figure title")
    args = p.parse_args(argv)
    try:
        fig = plot_comparison(args.ppo, args.grpo, tuple(args.metrics), args.title)
        for path in save_figure(fig, args.out, "ppo_vs_grpo"):
            print(path)
        plt.close(fig)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
