"""plots/plot_curves.py: figures from small metrics files, checked through matplotlib (not pixels)."""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PolyCollection

ROOT = Path(__file__).resolve().parents[1]
from plots import plot_curves as pc

SCRIPT = ROOT / "plots" / "plot_curves.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVAL_STEPS = [0, 4, 8]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def write_run(folder: Path, offset: float = 0.0, steps: int = 10) -> Path:
    """A run directory in the contract's format: training lines every step, eval lines at 0, 4, 8."""
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        for step in range(steps):
            row = {"step": step, "loss/total": 1.0 / (step + 1), "time/elapsed": 2.0 * step + 1.0}
            if step in EVAL_STEPS:
                row |= {"reward/mean": step / 2 + offset, "eval/index": EVAL_STEPS.index(step),
                        "metrics/prob_positive": 0.5 + step / 40 + offset / 10}
            f.write(json.dumps(row) + "\n")
    return folder


def visible_lines(ax):
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_single_run_figure(tmp_path):
    runs = pc.load_runs([write_run(tmp_path / "ppo_sent")])
    assert runs[0].name == "ppo_sent"
    assert pc.default_metrics(runs) == ["reward/mean", "metrics/prob_positive"]
    fig = pc.plot_metric(runs, "reward/mean", title="PPO sentiment")
    ax = fig.axes[0]
    assert matplotlib.get_backend().lower() == "agg"
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), EVAL_STEPS)  # training lines (no reward/mean) skipped
    np.testing.assert_allclose(line.get_ydata(), [0.0, 2.0, 4.0])
    assert line.get_label() == "ppo_sent"
    assert ax.get_title().startswith("PPO sentiment\n") and "reward/mean" in ax.get_title()
    assert "step" in ax.get_xlabel() and "reward" in ax.get_ylabel()
    assert legend_texts(ax) == ["ppo_sent"]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert pc.plot_metric(runs, "reward/mean", xlabel="QD iteration").axes[0].get_xlabel() == "QD iteration"
    paths = pc.save_figure(fig, tmp_path / "out", "reward/mean")
    assert [p.name for p in paths] == ["reward_mean.png", "reward_mean.svg"]
    assert paths[0].read_bytes()[:8] == PNG_MAGIC
    assert b"<svg" in paths[1].read_bytes()[:1000]


def test_seed_group_mean_and_band(tmp_path):
    dirs = [write_run(tmp_path / f"exp__seed{s}", offset=s) for s in range(3)]
    dirs.append(write_run(tmp_path / "other"))
    runs = pc.load_runs(dirs)
    assert [r.group for r in runs] == ["exp", "exp", "exp", "other"]
    ax = pc.plot_metric(runs, "reward/mean").axes[0]
    faint = [ln for ln in ax.get_lines() if ln.get_label().startswith("_")]
    assert len(faint) == 3 and all(ln.get_alpha() < 1 for ln in faint)
    mean_line, other = visible_lines(ax)
    assert other.get_label() == "other" and other.get_color() != mean_line.get_color()
    assert mean_line.get_label() == "exp (mean of 3 runs, band: min-max)"
    np.testing.assert_allclose(mean_line.get_xdata(), EVAL_STEPS)
    np.testing.assert_allclose(mean_line.get_ydata(), [1.0, 3.0, 5.0])  # offsets 0, 1, 2
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(0.0) and ys.max() == pytest.approx(6.0)
    assert legend_texts(ax) == ["exp (mean of 3 runs, band: min-max)", "other"]

    ax = pc.plot_metric(runs, "reward/mean", band="std").axes[0]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.max() == pytest.approx(5.0 + np.std([0, 1, 2]))
    assert "±1 std" in legend_texts(ax)[0]

    ungrouped = pc.load_runs(dirs, auto_group=False)
    assert len(visible_lines(pc.plot_metric(ungrouped, "reward/mean").axes[0])) == 4
    hashed = [write_run(tmp_path / f"ppo_x__cpu__seed{s}__{h}", offset=s) for s, h in ((1, "0a1b2c3d"), (2, "9f8e7d6c"))]
    assert {r.group for r in pc.load_runs(hashed)} == {"ppo_x__cpu"}  # the scripts' __<hash> suffix groups too
    explicit = pc.load_runs(dirs[:2], groups=["ppo"])
    assert "ppo (mean of 2 runs" in legend_texts(pc.plot_metric(explicit, "reward/mean").axes[0])[0]


def test_paper_points(tmp_path):
    runs = pc.load_runs([write_run(tmp_path / "run")])
    ax = pc.plot_metric(runs, "reward/mean", show_paper=True).axes[0]
    (paper,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("paper")]
    np.testing.assert_allclose(paper.get_xdata(), [0, 350])
    np.testing.assert_allclose(paper.get_ydata(), [0.0588, 3.95])
    assert "every 50 steps" in paper.get_label() and paper.get_label() in legend_texts(ax)
    ax = pc.plot_metric(runs, "metrics/prob_positive", show_paper=True, paper_eval_interval=20).axes[0]
    (paper,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("paper")]
    np.testing.assert_allclose(paper.get_xdata(), [0, 140])
    np.testing.assert_allclose(paper.get_ydata(), [0.506, 0.895])
    ax = pc.plot_metric(runs, "loss/total", show_paper=True).axes[0]
    assert not [ln for ln in ax.get_lines() if ln.get_label().startswith("paper")]


def test_time_axis(tmp_path):
    runs = pc.load_runs([write_run(tmp_path / "run")])
    ax = pc.plot_metric(runs, "reward/mean", x="time").axes[0]
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [1.0, 9.0, 17.0])
    assert ax.get_xlabel() == "wall time (s)"


def test_wandb_panel_csv(tmp_path):
    csv = tmp_path / "wandb_export.csv"
    csv.write_text(
        '"Step","ppo-a - reward/mean","ppo-a - reward/mean__MIN","ppo-a - reward/mean__MAX",'
        '"ppo-b - reward/mean","ppo-b - reward/mean__MIN","ppo-b - reward/mean__MAX"\n'
        "0,0.1,0.1,0.1,0.2,0.2,0.2\n"
        "50,1.5,1.5,1.5,,,\n"
        "100,3.0,3.0,3.0,2.5,2.5,2.5\n"
    )
    runs = pc.load_runs([csv])
    assert [r.name for r in runs] == ["ppo-a", "ppo-b"]
    assert runs[0].keys == ["reward/mean"]
    ax = pc.plot_metric(runs, "reward/mean", labels=["A", "B"]).axes[0]
    a, b = ax.get_lines()
    np.testing.assert_allclose(a.get_xdata(), [0, 50, 100])
    np.testing.assert_allclose(b.get_xdata(), [0, 100])  # empty cell skipped
    np.testing.assert_allclose(b.get_ydata(), [0.2, 2.5])
    assert legend_texts(ax) == ["A", "B"]


def test_wandb_history_and_plain_csv(tmp_path):
    hist = tmp_path / "history.csv"
    hist.write_text("_step,_runtime,reward/mean,metrics/prob_positive,kl/ref\n0,1.5,0.05,0.5,0\n"
                    "1,3.0,,,0.1\n2,4.5,2.0,0.7,0.2\n")
    (run,) = pc.load_runs([hist])
    assert run.name == "history"
    np.testing.assert_allclose(run.series("reward/mean")[1], [0.05, 2.0])
    np.testing.assert_allclose(run.series("time/elapsed")[1], [1.5, 3.0, 4.5])
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "metrics.csv").write_text("step,reward/mean\n0,0.1\n10,0.9\n")
    (run,) = pc.load_runs([tmp_path / "res"])
    assert run.name == "res" and run.series("reward/mean")[0].tolist() == [0, 10]


def test_cli_writes_png_and_svg(tmp_path):
    dirs = [str(write_run(tmp_path / f"exp-seed{s}", offset=s)) for s in range(2)]
    out = tmp_path / "figs"
    r = subprocess.run([sys.executable, str(SCRIPT), *dirs, "--out", str(out), "--paper-points",
                        "--title", "test"], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for stem in ("reward_mean", "metrics_prob_positive"):
        assert (out / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC
        assert (out / f"{stem}.svg").exists()
    assert not (out / "loss_total.png").exists()


def cli_error(*args) -> str:
    cmd = [sys.executable, str(SCRIPT), *map(str, args)]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    return r.stderr


def test_cli_errors(tmp_path):
    run = write_run(tmp_path / "run")
    out = tmp_path / "out"
    assert "no such file or directory" in cli_error(tmp_path / "missing", "--out", out)
    err = cli_error(run, "--out", out, "--metrics", "metrics/prob_negative")
    assert "metrics/prob_negative" in err and "reward/mean" in err and "metrics/prob_positive" in err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    assert "empty run" in cli_error(tmp_path / "empty", "--out", out)
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00garbage\x00\x81")
    assert "unreadable CSV" in cli_error(tmp_path / "bad.csv", "--out", out)
    (tmp_path / "nostep.csv").write_text("a,b\n1,2\n")
    assert "no step column" in cli_error(tmp_path / "nostep.csv", "--out", out)
    (tmp_path / "nodir").mkdir()
    assert "without metrics.jsonl" in cli_error(tmp_path / "nodir", "--out", out)
    (tmp_path / "broken.jsonl").write_text('{"step": 0, "reward/mean": 1}\n{"step": 1,\n')
    assert "line 2" in cli_error(tmp_path / "broken.jsonl", "--out", out)
    assert "--labels" in cli_error(run, "--out", out, "--labels", "a", "b")
    assert not out.exists()


def test_results_table_first_to_last_per_run_and_the_mean_without_oracles(tmp_path):
    from plots.results_table import table

    dirs = []
    for seed, reward, (a, b) in ((1, "judge", (0.5, 0.7)), (2, "judge", (0.4, 0.8)), (1, "external", (0.5, 0.9))):
        d = tmp_path / f"run{seed}{reward}"
        d.mkdir()
        rows = [{"step": 0, "reward/mean": 0.0, "metrics/x": a}, {"step": 1, "loss/total": 1.0},
                {"step": 4, "reward/mean": 1.0, "metrics/x": b}]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "run.json").write_text(json.dumps({"config": {"train": {"seed": seed}}, "run": {"reward": reward}}))
        dirs.append(d)
    text = table(dirs, ["metrics/x"])
    assert "| 1 | 0.5 → 0.7 |" in text and "| 2 | 0.4 → 0.8 |" in text
    assert "| 1 (oracle: trained on the external check) | 0.5 → 0.9 |" in text
    assert "| mean of 2 seeds | **0.45 → 0.75** (+0.3) |" in text and "step 4" in text
    record = json.loads((dirs[2] / "run.json").read_text())
    (dirs[2] / "run.json").write_text(json.dumps({**record, "run": {"reward": "external", "oracle": "external_y"}}))
    assert "| 1 (oracle: trained on `external_y`) | 0.5 → 0.9 |" in table(dirs, ["metrics/x"])  # --oracle named
    (dirs[2] / "run.json").write_text(json.dumps(record))
    early = table(dirs, ["metrics/x"], until_step=3)  # only the evaluations at or before step 3
    assert "| 1 | 0.5 → 0.5 |" in early and "step 0" in early
