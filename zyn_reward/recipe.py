"""The paper's recipe (ZYN, Gallego 2023, arXiv 2308.06385), plainly: question -> prompt -> P(yes) -> reward.

    prompt   = the question and the text in a template (TEMPLATES), after any few-shot examples
    p        = softmax over the Yes/No logits of the first answer token: the probability mass of the
               yes words against the no words (each word's single-token surface forms summed)
    reward   = (p - 0.5) * 10                                   # Eq. (3), transform_reward
    p_ens    = sum_q w_q p_q(target_q) / sum_q w_q               # Eq. (4), ensemble

`reference_probabilities` is that recipe as a slow loop, one prompt at a time through the model in full
precision, for a reader to check against the paper; ZeroShotRewardModel (model.py) computes the same
numbers fast (batches, a key/value cache of the shared prompt prefix, lower precision) and
tests/test_reward.py holds it to this reference. The question itself (YesNoQuestion, its prompt and
few-shot examples) and the answer words (resolve_words) are defined here too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import UserError

TEMPLATES = {
    "flan_review": "Review: {text}\n\n {question} Response:",
    "flan_review_robust": "Review: {text}\n\n{question} Response:",
    "flan_toxicity": "Text: {text}\n\n {question} Response:",
    # character for character as the original script (trailing space, 12-space indents of its source)
    "d5_validator": (
        "Check whether the TEXT satisfies a PROPERTY. Respond with Yes or No. When uncertain, output No. \n\n"
        "            Now complete the following example -\n            input: PROPERTY: {question}\n"
        "            TEXT: {text}\n            output:"
    ),
}
TRANSFORMS = ("centered", "prob", "logodds")
EXAMPLE_ANSWERS = {"yes": "Yes", "no": "No"}  # how a few-shot example's answer is written
EXAMPLE_SEPARATOR = "\n\n"  # between few-shot examples in plain (non-chat) prompts
YES_NO = ("yes", "no")
_FIELD = re.compile(r"\{(text|question)\}")
_ANSWERS = {"yes": "yes", "no": "no", "y": "yes", "n": "no", "true": "yes", "false": "no", "1": "yes",
            "0": "no", "positive": "yes", "negative": "no", "pos": "yes", "neg": "no"}


# --------------------------------------------------------------------------------------------------
# The recipe, one prompt at a time
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def reference_probabilities(model, tokenizer, questions, texts: Sequence[str],
                            yes_words: Sequence[str] = ("Yes",), no_words: Sequence[str] = ("No",),
                            chat_template: bool = True) -> list[float]:
    """P(target answer) per text, Eq. (4) over the questions, each prompt whole and alone through `model`
    (a seq2seq or causal LM in full precision; no batching, padding, cache or truncation)."""
    questions = [questions] if isinstance(questions, (YesNoQuestion, str)) else list(questions)
    questions = [YesNoQuestion(q) if isinstance(q, str) else q for q in questions]
    yes_ids = resolve_words(tokenizer, yes_words, "yes_words")
    no_ids = resolve_words(tokenizer, no_words, "no_words")
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    chat = bool(chat_template and not seq2seq and getattr(tokenizer, "chat_template", None))
    probabilities = []
    for text in texts:
        p_target = []
        for q in questions:
            if chat:  # the chat template writes its own special tokens
                prompt = tokenizer.apply_chat_template(q.messages(text), tokenize=False,
                                                       add_generation_prompt=True)
            else:
                prompt = q.format(text)
            input_ids = torch.tensor([tokenizer(prompt, add_special_tokens=not chat)["input_ids"]])
            logits = first_answer_logits(model, tokenizer, input_ids)
            p_yes = answer_probability(logits, yes_ids, no_ids)
            p_target.append(p_yes if q.target == "yes" else 1 - p_yes)
        probabilities.append(ensemble(p_target, [q.weight for q in questions]))
    return probabilities


def reference_reward(model, tokenizer, questions, texts: Sequence[str], transform: str = "centered",
                     **options) -> list[float]:
    """The reward per text: transform_reward of reference_probabilities (Eq. 3 by default)."""
    probabilities = reference_probabilities(model, tokenizer, questions, texts, **options)
    return [transform_reward(p, transform) for p in probabilities]


def first_answer_logits(model, tokenizer, input_ids: torch.Tensor) -> torch.Tensor:
    """The logits of the first answer token (float64): the next token after the prompt of a causal LM, the
    first decoder step of a seq2seq one."""
    if getattr(model.config, "is_encoder_decoder", False):
        start = model.config.decoder_start_token_id
        if start is None:  # as ZeroShotRewardModel: the pad token, else end-of-sequence, else 0
            pad = tokenizer.pad_token_id
            start = pad if pad is not None else (tokenizer.eos_token_id or 0)
        return model(input_ids=input_ids, decoder_input_ids=torch.tensor([[start]])).logits[0, -1].double()
    return model(input_ids=input_ids).logits[0, -1].double()


def answer_probability(logits: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int]) -> float:
    """P(yes) = softmax over the yes and no logits, summed over the yes ids."""
    return torch.softmax(logits[list(yes_ids) + list(no_ids)], dim=0)[: len(yes_ids)].sum().item()


def ensemble(p_target: Sequence[float], weights: Sequence[float]) -> float:
    """Eq. (4): the weighted mean of each question's P(target answer)."""
    return sum(w * p for w, p in zip(weights, p_target)) / sum(weights)


def transform_reward(p, kind: str = "centered"):
    """The reward of P(target) (a float or a tensor): "centered" (p-0.5)*10 (Eq. 3), "prob" p, "logodds"."""
    if kind == "centered":
        return (p - 0.5) * 10
    if kind == "prob":
        return p
    if kind != "logodds":
        raise UserError(f"unknown transform {kind!r}; choose one of {TRANSFORMS}")
    if isinstance(p, torch.Tensor):
        p = p.clamp(1e-12, 1 - 1e-12)
        return torch.log(p) - torch.log1p(-p)
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p) - math.log1p(-p)


# --------------------------------------------------------------------------------------------------
# The parts: answer words, the question and its prompt
# --------------------------------------------------------------------------------------------------


def resolve_words(tokenizer, words: Sequence[str], what: str) -> list[int]:
    """Single token ids of each surface form and of its leading-space variant, those that are one token
    (at least one of the two must be)."""
    if isinstance(words, str):
        words = [words]
    if not words:
        raise UserError(f"{what} must name at least one word")
    unk = getattr(tokenizer, "unk_token_id", None)
    ids: list[int] = []
    for word in words:
        if not isinstance(word, str) or not word.strip():
            raise UserError(f"{what} must be non-empty strings, got {word!r}")
        variant = word[1:] if word.startswith(" ") else " " + word
        forms = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in (word, variant)]
        singles = [f[0] for f in forms if len(f) == 1 and f[0] != unk]
        if not singles:  # neither the word nor its leading-space variant is one known token
            if len(forms[0]) == 1:
                raise UserError(f"{what}: {word!r} is not in this tokenizer's vocabulary (it becomes the "
                                 f"unknown token {tokenizer.unk_token!r}); choose a word the judge knows, such "
                                 "as 'Yes'/'No'")
            pieces = tokenizer.convert_ids_to_tokens(forms[0])
            raise UserError(f"{what}: {word!r} is not a single token for this tokenizer (it is {pieces})")
        for token in singles:
            if token not in ids:
                ids.append(token)
    return ids


def parse_answer(value, what: str) -> str:
    """'yes' or 'no' from yes/no, true/false, 1/0 (strings, bools or numbers)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and value in (0, 1):
        return "yes" if value == 1 else "no"
    if isinstance(value, str) and value.strip().lower() in _ANSWERS:
        return _ANSWERS[value.strip().lower()]
    raise UserError(f"{what} must be 'yes' or 'no', got {value!r}")


def question_name(question: str) -> str:
    """A question's metric name: "Is this movie review positive?" -> "is_this_movie_review_positive"."""
    return re.sub(r"[^a-z0-9]+", "_", question.lower()).strip("_")[:48] or "question"


@dataclass
class YesNoQuestion:
    """A yes/no question about a text; `target` is the answer that earns the reward.

    examples: few-shot examples, (text, answer) pairs with answer "yes"/"no" (or True/False, 1/0). Each
    is rendered with the same template and followed by its answer ("Yes"/"No") before the text to
    judge; with a chat template they become earlier user/assistant turns. On decoder-only judges the
    prompt part that every text shares (the examples, a chat header) is run once and its key/value
    cache reused for every batch.
    """

    question: str
    target: str = "yes"
    template: str = TEMPLATES["flan_review"]
    weight: float = 1.0
    name: str | None = None
    examples: Sequence[tuple[str, str]] = ()

    def __post_init__(self):
        if not isinstance(self.question, str) or not self.question.strip():
            raise UserError("question must be a non-empty string")
        if not isinstance(self.target, str) or self.target.lower() not in ("yes", "no"):
            raise UserError(f"target must be 'yes' or 'no', got {self.target!r}")
        self.target = self.target.lower()
        if not isinstance(self.template, str):
            raise TypeError(f"template must be a string, got {type(self.template).__name__}")
        self.template = TEMPLATES.get(self.template, self.template)
        for field in ("{text}", "{question}"):
            if field not in self.template:
                raise UserError(f"template must contain {field}: {self.template!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)):
            raise TypeError(f"weight must be a number, got {self.weight!r}")
        if not math.isfinite(self.weight) or self.weight < 0:
            raise UserError(f"weight must be finite and >= 0, got {self.weight}")
        if self.name is None:
            self.name = question_name(self.question)
        if not isinstance(self.name, str) or not self.name:
            raise UserError("name must be a non-empty string")
        if isinstance(self.examples, (str, bytes)) or not isinstance(self.examples, (list, tuple)):
            raise TypeError("examples must be a list of (text, 'yes' or 'no') pairs")
        examples = []
        for i, example in enumerate(self.examples):
            if not isinstance(example, (list, tuple)) or len(example) != 2 or not isinstance(example[0], str):
                raise TypeError(f"examples[{i}] must be a (text, 'yes' or 'no') pair, got {example!r}")
            examples.append((example[0], parse_answer(example[1], f"examples[{i}] answer")))
        self.examples = tuple(examples)

    @classmethod
    def pair(cls, question: str, negation: str, target: str = "yes", template: str = TEMPLATES["flan_review"],
             weight: float = 1.0, name: str | None = None,
             examples: Sequence[tuple[str, str]] = ()) -> list["YesNoQuestion"]:
        """A question and its negation as one criterion (Eq. 4 with polarity), for `questions=`:

            YesNoQuestion.pair("Is this review positive?", "Is this review negative?")

        rewards P(yes | question) and P(no | negation) with weight/2 each, so the pair counts as one
        question of `weight` beside others. `examples` are labelled for `question`; the negation gets
        them with the opposite answers."""
        target = parse_answer(target, "target")
        flip = {"yes": "no", "no": "yes"}
        if isinstance(question, str) and isinstance(negation, str) and question.strip() == negation.strip():
            raise UserError("pair needs two different questions: a question and its negation")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise TypeError(f"weight must be a number, got {weight!r}")
        first = cls(question, target, template, weight / 2, name, examples)
        second = cls(negation, flip[target], template, weight / 2,
                     None if name is None else f"{name}_negation",
                     [(text, flip[answer]) for text, answer in first.examples])
        if first.name == second.name:
            second.name = f"{first.name}_negation"
        return [first, second]

    def _one(self, text: str) -> str:
        return _FIELD.sub(lambda m: text if m.group(1) == "text" else self.question, self.template)

    def format(self, text: str) -> str:
        """The prompt for one text (single pass: braces inside the text or question are kept as they are),
        after the few-shot examples, each followed by its answer."""
        shots = "".join(f"{self._one(t)} {EXAMPLE_ANSWERS[a]}{EXAMPLE_SEPARATOR}" for t, a in self.examples)
        return shots + self._one(text)

    def messages(self, text: str) -> list[dict[str, str]]:
        """The prompt as chat messages: one user/assistant turn per example, then the text."""
        turns = []
        for t, a in self.examples:
            turns += [{"role": "user", "content": self._one(t)},
                      {"role": "assistant", "content": EXAMPLE_ANSWERS[a]}]
        return turns + [{"role": "user", "content": self._one(text)}]
