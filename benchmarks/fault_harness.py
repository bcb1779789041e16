"""Fault injection: does a PPO run killed or stopped by a full disk resume to exactly the uninterrupted run?

A tiny GPT-2 (tests/tiny_models.py, random weights, no network) trains 8 PPO steps with a checkpoint every
2 steps and an evaluation every 2 steps, in a child process. First one uninterrupted reference run; then
each trial faults a run and runs the same command again in the same directory until it finishes:

- kill-op: SIGKILL (kill -9) at a random file operation of the run (torch.save, os.replace, a rename, a
  folder removal, a checksum), just before or just after it: the moments around checkpoint writes;
- kill-time: SIGKILL at a random time while the run trains;
- full-checkpoint: the k-th torch.save fails as torch reports a full disk ("unexpected pos") after
  writing part of its file;
- full-samples: the k-th samples file write fails with ENOSPC.

A trial is `equal` when the finished run's metrics.jsonl (time keys aside) and every samples file equal the
reference's and no temporary file or folder is left; otherwise it is `lost`. A full-disk trial also says
whether the faulted run ended in one `error:` line (exit 2) with nothing half-written left behind.

    OMP_NUM_THREADS=1 python -m benchmarks.fault_harness --kill-trials 5 --timed-kills 3 --seed 0
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
PROMPTS = ["The movie was", "I think", "A cat", "The story", "this film", "good acting and", "It", "My"] * 4


# ------------------------------------------------------------------------------------------ the child
def worker(run_dir: str, model_dir: str, fault: str) -> None:
    """Train the toy run into run_dir; `fault` (kind:k[:when]) injects one fault at the k-th operation."""
    import torch

    import zyn_ppo
    from zyn_ppo import runio, script

    torch.set_num_threads(1)
    kind, k, when = (fault.split(":") + ["", ""])[:3]
    k = int(k or 0)
    count = {"n": 0}

    def counted(fn, name):
        def wrapped(*args, **kwargs):
            count["n"] += 1
            hit = count["n"] == k
            if hit and kind == "kill-op" and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            if hit and kind == "full-checkpoint" and name == "torch.save":
                Path(args[1]).write_bytes(b"PK" * 64)  # part of the file, then the disk is full
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 96")
            out = fn(*args, **kwargs)
            if hit and kind == "kill-op":
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return wrapped

    if kind in ("kill-op", "count"):
        torch.save = counted(torch.save, "torch.save")
        os.replace = counted(os.replace, "os.replace")
        Path.rename = counted(Path.rename, "rename")
        shutil.rmtree = counted(shutil.rmtree, "rmtree")
        runio._sha256 = counted(runio._sha256, "sha256")
    elif kind == "full-checkpoint":
        torch.save = counted(torch.save, "torch.save")
    elif kind == "full-samples":
        real_write = Path.write_text

        def write_text(self, data, *args, **kwargs):  # the k-th samples file: half of it fits on the disk
            if self.parent.name == "samples":
                count["n"] += 1
                if count["n"] == k:
                    real_write(self, data[: len(data) // 2], *args, **kwargs)
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(self, data, *args, **kwargs)

        Path.write_text = write_text
    settings = {
        "model.model_path": model_dir, "model.num_layers_unfrozen": 2, "train.seq_length": 32, "train.total_steps": 8,
        "train.batch_size": 16, "train.eval_interval": 2, "train.checkpoint_interval": 2, "train.seed": 3,
        "train.logging_dir": run_dir, "method.num_rollouts": 32, "method.chunk_size": 32, "method.ppo_epochs": 2,
        "method.init_kl_coef": 0.01, "method.gen_kwargs.max_new_tokens": 6, "optimizer.kwargs.lr": 3e-3,
        "scheduler.name": "constant", "scheduler.kwargs": {},
    }
    config = zyn_ppo.TRLConfig.update(zyn_ppo.TRLConfig(), settings)
    reward = lambda samples, prompts, outputs, **kw: [10 * o.count(" ") / (len(o) + 1) for o in outputs]  # noqa: E731
    with script.user_errors():
        zyn_ppo.train(reward, PROMPTS, PROMPTS[:8], None, config)
    if kind == "count":
        print(f"operations: {count['n']}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ the parent
def child(run_dir: Path, model_dir: str, fault: str = "none", kill_after: float | None = None):
    cmd = [sys.executable, "-m", "benchmarks.fault_harness", "--worker", str(run_dir), model_dir, fault]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.kill()
    _, err = proc.communicate()
    return proc.returncode, err


def outcome(run_dir: Path) -> dict:
    """What a finished run left: metrics (time keys aside), samples files, and any temporary leftovers."""
    from zyn_ppo import runio

    rows = [{k: v for k, v in r.items() if not k.startswith("time/")} for r in runio.read_metrics(run_dir / "metrics.jsonl")]
    samples = {p.name: p.read_text() for p in sorted((run_dir / "samples").glob("*"))}
    leftovers = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(".*")
                       if p.name.startswith((".tmp_", ".old_")) or p.name.endswith(".tmp"))
    return dict(metrics=rows, samples=samples, leftovers=leftovers)


def half_written(run_dir: Path) -> list[str]:
    """Temporary checkpoint folders, temporary files and empty samples files (right after a failure)."""
    return sorted([str(p.relative_to(run_dir)) for p in run_dir.rglob(".*")
                   if p.name.startswith(".tmp_") or p.name.endswith(".tmp")]
                  + [str(p.relative_to(run_dir)) for p in (run_dir / "samples").glob("*") if p.stat().st_size == 0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kill-trials", type=int, default=5, help="kill -9 at a random file operation")
    parser.add_argument("--timed-kills", type=int, default=3, help="kill -9 at a random time")
    parser.add_argument("--full-disk-trials", type=int, default=1, help="per place: checkpoint, samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)

    from tests import tiny_models

    rng, t0 = random.Random(args.seed), time.time()
    work = Path(tempfile.mkdtemp(prefix="zyn-faults-"))
    try:
        tok = tiny_models.make_tokenizer()
        model_dir = tiny_models.save_tiny(tiny_models.tiny_gpt2(tok), tok, work / "gpt2")
        t = time.time()
        rc, err = child(work / "reference", model_dir, "count:0")
        duration = time.time() - t
        if rc != 0:
            sys.exit(f"the reference run failed:\n{err}")
        n_ops = int(err.strip().splitlines()[-1].split()[-1])
        reference = outcome(work / "reference")
        trials: list[tuple[str, str, bool, str]] = []  # kind, fault, equal, note

        def trial(kind: str, fault: str, kill_after: float | None = None, expect: str = "killed") -> None:
            run_dir = work / f"trial{len(trials)}"
            rc, err = child(run_dir, model_dir, "none" if kill_after else fault, kill_after)
            note = "killed" if rc == -signal.SIGKILL else f"not killed: exit {rc}"
            if expect == "error":
                last = (err.strip().splitlines() or [""])[-1]
                one_line = rc == 2 and last.startswith("error: ") and "Traceback" not in err
                left = half_written(run_dir)
                note = f"exit {rc}, {'one line' if one_line else 'NOT one line'}, left behind: {left or 'nothing'}"
                print(f"  {fault}: {last[:160]}", flush=True)
            rc2, err2 = child(run_dir, model_dir)
            got = outcome(run_dir) if rc2 == 0 else None
            equal = got is not None and got == {**reference, "leftovers": []}
            if rc2 != 0:
                note += f"; resume failed (exit {rc2}): {err2.strip().splitlines()[-1][:120] if err2.strip() else ''}"
            elif not equal:
                note += "; differs: " + ", ".join(k for k in reference if got[k] != reference[k]) + \
                        (f" {got['leftovers']}" if got["leftovers"] else "")
            trials.append((kind, fault, equal, note))
            print(f"{kind:16} {fault:24} {'equal' if equal else 'LOST'}  ({note})", flush=True)

        for _ in range(args.kill_trials):
            trial("kill-op", f"kill-op:{rng.randint(1, n_ops)}:{rng.choice(['before', 'after'])}")
        for _ in range(args.timed_kills):
            after = rng.uniform(0.3, 0.95) * duration
            trial("kill-time", f"kill-time:{after:.1f}s", kill_after=after)
        for _ in range(args.full_disk_trials):
            trial("full-checkpoint", f"full-checkpoint:{rng.randint(1, 12)}", expect="error")
            trial("full-samples", f"full-samples:{rng.randint(1, 5)}", expect="error")

        kinds = list(dict.fromkeys(k for k, *_ in trials))
        lines = ["| fault | trials | equal | lost |", "|---|---|---|---|"]
        for kind in kinds:
            mine = [t for t in trials if t[0] == kind]
            equal = sum(t[2] for t in mine)
            lines.append(f"| {kind} | {len(mine)} | {equal} | {len(mine) - equal} |")
        details = ["| fault | equal | note |", "|---|---|---|"] + [
            f"| `{f}` | {'yes' if e else 'no'} | {n} |" for _, f, e, n in trials]
        report = "\n".join([
            f"reference: 8 PPO steps, a checkpoint every 2, {n_ops} file operations, {duration:.1f} s; "
            f"harness total {time.time() - t0:.0f} s, seed {args.seed}", "", *lines, "", *details])
        print("\n" + report)
        if args.out:
            args.out.write_text(report + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
