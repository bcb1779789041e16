"""Throughput of zyn_serve: N one-sample requests from many concurrent clients against in-process scoring.

    python benchmarks/bench_serve.py                              # 2,000 requests, 64 clients, embedded judge
    python benchmarks/bench_serve.py --n 200 --clients 16         # a quick check
    python benchmarks/bench_serve.py --model google/flan-t5-large --device cuda

The same texts are scored three times: in-process in batches (ZeroShotRewardModel.probabilities), then
through a server process (`zyn_serve.py`, its own process as in a real deployment) by --clients clients
that each send one sample per request in OpenRLHF's format (query = prompt + response + end token), then
in-process again, so that a change of machine load shows. It checks that every request got exactly one
answer, that the server judged every text exactly once, and that the scores equal the in-process ones;
it prints `uptime` (the load average) beside the figures: on a shared machine they move with it.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import re
import signal
import ssl
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import tyro

ROOT = Path(__file__).resolve().parents[1]
from zyn_reward import TEMPLATES, YesNoQuestion, ZeroShotRewardModel  # noqa: E402


@dataclass
class Args:
    model: str = "smollm2-135m-instruct"
    """judge: embedded short name, hub name or folder"""
    question: str = "Is this movie review positive?"
    template: str = "flan_review"
    n: int = 2000
    """number of texts = number of one-sample requests"""
    clients: int = 64
    """concurrent clients (rollout actors), each with its own connection"""
    words: int = 60
    """approximate length of each response, in words"""
    batch_size: int | None = None
    """texts per judge forward pass, in-process and in the server (default: the judge's own grouping)"""
    batch_wait_ms: float = 5.0
    """the server's gather window"""
    max_batch: int = 256
    """the server's items per judge call"""
    device: str | None = None
    dtype: str | None = None
    output: str | None = None
    """also write the table (markdown) to this file"""


PROMPT = ("<|im_start|>user\nWrite a short review of a film you saw recently.<|im_end|>\n"
          "<|im_start|>assistant\n")
END = "<|im_end|>"
PARTS = ["The acting was {a}", "the plot felt {a}", "the music was {a}", "the ending was {a}",
         "the camera work is {a}", "the dialogue was {a}", "the villain was {a}", "the effects looked {a}",
         "I found the middle act {a}", "my friends thought it {a}"]
ADJECTIVES = ["great", "awful", "boring", "wonderful", "clumsy", "moving", "funny", "predictable",
              "brilliant", "uneven", "tense", "flat"]


def make_responses(n: int, words: int, seed: int = 0) -> list[str]:
    """Distinct review-like responses of about `words` words."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = f"Film {i}:"
        while len(text.split()) < words:
            text += " " + rng.choice(PARTS).format(a=rng.choice(ADJECTIVES)) + rng.choice([".", ",", ";"])
        out.append(text)
    return out


def uptime() -> str:
    try:
        done = subprocess.run(["uptime"], capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def in_process(args: Args, question: YesNoQuestion, texts: list[str]) -> tuple[float, list[float]]:
    extra = {"batch_size": args.batch_size} if args.batch_size else {}
    rm = ZeroShotRewardModel(args.model, question, device=args.device, dtype=args.dtype, **extra)
    rm.probabilities(texts[:4])  # warm-up
    start = time.perf_counter()
    probs = rm.probabilities(texts)
    seconds = time.perf_counter() - start
    del rm
    gc.collect()
    return seconds, probs


def start_server(args: Args) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, str(ROOT / "zyn_serve.py"), "--model", args.model, "--question", args.question,
               "--template", args.template, "--port", "0", "--batch-wait-ms", str(args.batch_wait_ms),
               "--max-batch", str(args.max_batch), "--max-items", str(max(256, args.n))]
    command += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    command += ["--device", args.device] if args.device else []
    command += ["--dtype", args.dtype] if args.dtype else []
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep draining
            return proc, found.group(1)
    raise SystemExit(f"the server did not start (exit code {proc.wait()})")


async def load(base: str, texts: list[str], clients: int) -> tuple[float, dict, list[float]]:
    """Every text as its own request from `clients` concurrent clients: (seconds, scores, latencies)."""
    results: dict[int, list[float]] = {}
    latencies: list[float] = []
    todo = iter(range(len(texts)))
    context = ssl.create_default_context()  # shared: building one per client costs seconds

    async def client():
        async with httpx.AsyncClient(timeout=300, verify=context) as http:
            for i in todo:
                body = {"query": [PROMPT + texts[i] + END], "prompts": [PROMPT], "labels": [None]}
                start = time.perf_counter()
                reply = await http.post(base + "/score", json=body)
                latencies.append(time.perf_counter() - start)
                reply.raise_for_status()
                results.setdefault(i, []).append(reply.json()["scores"][0])

    start = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(clients)])
    return time.perf_counter() - start, results, latencies


def main(args: Args) -> None:
    question = YesNoQuestion(args.question, template=TEMPLATES.get(args.template, args.template))
    texts = make_responses(args.n, args.words)
    load_before = uptime()

    before_s, want = in_process(args, question, texts)

    proc, base = start_server(args)
    try:
        warm = httpx.post(base + "/score", json={"responses": texts[:4]}, timeout=300)
        warm.raise_for_status()
        stats0 = httpx.get(base + "/health").json()["stats"]
        load_during = uptime()
        server_s, results, latencies = asyncio.run(load(base, texts, args.clients))
        stats = httpx.get(base + "/health").json()["stats"]
        stats.update({k: stats[k] - stats0[k] for k in ("requests", "items", "batches", "judge_errors")})
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    after_s, again = in_process(args, question, texts)
    load_after = uptime()

    lost = sum(1 for i in range(len(texts)) if i not in results)
    answered_twice = sum(1 for v in results.values() if len(v) > 1)
    judged_twice = stats["items"] - len(texts)
    diff = max(abs(results[i][0] - want[i]) for i in results) if results else float("nan")
    inproc_s = (before_s + after_s) / 2
    p50, p99 = statistics.quantiles(latencies, n=100)[49], statistics.quantiles(latencies, n=100)[98]
    import torch

    kind = torch.cuda.get_device_name() if (args.device or "").startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores"
    lines = [
        (f"judge {args.model}, {kind}; {args.n} responses of about {args.words} words; question "
         f"{args.question!r}; batch size {args.batch_size or 'default'}; "
         f"server: --batch-wait-ms {args.batch_wait_ms} "
         f"--max-batch {args.max_batch}, {args.clients} clients with one sample per request"),
        "",
        "| variant | seconds | texts/s | vs in-process | latency p50 / p99 (s) |",
        "|---|---:|---:|---:|---:|",
        f"| in-process `rm.probabilities` (before) | {before_s:.2f} | {args.n / before_s:.1f} | | |",
        f"| in-process `rm.probabilities` (after) | {after_s:.2f} | {args.n / after_s:.1f} | | |",
        (f"| server, {args.n} one-sample requests, {args.clients} clients | {server_s:.2f} | "
         f"{args.n / server_s:.1f} | **{inproc_s / server_s:.2f}x** | {p50:.3f} / {p99:.3f} |"),
        "",
        (f"- server: {stats['batches']} judge calls, {args.n / max(stats['batches'], 1):.1f} items per call "
         f"on average (largest {stats['largest_batch']}); judge errors {stats['judge_errors']}"),
        (f"- lost {lost}, answered twice {answered_twice}, judged twice {judged_twice}; "
         f"max |server - in-process| {diff:.1e}; in-process before vs after "
         f"{max(abs(a - b) for a, b in zip(want, again)):.1e}"),
        f"- `uptime` before: {load_before}",
        f"- `uptime` during the server run: {load_during}",
        f"- `uptime` after: {load_after}",
    ]
    print("\n".join(lines))
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")
    if lost or answered_twice or judged_twice or not diff < 1e-4:
        raise SystemExit("error: requests lost or duplicated, or scores differ")


if __name__ == "__main__":
    main(tyro.cli(Args))
