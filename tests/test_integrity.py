"""Runs never mix, lose or silently reuse results, and bad input is a one-line error (tiny models, no network).

Each test reproduces one way results used to be lost or mixed: a changed run continuing an old one, a
fresh start deleting results, two writers in one directory, a broken checkpoint or metrics line blocking a
run, and config values that were not checked.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers
import pytest
import torch
from helpers import PROMPTS, SCRIPT_ENV, share_of_spaces, toy_config

import zyn_ppo
from zyn_ppo import runio

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--overrides", "method.num_rollouts=4", "method.chunk_size=4", "train.batch_size=2", "train.eval_interval=1",
        "method.gen_kwargs.max_new_tokens=6"]


def run_script(*args: str) -> subprocess.CompletedProcess:
    return helpers.run_script("ppo_flan_sentiments.py", *args)


def tiny_run(tiny_llama_dir, tiny_gpt2_dir, *args: str, overrides: tuple = ()) -> list[str]:
    return ["--preset", "cpu", "--judge", tiny_llama_dir, "--policy", tiny_gpt2_dir, "--total-steps", "2",
            "--shots", "", *args, *TINY, *overrides]  # no few-shot reviews: a tiny judge has 512 positions


def train(cfg, reward=share_of_spaces, **kwargs):
    torch.set_num_threads(1)
    return zyn_ppo.train(reward, PROMPTS, PROMPTS[:4], None, cfg, **kwargs)


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fail the test if the engine loads a model (errors must come before that)."""
    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the error")

    monkeypatch.setattr(zyn_ppo.trainer, "load_policy", refuse)


# ------------------------------------------------------------------------ 1. a changed run never continues
def test_changed_settings_get_their_own_directory(tiny_llama_dir, tiny_gpt2_dir):
    """The same command names the same directory; another question, judge or learning rate another one."""
    def run_dir(*extra, overrides=()):
        proc = run_script(*tiny_run(tiny_llama_dir, tiny_gpt2_dir, *extra, overrides=overrides), "--print-config")
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.strip().splitlines()[-1].removeprefix("run directory: ")

    base = run_dir()
    assert base == run_dir() and base.startswith("runs/ppo_flan_sentiments__cpu__seed1000__")
    others = {run_dir("--question", "Is this movie review funny?"), run_dir("--judge", tiny_gpt2_dir),
              run_dir(overrides=("optimizer.kwargs.lr=1e-3",)), run_dir("--seed", "7")}
    assert len(others) == 4 and base not in others
    assert run_dir("--total-steps", "9") == base  # more steps continue the same run


def test_a_different_run_in_the_same_directory_stops_before_loading(tiny_gpt2_dir, tmp_path, monkeypatch):
    cfg = toy_config(tiny_gpt2_dir, tmp_path / "run", **{"train.total_steps": 2})
    train(cfg, run_info={"judge": "a", "questions": ["Is this positive?"]})
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["run"]["judge"] == "a" and record["config"]["optimizer"]["kwargs"]["lr"] == 3e-3
    assert len(record["run"]["prompts_sha256"]) == 64 and "torch" in record["environment"]["versions"]
    before = (tmp_path / "run" / "metrics.jsonl").read_text()

    monkeypatch.setattr(zyn_ppo.trainer, "load_policy", lambda *a, **k: pytest.fail("loaded a model"))
    changed = [
        (dict(run_info={"judge": "b", "questions": ["Is this positive?"]}), {}, "run.judge: 'a' -> 'b'"),
        (dict(run_info={"judge": "a", "questions": ["Is this funny?"]}), {}, "run.questions"),
        (dict(run_info={"judge": "a", "questions": ["Is this positive?"]}), {"optimizer.kwargs.lr": 1e-3},
         "config.optimizer.kwargs.lr: 0.003 -> 0.001"),
        (dict(run_info={"judge": "a", "questions": ["Is this positive?"]}), {"model.num_layers_unfrozen": 1},
         "config.model.num_layers_unfrozen: 2 -> 1"),
    ]
    for kwargs, updates, named in changed:
        with pytest.raises(zyn_ppo.UserError, match="holds a different run") as error:
            train(zyn_ppo.TRLConfig.update(cfg, updates), **kwargs)
        assert named in str(error.value) and "--overwrite" in str(error.value)
    with pytest.raises(zyn_ppo.UserError, match="prompts_sha256"):  # other prompts, same everything else
        torch.set_num_threads(1)
        zyn_ppo.train(share_of_spaces, PROMPTS[::-1], PROMPTS[:4], None, cfg,
                      run_info={"judge": "a", "questions": ["Is this positive?"]})
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before  # nothing touched


def test_more_steps_continue_the_run(tiny_gpt2_dir, tmp_path):
    info = {"judge": "a"}
    train(toy_config(tiny_gpt2_dir, tmp_path / "run", **{"train.total_steps": 2}), run_info=info)
    trainer = train(toy_config(tiny_gpt2_dir, tmp_path / "run", **{"train.total_steps": 4}), run_info=info)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert trainer.step == 4 and steps == [0, 1, 2, 3, 4]


def test_script_resume_with_another_judge_is_refused(tiny_llama_dir, tiny_gpt2_dir, tmp_path):
    out = tmp_path / "run"
    first = run_script(*tiny_run(tiny_llama_dir, tiny_gpt2_dir, "--logging-dir", str(out)))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "run directory: " in first.stdout and "metrics/prob_positive" in first.stdout  # the closing summary
    assert (out / "figures" / "reward_mean.png").exists()
    second = run_script(*tiny_run(tiny_llama_dir, tiny_gpt2_dir, "--logging-dir", str(out), "--judge", tiny_gpt2_dir))
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "holds a different run" in lines[-1] and "run.judge.model" in lines[-1]
    assert "Traceback" not in second.stderr


# ------------------------------------------------------------------------ 2. nothing is deleted
def test_a_fresh_start_never_deletes_results(tiny_gpt2_dir, tmp_path, no_model_loads):
    run_dir = tmp_path / "results"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "reward/mean": i}) + "\n" for i in range(161)))
    with pytest.raises(zyn_ppo.UserError, match="unrecorded run.*--overwrite"):
        train(toy_config(tiny_gpt2_dir, run_dir))
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 161


def test_overwrite_moves_the_old_run_aside(tiny_gpt2_dir, tmp_path):
    run_dir = tmp_path / "results"
    run_dir.mkdir()
    old = "".join(json.dumps({"step": i}) + "\n" for i in range(5))
    (run_dir / "metrics.jsonl").write_text(old)
    train(toy_config(tiny_gpt2_dir, run_dir, **{"train.total_steps": 1}), overwrite=True)
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("results.old-")]
    assert len(moved) == 1 and (moved[0] / "metrics.jsonl").read_text() == old
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 1


def test_resume_off_where_results_exist_is_refused(tiny_gpt2_dir, tmp_path):
    cfg = toy_config(tiny_gpt2_dir, tmp_path / "run", **{"train.total_steps": 1})
    train(cfg)
    with pytest.raises(zyn_ppo.UserError, match="resume_from_checkpoint is off"):
        train(zyn_ppo.TRLConfig.update(cfg, {"train.resume_from_checkpoint": None}))


# ------------------------------------------------------------------------ 3. one writer per directory
HOLD = """
import time
from zyn_ppo import runio
from pathlib import Path
lock = runio.RunLock(Path({run_dir!r})).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tiny_gpt2_dir, tmp_path, no_model_loads):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(run_dir=str(run_dir))], env=SCRIPT_ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.time()
        with pytest.raises(zyn_ppo.UserError, match=rf"in use by process {holder.pid}"):
            train(toy_config(tiny_gpt2_dir, run_dir))
        assert time.time() - start < 5  # at once, no waiting
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with runio.RunLock(run_dir):  # the dead process's lock is free again
        assert (run_dir / ".lock.pid").read_text().startswith(f"process {os.getpid()}")
    assert not (run_dir / ".lock.pid").exists()


# ------------------------------------------------------------------------ 4. broken files
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tiny_gpt2_dir, tmp_path):
    cfg = toy_config(tiny_gpt2_dir, tmp_path / "run", **{"train.checkpoint_interval": 2, "train.total_steps": 6})
    steps = {"n": 0}

    def reward_then_stop(samples, prompts, outputs, **kw):
        steps["n"] += 1
        if steps["n"] == 4:  # the second collection (calls: eval 0, rollout, eval 4, rollout): interrupt
            os.kill(os.getpid(), signal.SIGINT)
        return share_of_spaces(samples, prompts, outputs)

    with pytest.raises(KeyboardInterrupt):
        train(cfg, reward=reward_then_stop)
    ckpts = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_4", "step_5"]
    state = ckpts / "step_5" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # power loss mid-write
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss/tot')  # a torn last line
    with pytest.warns(UserWarning) as caught:
        trainer = train(cfg)
    messages = " ".join(str(w.message) for w in caught)
    assert "step_5" in messages and "trainer_state.pt is damaged" in messages
    assert trainer.step == 6
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(7))  # continued from step 4, nothing twice, the torn line gone


def test_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "a": 1}\n{"step": 1, "a": 2}\n{"step": 2, "a"')
    with pytest.warns(UserWarning, match="cut mid-write"):
        assert [r["step"] for r in runio.read_metrics(path)] == [0, 1]
    path.write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(zyn_ppo.UserError, match=r"metrics.jsonl:2 is not a metrics line"):
        runio.read_metrics(path)


def test_jsonl_files_are_written_whole_and_read_back(tmp_path):
    """runio.write_jsonl_atomic / read_jsonl: what qd_zyn's archive, samples/ and a trimmed metrics.jsonl use."""
    path = tmp_path / "archive.jsonl"
    assert runio.read_jsonl(path) == []  # none yet
    rows = [{"bin": [0, 1], "text": "caf\u00e9 \"quoted\"", "quality": 0.25}, {"bin": [1, 0], "text": "b", "quality": 1}]
    runio.write_jsonl_atomic(path, iter(rows))
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in rows)  # the bytes the run directories hold
    assert runio.read_jsonl(path) == rows and not list(tmp_path.glob(".*.tmp"))
    path.write_text(path.read_text() + "\n\n")
    assert runio.read_jsonl(path) == rows  # blank lines skipped
    assert runio.read_jsonl(path, numbered=True) == [(1, rows[0]), (2, rows[1])]
    path.write_text(path.read_text() + '{"bin": [2, 2],\n')  # a damaged line: one line naming file and line
    with pytest.raises(zyn_ppo.UserError, match=rf"^{re.escape(str(path))} line 5: not valid JSON \(.+\)$"):
        runio.read_jsonl(path)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 0, "a": 1}\n{"step": 1, "a": 2}\n{"step": 2, "a": 3}\n')
    assert [r["step"] for r in runio.keep_metrics_until(metrics, 1)] == [0, 1]
    assert metrics.read_text() == '{"step": 0, "a": 1}\n{"step": 1, "a": 2}\n'


def test_checkpoint_verification_names_the_file(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        runio.write_checkpoint(root, f"step_{step}", lambda d, s=step: (d / "weights.bin").write_bytes(bytes([s]) * 64), step)
    assert sorted(p.name for p in root.iterdir()) == ["step_2", "step_3"]  # the last two are kept
    assert runio.verify_checkpoint(root / "step_3") is None
    (root / "step_3" / "weights.bin").write_bytes(b"\0" * 10)
    assert "weights.bin is damaged" in runio.verify_checkpoint(root / "step_3")
    with pytest.warns(UserWarning, match="step_3"):
        assert runio.good_checkpoint(tmp_path) == root / "step_2"


def test_newest_checkpoint_skips_each_incomplete_one_with_a_line_naming_it(tmp_path):
    """The one walk both engines resume with (PPO's step_N, GRPO's TRL checkpoint-N): newest first, the first
    without a problem wins, each one skipped is reported once, in one line naming the folder and the problem."""
    newest_first = [tmp_path / name for name in ("c3", "c2", "c1")]
    problems = {"c3": "c3 is incomplete", "c2": None, "c1": None}
    lines = []
    assert runio.newest_checkpoint(newest_first, lambda p: problems[p.name], report=lines.append) == tmp_path / "c2"
    assert lines == [f"skipping checkpoint {tmp_path / 'c3'}: c3 is incomplete; falling back to the previous one"]
    lines.clear()
    assert runio.newest_checkpoint(newest_first, lambda p: f"{p.name} is broken", report=lines.append) is None
    assert lines == [f"skipping checkpoint {tmp_path / n}: {n} is broken; falling back to the previous one"
                     for n in ("c3", "c2", "c1")]
    assert runio.newest_checkpoint([], lambda p: None) is None  # no checkpoint yet
    with pytest.warns(UserWarning, match="c3 is incomplete"):  # a warning unless told otherwise
        assert runio.newest_checkpoint(newest_first, lambda p: problems[p.name]) == tmp_path / "c2"


# ------------------------------------------------------------------------ 5. config values are checked
@pytest.mark.parametrize("updates, message", [
    ({"train.batch_size": -2}, "train.batch_size=-2: must be an integer >= 1"),
    ({"method.ppo_epochs": 0}, "method.ppo_epochs=0: must be an integer >= 1"),
    ({"train.eval_interval": 0}, "train.eval_interval=0: must be an integer >= 1"),
    ({"method.ppo_epochs": "abc"}, "method.ppo_epochs='abc': must be an integer >= 1"),
    ({"method.init_kl_coef": float("nan")}, "method.init_kl_coef=nan: must be a finite number >= 0"),
    ({"method.cliprange": 0}, "method.cliprange=0: must be a finite number > 0"),
    ({"train.total_steps": -3}, "train.total_steps=-3: must be an integer >= 0"),
    ({"method.gamma": 1.5}, "method.gamma=1.5: must be a finite number >= 0 and <= 1"),
    ({"train.batch_size": 64}, "train.batch_size=64 is larger than the rollout store"),
    ({"train.tracker": "mlflow"}, "train.tracker='mlflow': must be one of null, 'wandb', 'tensorboard', 'none'"),
    ({"model.model_extra_configs": {"torch_dtype": "float16"}}, "set the precision with model.dtype"),
])
def test_bad_config_values_are_named(tmp_path, updates, message):
    with pytest.raises(zyn_ppo.ConfigError) as error:
        toy_config("unused", tmp_path / "run", **updates)
    assert message in str(error.value)


@pytest.mark.parametrize("args, message", [
    (["--total-steps", "-3"], "train.total_steps=-3"),
    (["--overrides", "train.batch_size=-2"], "train.batch_size=-2"),
    (["--overrides", "method.ppo_epochs=abc"], "method.ppo_epochs='abc'"),
    (["--overrides", "method.init_kl_coef=nan"], "method.init_kl_coef"),
    (["--overrides", "train.eval_interval=0"], "train.eval_interval=0"),
    (["--overrides", "method.no_such_key=1"], "unknown config key 'method.no_such_key'"),
])
def test_script_config_errors_are_one_line(args, message):
    start = time.time()
    proc = run_script("--preset", "cpu", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
    assert time.time() - start < 60  # no model was loaded


def test_debug_shows_the_traceback():
    proc = run_script("--preset", "cpu", "--total-steps", "-3", "--debug")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr
