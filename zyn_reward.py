"""Zero-shot yes/no reward models (ZYN, Gallego 2023, arXiv 2308.06385).

Ask an instruction-tuned language model a yes/no question about a text and read the probability of
"Yes" against "No" at the first answer token; one batched forward pass per batch of texts:

    p = exp(l_yes) / (exp(l_yes) + exp(l_no))                 # one question
    reward = (p - 0.5) * 10                                    # Eq. (3)
    p_ensemble = sum_q w_q p_q(target_q) / sum_q w_q           # Eq. (4)

    from zyn_reward import ZeroShotRewardModel, YesNoQuestion, TEMPLATES
    q = YesNoQuestion("Is this movie review positive?", template=TEMPLATES["flan_review"])
    rm = ZeroShotRewardModel("smollm2-135m-instruct", questions=q)    # or "google/flan-t5-large"
    rm.probabilities(["I loved this film."])
    rm.reward_fn(samples)                                              # trlx reward_fn
    rm.as_trl_reward()                                                 # TRL GRPO/RLOO reward func

    # few-shot examples (their key/value cache is computed once) and a question with its negation:
    q = YesNoQuestion("Is this review positive?", examples=[("Works great.", "yes"), ("Awful.", "no")])
    pair = YesNoQuestion.pair("Is this review positive?", "Is this review negative?")

Command line (the default judge is the embedded offline model; bad input is one `error: ...` line on
stderr and exit status 2, `--debug` or ZYN_DEBUG=1 shows the traceback):

    python zyn_reward.py score --question "Is this movie review positive?" reviews.txt
    python zyn_reward.py eval --question "Is this movie review positive?" --labeled reviews.csv
    python zyn_reward.py tune --question "Is this movie review positive?" --labeled reviews.csv --out spec.json
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import difflib
import inspect
import io
import math
import os
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from zyn_models import (EMBEDDED_MODELS, TRUE_VALUES, UserError, embedded_model_path,  # noqa: F401  (re-exported)
                        hub_cache_dir, hub_cached, hub_offline, hub_unreachable)

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
CONTENT_FREE = ("N/A", "", "[MASK]")  # content-free inputs of Zhao et al. (2021)
MAX_LENGTH_CAP = 1024  # default prompt limit when the tokenizer reports no sensible one
# config attributes of models that change the logits after their LM head
POST_HEAD_ATTRIBUTES = ("final_logit_softcapping", "logit_scale", "logits_scaling")
# Tokens per forward pass (texts x longest prompt) when batch_size and token_budget are left unset. On a
# CPU a pass should keep its activations in the cache: on an idle 2-core Xeon, SmolLM2-135M scored 32
# reviews (~180-token prompts) fastest in batches of 4-8 texts (~700-1400 tokens) and 1.4x slower in one
# pass of 32 (~5800 tokens); a GPU wants large passes. benchmarks/bench_reward.py measures the choice.
TOKEN_BUDGET = {"cpu": 1024, "cuda": 16384, "mps": 4096, "xpu": 16384}
EXAMPLE_ANSWERS = {"yes": "Yes", "no": "No"}  # how a few-shot example's answer is written
EXAMPLE_SEPARATOR = "\n\n"  # between few-shot examples in plain (non-chat) prompts
_FIELD = re.compile(r"\{(text|question)\}")
_ANSWERS = {"yes": "yes", "no": "no", "y": "yes", "n": "no", "true": "yes", "false": "no", "1": "yes",
            "0": "no", "positive": "yes", "negative": "no", "pos": "yes", "neg": "no"}


class ModelLoadError(UserError, OSError):
    """A judge could not be found or loaded; the message says what was tried and how to fix it."""


def _answer(value, what: str) -> str:
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
            examples.append((example[0], _answer(example[1], f"examples[{i}] answer")))
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
        target = _answer(target, "target")
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


YES_NO = ("yes", "no")


@dataclass
class JudgeSpec:
    """How a judge is asked one question: the question and its way of asking travel together.

    The paper's recipe is the default: a yes/no question in a Flan-style template, answered Yes or No, the
    reward (P - 0.5) * 10 (Eq. 3). A small judge may answer the same question better another way, e.g.
    gemma-3-270m completing "Review: <text>\nSentiment:" with "positive" or "negative"; such a phrasing
    records in `asks` the plain question it stands for (its metrics are named after it), and in `model`
    the judge it was measured on. `python zyn_reward.py tune` measures phrasings and writes the winner as a
    JSON file that the experiment scripts read with --judge-spec.

        JudgeSpec("Is this movie review positive?")                               # the paper's way
        JudgeSpec("Sentiment:", template="Review: {text}\n{question}", answers=("positive", "negative"),
                  transform="logodds", asks="Is this movie review positive?", model="gemma-3-270m")
    """

    question: str
    template: str = "flan_review"
    answers: tuple[str, str] = ("Yes", "No")
    """the rewarded answer word first (Eq. 3 with these words for Yes and No)"""
    transform: str = "centered"
    target: str = "yes"
    """which answer earns the reward: yes (the first word) or no (the second)"""
    negation: str = ""
    """a negated question, averaged with the question for the opposite answer (Eq. 4); "" for none"""
    calibrate: bool = False
    chat_template: bool = False
    asks: str = ""
    """the plain yes/no question this phrasing stands for ("" : the question itself)"""
    model: str = ""
    """the judge this phrasing was measured on ("": any)"""
    weight: float = 1.0
    """the question's weight in the Eq. (4) mean, beside other questions (a question and its negation share it)"""

    def __post_init__(self):
        self.template = TEMPLATES.get(self.template, self.template)
        self.answers = tuple(self.answers) if isinstance(self.answers, (list, tuple)) else self.answers

    def check(self) -> "JudgeSpec":
        """Raise a UserError (one line) when the parts do not fit together; the scripts check their presets
        when they run, so that a copied script with a mismatched edit stops with one line, not a traceback."""
        if not isinstance(self.answers, tuple) or len(self.answers) != 2:
            raise UserError(f"answers must be two words, the rewarded one first, got {self.answers!r}")
        if self.transform not in TRANSFORMS:
            raise UserError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")
        _answer(self.target, "target")
        yes_no = [a.strip().lower() for a in self.answers] == list(YES_NO)
        for question in filter(None, (self.question, self.negation)):
            if question.rstrip().endswith("?") and not yes_no:
                raise UserError(
                    f"the question {question!r} asks yes or no, but the answer words are {self.answers[0]!r}/"
                    f"{self.answers[1]!r}: answer it Yes/No (answers=('Yes', 'No')), or ask with a label prompt "
                    "such as 'Sentiment:' (python zyn_reward.py tune measures which works)")
        return self

    @property
    def stands_for(self) -> str:
        return self.asks or self.question

    def questions(self, examples: Sequence[tuple[str, str]] = ()) -> list[YesNoQuestion]:
        """The YesNoQuestions a ZeroShotRewardModel asks (the question, and its negation when there is one)."""
        self.check()
        name = question_name(self.stands_for)
        target = _answer(self.target, "target")
        if self.negation:
            return YesNoQuestion.pair(self.question, self.negation, target=target, template=self.template,
                                      weight=self.weight, name=name, examples=examples)
        return [YesNoQuestion(self.question, target=target, template=self.template, weight=self.weight, name=name,
                              examples=examples)]

    def reward_options(self) -> dict:
        """The ZeroShotRewardModel keyword arguments of this way of asking."""
        return dict(yes_words=(self.answers[0],), no_words=(self.answers[1],), transform=self.transform,
                    calibrate=self.calibrate, chat_template=self.chat_template)

    def describe(self) -> str:
        """One line: how the question is asked."""
        how = (f"{self.question!r} in {self.template!r}, answered {self.answers[0]!r}/{self.answers[1]!r} "
               f"(target {self.target}), reward {self.transform}")
        extras = [f"negation {self.negation!r}" if self.negation else "", "calibrated" if self.calibrate else "",
                  "chat template" if self.chat_template else ""]
        return how + "".join(f", {e}" for e in extras if e)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_file(cls, path: str) -> "JudgeSpec":
        """A spec written by `python zyn_reward.py tune --out FILE` (its "spec" entry) or a bare spec object."""
        import json

        try:
            data = json.loads(_read_text_file(path, "judge spec"))
        except ValueError as error:
            raise UserError(f"--judge-spec {path}: {_one_line(error)}") from None
        except OSError as error:
            raise UserError(f"--judge-spec: {_one_line(error)}") from None
        data = data.get("spec", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise UserError(f"--judge-spec {path}: expected a JSON object with the fields of JudgeSpec")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise UserError(f"--judge-spec {path}: unknown field(s) {unknown}")
        try:
            return cls(**data).check()
        except TypeError as error:
            raise UserError(f"--judge-spec {path}: {error}") from None


def _check_texts(texts, what: str = "texts") -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] must be a string, got {type(text).__name__}")
    return list(texts)


def bf16_is_fast(device: str | torch.device = "cpu") -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU with bf16 support, or a CPU with
    AVX512-BF16 or AMX (the CPU flags avx512_bf16 / amx_bf16). dtype="auto" picks bf16 exactly then."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(check) for check in checks):
        return any(bool(check()) for check in checks)
    try:  # older torch: read the flags
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class ZeroShotRewardModel:
    """P(target answer) of one or several yes/no questions, from any Hugging Face seq2seq or causal LM.

    model: a hub name or local folder, an embedded short name ("smollm2-135m-instruct"), or a model.
        A name that cannot be found fails at once with a ModelLoadError naming what was tried; a hub
        name loads from the local cache when HF_HUB_OFFLINE=1 or the hub is unreachable.
    questions: one YesNoQuestion (or a question string) or a list of them (an ensemble, Eq. 4);
        YesNoQuestion.pair(question, negation) gives a question with its negation.
    yes_words / no_words: surface forms whose single-token probabilities are summed (leading-space
        variants are added where the tokenizer has them). A word that is several tokens, or that the
        tokenizer maps to its unknown token, is an error.
    batch_size, token_budget: how texts are grouped into forward passes (texts sorted by length, so
        that padding stays small). By default (both None) each pass holds as many texts as fit in a
        budget of tokens (texts x longest prompt) chosen per device, TOKEN_BUDGET: 1024 on a CPU, where
        a pass that outgrows the cache is slower per token, 16384 on a GPU. batch_size alone fixes the
        number of texts per pass (no token budget); both together apply both limits. A pass of one
        text without padding runs with no attention mask or position ids: the bare forward's cost.
    device: where the judge runs (default: the GPU of LOCAL_RANK when there is one, else the CPU).
    dtype: compute precision. "bfloat16"/"float16" run the judge under torch.autocast: the weights
        stay as loaded and the residual stream in fp32; on a decoder-only judge the prompt's last
        token (the answer position, whose hidden state gives the logits) runs in fp32 after the
        other tokens ran in bf16/fp16, and the yes/no logits are computed in fp32 (pass a model loaded
        in bf16 to halve its memory instead; a judge loaded by name is loaded in fp32). "float32"
        casts the judge to fp32 (in place). "auto": bfloat16 where the device computes it natively
        (bf16_is_fast: a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX), otherwise the weights'
        own precision. None (default): the weights' precision.
    transform: what reward_fn returns: "centered" (p-0.5)*10 (Eq. 3), "prob" p or "logodds".
    chat_template: wrap decoder-only prompts in the tokenizer's chat template when it has one.
    calibrate: contextual calibration: True (content-free texts "N/A", "", "[MASK]"), or your own
        text(s); their log-odds are subtracted from every score.
    max_length: prompt token limit (default: the tokenizer's, at most 1024); longer texts are
        truncated inside {text}, so that the examples, the template and the question always survive.
    reuse_prefix: on a decoder-only judge, run the prompt part that all texts share (few-shot
        examples, a chat header) once and reuse its key/value cache for every batch (recomputed when
        the weights change), and for several questions run each text's shared part once and only each
        question's suffix after it. False runs every prompt whole (the plain reference computation).
    """

    def __init__(
        self,
        model,
        questions: YesNoQuestion | str | Sequence[YesNoQuestion | str],
        tokenizer=None,
        yes_words: Sequence[str] = ("Yes",),
        no_words: Sequence[str] = ("No",),
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        transform: str = "centered",
        chat_template: bool = True,
        calibrate: bool | str | Sequence[str] = False,
        max_length: int | None = None,
        reuse_prefix: bool = True,
        token_budget: int | None = None,
    ):
        if isinstance(questions, (YesNoQuestion, str)):
            questions = [questions]
        questions = [YesNoQuestion(q) if isinstance(q, str) else q for q in questions]
        if not questions:
            raise UserError("give at least one question")
        for q in questions:
            if not isinstance(q, YesNoQuestion):
                raise TypeError(f"questions must be YesNoQuestion or str, got {type(q).__name__}")
        names = [q.name for q in questions]
        if len(set(names)) != len(names):
            raise UserError(f"question names must be unique, got {names}; pass name=... to tell them apart")
        if sum(q.weight for q in questions) <= 0:
            raise UserError("question weights must not all be zero")
        if transform not in TRANSFORMS:
            raise UserError(f"unknown transform {transform!r}; choose one of {TRANSFORMS}")
        for key, value in (("batch_size", batch_size), ("token_budget", token_budget)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"{key} must be a positive integer or None, got {value!r}")
        self.questions = questions
        self.transform = transform
        self.batch_size = batch_size
        self.reuse_prefix = reuse_prefix

        self.model, self.tokenizer, self.autocast_dtype = _load(model, tokenizer, device, dtype)
        self.device = next(self.model.parameters()).device
        if token_budget is None and batch_size is None:
            token_budget = TOKEN_BUDGET.get(self.device.type, TOKEN_BUDGET["cpu"])
        self.token_budget = token_budget
        config = self.model.config
        self.is_encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        self.use_chat_template = bool(
            chat_template and not self.is_encoder_decoder and getattr(self.tokenizer, "chat_template", None)
        )
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        self.yes_ids = _resolve_words(self.tokenizer, yes_words, "yes_words")
        self.no_ids = _resolve_words(self.tokenizer, no_words, "no_words")
        shared = set(self.yes_ids) & set(self.no_ids)
        if shared:
            raise UserError(f"yes_words and no_words share token ids {sorted(shared)}")
        if max_length is None:
            max_length = _default_max_length(self.tokenizer, config)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise UserError(f"max_length must be a positive integer, got {max_length!r}")
        self.max_length = max_length
        params = inspect.signature(self.model.forward).parameters
        self._accepts = set(params)
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._exact_head = not any(getattr(config, k, None) for k in POST_HEAD_ATTRIBUTES)
        self.model.eval()

        self._lock = threading.RLock()  # one scoring pass at a time (a server may call from threads)
        self._prefixes: dict[str, tuple[int, ...]] = {}  # question name -> token prefix of all its prompts
        self._prefix_caches: dict[tuple[int, ...], tuple[object, object]] = {}  # prefix -> (weights, cache)
        self.calibration = torch.zeros(len(questions), dtype=torch.float64)
        self._last: tuple[object, torch.Tensor] | None = None  # ((texts, weights), log-odds) of the last call
        if calibrate is not False and calibrate is not None:
            free = list(CONTENT_FREE) if calibrate is True else _check_texts(
                [calibrate] if isinstance(calibrate, str) else calibrate, "calibrate")
            if not free:
                raise UserError("calibrate needs at least one content-free text")
            self.calibration = calibration_offset(self._log_odds(free))

    # ---------------------------------------------------------------------------------------------
    # public API
    # ---------------------------------------------------------------------------------------------

    def question_probabilities(self, texts: Sequence[str]) -> dict[str, list[float]]:
        """Per question name: P(target answer) for each text."""
        p = torch.sigmoid(self._target_log_odds(_check_texts(texts)))
        return {q.name: p[i].tolist() for i, q in enumerate(self.questions)}

    def probabilities(self, texts: Sequence[str]) -> list[float]:
        """The ensemble probability of the target answers, Eq. (4), one per text."""
        return self._ensemble(torch.sigmoid(self._target_log_odds(_check_texts(texts)))).tolist()

    def reward_fn(self, samples: Sequence[str], **kwargs) -> list[float]:
        """trlx reward_fn(samples, prompts=..., outputs=...): transform(p) per sample."""
        p = self._ensemble(torch.sigmoid(self._target_log_odds(_check_texts(samples, "samples"))))
        return self._transform(p).tolist()

    def metric_fn(self, samples: Sequence[str], **kwargs) -> dict[str, list[float]]:
        """trlx metric_fn: {"prob_<name>": [...]} per question, plus "prob_ensemble" for several."""
        p = torch.sigmoid(self._target_log_odds(_check_texts(samples, "samples")))
        metrics = {f"prob_{q.name}": p[i].tolist() for i, q in enumerate(self.questions)}
        if len(self.questions) > 1:
            metrics["prob_ensemble"] = self._ensemble(p).tolist()
        return metrics

    def __call__(self, samples: Sequence[str], **kwargs) -> list[float]:
        """rm(texts): the rewards, as rm.reward_fn(texts) (so rm itself is a zyn_ppo/trlx reward_fn)."""
        return self.reward_fn(samples)

    def to(self, device: str | torch.device) -> "ZeroShotRewardModel":
        """Move the judge to `device`; later calls run there (kept caches are dropped). Returns self."""
        device = _torch_device(device)
        with self._lock:
            try:
                self.model.to(device)
            except (RuntimeError, AssertionError) as error:  # a device type this torch build cannot use
                raise UserError(f"cannot move the judge to {str(device)!r}: "
                                 f"{str(error).strip().splitlines()[0] if str(error).strip() else error!r}") from None
            self.device = next(self.model.parameters()).device
            self._prefix_caches.clear()
            self._last = None
        return self

    def as_trl_reward(self, include_prompt: bool = True) -> Callable[..., list[float]]:
        """A TRL reward function (GRPO/RLOO): f(prompts, completions, **kwargs) -> list[float].

        Scores prompt + completion (or the completion alone with include_prompt=False). Plain strings
        are concatenated; conversational lists of {"role", "content"} messages are joined by newlines.
        """

        def reward(prompts=None, completions=None, **kwargs) -> list[float]:
            if completions is None:
                raise TypeError("the TRL reward function needs completions=")
            completions = list(completions)
            if prompts is None or not include_prompt:
                prompts = [""] * len(completions)
            prompts = list(prompts)
            if len(prompts) != len(completions):
                raise UserError(f"{len(prompts)} prompts but {len(completions)} completions")
            texts = [_join_turns(p, c, i) for i, (p, c) in enumerate(zip(prompts, completions))]
            return self.reward_fn(texts)

        reward.__name__ = "zyn_" + ("ensemble" if len(self.questions) > 1 else self.questions[0].name)
        reward.__qualname__ = reward.__name__
        return reward

    # ---------------------------------------------------------------------------------------------
    # scoring
    # ---------------------------------------------------------------------------------------------

    def _ensemble(self, p: torch.Tensor) -> torch.Tensor:
        w = torch.tensor([q.weight for q in self.questions], dtype=p.dtype)
        return (w[:, None] * p).sum(0) / w.sum()

    def _transform(self, p: torch.Tensor) -> torch.Tensor:
        return transform_reward(p, self.transform)

    def _weights_key(self) -> tuple:
        """Changes whenever the judge's weights change (optimiser steps bump each tensor's version),
        are moved or cast: kept results and prefix caches are only reused under the same key."""
        params = list(self.model.parameters())
        first = params[0]
        return (first.data_ptr(), first.dtype, first.device, sum(p._version for p in params))

    def _target_log_odds(self, texts: list[str]) -> torch.Tensor:
        """[questions, texts] float64 log-odds of each question's target answer (calibrated if asked).

        The last call's result is kept: a trainer that calls reward_fn and then metric_fn on the same
        samples (trlx and zyn_ppo do, at every evaluation) runs the judge once, not twice.
        """
        with self._lock:
            key = (tuple(texts), self._weights_key())
            if self._last is not None and self._last[0] == key:
                return self._last[1]
            sign = torch.tensor([1.0 if q.target == "yes" else -1.0 for q in self.questions],
                                dtype=torch.float64)
            log_odds = (self._log_odds(texts) - self.calibration[:, None]) * sign[:, None]
            self._last = (key, log_odds)
            return log_odds

    def _render(self, question: YesNoQuestion, text: str) -> str:
        if self.use_chat_template:
            return self.tokenizer.apply_chat_template(question.messages(text), tokenize=False,
                                                      add_generation_prompt=True)
        return question.format(text)

    def _tokenize(self, prompts: list[str]) -> list[list[int]]:
        # a chat template writes its own special tokens
        return self.tokenizer(prompts, add_special_tokens=not self.use_chat_template)["input_ids"]

    def _prompt_ids(self, question: YesNoQuestion, texts: list[str]) -> list[list[int]]:
        """Token ids of each prompt; texts that make it too long are cut inside {text}."""
        ids = self._tokenize([self._render(question, t) for t in texts]) if texts else []
        for i, seq in enumerate(ids):
            if len(seq) > self.max_length:
                ids[i] = self._truncated_ids(question, texts[i])
        return ids

    def _truncated_ids(self, question: YesNoQuestion, text: str) -> list[int]:
        """Cut the text to fit max_length around it: keep its start (its end when the tokenizer's
        truncation_side is "left")."""
        overhead = len(self._tokenize([self._render(question, "")])[0])
        budget = self.max_length - overhead
        if budget < 1:
            shots = f" and {len(question.examples)} examples" if question.examples else ""
            raise UserError(
                f"template{shots} and question alone take {overhead} tokens, max_length is {self.max_length}"
            )
        keep_end = getattr(self.tokenizer, "truncation_side", "right") == "left"
        text_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        while True:
            part = text_ids[-budget:] if keep_end else text_ids[:budget]
            seq = self._tokenize([self._render(question, self.tokenizer.decode(part))])[0]
            if len(seq) <= self.max_length or budget <= 1:
                return seq if len(seq) <= self.max_length else seq[-self.max_length:]
            budget = max(1, budget - (len(seq) - self.max_length))

    def _static_prefix(self, question: YesNoQuestion) -> tuple[int, ...]:
        """The token prefix that every prompt of this question starts with: examples, chat header and
        the template up to {text}, less its last token (which may merge with a text's first
        characters). Each prompt is still checked against it before its cache is used."""
        if question.name not in self._prefixes:
            a, b = self._tokenize([self._render(question, "A"), self._render(question, "0")])
            common = 0
            while common < min(len(a), len(b)) and a[common] == b[common]:
                common += 1
            self._prefixes[question.name] = tuple(a[: max(common - 1, 0)])
        return self._prefixes[question.name]

    def _batch_groups(self, costs: list[int]) -> list[list[int]]:
        """Indices of the texts in each forward pass: sorted by cost (tokens to run), then cut where
        texts x the longest would pass the token budget or the texts the batch size."""
        order = sorted(range(len(costs)), key=lambda i: costs[i])
        groups: list[list[int]] = []
        for i in order:
            if groups:
                last = groups[-1]
                fits_budget = self.token_budget is None or (len(last) + 1) * costs[i] <= self.token_budget
                fits_rows = self.batch_size is None or len(last) < self.batch_size
                if fits_budget and fits_rows:
                    last.append(i)
                    continue
            groups.append([i])
        return groups

    def _pad(self, seqs: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            cols = slice(width - len(seq), width) if left else slice(0, len(seq))
            input_ids[row, cols] = torch.tensor(seq, dtype=torch.long)
            mask[row, cols] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def _yes_no(self, logits: torch.Tensor) -> torch.Tensor:
        """log P(yes set) - log P(no set) from the answer logits [batch, yes_ids + no_ids], in log space."""
        logits = logits.float()  # logsumexp never forms exp(l): no overflow in fp16/bf16 either
        n_yes = len(self.yes_ids)
        l_yes = torch.logsumexp(logits[:, :n_yes], dim=-1)
        l_no = torch.logsumexp(logits[:, n_yes:], dim=-1)
        return (l_yes - l_no).double().cpu()

    @torch.inference_mode()
    def _log_odds(self, texts: list[str]) -> torch.Tensor:
        """[questions, texts] float64 log-odds of "yes" against "no", uncalibrated."""
        out = torch.zeros(len(self.questions), len(texts), dtype=torch.float64)
        if not texts:
            return out
        all_ids = [self._prompt_ids(q, texts) for q in self.questions]
        if self.is_encoder_decoder or not self.reuse_prefix:
            rows = [(qi, i, ids[i]) for qi, ids in enumerate(all_ids) for i in range(len(texts))]
            self._score_rows((), rows, out)
            return out
        groups: dict[tuple[int, ...], list[int]] = {}  # questions whose prompts share the same prefix
        for qi, q in enumerate(self.questions):
            groups.setdefault(self._static_prefix(q), []).append(qi)
        if any(prefix and self._prefix_cache(prefix) is None for prefix in groups):
            self.reuse_prefix = False  # the model returns no key/value cache: every prompt whole
            return self._log_odds(texts)
        for prefix, members in groups.items():
            if len(members) == 1:
                qi = members[0]
                self._score_rows(prefix, [(qi, i, all_ids[qi][i]) for i in range(len(texts))], out)
            else:
                self._score_shared(prefix, members, all_ids, out)
        return out

    def _score_rows(self, prefix: tuple[int, ...], rows: list[tuple[int, int, list[int]]], out: torch.Tensor):
        """Score (question, text, prompt ids) rows independently; decoder-only prompts that start with
        `prefix` run after its cached keys/values, the others whole."""
        n = len(prefix)
        cached = [r for r in rows if n and len(r[2]) > n and tuple(r[2][:n]) == prefix]
        whole = [r for r in rows if not (n and len(r[2]) > n and tuple(r[2][:n]) == prefix)]
        for part, skip in ((cached, n), (whole, 0)):
            # a cached token costs a share of a new one (each row attends to it and extends a copy of it)
            for group in self._batch_groups([len(r[2]) - skip + skip // 4 for r in part]):
                batch = [part[g] for g in group]
                input_ids, mask = self._pad([r[2][skip:] for r in batch], left=not self.is_encoder_decoder)
                if skip:
                    logits = self._next_logits(input_ids, mask, cache=self._prefix_cache(prefix),
                                               past_mask=torch.ones(len(batch), n, dtype=torch.long,
                                                                    device=self.device))
                else:
                    logits = self._next_logits(input_ids, mask)
                log_odds = self._yes_no(logits)
                for (qi, ti, _), value in zip(batch, log_odds):
                    out[qi, ti] = value

    def _score_shared(self, prefix: tuple[int, ...], members: list[int], all_ids, out: torch.Tensor):
        """Several questions per text: the prompt prefix of all texts from the cache, then each text's
        common part (its text, the template around it) once, then each question's own suffix."""
        n_q, p = len(members), len(prefix)
        rows, shared, common = [], [], {}
        for i in range(len(all_ids[0])):
            seqs = [all_ids[qi][i] for qi in members]
            c = 0
            while c < min(map(len, seqs)) - 1 and all(s[c] == seqs[0][c] for s in seqs):
                c += 1  # keep at least one suffix token per question: its logits are the answer
            if c - p >= 1 and all(tuple(s[:p]) == prefix for s in seqs):
                shared.append(i)
                common[i] = c
            else:
                rows += [(qi, i, all_ids[qi][i]) for qi in members]
        self._score_rows(prefix, rows, out)  # texts with nothing to share: each question on its own
        for group in self._batch_groups([common[i] - p for i in shared]):
            index = [shared[g] for g in group]
            first = [all_ids[members[0]][i][p: common[i]] for i in index]
            first_ids, first_mask = self._pad(first, left=True)
            past = torch.ones(len(index), p, dtype=torch.long, device=self.device)
            cache = self._next_logits(first_ids, first_mask, cache=self._prefix_cache(prefix) if p else None,
                                      past_mask=past, return_cache=True, answer=False)[1]
            cache.batch_repeat_interleave(n_q)  # rows: text 0 x every question, text 1 x every question...
            suffixes = [all_ids[qi][i][common[i]:] for i in index for qi in members]
            suffix_ids, suffix_mask = self._pad(suffixes, left=True)
            past_mask = torch.cat([past, first_mask], dim=1).repeat_interleave(n_q, dim=0)
            logits = self._next_logits(suffix_ids, suffix_mask, cache=cache, past_mask=past_mask,
                                       copy_cache=False)
            log_odds = self._yes_no(logits)
            values = log_odds.view(len(index), n_q)
            for k, qi in enumerate(members):
                out[qi, index] = values[:, k]

    def _prefix_cache(self, prefix: tuple[int, ...]):
        """Key/value cache of `prefix` (one row), computed once per prefix and weights."""
        key = self._weights_key()
        hit = self._prefix_caches.get(prefix)
        if hit is not None and hit[0] == key:
            return hit[1]
        input_ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
        cache = self._next_logits(input_ids, torch.ones_like(input_ids), return_cache=True, answer=False)[1]
        self._prefix_caches[prefix] = (key, cache)
        return cache

    def _next_logits(self, input_ids, mask, cache=None, past_mask=None, return_cache: bool = False,
                     copy_cache: bool = True, answer: bool = True):
        """Next-token logits of the yes/no ids at the last position, in fp32: [batch, yes_ids + no_ids].

        `mask` covers the new tokens, `past_mask` the cached ones (`cache`: one row, repeated for the
        batch, or already one row per batch row with copy_cache=False). A batch without any padding
        runs without attention mask and position ids, as a bare forward does. The LM head runs on the
        last position only; its input is captured and the answer rows are recomputed in fp32, so that
        bf16/fp16 judges do not round the logits (bf16 steps are 0.125 at 20). Under bf16/fp16 autocast
        a decoder-only judge runs the last token (the answer position) in fp32 after the others; with
        answer=False (only the cache is wanted) everything runs in the low precision.
        """
        low = self.autocast_dtype
        if self.is_encoder_decoder:
            start = self.model.config.decoder_start_token_id
            start = self.pad_id if start is None else start
            decoder_input_ids = torch.full((len(input_ids), 1), start, dtype=torch.long, device=self.device)
            out, hidden = self._call(dict(input_ids=input_ids, attention_mask=mask,
                                          decoder_input_ids=decoder_input_ids, use_cache=False), low)
        else:  # left padding: positions count real tokens only
            full = mask if past_mask is None else torch.cat([past_mask, mask], dim=1)
            if cache is not None and copy_cache:  # the kept cache stays as it is: each pass extends a copy
                rows = len(input_ids)
                cache = copy.deepcopy(cache)
                if rows > 1:
                    cache.batch_repeat_interleave(rows)
            if low is not None and answer and input_ids.shape[1] > 1:
                # the context in low precision, then the answer position in fp32 on its keys/values:
                # the rounding of the last token's own path is most of bf16's error on the answer
                context = self._decoder_kwargs(input_ids[:, :-1], full[:, :-1], cache, use_cache=True)
                out, _ = self._call(context, low)
                if _cache_of(out) is None:  # a model without a key/value cache: all in low precision
                    return self._next_logits(input_ids, mask, past_mask=past_mask, return_cache=return_cache,
                                             answer=False)
                cache, input_ids = _cache_of(out), input_ids[:, -1:]
            use_cache = return_cache or cache is not None
            out, hidden = self._call(self._decoder_kwargs(input_ids, full, cache, use_cache),
                                     None if answer else low)
        ids = self.yes_ids + self.no_ids
        head = self.model.get_output_embeddings()
        if self._exact_head and hidden is not None:
            logits = hidden[:, -1].float() @ head.weight[ids].float().T
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias[ids].float()
        else:  # the model changes logits after its head (soft-capping, scaling): take them as they are
            logits = out.logits[:, -1, ids].float()
        if return_cache:
            return logits, _cache_of(out)
        return logits

    def _decoder_kwargs(self, input_ids, full_mask, cache, use_cache: bool) -> dict:
        """Forward arguments of a decoder-only pass; full_mask covers the cached and the new tokens."""
        kwargs = dict(input_ids=input_ids, use_cache=use_cache)
        if not bool(full_mask.all()):
            kwargs["attention_mask"] = full_mask
            if "position_ids" in self._accepts:
                kwargs["position_ids"] = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
        if cache is not None:
            kwargs[self._cache_kw] = cache
        if "logits_to_keep" in self._accepts:
            kwargs["logits_to_keep"] = 1
        return kwargs

    def _call(self, kwargs: dict, low):
        """Run the model (under autocast to `low` unless None); return its output and the input of its
        LM head (None when it has no head module)."""
        head = self.model.get_output_embeddings()
        captured = []
        hook = head.register_forward_pre_hook(lambda module, args: captured.append(args[0])) if head else None
        try:
            with torch.autocast(self.device.type, dtype=low, enabled=low is not None):
                out = self.model(**kwargs)
        finally:
            if hook:
                hook.remove()
        return out, (captured[-1] if captured else None)


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


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


def calibration_offset(free_log_odds: torch.Tensor) -> torch.Tensor:
    """Contextual calibration (Zhao et al., 2021): [questions, content-free texts] log-odds of "yes" ->
    [questions] log-odds of the mean P(yes), subtracted from every text's log-odds."""
    p_yes = torch.sigmoid(free_log_odds).mean(-1)
    return torch.log(p_yes) - torch.log1p(-p_yes)


def _join_turns(prompt, completion, index: int) -> str:
    def text(turns, what):
        if isinstance(turns, str):
            return turns
        if isinstance(turns, (list, tuple)) and all(isinstance(m, dict) and "content" in m for m in turns):
            return "\n".join(str(m["content"]) for m in turns if m.get("role") != "system")
        raise TypeError(f"{what}[{index}] must be a string or a list of {{'role', 'content'}} messages")

    p, c = text(prompt, "prompts"), text(completion, "completions")
    if isinstance(prompt, str) and isinstance(completion, str):
        return p + c
    return "\n".join(part for part in (p, c) if part)


def _resolve_words(tokenizer, words: Sequence[str], what: str) -> list[int]:
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


def _default_max_length(tokenizer, config) -> int:
    limits = [MAX_LENGTH_CAP, getattr(tokenizer, "model_max_length", None)]
    limits += [getattr(config, k, None) for k in ("max_position_embeddings", "n_positions")]
    return min(int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < 1e9)


# --------------------------------------------------------------------------------------------------
# Finding and loading a judge
# --------------------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)?$")
def _looks_like_path(name: str) -> bool:
    return (os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.endswith("/")
            or name.count("/") > 1 or not _HUB_ID.match(name))


def _locate_model(name: str) -> tuple[str, dict]:
    """(path or hub name, extra from_pretrained kwargs) for a judge name, or a ModelLoadError that says
    what was tried: the embedded names, a local folder, the Hugging Face cache and hub."""
    if name in EMBEDDED_MODELS:
        try:
            return embedded_model_path(name), {}
        except FileNotFoundError as error:
            raise ModelLoadError(str(error)) from None
    embedded = ", ".join(sorted(EMBEDDED_MODELS))
    close = difflib.get_close_matches(name, list(EMBEDDED_MODELS), n=1, cutoff=0.6)
    not_embedded = f"not an embedded model name ({embedded})"
    if close:
        not_embedded += f"; did you mean {close[0]!r}?"
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path), {}
        raise ModelLoadError(f"model folder {name!r} has no config.json; give a folder saved with "
                             "save_pretrained (config.json, weights, tokenizer)")
    if path.exists():
        raise ModelLoadError(f"model {name!r} is a file; give the folder that holds its config.json")
    if _looks_like_path(name):
        raise ModelLoadError(f"model {name!r}: no such local folder, and {not_embedded}; check the path")
    cached = hub_cached(name)
    if hub_offline():
        if cached:
            return name, {"local_files_only": True}
        raise ModelLoadError(
            f"model {name!r}: {not_embedded}, not a local folder, and not in the Hugging Face cache "
            f"({hub_cache_dir()}) while HF_HUB_OFFLINE is set; unset it to download, or give a folder")
    unreachable = hub_unreachable()
    if unreachable:
        if cached:
            return name, {"local_files_only": True}
        raise ModelLoadError(
            f"model {name!r}: {not_embedded}, not a local folder, not in the Hugging Face cache "
            f"({hub_cache_dir()}), and the hub is unreachable ({unreachable}); connect, or give a folder")
    return name, {}


def _torch_device(device) -> torch.device:
    """`device` as a torch.device that exists here, else a one-line ValueError."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UserError(f"device {device!r} is not a torch device ({error}); use cpu, cuda or "
                         "cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {str(device)!r} asked for, but torch sees no CUDA GPU; use "
                         "--device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device {str(device)!r} asked for, but torch sees {torch.cuda.device_count()} CUDA "
                         "GPU(s)")
    return device


def _load(model, tokenizer, device, dtype):
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer,
                              PreTrainedModel)

    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise UserError("dtype must be a torch dtype or one of 'float32', 'bfloat16', 'float16', 'auto'")
    if dtype not in (None, "auto", torch.float32, torch.bfloat16, torch.float16):
        raise UserError(f"dtype must be float32, bfloat16, float16 or 'auto', got {dtype}")
    if device is not None:
        device = _torch_device(device)
    extra: dict = {}
    if isinstance(model, (str, Path)):
        name = str(model)
        path, extra = _locate_model(name)
        try:
            config = AutoConfig.from_pretrained(path, **extra)
            seq2seq = getattr(config, "is_encoder_decoder", False)
            cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
            model = cls.from_pretrained(path, dtype=torch.float32, **extra)
        except (OSError, ValueError, KeyError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(f"cannot load model {name!r} from {path}: {first}") from error
        tokenizer = path if tokenizer is None else tokenizer
        # under accelerate/torchrun each process scores on its own GPU
        if device is None:
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
    elif not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a name, a folder or a PreTrainedModel, got {type(model).__name__}")
    if tokenizer is None:
        if not model.name_or_path:
            raise UserError("pass tokenizer= for a model that was not loaded from a name or folder")
        tokenizer = model.name_or_path
    if isinstance(tokenizer, (str, Path)):
        name = str(tokenizer)
        name = embedded_model_path(name) if name in EMBEDDED_MODELS else name
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, **extra)
        except (OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(f"cannot load the tokenizer of {name!r}: {first}") from error
    if device is not None:
        model.to(device)
    if dtype == "auto":
        dtype = torch.bfloat16 if bf16_is_fast(next(model.parameters()).device) else None
    if dtype == torch.float32:
        model.float()
    return model, tokenizer, (dtype if dtype in (torch.bfloat16, torch.float16) else None)


# --------------------------------------------------------------------------------------------------
# Evaluating a question on labelled texts
# --------------------------------------------------------------------------------------------------


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count one half.
    NaN when the labels hold one class only (the area is undefined)."""
    pairs = sorted(zip(scores, labels))
    ranks = [0.0] * len(pairs)
    i = 0
    while i < len(pairs):  # average ranks over ties
        j = i
        while j + 1 < len(pairs) and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    n_pos = sum(1 for _, y in pairs if y)
    n_neg = len(pairs) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = sum(r for r, (_, y) in zip(ranks, pairs) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def expected_calibration_error(probs: Sequence[float], labels: Sequence[int], bins: int = 10) -> float:
    """Mean |fraction of positives - mean probability| over equal-width bins, weighted by bin size."""
    total, ece = len(probs), 0.0
    for b in range(bins):
        members = [(p, y) for p, y in zip(probs, labels) if min(int(p * bins), bins - 1) == b]
        if members:
            conf = sum(p for p, _ in members) / len(members)
            acc = sum(y for _, y in members) / len(members)
            ece += len(members) / total * abs(acc - conf)
    return ece


_LABELS = {"1": 1, "0": 0, "yes": 1, "no": 0, "true": 1, "false": 0, "pos": 1, "neg": 0,
           "positive": 1, "negative": 0}


def _parse_label(value) -> int | None:
    """1/0 from 1/0, 1.0/0.0, yes/no, true/false, pos/neg, positive/negative (any case); else None."""
    text = str(value if value is not None else "").strip().lower()
    if text in _LABELS:
        return _LABELS[text]
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


def _read_text_file(path: str, what: str) -> str:
    """A UTF-8 text file (a byte order mark is dropped), or a ValueError/FileNotFoundError that says
    what is wrong with it; "-" reads standard input."""
    if path == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        where = "standard input"
    else:
        where = path
        if os.path.isdir(path):
            raise IsADirectoryError(f"{what} {path!r} is a folder; give a file")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{what} {path!r} does not exist; check the path") from None
    if b"\x00" in data[:65536]:
        raise UserError(f"{what} {where} looks binary (it holds NUL bytes); give a UTF-8 text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{what} {where} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
                         f"{error.start}); save it as UTF-8") from None


def split_lines(text: str) -> list[str]:
    """One text per line: split on newlines only ("\\n", "\\r\\n"), never on form feeds, U+2028, U+0085
    or other characters that str.splitlines() also breaks at; a final newline ends the last line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_labeled(path: str, text_column: str = "text",
                 label_column: str = "label") -> tuple[list[str], list[int]]:
    """A CSV file with a header and columns text,label (label 1/0, 1.0/0.0, yes/no, true/false,
    positive/negative; the column names match without regard to case or surrounding spaces; a byte order
    mark is fine). Errors name the file and line."""
    content = _read_text_file(path, "labelled CSV")
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise UserError(f"{path}:1: not a valid CSV header ({error})") from None
    if not header:
        raise UserError(f"{path}: empty file; it needs a header line {text_column},{label_column} and one "
                         "row per example")
    names = [h.strip().lower() for h in header]
    missing = [c for c in (text_column, label_column) if c.strip().lower() not in names]
    if missing:
        raise UserError(f"{path}:1: no column {' or '.join(repr(m) for m in missing)} in the header "
                         f"{header}; name the columns {text_column},{label_column} (or pass "
                         "--text-column/--label-column)")
    ti, li = names.index(text_column.strip().lower()), names.index(label_column.strip().lower())
    texts, labels = [], []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader, None)
        except csv.Error as error:
            raise UserError(f"{path}:{start}: not valid CSV ({error})") from None
        if row is None:
            break
        if not row:  # a blank line
            continue
        if len(row) <= max(ti, li):
            raise UserError(f"{path}:{start}: {len(row)} field(s), the header has {len(header)}; "
                             f"each row needs a {text_column} and a {label_column}")
        label = _parse_label(row[li])
        if label is None:
            raise UserError(f"{path}:{start}: unknown label {row[li]!r} in column {label_column!r}; "
                             "use 1/0, yes/no, true/false or positive/negative")
        texts.append(row[ti])
        labels.append(label)
    return texts, labels


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        raise UserError(f"{message} (see: {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _words(text: str) -> list[str]:
    words = [w for w in text.split(",") if w.strip()]
    if not words:
        raise argparse.ArgumentTypeError(f"{text!r} names no word; give comma-separated words such as "
                                         "Yes,yes")
    return words


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, (FileNotFoundError, IsADirectoryError)) and error.filename:
        text = f"{error.filename}: {error.strerror}; check the path"
    return " ".join(text.split())


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="zyn_reward.py", description="Try a yes/no reward question.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also ZYN_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    score = commands.add_parser("score", help="print P(target answer) for each line of a file")
    score.add_argument("file", help="UTF-8 text, one text per line (split on newlines only); - reads stdin")
    evaluate = commands.add_parser("eval", help="AUROC, accuracy and calibration error on labelled texts")
    evaluate.add_argument("--labeled", required=True, help="CSV file with columns text,label (1/0)")
    evaluate.add_argument("--text-column", default="text", help="name of the text column")
    evaluate.add_argument("--label-column", default="label", help="name of the label column")
    for sub in (score, evaluate):
        sub.add_argument("--question", required=True, help='e.g. "Is this movie review positive?"')
        sub.add_argument("--negation", default=None,
                         help='the question\'s negation, e.g. "Is this movie review negative?": rewards '
                              "P(yes | question) and P(no | negation) half each")
        sub.add_argument("--examples", default=None,
                         help="few-shot examples: a CSV file with columns text,label (label = the answer "
                              "to --question)")
        sub.add_argument("--model", default="smollm2-135m-instruct", help="hub name, folder or embedded name")
        sub.add_argument("--template", default="flan_review",
                         help=f"one of {sorted(TEMPLATES)} or a string with {{text}} and {{question}}")
        sub.add_argument("--target", default="yes", choices=["yes", "no"], help="the rewarded answer")
        sub.add_argument("--yes-words", type=_words, default=["Yes"], help="comma-separated, e.g. Yes,yes")
        sub.add_argument("--no-words", type=_words, default=["No"], help="comma-separated, e.g. No,no")
        sub.add_argument("--batch-size", type=_positive_int, default=None,
                         help="texts per forward pass (default: sized by a token budget per device)")
        sub.add_argument("--token-budget", type=_positive_int, default=None,
                         help="tokens per forward pass (default: 1024 on a CPU, 16384 on a GPU)")
        sub.add_argument("--max-length", type=_positive_int, default=None, help="prompt token limit")
        sub.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "auto"],
                         help="auto: bfloat16 where the device has native bf16, else the weights' own")
        sub.add_argument("--device", default=None)
        sub.add_argument("--no-chat-template", action="store_true", help="plain prompts (decoder-only)")
        sub.add_argument("--calibrate", action="store_true", help="contextual calibration")
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show tracebacks (also ZYN_DEBUG=1)")
    import zyn_tune

    zyn_tune.add_parser(commands).add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                               help="show tracebacks (also ZYN_DEBUG=1)")
    return parser


def _run(args) -> None:
    if args.command == "tune":
        import zyn_tune

        zyn_tune.run(args)
        return
    template = args.template.replace("\\n", "\n")
    try:
        examples = read_labeled(args.examples) if args.examples else ([], [])
    except (OSError, ValueError) as error:
        raise UserError(f"--examples: {_one_line(error)}") from error
    examples = [(t, "yes" if y else "no") for t, y in zip(*examples)]
    try:
        if args.negation:
            questions = YesNoQuestion.pair(args.question, args.negation, target=args.target,
                                           template=template, examples=examples)
        else:
            questions = YesNoQuestion(args.question, target=args.target, template=template, examples=examples)
    except (ValueError, TypeError) as error:
        message = _one_line(error)
        if "template" in message:
            message += ("; --template needs {text} and {question}, e.g. "
                        "'Review: {text}\\n\\n{question} Response:'")
        raise UserError(message) from error
    try:
        if args.command == "score":
            texts = split_lines(_read_text_file(args.file, "texts file"))
            if not texts:
                raise UserError(f"no texts: {'standard input' if args.file == '-' else args.file} is empty; "
                                 "give one text per line")
        else:
            texts, labels = read_labeled(args.labeled, args.text_column, args.label_column)
            if not texts:
                raise UserError(f"{args.labeled}: no examples (a header but no rows); add rows text,label")
    except (OSError, ValueError) as error:
        raise UserError(_one_line(error)) from error
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # stderr holds errors only
    transformers_logging.disable_progress_bar()  # "Loading weights" bars
    try:
        from huggingface_hub.utils import enable_progress_bars
        enable_progress_bars()  # but a download still shows its progress
    except ImportError:
        pass
    try:
        rm = ZeroShotRewardModel(
            args.model, questions=questions, yes_words=args.yes_words, no_words=args.no_words,
            batch_size=args.batch_size, token_budget=args.token_budget, device=args.device, dtype=args.dtype,
            chat_template=not args.no_chat_template, calibrate=args.calibrate, max_length=args.max_length,
        )
        probs = rm.probabilities(texts)
    except (ModelLoadError, ValueError) as error:
        raise UserError(_one_line(error)) from error
    if args.command == "score":
        for p in probs:
            print(f"{p:.6f}")
        return
    n_pos = sum(labels)
    accuracy = sum((p >= 0.5) == bool(y) for p, y in zip(probs, labels)) / len(labels)
    area = auroc(probs, labels)
    print(f"examples   {len(labels)} ({n_pos} positive)")
    if math.isnan(area):
        kind = "positive" if n_pos else "negative"
        print(f"AUROC      undefined: one class (all {len(labels)} examples are {kind})")
    else:
        print(f"AUROC      {area:.4f}")
    print(f"accuracy   {accuracy:.4f} (P >= 0.5)")
    print(f"ECE        {expected_calibration_error(probs, labels):.4f} (10 bins)")
    print(f"mean P     {sum(probs) / len(probs):.4f}")


def main(argv: Sequence[str] | None = None) -> None:
    """The command line. A user error prints one line `error: <what, where, how to fix>` on stderr and
    exits with status 2; --debug (or ZYN_DEBUG=1) raises it with its traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("ZYN_DEBUG", "").strip().lower() in TRUE_VALUES
    try:
        _run(_build_parser().parse_args(argv))
    except UserError as error:
        if debug:
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # e.g. `score ... | head`: the reader left, nothing to report
        sys.stderr.close()
        sys.exit(0)


if __name__ == "__main__":
    main()
