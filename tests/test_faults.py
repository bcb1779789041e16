"""Faults and hostile input: a full disk, a killed or stopped run, damaged run files, wrong models and
prompt files each end in one line naming what, where and how to fix it, and leave nothing half-written
(tiny models, no network). benchmarks/fault_harness.py repeats the kill and full-disk cases many times.
"""

from __future__ import annotations

import errno
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import helpers
from helpers import PROMPTS, share_of_spaces, toy_config

import zyn_models
import zyn_ppo
from zyn_ppo import runio, script

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--overrides", "method.num_rollouts=4", "method.chunk_size=4", "train.batch_size=2", "train.eval_interval=1",
        "method.gen_kwargs.max_new_tokens=6"]


def sentiments(judge: str, policy: str, *args: str, steps: int = 2, overrides: tuple = ()) -> list[str]:
    return ["--preset", "cpu", "--judge", judge, "--policy", policy, "--total-steps", str(steps), "--shots", "",
            *args, *TINY, *overrides]


def one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """The last stderr line of a script that failed with `code`, without a traceback."""
    assert proc.returncode == code and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def train(cfg, **kwargs):
    torch.set_num_threads(1)
    return zyn_ppo.train(share_of_spaces, PROMPTS, PROMPTS[:4], None, cfg, **kwargs)


class FullDisk:
    """A file that opened, but whose writes fail with ENOSPC after `keep` characters reach the disk."""

    def __init__(self, f, keep: float = 0.0):
        self.f, self.keep = f, keep

    def write(self, text):
        self.f.write(text[: int(len(text) * self.keep)])
        self.f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self):
        self.f.flush()

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def full_disk_for(monkeypatch, match: str, keep: float = 0.0) -> None:
    """Text files written whose path contains `match` open, but the disk is full (see FullDisk)."""
    real_open = io.open

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return FullDisk(f, keep) if match in str(file) and ("w" in mode or "a" in mode) and "b" not in mode else f

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr("builtins.open", fake_open)


# ------------------------------------------------------------------------------ a full disk
FULL_AT_CHECKPOINT = """
import runpy, sys, torch
def full_disk(obj, f, *args, **kwargs):  # what torch.save says when the disk fills mid-write
    open(f, "wb").write(b"PK" * 64)
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 96")
torch.save = full_disk
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_partial_folder(tiny_llama_dir, tiny_gpt2_dir,
                                                                                 tmp_path):
    launcher = tmp_path / "full_disk.py"
    launcher.write_text(FULL_AT_CHECKPOINT)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(launcher), str(ROOT / "ppo_flan_sentiments.py"),
                           *sentiments(tiny_llama_dir, tiny_gpt2_dir, "--logging-dir", str(out), steps=1)],
                          cwd=ROOT, env=helpers.SCRIPT_ENV, capture_output=True, text=True, timeout=300)
    line = one_line_error(proc)
    assert "no space left on the device while writing checkpoint" in line and str(out / "checkpoints") in line, line
    assert "MiB free" in line and "run the same command again" in line
    assert not list((out / "checkpoints").glob(".tmp_*")) and not list((out / "checkpoints").glob("*"))


def test_full_disk_while_samples_are_written_names_the_file_and_leaves_no_empty_file(tiny_gpt2_dir, tmp_path,
                                                                                      monkeypatch):
    full_disk_for(monkeypatch, "eval_")
    with pytest.raises(zyn_ppo.UserError) as error:
        train(toy_config(tiny_gpt2_dir, tmp_path / "run", **{"train.total_steps": 1}))
    message = str(error.value)
    assert "no space left on the device while writing" in message and "samples/eval_0.jsonl" in message, message
    assert list((tmp_path / "run" / "samples").iterdir()) == []  # neither eval_0.jsonl nor its temporary file


def test_full_disk_while_metrics_are_appended_leaves_no_torn_line(tmp_path, monkeypatch):
    logger = runio.RunLogger(tmp_path, None)
    logger.log({"a": 1.0}, step=0)
    full_disk_for(monkeypatch, "metrics.jsonl", keep=0.5)  # half a line reaches the disk, then it is full
    with pytest.raises(zyn_ppo.UserError, match="metrics.jsonl"):
        logger.log({"a": 2.0}, step=1)
    monkeypatch.undo()
    assert [r["step"] for r in runio.read_metrics(tmp_path / "metrics.jsonl")] == [0]


# ------------------------------------------------------------------------------ what a killed run leaves
def test_half_written_checkpoints_and_samples_are_completed_or_removed_on_the_next_start(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (2, 4):
        runio.write_checkpoint(root, f"step_{step}", lambda d, s=step: (d / "w.bin").write_bytes(bytes([s]) * 8), step)
    shutil.copytree(root / "step_4", root / ".tmp_step_6")  # written whole, killed before the rename
    meta = json.loads((root / ".tmp_step_6" / "meta.json").read_text())
    (root / ".tmp_step_6" / "meta.json").write_text(json.dumps({**meta, "step": 6}))
    (root / ".tmp_step_8").mkdir()  # killed mid-write: no meta.json
    (root / ".tmp_step_8" / "w.bin").write_bytes(b"\0" * 3)
    (root / "step_4").rename(root / ".old_step_4")  # killed between the two renames of a rewrite
    shutil.copytree(root / ".old_step_4", root / ".tmp_step_4")
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("eval_4.jsonl", "eval_8.jsonl", ".eval_9.jsonl.tmp"):
        (samples / name).write_text("")
    (tmp_path / ".run.json.tmp").write_text("{")

    runio.tidy_run_dir(tmp_path)
    runio.keep_samples_until(tmp_path, 6)
    assert sorted(p.name for p in root.iterdir()) == ["step_2", "step_4", "step_6"]
    assert all(runio.verify_checkpoint(root / n) is None for n in ("step_2", "step_4", "step_6"))
    assert runio.good_checkpoint(tmp_path) == root / "step_6"
    assert sorted(p.name for p in samples.iterdir()) == ["eval_4.jsonl"]
    assert not (tmp_path / ".run.json.tmp").exists()


def test_a_failed_checkpoint_write_removes_its_temporary_folder(tmp_path):
    def interrupted(folder):
        (folder / "w.bin").write_bytes(b"x")
        raise KeyboardInterrupt  # Ctrl-C twice while saving

    with pytest.raises(KeyboardInterrupt):
        runio.write_checkpoint(tmp_path, "step_1", interrupted, 1)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ damaged run files
@pytest.mark.parametrize("content, kind", [("[]", "JSON array"), ('"text"', "JSON string"), ("null", "JSON null"),
                                           ("{not json", "not valid JSON"), ("\udcff", "not valid JSON")])
def test_a_damaged_run_json_is_a_one_line_refusal_and_overwrite_recovers(tmp_path, content, kind):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    with pytest.raises(zyn_ppo.UserError) as error:
        runio.check_run_dir(run_dir, {"config": {}, "run": {}}, resume=True, overwrite=False)
    assert f"{run_dir / 'run.json'} is damaged" in str(error.value) and kind in str(error.value)
    assert "--overwrite to move the old run aside" in str(error.value)
    assert runio.check_run_dir(run_dir, {"config": {}, "run": {}}, resume=True, overwrite=True) == "fresh"
    assert [p.name.startswith("run.old-") for p in tmp_path.iterdir()] == [True]


def test_a_damaged_config_yaml_is_refused_not_rewritten(tiny_gpt2_dir, tmp_path):
    cfg = toy_config(tiny_gpt2_dir, tmp_path / "run", **{"train.total_steps": 1})
    train(cfg)
    garbage = bytes(range(256)) * 4
    (tmp_path / "run" / "config.yaml").write_bytes(garbage)
    with pytest.raises(zyn_ppo.UserError, match=r"config.yaml is damaged.*delete it.*--overwrite"):
        train(zyn_ppo.TRLConfig.update(cfg, {"train.total_steps": 2}))
    assert (tmp_path / "run" / "config.yaml").read_bytes() == garbage


# ------------------------------------------------------------------------------ the models
def test_model_fingerprint_covers_the_weights_and_is_cached(tiny_llama_dir, tmp_path, monkeypatch, tokenizer):
    import tiny_models

    monkeypatch.setenv("ZYN_CACHE", str(tmp_path / "cache"))
    folder = Path(shutil.copytree(tiny_llama_dir, tmp_path / "judge"))
    first = zyn_models.model_fingerprint(str(folder))
    assert first.startswith("sha256:") and len(first) == 7 + 64
    reads = []
    real = zyn_models.sha256_file
    monkeypatch.setattr(zyn_models, "sha256_file", lambda p: reads.append(p) or real(p))
    assert zyn_models.model_fingerprint(str(folder)) == first and reads == []  # from the cache
    tiny_models.tiny_llama(tokenizer, seed=1).save_pretrained(folder)  # other weights, same path
    assert zyn_models.model_fingerprint(str(folder)) != first and any(p.suffix == ".safetensors" for p in reads)
    assert zyn_models.model_fingerprint("google/flan-t5-large") == "hub:google/flan-t5-large"
    monkeypatch.setattr(zyn_models, "embedded_model_path", lambda name: str(folder))
    assert zyn_models.model_fingerprint("smollm2-135m-instruct") == zyn_models.model_fingerprint(str(folder))


def test_a_mistyped_judge_stops_before_anything_is_written_and_other_weights_are_another_run(
        tiny_llama_dir, tiny_gpt2_dir, tmp_path, tokenizer):
    import tiny_models

    out, judge = tmp_path / "run", Path(shutil.copytree(tiny_llama_dir, tmp_path / "judge"))
    typo = run_script(*sentiments(str(tmp_path / "jduge"), tiny_gpt2_dir, "--logging-dir", str(out)))
    line = one_line_error(typo)
    assert "judge" in line and "no such folder" in line and str(tmp_path / "jduge") in line, line
    assert not runio.has_results(out)
    fixed = run_script(*sentiments(str(judge), tiny_gpt2_dir, "--logging-dir", str(out)))
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    hashes = json.loads((out / "run.json").read_text())["run"]["model_hashes"]
    assert set(hashes) == {"policy", "judge"} and hashes["judge"].startswith("sha256:")

    tiny_models.tiny_llama(tokenizer, seed=1).save_pretrained(judge)  # other weights under the same path
    again = run_script(*sentiments(str(judge), tiny_gpt2_dir, "--logging-dir", str(out), steps=3))
    line = one_line_error(again)
    assert "holds a different run" in line and "run.model_hashes.judge" in line, line


@pytest.mark.parametrize("policy, message", [("missing", "policy '{}': no such folder"),
                                             ("t5", "is a sequence-to-sequence model (t5); PPO trains a causal")])
def test_a_wrong_policy_is_one_short_line(tiny_llama_dir, tiny_t5_dir, tmp_path, policy, message):
    path = str(tmp_path / "no_such_policy") if policy == "missing" else tiny_t5_dir
    proc = run_script(*sentiments(tiny_llama_dir, path, "--logging-dir", str(tmp_path / "run")))
    line = one_line_error(proc)
    assert message.format(path) in line and len(line) < 400, line
    assert not runio.has_results(tmp_path / "run")


# ------------------------------------------------------------------------------ prompt files
def test_prompt_files_are_read_as_utf8_without_bom_and_errors_name_the_file(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"\xef\xbb\xbfThe movie\r\n\n  I think  \nA cat\n")
    assert script.read_prompt_lines(path, 2) == ["The movie", "I think", "A cat"]
    with pytest.raises(zyn_ppo.UserError) as error:
        script.read_prompt_lines(path, 3)
    assert f"prompt file {path} has 3 prompts" in str(error.value) and "needs at least 4" in str(error.value)
    path.write_text("")
    with pytest.raises(zyn_ppo.UserError, match=r"has 0 prompts .* needs at least 65: the last 64 are held out"):
        script.read_prompt_lines(path, 64)
    path.write_bytes(b"ok\nfine\ncaf\xe9 au lait\n")
    with pytest.raises(zyn_ppo.UserError, match=rf"prompt file {path}:3 is not UTF-8 text \(byte 0xe9 at column 4\)"):
        script.read_prompt_lines(path, 1)
    with pytest.raises(zyn_ppo.UserError, match="does not exist"):
        script.read_prompt_lines(tmp_path / "nothing.txt")


def test_every_script_reads_its_prompts_with_the_shared_reader():
    for name in ("ppo_flan_sentiments.py", "ppo_flan_detox.py", "ppo_flan_opinion.py", "ppo_prompt_generator.py",
                 "grpo_flan_sentiments.py", "ppo_d5_movies.py", "ppo_flan_sentiments_robust.py"):
        text = (ROOT / name).read_text()
        assert re.search(r"script\.(read_prompt_lines|movie_review_openers)\(", text), name
        assert ".read_text().splitlines()" not in text, name


# ------------------------------------------------------------------------------ Ctrl-C and SIGTERM
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_and_ends_with_one_line(tiny_llama_dir, tiny_gpt2_dir, tmp_path, sig, code):
    out = tmp_path / "run"
    args = sentiments(tiny_llama_dir, tiny_gpt2_dir, "--logging-dir", str(out), steps=200,
                      overrides=("train.eval_interval=1000",))
    proc = subprocess.Popen([sys.executable, str(ROOT / "ppo_flan_sentiments.py"), *args], cwd=ROOT,
                            env=helpers.SCRIPT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(r["step"] >= 2 for r in _metrics(out)):
            time.sleep(0.2)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code and "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"zyn_ppo: stopped by {sig.name} at step ") and "run the same command to continue" in last
    saved = [p for p in (out / "checkpoints").iterdir() if p.name.startswith("step_")]
    assert len(saved) == 1 and str(saved[0]) in last and runio.verify_checkpoint(saved[0]) is None


def _metrics(run_dir: Path) -> list[dict]:
    try:
        return runio.read_metrics(run_dir / "metrics.jsonl")
    except zyn_ppo.UserError:
        return []


def run_script(*args: str) -> subprocess.CompletedProcess:
    return helpers.run_script("ppo_flan_sentiments.py", *args)
