"""qd_zyn.py, grpo_flan_sentiments.py and plots/compare_ppo_grpo.py: MAP-Elites pieces against plain
references, and each script run end to end as a subprocess on tiny random models (no network)."""

import json
import math
import random
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import run_script

from zyn_ppo import runio, script

ROOT = Path(__file__).resolve().parents[1]

import qd_zyn


def run(script: str, *argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    out = run_script(script, *argv, timeout=timeout)
    assert out.returncode == 0, f"{script} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def read_jsonl(path: Path) -> list[dict]:
    assert path.is_file(), f"{path} is missing"  # runio.read_jsonl reads a missing file as []
    return runio.read_jsonl(path)


def finite(line: dict) -> bool:
    return all(math.isfinite(v) for v in line.values() if isinstance(v, (int, float)))


# ------------------------------------------------------------------------------ MAP-Elites pieces


def reference_bin(value: float, edges: list[float]) -> int:
    """Plain loop: the number of inner edges at or below the value."""
    count = 0
    for e in edges:
        if value >= e:
            count += 1
    return count


def test_quantile_edges_split_a_sample_evenly():
    rng = np.random.default_rng(0)
    values = rng.uniform(0.4, 0.45, size=1000).tolist()  # a badly calibrated judge: a narrow band
    edges = qd_zyn.quantile_edges(values, 5)
    assert len(edges) == 4 and edges == sorted(edges) and 0.4 < edges[0] and edges[-1] < 0.45
    counts = np.bincount([qd_zyn.bin_index([v], [edges])[0] for v in values], minlength=5)
    assert counts.min() >= 190 and counts.max() <= 210  # about 200 per bin, unlike uniform bins on [0, 1]


def test_bin_index_matches_plain_reference():
    rng = np.random.default_rng(1)
    edges = [sorted(rng.uniform(size=3).tolist()), sorted(rng.uniform(size=3).tolist())]
    points = rng.uniform(size=(200, 2)).tolist() + [[edges[0][1], edges[1][0]], [0.0, 1.0], [-1.0, 2.0]]
    for p in points:
        assert qd_zyn.bin_index(p, edges) == (reference_bin(p[0], edges[0]), reference_bin(p[1], edges[1]))
    assert qd_zyn.bin_index([edges[0][1]], [edges[0]]) == (2,)  # a value on an edge goes to the upper bin


def test_archive_keeps_only_strictly_better_elites():
    rng = np.random.default_rng(2)
    archive, reference = {}, {}
    for i in range(300):
        elite = dict(bin=[int(rng.integers(3)), int(rng.integers(3))], text=f"t{i}",
                     quality=float(rng.choice([0.1, 0.5, 0.9, rng.uniform()])), descriptors=[0, 0], iteration=i)
        cell = tuple(elite["bin"])
        expected = cell not in reference or elite["quality"] > reference[cell]["quality"]
        if expected:
            reference[cell] = elite
        assert qd_zyn.try_insert(archive, elite) == expected
    assert archive == reference
    m = qd_zyn.qd_metrics(archive, 9)
    assert m["qd/score"] == pytest.approx(sum(e["quality"] for e in reference.values()))
    assert m["qd/coverage"] == len(reference) / 9


def test_equal_quality_does_not_replace():
    archive = {}
    assert qd_zyn.try_insert(archive, dict(bin=[0], text="a", quality=0.5))
    assert not qd_zyn.try_insert(archive, dict(bin=[0], text="b", quality=0.5))
    assert qd_zyn.try_insert(archive, dict(bin=[0], text="c", quality=0.6))
    assert archive[(0,)]["text"] == "c"


def test_clean_keeps_the_review_only():
    assert qd_zyn.clean("Here's a new review:\nGreat film, loved it.\nReview 5: more") == "Great film, loved it."
    assert qd_zyn.clean(' Review 4: "A slow, funny film."') == "A slow, funny film."
    assert qd_zyn.clean("Sure:\n\n") == ""


# ------------------------------------------------------------------------------ qd_zyn.py end to end


def check_qd_run(run_dir: Path, steps: int, bins: int, axes: int) -> None:
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(steps + 1))
    for m in metrics:
        assert finite(m)
        assert {"qd/score", "qd/coverage", "qd/max_quality", "qd/mean_quality", "time/elapsed"} <= set(m)
        assert 0.0 <= m["qd/coverage"] <= 1.0 and 0.0 <= m["qd/max_quality"] <= 1.0
    scores = [m["qd/score"] for m in metrics]
    assert scores == sorted(scores)  # elites are only ever replaced by better ones
    archive = read_jsonl(run_dir / "archive.jsonl")
    state = json.loads((run_dir / "state.json").read_text())
    assert state["iteration"] == steps and len(state["edges"]) == axes
    cells = [tuple(e["bin"]) for e in archive]
    assert len(cells) == len(set(cells)) and all(0 <= i < bins for c in cells for i in c)
    for e in archive:
        assert set(e) >= {"bin", "text", "quality", "descriptors", "iteration"} and 0 <= e["quality"] <= 1
        assert tuple(e["bin"]) == qd_zyn.bin_index(e["descriptors"], state["edges"])
    assert metrics[-1]["qd/score"] == pytest.approx(sum(e["quality"] for e in archive))
    assert metrics[-1]["qd/coverage"] == pytest.approx(len(archive) / bins ** axes)
    assert (run_dir / "archive.png").stat().st_size > 0 and (run_dir / "archive.svg").exists()
    record = json.loads((run_dir / "run.json").read_text())  # the PPO runs' run record
    assert record["run"]["qd"]["bins"] == bins and record["config"]["train"]["total_steps"] == steps
    judge = record["run"]["judge"]  # the quality question, then each axis as a guard asked its own way
    asked = [q["question"] for q in judge["questions"]] + [g["asks"] or g["question"] for g in judge.get("guards", [])]
    assert asked[0] == qd_zyn.Args.question and len(asked) == 1 + axes
    assert metrics[-1]["qd/num_elites"] == len(archive)


@pytest.mark.slow
def test_qd_zyn_runs_and_resumes(tmp_path, tiny_llama_dir):
    run_dir = tmp_path / "qd"
    argv = ["--preset", "cpu", "--judge", tiny_llama_dir, "--policy", tiny_llama_dir, "--init-size", "8",
            "--batch-size", "4", "--bins", "3", "--max-new-tokens", "8", "--logging-dir", str(run_dir)]
    run("qd_zyn.py", *argv, "--total-steps", "2")
    check_qd_run(run_dir, steps=2, bins=3, axes=2)
    out = run("qd_zyn.py", *argv, "--total-steps", "3")  # resumes from the archive
    assert "resuming" in out.stdout
    check_qd_run(run_dir, steps=3, bins=3, axes=2)


def test_qd_zyn_one_descriptor_in_process(tmp_path, tiny_llama_dir):
    run_dir = tmp_path / "qd1"
    qd_zyn.main(["--preset", "cpu", "--judge", tiny_llama_dir, "--policy", tiny_llama_dir, "--descriptors",
                 "Is this review about the plot?", "--init-size", "6", "--batch-size", "3", "--bins", "4",
                 "--max-new-tokens", "6", "--total-steps", "1", "--logging-dir", str(run_dir)])
    check_qd_run(run_dir, steps=1, bins=4, axes=1)


def test_qd_zyn_seed_parents_baseline(tmp_path, tiny_llama_dir, monkeypatch):
    """--parents seeds: every mutation prompt shows only hand-made seed reviews, never archive elites."""
    shown: list[list[str]] = []
    propose = qd_zyn.propose

    def recording_propose(model, tokenizer, examples, args):
        shown.extend(examples)
        return propose(model, tokenizer, examples, args)

    monkeypatch.setattr(qd_zyn, "propose", recording_propose)
    run_dir = tmp_path / "qd_seeds"
    qd_zyn.main(["--preset", "cpu", "--judge", tiny_llama_dir, "--policy", tiny_llama_dir, "--parents", "seeds",
                 "--init-size", "4", "--batch-size", "3", "--bins", "2", "--max-new-tokens", "6", "--total-steps", "2",
                 "--logging-dir", str(run_dir)])
    check_qd_run(run_dir, steps=2, bins=2, axes=2)
    assert len(shown) == 4 + 2 * 3 and all(len(ex) == qd_zyn.Args.num_examples for ex in shown)
    assert all(text in qd_zyn.SEED_REVIEWS for ex in shown for text in ex)


def test_qd_zyn_few_shot_parents():
    """Each parent rule shows what it says: archive elites, seed reviews, or exactly one seed among elites."""
    archive = {(i, 0): {"text": f"elite {i}"} for i in range(5)}
    seeds = ["seed a", "seed b", "seed c"]
    random.seed(0)
    for _ in range(50):
        assert all(t.startswith("elite") for t in qd_zyn.few_shot(archive, seeds, "archive", 3))
        assert sorted(qd_zyn.few_shot(archive, seeds, "seeds", 3)) == seeds
        mixed = qd_zyn.few_shot(archive, seeds, "mixed", 3)
        assert len(mixed) == 3 and sum(t in seeds for t in mixed) == 1 and len(set(mixed)) == 3
    positions = {next(i for i, t in enumerate(qd_zyn.few_shot(archive, seeds, "mixed", 3)) if t in seeds)
                 for _ in range(60)}
    assert positions == {0, 1, 2}  # the seed is not always in the same place
    one_elite = {(0, 0): {"text": "elite 0"}}  # fewer elites than examples: all of them, and one seed
    assert sorted(qd_zyn.few_shot(one_elite, seeds, "mixed", 3))[0] == "elite 0"
    assert len(qd_zyn.few_shot(one_elite, seeds, "mixed", 3)) == 2


def test_qd_zyn_asks_measured_ways_on_their_judge():
    """cpu preset: gemma-3-270m asks each question the way measured on it; another judge asks them Yes/No."""
    measured = qd_zyn.specs(qd_zyn.Args(judge="gemma-3-270m"))
    assert [s.answers for s in measured] == [("positive", "negative"), ("funny", "serious"), ("science", "drama")]
    assert [s.stands_for for s in measured] == [qd_zyn.Args.question, *qd_zyn.Args().descriptors]
    plain = qd_zyn.specs(qd_zyn.Args(judge="smollm2-135m-instruct", descriptors=["Is this review about the plot?"]))
    assert [(s.question, s.answers) for s in plain] == [(qd_zyn.Args.question, ("Yes", "No")),
                                                         ("Is this review about the plot?", ("Yes", "No"))]
    with pytest.raises(script.UserError, match="must be different questions"):
        qd_zyn.specs(qd_zyn.Args(judge="x", descriptors=[qd_zyn.Args.question]))
    printed = yaml.safe_load(run("qd_zyn.py", "--preset", "cpu", "--print-config", timeout=120).stdout)["run"]
    assert printed["judge"]["model"] == "gemma-3-270m" and printed["policy"] == "smollm2-135m-instruct"
    assert [g["answers"] for g in printed["judge"]["guards"]] == [["funny", "serious"], ["science", "drama"]]


def test_qd_zyn_print_config_paper_offline():
    printed = yaml.safe_load(run("qd_zyn.py", "--print-config", timeout=120).stdout)
    config, run_ = printed["config"], printed["run"]
    assert run_["judge"]["model"] == "google/flan-t5-large" and run_["policy"] == "HuggingFaceTB/SmolLM2-1.7B-Instruct"
    judge = run_["judge"]  # flan-t5: every question asked Yes/No in the Flan template (nothing measured on it)
    assert [q["question"] for q in judge["questions"]] == ["Is this movie review positive?"]
    assert [g["question"] for g in judge["guards"]] == ["Is this movie funny?", "Is this movie science fiction?"]
    assert all(g["answers"] == ["Yes", "No"] for g in judge["guards"])
    assert config["train"]["tracker"] == "wandb" and run_["qd"]["bins"] == 10 and run_["qd"]["init_size"] == 64
    assert (config["train"]["total_steps"], config["train"]["batch_size"]) == (500, 16)
    assert config["method"]["gen_kwargs"]["max_new_tokens"] == 80 and config["method"]["gen_kwargs"]["top_p"] == 0.95
    assert re.fullmatch(r"runs/qd_zyn__paper__seed1000__[0-9a-f]{8}", config["train"]["logging_dir"])


# ------------------------------------------------------------------------------ grpo_flan_sentiments.py


@pytest.mark.slow
def test_grpo_runs_and_logs_ppo_names(tmp_path, tiny_llama_dir):
    run_dir = tmp_path / "grpo"
    run("grpo_flan_sentiments.py", "--preset", "cpu", "--judge", tiny_llama_dir, "--policy", tiny_llama_dir,
        "--total-steps", "4", "--num-rollouts", "8",
        "--batch-size", "4", "--num-iterations", "2", "--num-generations", "2", "--max-new-tokens", "6",
        "--eval-interval", "2", "--checkpoint-interval", "2", "--logging-dir", str(run_dir))
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2, 3, 4]
    elapsed = [m["time/elapsed"] for m in metrics]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    evals = [m for m in metrics if "reward/mean" in m]
    assert [m["step"] for m in evals] == [0, 2, 4] and all(finite(m) for m in metrics)
    for i, m in enumerate(evals):
        assert m["eval/index"] == i
        assert math.isfinite(m["reward/mean"])
        assert 0 <= m["metrics/prob_positive"] <= 1 and 0 <= m["metrics/external_vader"] <= 1
    for m in metrics[1:]:
        assert {"loss/total", "lr", "grpo/kl"} <= set(m)
    # a round of 8 completions serves 8 / 4 * 2 = 4 steps; its rewards are logged on its first step
    assert "rollout/score_mean" in metrics[1] and "rollout/score_mean" not in metrics[2]
    record = json.loads((run_dir / "run.json").read_text())  # the PPO engine's run record
    lr = record["config"]["optimizer"]["kwargs"]["lr"]
    assert lr == 3e-4 and all(m["lr"] == pytest.approx(lr) for m in metrics[1:])  # the cpu overlay's, constant
    assert record["config"]["train"]["total_steps"] == 4 and record["config"]["method"]["ppo_epochs"] == 2
    assert record["run"]["experiment"] == "grpo_flan_sentiments" and record["run"]["grpo"]["num_generations"] == 2
    samples = read_jsonl(run_dir / "samples" / "eval_4.jsonl")
    assert len(samples) == 64 and set(samples[0]) == {"prompt", "output", "reward", "metrics"}  # the held-out 64
    for sample in samples:  # the cpu preset's reward, as the PPO run's: log-odds of P(" positive")
        p = sample["metrics"]["prob_is_this_movie_review_positive"]
        assert sample["metrics"]["prob_positive"] == p
        assert sample["reward"] == pytest.approx(math.log(p / (1 - p)), abs=1e-4)
    assert (run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_grpo_presets_resolve_to_the_ppo_judge_prompts_and_budget(preset):
    """The PPO-vs-GRPO comparison is only fair if both scripts ask the same judge the same way, on the same
    prompts, and sample and train the same amounts: both resolve through script.resolve and make_config."""
    import grpo_flan_sentiments as grpo
    import ppo_flan_sentiments as ppo

    resolved = {}
    for module in (ppo, grpo):
        args = script.resolve(module.Args(preset=preset), module.PRESETS)
        config, _ = script.make_config(args, module.PRESETS[preset])
        resolved[module] = (args, config.to_dict(), module.PRESETS[preset])
    (ppo_args, ppo_config, ppo_preset), (grpo_args, grpo_config, grpo_preset) = resolved[ppo], resolved[grpo]
    assert grpo_args.judge == ppo_args.judge and grpo_args.asking == ppo_args.asking
    assert grpo_preset.prompts == ppo_preset.prompts
    if preset == "cpu":  # (the paper's are IMDB's, from the hub)
        assert grpo.load_prompts(grpo_args) == ppo.load_prompts(ppo_args)
    assert grpo_config == ppo_config  # one config: total_steps, batch, rollouts, epochs, lr, lengths, freezing
    assert script.step_budget(script.TRLConfig.from_dict(grpo_config)) == {"cpu": 320, "paper": 800}[preset]


def test_grpo_resumes_only_from_a_complete_checkpoint(tmp_path, capsys):
    """A checkpoint half-written by a crash or a full disk (no trainer_state.json yet) is skipped, with a note."""
    import grpo_flan_sentiments as grpo

    folder = tmp_path / "checkpoints"
    assert grpo.last_complete_checkpoint(folder) is None  # no folder yet: a fresh start
    for step, complete in ((64, True), (128, True), (192, False)):
        (folder / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (folder / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (folder / "checkpoint-x").mkdir()  # not a step: ignored
    assert grpo.last_complete_checkpoint(folder) == str(folder / "checkpoint-128")
    assert "checkpoint-192: incomplete (no trainer_state.json" in capsys.readouterr().err


def test_grpo_print_config_paper_offline():
    printed = yaml.safe_load(run("grpo_flan_sentiments.py", "--print-config", timeout=120).stdout)
    run_ = printed["run"]
    assert (run_["policy"], run_["tokenizer"], run_["judge"]["model"]) == ("lvwerra/gpt2-imdb", "gpt2", "google/flan-t5-large")
    assert run_["prompts"].startswith("imdb") and run_["trl"].startswith("1.16.0")
    assert run_["judge"]["questions"][0]["question"] == "Is this movie review positive?"
    assert run_["grpo"] == {"num_generations": 8, "beta": 0.05, "epsilon": 0.2, "temperature": 1.0}
    # the paper's budget, by the PPO engine's rule: 100 collections x 4 passes x 2 minibatches of 64
    assert printed["config"]["train"]["total_steps"] == 10000 and printed["optimiser steps"].startswith("800:")
    assert re.fullmatch(r"runs/grpo_flan_sentiments__paper__seed1000__[0-9a-f]{8}",
                        printed["config"]["train"]["logging_dir"])


# ------------------------------------------------------------------------------ plots/compare_ppo_grpo.py


def test_compare_ppo_grpo_figure(tmp_path):
    for name, slope in (("ppo", 1.0), ("grpo", 2.0)):
        (tmp_path / name).mkdir()
        lines = [{"step": s, "reward/mean": slope * s, "metrics/external_vader": 0.5 + s / 100,
                  "time/elapsed": 5.0 * s + 1} for s in range(0, 20, 5)]
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    from plots import compare_ppo_grpo

    fig = compare_ppo_grpo.plot_comparison([str(tmp_path / "ppo")], [str(tmp_path / "grpo")])
    panels = fig.axes
    assert [len(ax.lines) for ax in panels] == [2, 2]
    np.testing.assert_allclose(panels[0].lines[1].get_xdata(), [1, 26, 51, 76])  # seconds
    np.testing.assert_allclose(panels[0].lines[1].get_ydata(), [0, 10, 20, 30])
    assert compare_ppo_grpo.main(["--ppo", str(tmp_path / "ppo"), "--grpo", str(tmp_path / "grpo"),
                                  "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "ppo_vs_grpo.png").stat().st_size > 0
    assert compare_ppo_grpo.main(["--ppo", str(tmp_path / "ppo"), "--out", str(tmp_path / "fig"),
                                  "--metrics", "metrics/nothing"]) == 2


def test_grpo_cpu_preset_shares_judge_prompts_and_step_budget_with_the_ppo_preset():
    """grpo_flan_sentiments.py claims the PPO cpu preset's judge, question, prompts and schedule."""
    ppo = yaml.safe_load(run_script("ppo_flan_sentiments.py", "--preset", "cpu", "--print-config").stdout)
    grpo = yaml.safe_load(run_script("grpo_flan_sentiments.py", "--preset", "cpu", "--print-config").stdout)
    for printed in (ppo, grpo):
        printed["config"]["train"].pop("logging_dir")  # runs/<experiment>__...: each script's own
    assert grpo["config"] == ppo["config"] and grpo["config"]["train"]["total_steps"] == 320
    assert grpo["optimiser steps"] == ppo["optimiser steps"] == "320 (train.total_steps)"
    for key in ("judge", "prompts", "policy", "tokenizer", "external", "model_hashes"):
        assert grpo["run"][key] == ppo["run"][key], key
    assert grpo["run"]["judge"]["questions"][0]["question"] == "Sentiment:"
    assert grpo["run"]["judge"]["options"]["yes_words"] == ["positive"]
