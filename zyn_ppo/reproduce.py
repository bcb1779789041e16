"""Re-run a recorded run's first evaluation (and optionally its first steps) and say what reproduces.

    python -m zyn_ppo.reproduce results/ppo_flan_sentiments_cpu/ppo_flan_sentiments__cpu__seed1000__be7687dc
    python -m zyn_ppo.reproduce RUN_DIR --steps 16        # also the first 16 PPO steps (evaluation at 16)

It reads the run's run.json, runs the command recorded there (the same script and flags) into a new run
directory under runs/reproduce/ with --total-steps N (0: the first evaluation only) and no tracker, then
compares every metric the two runs logged at the same steps: "equal" when the numbers are identical,
otherwise the largest difference. It also lists what differs in the run's definition (the resolved
config, judge, prompts: a changed default would make the comparison meaningless) and in the environment
(package versions, code commit), and how many evaluation texts are identical. Exit status 0 when every
compared metric is equal, 1 when one differs, 2 on a user error.

What to expect: the same command, package versions (requirements.lock), CPU type and thread count give
identical numbers, also on a fresh machine with an empty model cache; the reproduction runs with the recorded
thread count (run.json's environment.torch_threads; runs recorded before it was, used 2). Another CPU type,
thread count or GPU computes the same maths with other rounding, and sampled texts diverge from the first
differing token on (seen: a detox run reproduced with 1 thread instead of 2 kept 60 of its 64 first texts).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from . import runio
from .config import UserError

ROOT = Path(__file__).resolve().parents[1]
# flags the reproduction sets itself (with the number of values each takes)
REPLACED_FLAGS = {"--logging-dir": 1, "--total-steps": 1, "--tracker": 1, "--overwrite": 0, "--print-config": 0}


def recorded_run(run_dir: Path) -> dict:
    """run.json of a run directory, checked to be what a run writes."""
    path = run_dir / runio.RUN_RECORD
    if not path.is_file():
        raise UserError(f"{path} does not exist; give a run directory written by an experiment script")
    try:
        record = json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not valid JSON") from None
    command = record.get("environment", {}).get("command") if isinstance(record, dict) else None
    if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
        raise UserError(f"{path} records no command (environment.command); it cannot be re-run")
    return record


def reproduction_command(command: list[str], run_dir: Path, steps: int) -> list[str]:
    """The recorded command with the flags that name its directory, length and tracker replaced."""
    script = ROOT / Path(command[0]).name
    if not script.is_file():
        raise UserError(f"the recorded script {command[0]!r} is not in {ROOT}")
    args, rest = [], list(command[1:])
    while rest:
        flag = rest.pop(0)
        name = flag.split("=", 1)[0]
        if name in REPLACED_FLAGS:
            if "=" not in flag:
                del rest[:REPLACED_FLAGS[name]]
            continue
        args.append(flag)
    return [sys.executable, str(script), *args, "--logging-dir", str(run_dir), "--total-steps", str(steps),
            "--tracker", "none"]


def evaluations(run_dir: Path) -> dict[int, dict]:
    """step -> evaluation metrics (reward/mean, metrics/*) of a run's metrics.jsonl."""
    rows = runio.read_metrics(run_dir / "metrics.jsonl")
    return {r["step"]: {k: v for k, v in r.items() if k == "reward/mean" or k.startswith("metrics/")}
            for r in rows if "reward/mean" in r}


def compare(old: Path, new: Path) -> tuple[list[tuple[int, str, str]], bool]:
    """(step, metric, verdict) for every metric the reproduction logged, and whether all are equal."""
    a, b = evaluations(old), evaluations(new)
    rows, same = [], True
    for step in sorted(b):
        if step not in a:
            rows.append((step, "(all)", "not in the recorded run"))
            same = False
            continue
        for key in sorted(set(a[step]) | set(b[step])):
            x, y = a[step].get(key), b[step].get(key)
            if x is None or y is None:
                rows.append((step, key, "only in the " + ("reproduction" if x is None else "recorded run")))
            elif x == y:
                rows.append((step, key, f"equal ({runio.significant(float(x), 4)})"))
            else:
                same = False
                diff = abs(float(x) - float(y)) if math.isfinite(float(x)) and math.isfinite(float(y)) else math.inf
                rows.append((step, key, f"different: {runio.significant(float(x), 4)} recorded, "
                                        f"{runio.significant(float(y), 4)} now (|diff| {diff:.3g})"))
    return rows, same


def same_texts(old: Path, new: Path, step: int) -> tuple[int, int] | None:
    """(identical outputs, outputs) of the evaluation at `step`, None when either run has no samples file."""
    files = [d / "samples" / f"eval_{step}.jsonl" for d in (old, new)]
    if not all(f.is_file() for f in files):
        return None
    a, b = ([row["output"] for row in runio.read_jsonl(f)] for f in files)
    return sum(x == y for x, y in zip(a, b)), len(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zyn_ppo.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory with run.json and metrics.jsonl")
    parser.add_argument("--steps", type=int, default=0, help="PPO steps to re-run (0: the first evaluation only)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the reproduction runs (default runs/reproduce/<name>-<time>; never reused)")
    args = parser.parse_args(argv)
    try:
        if args.steps < 0:
            raise UserError(f"--steps must be 0 or more, got {args.steps}")
        record = recorded_run(args.run_dir)
        out = args.out or Path("runs/reproduce") / f"{args.run_dir.resolve().name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if runio.has_results(out):
            raise UserError(f"{out} already holds results; choose another --out")
        command = reproduction_command(record["environment"]["command"], out, args.steps)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    env, threads = dict(os.environ), record.get("environment", {}).get("torch_threads")
    if threads:  # the recorded run's thread count: another one rounds sums otherwise and samples other texts
        env["OMP_NUM_THREADS"] = str(threads)
    print("running:", " ".join(command[1:]), f"(OMP_NUM_THREADS={threads})" if threads else "", flush=True)
    done = subprocess.run(command, cwd=ROOT, env=env)
    if done.returncode != 0:
        print(f"error: the reproduction exited with status {done.returncode}; see its output above", file=sys.stderr)
        return 2
    new = json.loads((out / runio.RUN_RECORD).read_text())
    definition = runio.differences(record, new)
    old_env, new_env = record.get("environment", {}), new.get("environment", {})
    versions = {k: (old_env.get("versions", {}).get(k), v) for k, v in new_env.get("versions", {}).items()
                if old_env.get("versions", {}).get(k) not in (None, v)}
    rows, same = compare(args.run_dir, out)
    print(f"\nrecorded:     {args.run_dir}\nreproduction: {out}")
    print("run definition: " + ("the same" if not definition else "DIFFERENT: " + "; ".join(definition)))
    print("package versions: " + ("the same as recorded" if not versions else
                                  ", ".join(f"{k} {a} -> {b}" for k, (a, b) in versions.items())))
    print(f"code: recorded {old_env.get('code', {}).get('commit', 'unknown')}, now {new_env.get('code', {}).get('commit')}"
          f"{' (with uncommitted changes)' if new_env.get('code', {}).get('dirty') else ''}")
    cpus = old_env.get("cpu"), new_env.get("cpu")
    print(f"threads: {threads} as recorded" if threads else
          "threads: not recorded (runs before this was recorded used 2: set OMP_NUM_THREADS=2 if they differ)")
    if cpus[0] and cpus[0] != cpus[1]:
        print(f"cpu: recorded {cpus[0]}, now {cpus[1]} (another CPU type rounds differently)")
    width = max((len(k) for _, k, _ in rows), default=0)
    for step, key, verdict in rows:
        print(f"  step {step:<5} {key:<{width}}  {verdict}")
    texts = same_texts(args.run_dir, out, 0)
    if texts:
        print(f"evaluation texts at step 0: {texts[0]} of {texts[1]} identical")
    print("verdict: " + ("equal" if same and rows else "different"))
    return 0 if same and rows else 1


if __name__ == "__main__":
    sys.exit(main())
