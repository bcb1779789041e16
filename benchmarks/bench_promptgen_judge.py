"""Choose the prompt generator's cpu judge on the policy's own samples, labelled by the keyword check.

No labelled corpus of text-to-image prompts is available offline, so the ways of asking are measured where the
judge will work: continuations that the untrained cpu policy (SmolLM2-135M-Instruct) writes for training
subjects of data/image_subjects.txt, sampled as the cpu preset samples them (configs/ppo_flan_sentiments.yml
with configs/cpu.yml: ancestral sampling, top_k 0, top_p 1, 24 new tokens, zyn_ppo's own sampler). Each
continuation is labelled by the experiment's external check (ppo_prompt_generator.words_check: watercolour
words, nature words in the continuation alone), and `python -m zyn_reward tune` measures, on subject +
continuation (what the judge reads in training), how well each way of asking each embedded judge separates
the two classes (AUROC, chosen on half, estimated on the other half):

    python -m benchmarks.bench_promptgen_judge                  # 200 samples, seed 0; writes
                                                                # benchmarks/results_promptgen_judge.md
    python -m benchmarks.bench_promptgen_judge --output -       # print only

The labels are keyword rates, not a person's judgement: the measurement says which way of asking agrees with
the external check on this policy's text, which is what the oracle run (--reward external) trains on.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANDWRITTEN = ROOT / "benchmarks" / "promptgen_handwritten.txt"
POLICY = "smollm2-135m-instruct"
# task -> (the experiment's question, the label column, tune's extra flags: a negation for the Yes/No pair and
# answer words after a label prompt)
TASKS = {"watercolor": ("Does this prompt describe a watercolor painting?", "external_watercolor_words",
                        ["--negation", "Does this prompt describe a photograph?", "--answers", "watercolor",
                         "photograph", "--label", "Style"]),
         "nature": ("Is this prompt about nature?", "external_nature_words",
                    ["--negation", "Is this prompt about a city?", "--answers", "nature", "city", "--label",
                     "Subject"])}


def sample_continuations(count: int, seed: int) -> list[dict]:
    """`count` continuations of training subjects (each subject once per pass, in a shuffled order) by the
    untrained cpu policy, with the cpu preset's generation settings and zyn_ppo's sampler, each with its
    keyword labels."""
    import torch

    import ppo_prompt_generator as pg
    from zyn_ppo import script
    from zyn_ppo.model import load_policy
    from zyn_ppo.trainer import Prompts, Sampler

    train, _ = pg.load_prompts(pg.Args(preset="cpu"))
    if count < 1:
        raise SystemExit(f"error: --samples must be at least 1, got {count}")
    changes = {**script.cpu_overlay(), "model.model_path": POLICY, "tokenizer.tokenizer_path": POLICY}
    config, _ = script.configure(script._find(pg.PRESETS["paper"].config), changes)
    rng, subjects = random.Random(seed), []
    while len(subjects) < count:
        subjects += rng.sample(train, len(train))
    subjects = subjects[:count]
    torch.manual_seed(seed)
    policy, tokenizer = load_policy(config)
    gen = config.method.gen_kwargs
    store = Prompts(tokenizer, config.train.seq_length - int(gen.get("max_new_tokens", 40)), seed)
    items = store.tokenize(subjects, "subjects")
    sampler = Sampler(policy, tokenizer, [], contextlib.nullcontext(), torch.device("cpu"))
    rows = []
    words = pg.words_check()
    chunk = config.method.chunk_size
    for start in range(0, len(items), chunk):
        out = sampler(items[start:start + chunk], gen)
        labels = words(out["samples"], outputs=out["outputs"])
        for i, (prompt, output, text) in enumerate(zip(out["prompts"], out["outputs"], out["samples"])):
            rows.append({"text": text, "subject": prompt, "output": output,
                         **{name: int(values[i]) for name, values in labels.items()
                            if name != "external_prompt_words"}})
    return rows


def handwritten_rows() -> list[dict]:
    """The hand-written fallback (benchmarks/promptgen_handwritten.txt, "subject|continuation" per line: prompts
    written here, in watercolour or photo/render styles, about nature or not), labelled by the same check."""
    import ppo_prompt_generator as pg

    pairs = [line.split("|", 1) for line in HANDWRITTEN.read_text().splitlines() if line.strip()]
    outputs = [c if c.startswith(",") else " " + c for _, c in pairs]
    samples = [subject + output for (subject, _), output in zip(pairs, outputs)]
    labels = pg.words_check()(samples, outputs=outputs)
    return [{"text": text, "subject": subject, "output": output,
             **{name: int(values[i]) for name, values in labels.items() if name != "external_prompt_words"}}
            for i, (text, (subject, _), output) in enumerate(zip(samples, pairs, outputs))]


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def tune(task: str, path: Path, count: int, what: str) -> list[str]:
    """Run `python -m zyn_reward tune` for one question on a labelled CSV; its report as markdown lines."""
    question, column, extra = TASKS[task]
    command = [sys.executable, "-m", "zyn_reward", "tune", "--question", question, "--labeled", str(path),
               "--label-column", column, "--limit", str(count), *extra]
    start = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return [f"## {task} ({what})", "", f"tune failed: {' '.join(done.stderr.strip().splitlines()[-1:])}", ""]
    shown = " ".join(f"'{c}'" if " " in c else c for c in command[1:]).replace(str(path), path.name)
    report = "\n".join(line for line in done.stdout.strip().replace(str(path), path.name).splitlines()
                       if not line.startswith("written:"))
    return [f"## {task} ({what})", "", f"Runs `python {shown}` ({time.time() - start:.0f} s).", "", report, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1200,
                        help="continuations to sample (each training subject once per pass)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=200, help="texts tune measures (balanced between the classes)")
    parser.add_argument("--min-positives", type=int, default=20,
                        help="below this many keyword-positive samples, also measure on the hand-written set")
    parser.add_argument("--task", choices=sorted(TASKS), action="append", default=None,
                        help="the question(s) to measure (default: both)")
    parser.add_argument("--csv", default=None,
                        help="also keep the labelled samples in this CSV (default: a temporary file)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results_promptgen_judge.md"),
                        help="write the report to this file (- prints only)")
    args = parser.parse_args()
    started = time.time()
    rows = sample_continuations(args.samples, args.seed)
    sampling = time.time() - started
    path = Path(args.csv) if args.csv else Path(tempfile.mkdtemp(prefix="zyn-bench-promptgen-")) / "samples.csv"
    write_csv(rows, path)
    counts = {name: sum(r[name] for r in rows) for name in ("external_watercolor_words", "external_nature_words")}
    both = sum(r["external_watercolor_words"] and r["external_nature_words"] for r in rows)
    import torch

    lines = ["# Choosing the prompt generator's cpu judge on the policy's own samples", "",
             f"Command: `OMP_NUM_THREADS=1 python -m benchmarks.bench_promptgen_judge --samples {args.samples} "
             f"--seed {args.seed} --limit {args.limit}`", "",
             f"- Texts: {len(rows)} continuations by the untrained {POLICY} of the training subjects "
             "(data/image_subjects.txt without its last 64, each once per pass), cpu preset sampling (24 new "
             f"tokens, top_k 0, top_p 1), {sampling:.0f} s; the judge reads subject + continuation; tune measures "
             f"{args.limit} of them, balanced between the classes as far as the positives go, seed 0.",
             f"- Labels (the external check, keywords in the continuation alone): watercolour words "
             f"{counts['external_watercolor_words']} of {len(rows)}, nature words {counts['external_nature_words']} "
             f"of {len(rows)}, both {both}. These are keyword labels, not a person's: the AUROC is agreement with "
             "the external check (what `--reward external` trains on) on the policy's own text.",
             f"- Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, fp32; load average before: "
             f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.", ""]
    hand = handwritten_rows()
    hand_path = Path(tempfile.mkdtemp(prefix="zyn-bench-promptgen-")) / "handwritten.csv"
    write_csv(hand, hand_path)
    for task in args.task or list(TASKS):
        column = TASKS[task][1]
        lines += tune(task, path, args.limit, "the policy's samples")
        if counts[column] < args.min_positives:
            lines += [f"Only {counts[column]} of {len(rows)} samples are keyword-positive for {task} (fewer than "
                      f"{args.min_positives}): too few for a meaningful AUROC, so it is also measured on the "
                      f"HAND-WRITTEN fallback benchmarks/promptgen_handwritten.txt ({sum(r[column] for r in hand)} "
                      f"positive of {len(hand)}, labelled by the same check; written here, not real data).", ""]
            lines += tune(task, hand_path, len(hand), "HAND-WRITTEN fallback")
    report = "\n".join(lines)
    if args.output == "-":
        print(report)
    else:
        Path(args.output).write_text(report + "\n")
        print(f"written: {args.output}; samples: {path}")


if __name__ == "__main__":
    main()
