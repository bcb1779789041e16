"""Episodes per second and peak memory: zyn_ppo (hydra reference, full reference copy) against TRL's GRPO.

Every configuration trains the same small random GPT-2 policy on the same prompts, toy reward, batch and
generation length, each in its own subprocess (so memory peaks do not mix), repeated; medians reported.

    python -m benchmarks.bench_ppo                       # about 12 minutes on 2 shared CPU cores
    python -m benchmarks.bench_ppo --repeats 1 --episodes 64

Timing covers the training loop only (model loading excluded; zyn_ppo's evaluations subtracted, TRL's
train_runtime). Peak memory is the process's peak RSS (ru_maxrss), also shown above the RSS after imports.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = ["zyn_ppo_hydra", "zyn_ppo_hydra_frozen_trunk", "zyn_ppo_full_copy", "trl_grpo",
           "zyn_ppo_hydra_frozen_trunk_1_epoch", "trl_grpo_4_iterations"]
WORDS = "the movie was good bad great awful funny boring I love hate this film story plot acting scene".split()


@dataclass
class Args:
    repeats: int = 3
    """Runs of each configuration (medians reported)."""
    episodes: int = 128
    """Episodes (sampled continuations) per run."""
    batch: int = 16
    """Episodes per rollout / per TRL step (zyn_ppo: num_rollouts = chunk_size = batch_size)."""
    new_tokens: int = 24
    """Generated tokens per episode (EOS is practically never sampled by the random policy)."""
    ppo_epochs: int = 4
    """zyn_ppo gradient steps per minibatch (the paper's 4); trl_grpo makes one (num_iterations=1),
    trl_grpo_4_iterations as many as zyn_ppo (num_iterations=ppo_epochs)."""
    layers: int = 8
    hidden: int = 512
    threads: int = 1
    """torch threads per process (the 2-core machine is shared; more threads oversubscribe it)."""
    configs: tuple[str, ...] = tuple(CONFIGS)
    worker: str | None = None
    """Internal: run one configuration in this process and print a JSON line."""
    model_dir: str | None = None
    """Internal: the saved policy."""


def share_of_spaces(outputs: list[str]) -> list[float]:
    return [10 * o.count(" ") / (len(o) + 1) for o in outputs]


def prompts(n: int = 64) -> list[str]:
    return [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + i % 3)) for i in range(n)]


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_zyn(args: Args, num_layers_unfrozen: int, run_dir: str, freeze_embeddings: bool = False) -> dict:
    import zyn_ppo
    from zyn_ppo import runio

    cfg = zyn_ppo.TRLConfig.update(zyn_ppo.TRLConfig(), {
        "model.model_path": args.model_dir, "model.num_layers_unfrozen": num_layers_unfrozen,
        "model.freeze_embeddings": freeze_embeddings,
        "train.seq_length": 64, "train.batch_size": args.batch, "train.total_steps": 10**6,
        "train.epochs": args.episodes // args.batch, "train.eval_interval": 10**6, "train.checkpoint_interval": 10**6,
        "train.logging_dir": run_dir, "train.resume_from_checkpoint": None, "method.num_rollouts": args.batch,
        "method.chunk_size": args.batch, "method.ppo_epochs": args.ppo_epochs,
        "method.gen_kwargs": dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, top_k=0, top_p=1.0, do_sample=True),
        "optimizer.kwargs.lr": 1e-5,
    })
    trainer = zyn_ppo.train(lambda samples, outputs, **kw: share_of_spaces(outputs), prompts(), prompts()[:1], None, cfg)
    rows = runio.read_jsonl(Path(run_dir) / "metrics.jsonl")
    seconds = rows[-1]["time/elapsed"] - sum(r.get("time/eval", 0.0) for r in rows)
    return dict(episodes=trainer.episodes, seconds=seconds, steps=trainer.step)


def run_trl(args: Args, out_dir: str, num_iterations: int = 1) -> dict:
    """TRL GRPO on the same episodes; each generation serves num_iterations optimiser steps."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    tok.padding_side = "left"
    config = GRPOConfig(
        output_dir=out_dir, per_device_train_batch_size=args.batch, num_generations=4, gradient_accumulation_steps=1,
        max_steps=args.episodes // args.batch * num_iterations, max_completion_length=args.new_tokens, learning_rate=1e-5,
        temperature=1.0, top_p=1.0, top_k=0, generation_kwargs=dict(min_new_tokens=args.new_tokens),
        beta=0.0, num_iterations=num_iterations, logging_steps=10**6, save_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, seed=0, dataloader_num_workers=0,
        # the same work as zyn_ppo: fp32 (TRL's default is bf16 autocast, emulated and slow on a CPU without
        # avx512_bf16), no recomputation in the backward pass, no dropout
        bf16=False, activation_checkpointing=False, disable_dropout=True,
    )
    trainer = GRPOTrainer(
        model=args.model_dir, reward_funcs=lambda prompts, completions, **kw: share_of_spaces(completions),
        args=config, train_dataset=Dataset.from_dict({"prompt": prompts()}), processing_class=tok,
    )
    out = trainer.train()
    return dict(episodes=config.max_steps * args.batch // num_iterations, seconds=out.metrics["train_runtime"],
                steps=config.max_steps)


def worker(args: Args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import transformers  # noqa: F401  (imports count in the baseline)

    base = max_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        if args.worker == "zyn_ppo_hydra":
            result = run_zyn(args, 2, tmp)
        elif args.worker == "zyn_ppo_hydra_frozen_trunk":
            result = run_zyn(args, 2, tmp, freeze_embeddings=True)
        elif args.worker == "zyn_ppo_hydra_frozen_trunk_1_epoch":  # as many gradient passes per episode as GRPO
            args.ppo_epochs = 1
            result = run_zyn(args, 2, tmp, freeze_embeddings=True)
        elif args.worker == "zyn_ppo_full_copy":
            result = run_zyn(args, -1, tmp)
        elif args.worker == "trl_grpo":
            result = run_trl(args, tmp)
        elif args.worker == "trl_grpo_4_iterations":  # as many gradient passes per episode as zyn_ppo
            result = run_trl(args, tmp, num_iterations=args.ppo_epochs)
        else:
            raise ValueError(f"unknown configuration {args.worker}")
    result.update(config=args.worker, peak_rss_mb=max_rss_mb(), rss_after_imports_mb=base)
    print("RESULT " + json.dumps(result), flush=True)


def make_policy(folder: str, layers: int, hidden: int) -> int:
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests import tiny_models  # run from the project folder

    tok = tiny_models.make_tokenizer()
    config = GPT2Config(vocab_size=len(tok), n_embd=hidden, n_layer=layers, n_head=8, n_positions=128,
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(config)
    tiny_models.save_tiny(model, tok, folder)
    return sum(p.numel() for p in model.parameters())


def main(args: Args) -> None:
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory() as tmp:
        n_params = make_policy(tmp, args.layers, args.hidden)
        results = {c: [] for c in args.configs}
        load = []
        for r in range(args.repeats):
            for c in args.configs:
                cmd = [sys.executable, __file__, "--worker", c, "--model-dir", tmp, "--episodes", str(args.episodes),
                       "--batch", str(args.batch), "--new-tokens", str(args.new_tokens), "--ppo-epochs",
                       str(args.ppo_epochs), "--threads", str(args.threads)]
                load.append(os.getloadavg()[0])
                t = time.time()
                out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
                line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
                if out.returncode != 0 or not line:
                    sys.exit(f"{c} failed:\n{out.stderr[-3000:]}")
                res = json.loads(line[0][7:])
                res["episodes_per_s"] = res["episodes"] / res["seconds"]
                results[c].append(res)
                print(f"repeat {r} {c}: {res['episodes_per_s']:.2f} episodes/s, peak RSS {res['peak_rss_mb']:.0f} MB "
                      f"({time.time() - t:.0f} s wall)", file=sys.stderr)
    print(f"\nPolicy: random GPT-2, {args.layers} layers, hidden {args.hidden}, {n_params / 1e6:.1f}M parameters; "
          f"{args.episodes} episodes per run, {args.batch} per batch, {args.new_tokens} new tokens; "
          f"torch threads {args.threads}; load average during runs {min(load):.1f}-{max(load):.1f}; "
          f"medians of {args.repeats} runs.\n")
    print("| configuration | episodes/s | peak RSS (MB) | peak - RSS after imports (MB) | optimizer steps |")
    print("|---|---|---|---|---|")
    for c, rs in results.items():
        med = lambda k: statistics.median(x[k] for x in rs)  # noqa: E731
        print(f"| {c} | {med('episodes_per_s'):.2f} | {med('peak_rss_mb'):.0f} | "
              f"{med('peak_rss_mb') - med('rss_after_imports_mb'):.0f} | {rs[0]['steps']} |")


if __name__ == "__main__":
    main(tyro.cli(Args))
