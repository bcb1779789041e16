"""What several test files share: running a script on tiny models, and a toy PPO task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import zyn_ppo

ROOT = Path(__file__).resolve().parents[1]
# one thread per process: the tiny models gain nothing from more, and the machine may be shared
# child processes import the project and the test helpers from this checkout, as pytest does (pythonpath)
PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "tests"), *filter(None, [os.environ.get("PYTHONPATH")])])
SCRIPT_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
              "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": PYTHONPATH}


def run_script(script: str, *args: str, env: dict | None = None, timeout: int = 300,
               stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run one of the project's scripts (a path relative to the project folder) and capture its output."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env or SCRIPT_ENV,
                          capture_output=True, text=True, timeout=timeout, check=False, input=stdin)


def share_of_spaces(samples, prompts, outputs, **kw):
    """A learnable toy reward: 10 x the share of spaces in the output (about a third of the tiny vocabulary)."""
    return [10 * o.count(" ") / (len(o) + 1) for o in outputs]


def toy_metrics(samples, prompts, outputs, **kw):
    return {"length": [float(len(o)) for o in outputs]}


PROMPTS = ["The movie was", "I think", "A cat", "The story", "this film", "good acting and", "It", "My"] * 4


def toy_config(path, run_dir, **updates):
    settings = {
        "model.model_path": path, "model.num_layers_unfrozen": 2, "train.seq_length": 32, "train.total_steps": 8,
        "train.batch_size": 16, "train.eval_interval": 4, "train.checkpoint_interval": 4, "train.seed": 3,
        "train.logging_dir": str(run_dir), "method.num_rollouts": 32, "method.chunk_size": 32,
        "method.ppo_epochs": 2, "method.init_kl_coef": 0.01, "method.gen_kwargs.max_new_tokens": 6,
        "optimizer.kwargs.lr": 3e-3, "scheduler.name": "constant", "scheduler.kwargs": {},
    }
    settings.update(updates)
    return zyn_ppo.TRLConfig.update(zyn_ppo.TRLConfig(), settings)


def read_metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def without_time(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def bag_of_words(texts, vocab=("film", "cat", "dog", "rain", "sun", "war", "the")):
    """A plain embedder for the embedding checks' maths: word counts over a fixed vocabulary, unit length."""
    vectors = np.array([[t.lower().split().count(w) for w in vocab] for t in texts], dtype=float) + 1e-3
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
