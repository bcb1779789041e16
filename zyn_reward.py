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

Command line (the default judge is the embedded offline model):

    python zyn_reward.py score --question "Is this movie review positive?" reviews.txt
    python zyn_reward.py eval --question "Is this movie review positive?" --labeled reviews.csv
"""

from __future__ import annotations

import argparse
import csv
import inspect
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from zyn_models import EMBEDDED_MODELS, embedded_model_path  # noqa: F401  (re-exported)

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
_FIELD = re.compile(r"\{(text|question)\}")


@dataclass
class YesNoQuestion:
    """A yes/no question about a text; `target` is the answer that earns the reward."""

    question: str
    target: str = "yes"
    template: str = TEMPLATES["flan_review"]
    weight: float = 1.0
    name: str | None = None

    def __post_init__(self):
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError("question must be a non-empty string")
        if not isinstance(self.target, str) or self.target.lower() not in ("yes", "no"):
            raise ValueError(f"target must be 'yes' or 'no', got {self.target!r}")
        self.target = self.target.lower()
        if not isinstance(self.template, str):
            raise TypeError(f"template must be a string, got {type(self.template).__name__}")
        self.template = TEMPLATES.get(self.template, self.template)
        for field in ("{text}", "{question}"):
            if field not in self.template:
                raise ValueError(f"template must contain {field}: {self.template!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)):
            raise TypeError(f"weight must be a number, got {self.weight!r}")
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"weight must be finite and >= 0, got {self.weight}")
        if self.name is None:
            self.name = re.sub(r"[^a-z0-9]+", "_", self.question.lower()).strip("_")[:48] or "question"
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("name must be a non-empty string")

    def format(self, text: str) -> str:
        """The prompt for one text (single pass: braces inside the text or question are kept as they are)."""
        return _FIELD.sub(lambda m: text if m.group(1) == "text" else self.question, self.template)


def _check_texts(texts, what: str = "texts") -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"{what} must be a list of strings, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] must be a string, got {type(text).__name__}")
    return list(texts)


class ZeroShotRewardModel:
    """P(target answer) of one or several yes/no questions, from any Hugging Face seq2seq or causal LM.

    model: a hub name or local folder, an embedded short name ("smollm2-135m-instruct"), or a model.
    questions: one YesNoQuestion (or a question string) or a list of them (an ensemble, Eq. 4).
    yes_words / no_words: surface forms whose single-token probabilities are summed (leading-space
        variants are added where the tokenizer has them).
    transform: what reward_fn returns: "centered" (p-0.5)*10 (Eq. 3), "prob" p or "logodds".
    chat_template: wrap decoder-only prompts in the tokenizer's chat template when it has one.
    calibrate: contextual calibration: True (content-free texts "N/A", "", "[MASK]"), or your own
        text(s); their log-odds are subtracted from every score.
    dtype: compute precision. bfloat16/float16 run the judge under torch.autocast: the weights stay
        as loaded, the residual stream and the yes/no logits stay in fp32 (pass a model loaded in
        bf16 to halve its memory instead). float32 casts the judge to fp32.
    max_length: prompt token limit (default: the tokenizer's, at most 1024); longer texts are
        truncated inside {text}, so that the template and the question always survive.
    reuse_prefix: for several questions on a decoder-only judge, run the shared prompt prefix once
        and reuse its key/value cache for each question's suffix.
    """

    def __init__(
        self,
        model,
        questions: YesNoQuestion | str | Sequence[YesNoQuestion | str],
        tokenizer=None,
        yes_words: Sequence[str] = ("Yes",),
        no_words: Sequence[str] = ("No",),
        batch_size: int = 32,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        transform: str = "centered",
        chat_template: bool = True,
        calibrate: bool | str | Sequence[str] = False,
        max_length: int | None = None,
        reuse_prefix: bool = True,
    ):
        if isinstance(questions, (YesNoQuestion, str)):
            questions = [questions]
        questions = [YesNoQuestion(q) if isinstance(q, str) else q for q in questions]
        if not questions:
            raise ValueError("give at least one question")
        for q in questions:
            if not isinstance(q, YesNoQuestion):
                raise TypeError(f"questions must be YesNoQuestion or str, got {type(q).__name__}")
        names = [q.name for q in questions]
        if len(set(names)) != len(names):
            raise ValueError(f"question names must be unique, got {names}; pass name=... to tell them apart")
        if sum(q.weight for q in questions) <= 0:
            raise ValueError("question weights must not all be zero")
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; choose one of {TRANSFORMS}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.questions = questions
        self.transform = transform
        self.batch_size = batch_size
        self.reuse_prefix = reuse_prefix

        self.model, self.tokenizer, self.autocast_dtype = _load(model, tokenizer, device, dtype)
        self.device = next(self.model.parameters()).device
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
            raise ValueError(f"yes_words and no_words share token ids {sorted(shared)}")
        if max_length is None:
            max_length = _default_max_length(self.tokenizer, config)
        self.max_length = max_length
        params = inspect.signature(self.model.forward).parameters
        self._accepts = set(params)
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._exact_head = not any(getattr(config, k, None) for k in POST_HEAD_ATTRIBUTES)
        self.model.eval()

        self.calibration = torch.zeros(len(questions), dtype=torch.float64)
        self._last: tuple[tuple[str, ...], torch.Tensor] | None = None  # (texts, log-odds) of the last call
        if calibrate is not False and calibrate is not None:
            free = list(CONTENT_FREE) if calibrate is True else _check_texts(
                [calibrate] if isinstance(calibrate, str) else calibrate, "calibrate")
            if not free:
                raise ValueError("calibrate needs at least one content-free text")
            p_yes = torch.sigmoid(self._log_odds(free)).mean(-1)  # mean P(yes) over content-free texts
            self.calibration = torch.log(p_yes) - torch.log1p(-p_yes)

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
                raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
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
        if self.transform == "centered":
            return (p - 0.5) * 10
        if self.transform == "prob":
            return p
        p = p.clamp(1e-12, 1 - 1e-12)
        return torch.log(p) - torch.log1p(-p)

    def _target_log_odds(self, texts: list[str]) -> torch.Tensor:
        """[questions, texts] float64 log-odds of each question's target answer (calibrated if asked).

        The last call's result is kept: a trainer that calls reward_fn and then metric_fn on the same
        samples (trlx and zyn_ppo do, at every evaluation) runs the judge once, not twice.
        """
        key = tuple(texts)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        sign = torch.tensor([1.0 if q.target == "yes" else -1.0 for q in self.questions], dtype=torch.float64)
        log_odds = (self._log_odds(texts) - self.calibration[:, None]) * sign[:, None]
        self._last = (key, log_odds)
        return log_odds

    def _render(self, question: YesNoQuestion, text: str) -> str:
        prompt = question.format(text)
        if self.use_chat_template:
            prompt = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

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
            raise ValueError(
                f"template and question alone take {overhead} tokens, max_length is {self.max_length}"
            )
        keep_end = getattr(self.tokenizer, "truncation_side", "right") == "left"
        text_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        while True:
            part = text_ids[-budget:] if keep_end else text_ids[:budget]
            seq = self._tokenize([self._render(question, self.tokenizer.decode(part))])[0]
            if len(seq) <= self.max_length or budget <= 1:
                return seq if len(seq) <= self.max_length else seq[-self.max_length:]
            budget = max(1, budget - (len(seq) - self.max_length))

    def _batches(self, ids: list[list[int]]):
        """Yield (indices, input_ids, attention_mask): length-sorted, padded batches."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            input_ids, mask = self._pad([ids[i] for i in index], left=not self.is_encoder_decoder)
            yield index, input_ids, mask

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
        if len(self.questions) > 1 and self.reuse_prefix and not self.is_encoder_decoder:
            return self._log_odds_shared_prefix(all_ids)
        for qi, ids in enumerate(all_ids):
            for index, input_ids, mask in self._batches(ids):
                out[qi, index] = self._yes_no(self._next_logits(input_ids, mask))
        return out

    def _log_odds_shared_prefix(self, all_ids: list[list[list[int]]]) -> torch.Tensor:
        """Several questions per text: run the common token prefix once, then each question's suffix."""
        n_q, n = len(all_ids), len(all_ids[0])
        out = torch.zeros(n_q, n, dtype=torch.float64)
        prefix_len = []
        for i in range(n):
            seqs = [ids[i] for ids in all_ids]
            common = 0
            while common < min(map(len, seqs)) - 1 and all(s[common] == seqs[0][common] for s in seqs):
                common += 1  # keep at least one suffix token per question: its logits are the answer
            prefix_len.append(common)
        for index, _, _ in self._batches(all_ids[0]):
            if min(prefix_len[i] for i in index) < 1:  # nothing shared: plain path for this batch
                for qi in range(n_q):
                    input_ids, mask = self._pad([all_ids[qi][i] for i in index], left=True)
                    out[qi, index] = self._yes_no(self._next_logits(input_ids, mask))
                continue
            prefix_ids, prefix_mask = self._pad([all_ids[0][i][: prefix_len[i]] for i in index], left=True)
            cache = self._next_logits(prefix_ids, prefix_mask, return_cache=True)[1]
            cache.batch_repeat_interleave(n_q)  # rows: text 0 x every question, text 1 x every question...
            suffixes = [all_ids[qi][i][prefix_len[i] :] for i in index for qi in range(n_q)]
            suffix_ids, suffix_mask = self._pad(suffixes, left=True)
            mask = torch.cat([prefix_mask.repeat_interleave(n_q, dim=0), suffix_mask], dim=1)
            log_odds = self._yes_no(self._next_logits(suffix_ids, mask, cache=cache))
            out[:, index] = log_odds.view(len(index), n_q).T
        return out

    def _next_logits(self, input_ids, mask, cache=None, return_cache: bool = False):
        """Next-token logits of the yes/no ids at the last position, in fp32: [batch, yes_ids + no_ids].

        The LM head runs on the last position only; its input is captured and the answer rows are
        recomputed in fp32, so that bf16/fp16 judges do not round the logits (bf16 steps are 0.125 at 20).
        """
        if self.is_encoder_decoder:
            start = self.model.config.decoder_start_token_id
            start = self.pad_id if start is None else start
            decoder_input_ids = torch.full((len(input_ids), 1), start, dtype=torch.long, device=self.device)
            kwargs = dict(input_ids=input_ids, attention_mask=mask, decoder_input_ids=decoder_input_ids,
                          use_cache=False)
        else:  # left padding: positions count real tokens only; `mask` covers cached + new tokens
            use_cache = return_cache or cache is not None
            kwargs = dict(input_ids=input_ids, attention_mask=mask, use_cache=use_cache)
            if "position_ids" in self._accepts:
                kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
            if cache is not None:
                kwargs[self._cache_kw] = cache
            if "logits_to_keep" in self._accepts:
                kwargs["logits_to_keep"] = 1
        ids = self.yes_ids + self.no_ids
        head = self.model.get_output_embeddings()
        captured = []
        hook = head.register_forward_pre_hook(lambda module, args: captured.append(args[0])) if head else None
        try:
            low = self.autocast_dtype
            with torch.autocast(self.device.type, dtype=low, enabled=low is not None):
                out = self.model(**kwargs)
        finally:
            if hook:
                hook.remove()
        if self._exact_head and captured:
            hidden = captured[-1][:, -1].float()
            logits = hidden @ head.weight[ids].float().T
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias[ids].float()
        else:  # the model changes logits after its head (soft-capping, scaling): take them as they are
            logits = out.logits[:, -1, ids].float()
        if return_cache:
            return logits, getattr(out, "cache", None) or out.past_key_values
        return logits


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
    """Single token ids of each surface form, plus its leading-space variant where that is one token."""
    if isinstance(words, str):
        words = [words]
    if not words:
        raise ValueError(f"{what} must name at least one word")
    ids: list[int] = []
    for word in words:
        if not isinstance(word, str) or not word.strip():
            raise ValueError(f"{what} must be non-empty strings, got {word!r}")
        form = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(form) != 1:
            pieces = tokenizer.convert_ids_to_tokens(form)
            raise ValueError(f"{what}: {word!r} is not a single token for this tokenizer (it is {pieces})")
        variant = word[1:] if word.startswith(" ") else " " + word
        other = tokenizer(variant, add_special_tokens=False)["input_ids"]
        for token in form + (other if len(other) == 1 else []):
            if token not in ids:
                ids.append(token)
    return ids


def _default_max_length(tokenizer, config) -> int:
    limits = [MAX_LENGTH_CAP, getattr(tokenizer, "model_max_length", None)]
    limits += [getattr(config, k, None) for k in ("max_position_embeddings", "n_positions")]
    return min(int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < 1e9)


def _load(model, tokenizer, device, dtype):
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer,
                              PreTrainedModel)

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None) if dtype != "auto" else None
        if not isinstance(dtype, torch.dtype):
            raise ValueError("dtype must be a torch dtype or one of 'float32', 'bfloat16', 'float16'")
    if dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    if isinstance(model, (str, Path)):
        path = embedded_model_path(str(model)) if str(model) in EMBEDDED_MODELS else str(model)
        config = AutoConfig.from_pretrained(path)
        cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        model = cls.from_pretrained(path)
        tokenizer = path if tokenizer is None else tokenizer
        # under accelerate/torchrun each process scores on its own GPU
        device = device or (f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu")
    elif not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a name, a folder or a PreTrainedModel, got {type(model).__name__}")
    if tokenizer is None:
        if not model.name_or_path:
            raise ValueError("pass tokenizer= for a model that was not loaded from a name or folder")
        tokenizer = model.name_or_path
    if isinstance(tokenizer, (str, Path)):
        name = str(tokenizer)
        name = embedded_model_path(name) if name in EMBEDDED_MODELS else name
        tokenizer = AutoTokenizer.from_pretrained(name)
    if device is not None:
        model.to(device)
    if dtype == torch.float32:
        model.float()
    return model, tokenizer, (dtype if dtype in (torch.bfloat16, torch.float16) else None)


# --------------------------------------------------------------------------------------------------
# Evaluating a question on labelled texts
# --------------------------------------------------------------------------------------------------


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties count one half."""
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


def read_labeled(path: str) -> tuple[list[str], list[int]]:
    """A CSV file with columns text,label (label 1/0, yes/no, true/false, positive/negative)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs a header with columns text,label, got {reader.fieldnames}")
        texts, labels = [], []
        for line, row in enumerate(reader, start=2):
            label = _LABELS.get(str(row["label"]).strip().lower())
            if label is None:
                raise ValueError(f"{path}:{line}: label must be one of {sorted(_LABELS)}, "
                                 f"got {row['label']!r}")
            texts.append(row["text"])
            labels.append(label)
    return texts, labels


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="zyn_reward.py", description="Try a yes/no reward question.")
    commands = parser.add_subparsers(dest="command", required=True)
    score = commands.add_parser("score", help="print P(target answer) for each line of a file")
    score.add_argument("file", help="one text per line; - reads standard input")
    evaluate = commands.add_parser("eval", help="AUROC, accuracy and calibration error on labelled texts")
    evaluate.add_argument("--labeled", required=True, help="CSV file with columns text,label (1/0)")
    for sub in (score, evaluate):
        sub.add_argument("--question", required=True, help='e.g. "Is this movie review positive?"')
        sub.add_argument("--model", default="smollm2-135m-instruct", help="hub name, folder or embedded name")
        sub.add_argument("--template", default="flan_review",
                         help=f"one of {sorted(TEMPLATES)} or a string with {{text}} and {{question}}")
        sub.add_argument("--target", default="yes", choices=["yes", "no"], help="the rewarded answer")
        sub.add_argument("--batch-size", type=int, default=32)
        sub.add_argument("--max-length", type=int, default=None, help="prompt token limit")
        sub.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
        sub.add_argument("--device", default=None)
        sub.add_argument("--no-chat-template", action="store_true", help="plain prompts (decoder-only)")
        sub.add_argument("--calibrate", action="store_true", help="contextual calibration")
    args = parser.parse_args(argv)

    template = args.template.replace("\\n", "\n")
    question = YesNoQuestion(args.question, target=args.target, template=template)
    if args.command == "score":
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
        with stream:
            texts = stream.read().splitlines()
    else:
        texts, labels = read_labeled(args.labeled)
    rm = ZeroShotRewardModel(
        args.model, questions=question, batch_size=args.batch_size, device=args.device, dtype=args.dtype,
        chat_template=not args.no_chat_template, calibrate=args.calibrate, max_length=args.max_length,
    )
    probs = rm.probabilities(texts)
    if args.command == "score":
        for p in probs:
            print(f"{p:.6f}")
        return
    accuracy = sum((p >= 0.5) == bool(y) for p, y in zip(probs, labels)) / max(len(labels), 1)
    print(f"examples   {len(labels)} ({sum(labels)} positive)")
    print(f"AUROC      {auroc(probs, labels):.4f}")
    print(f"accuracy   {accuracy:.4f} (P >= 0.5)")
    print(f"ECE        {expected_calibration_error(probs, labels):.4f} (10 bins)")
    print(f"mean P     {sum(probs) / max(len(probs), 1):.4f}")


if __name__ == "__main__":
    main()
