"""Speed of the batched yes/no reward against the original per-sample generate() loop.

    python benchmarks/bench_reward.py                                   # embedded judge, CPU
    python benchmarks/bench_reward.py --model google/flan-t5-large --device cuda --n 64

Every variant scores the same texts with the same judge; timings are medians over --repeats rounds,
the variants interleaved within each round so that a loaded machine slows them all alike.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zyn_reward import TEMPLATES, YesNoQuestion, ZeroShotRewardModel  # noqa: E402


@dataclass
class Args:
    model: str = "smollm2-135m-instruct"
    """judge: embedded short name, hub name or folder"""
    n: int = 32
    """number of texts"""
    tokens: int = 130
    """approximate length of each text, in judge tokens"""
    batch_size: int = 32
    """batch size of the batched reward"""
    repeats: int = 3
    """timing rounds (median reported)"""
    device: str | None = None
    """cpu or cuda (default: cuda when available)"""
    bf16: bool = True
    """also time the judge in bfloat16"""
    output: str | None = None
    """also write the table (markdown) to this file"""


OPENINGS = ["I watched this film last night", "This movie", "The new release from this director",
            "My friends told me about this picture", "Honestly, this film", "The sequel"]
SENTENCES = [
    "The acting was {adj} and the lead actress carried every scene with {noun}.",
    "The plot felt {adj}, with a twist in the second half that I did not see coming.",
    "The music was {adj}; the score swelled at exactly the right moments.",
    "Some of the dialogue was {adj}, and the jokes landed about half of the time.",
    "The director clearly loves these characters, which makes the ending {adj}.",
    "The camera work is {adj}, full of long shots of the city at night.",
    "It runs a little long, and the middle act drags with {noun}.",
    "The villain was {adj} and surprisingly human for a film of this kind.",
    "I laughed, I cried, and I left the theatre with a sense of {noun}.",
    "The special effects looked {adj}, though a few scenes were too dark to follow.",
    "The story borrows from older classics but adds enough {noun} to feel fresh.",
    "By the end I cared about the family at its centre more than I expected.",
]
ADJECTIVES = ["great", "awful", "boring", "wonderful", "clumsy", "moving", "funny", "predictable",
              "brilliant", "uneven", "tense", "flat"]
NOUNS = ["warmth", "confusion", "energy", "charm", "tedium", "wonder", "heart", "noise"]
QUESTION = "Is this movie review positive?"
SECOND = "Is this text too repetitive?"


def make_reviews(tokenizer, n: int, tokens: int, seed: int = 0) -> list[str]:
    """Deterministic review-like texts of about `tokens` tokens each."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        text = rng.choice(OPENINGS) + " was " + rng.choice(ADJECTIVES) + "."
        while len(tokenizer(text, add_special_tokens=False).input_ids) < tokens:
            text += " " + rng.choice(SENTENCES).format(adj=rng.choice(ADJECTIVES), noun=rng.choice(NOUNS))
        texts.append(text)
    return texts


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
def bare_forward(rm: ZeroShotRewardModel, question: YesNoQuestion, texts: list[str]) -> float:
    """The floor: the judge's transformer over the same padded batches, no tokenising, no LM head."""
    batches = list(rm._batches(rm._prompt_ids(question, texts)))
    sync(rm.device)
    start = time.perf_counter()
    for _, input_ids, mask in batches:
        with torch.autocast(rm.device.type, dtype=rm.autocast_dtype, enabled=rm.autocast_dtype is not None):
            forward(rm, input_ids, mask)
    sync(rm.device)
    return time.perf_counter() - start


def forward(rm, input_ids, mask):
    if rm.is_encoder_decoder:
        start = rm.model.config.decoder_start_token_id
        start_ids = torch.full((len(input_ids), 1), start, device=rm.device)
        rm.model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=start_ids, use_cache=False)
    else:
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        rm.model.base_model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                            use_cache=False)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, *args):
    sync(DEVICE)
    start = time.perf_counter()
    result = fn(*args)
    sync(DEVICE)
    return time.perf_counter() - start, result


def max_diff(a, b) -> float:
    if isinstance(a, dict):
        return max(max_diff(a[k], b[k]) for k in a)
    return max(abs(x - y) for x, y in zip(a, b))


if __name__ == "__main__":
    args = tyro.cli(Args)
    DEVICE = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    one = YesNoQuestion(QUESTION, template=TEMPLATES["flan_review_robust"], name="positive")
    second = YesNoQuestion(SECOND, target="no", template=TEMPLATES["flan_review_robust"], name="repetitive")
    two = [one, second]
    rm = ZeroShotRewardModel(args.model, one, batch_size=args.batch_size, device=DEVICE)
    model, tokenizer = rm.model, rm.tokenizer
    texts = make_reviews(tokenizer, args.n, args.tokens)
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    prompt_lengths = [len(ids) for ids in rm._prompt_ids(one, texts)]
    rm2 = ZeroShotRewardModel(model, two, tokenizer=tokenizer, batch_size=args.batch_size)
    rm2_plain = ZeroShotRewardModel(model, two, tokenizer=tokenizer, batch_size=args.batch_size,
                                    reuse_prefix=False)
    rm_bf16 = None
    if args.bf16:
        rm_bf16 = ZeroShotRewardModel(model, one, tokenizer=tokenizer, batch_size=args.batch_size,
                                      dtype=torch.bfloat16)

    # warm up every path once (first-call allocations, kernels)
    original_loop(rm, one, texts[:2]), rm.probabilities(texts[:2]), rm2.probabilities(texts[:2])
    if rm_bf16:
        rm_bf16.probabilities(texts[:2])

    times = {k: [] for k in ("original", "fp32", "floor", "bf16", "floor_bf16", "two", "two_plain")}
    for _ in range(args.repeats):
        t, p_orig = timed(original_loop, rm, one, texts)
        times["original"].append(t)
        t, p32 = timed(rm.probabilities, texts)
        times["fp32"].append(t)
        times["floor"].append(bare_forward(rm, one, texts))
        if rm_bf16:
            t, p16 = timed(rm_bf16.probabilities, texts)
            times["bf16"].append(t)
            times["floor_bf16"].append(bare_forward(rm_bf16, one, texts))
        t, q_two = timed(rm2.question_probabilities, texts)
        times["two"].append(t)
        t, q_plain = timed(rm2_plain.question_probabilities, texts)
        times["two_plain"].append(t)
    med = {k: statistics.median(v) for k, v in times.items() if v}

    kind = torch.cuda.get_device_name() if DEVICE == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    rows = [
        ("original loop: generate() per text, fp32", med["original"], "1.00x", "reference"),
        ("batched rm.probabilities, fp32", med["fp32"], f"{med['original'] / med['fp32']:.2f}x",
         f"max diff vs original {max_diff(p32, p_orig):.1e}"),
        ("bare transformer forward, same batches, fp32 (floor)", med["floor"],
         f"{med['original'] / med['floor']:.2f}x", f"batched / floor = {med['fp32'] / med['floor']:.2f}"),
    ]
    if rm_bf16:
        rows += [
            ("batched rm.probabilities, dtype=bfloat16 (autocast)", med["bf16"],
             f"{med['original'] / med['bf16']:.2f}x",
             f"max diff vs fp32 {max_diff(p16, p32):.4f}"),
            ("bare transformer forward, same batches, bf16 autocast (floor)", med["floor_bf16"],
             f"{med['original'] / med['floor_bf16']:.2f}x",
             f"batched / floor = {med['bf16'] / med['floor_bf16']:.2f}"),
        ]
    rows += [
        ("two questions, shared-prefix KV cache, fp32", med["two"], f"{med['original'] / med['two']:.2f}x",
         f"{med['two'] / med['fp32']:.2f}x one question; max diff vs plain {max_diff(q_two, q_plain):.1e}"),
        ("two questions, plain (one pass per question), fp32", med["two_plain"],
         f"{med['original'] / med['two_plain']:.2f}x", f"{med['two_plain'] / med['fp32']:.2f}x one question"),
    ]
    lines = [
        f"judge {args.model} ({type(model).__name__}), {kind}; "
        f"{args.n} texts of {min(lengths)}-{max(lengths)} tokens "
        f"(prompts {min(prompt_lengths)}-{max(prompt_lengths)}), batch size {args.batch_size}, "
        f"median of {args.repeats}",
        "",
        "| variant | seconds | speedup | check |",
        "|---|---:|---:|---|",
    ] + [f"| {name} | {sec:.2f} | {speed} | {check} |" for name, sec, speed, check in rows]
    print("\n".join(lines))
    if args.output:
        Path(args.output).write_text("\n".join(lines) + "\n")
