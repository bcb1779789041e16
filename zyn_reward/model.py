"""ZeroShotRewardModel: the recipe (recipe.py) made fast and usable in training. Texts are scored in
batches sized by a token budget, the prompt prefix that all texts share runs once (its key/value cache
is reused), several questions share each text's common part, the judge may compute in bf16/fp16, and
scores can be calibrated on content-free texts. tests/test_reward.py holds it to the recipe's reference.
"""

from __future__ import annotations

import copy
import inspect
import threading
from typing import Callable, Sequence

import torch

from .errors import UserError
from .loading import load_judge, torch_device
from .recipe import TRANSFORMS, YesNoQuestion, resolve_words, transform_reward

CONTENT_FREE = ("N/A", "", "[MASK]")  # content-free inputs of Zhao et al. (2021)
MAX_LENGTH_CAP = 1024  # default prompt limit when the tokenizer reports no sensible one
# config attributes of models that change the logits after their LM head
POST_HEAD_ATTRIBUTES = ("final_logit_softcapping", "logit_scale", "logits_scaling")
# Tokens per forward pass (texts x longest prompt) when batch_size and token_budget are left unset. On a
# CPU a pass should keep its activations in the cache: on an idle 2-core Xeon, SmolLM2-135M scored 32
# reviews (~180-token prompts) fastest in batches of 4-8 texts (~700-1400 tokens) and 1.4x slower in one
# pass of 32 (~5800 tokens); a GPU wants large passes. benchmarks/bench_reward.py measures the choice.
TOKEN_BUDGET = {"cpu": 1024, "cuda": 16384, "mps": 4096, "xpu": 16384}


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
        question's suffix after it. False runs every prompt whole, still in batches (recipe.py's
        reference_probabilities runs them one at a time).
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

        self.model, self.tokenizer, self.autocast_dtype = load_judge(model, tokenizer, device, dtype)
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
        self.yes_ids = resolve_words(self.tokenizer, yes_words, "yes_words")
        self.no_ids = resolve_words(self.tokenizer, no_words, "no_words")
        shared = set(self.yes_ids) & set(self.no_ids)
        if shared:
            raise UserError(f"yes_words and no_words share token ids {sorted(shared)}")
        if max_length is None:
            max_length = default_max_length(self.tokenizer, config)
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
        device = torch_device(device)
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
            texts = [join_turns(p, c, i) for i, (p, c) in enumerate(zip(prompts, completions))]
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


def calibration_offset(free_log_odds: torch.Tensor) -> torch.Tensor:
    """Contextual calibration (Zhao et al., 2021): [questions, content-free texts] log-odds of "yes" ->
    [questions] log-odds of the mean P(yes), subtracted from every text's log-odds."""
    p_yes = torch.sigmoid(free_log_odds).mean(-1)
    return torch.log(p_yes) - torch.log1p(-p_yes)


def join_turns(prompt, completion, index: int) -> str:
    """One text to judge from a TRL prompt and completion: strings concatenated, chat messages joined by
    newlines (system turns left out)."""

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


def default_max_length(tokenizer, config) -> int:
    """The prompt token limit: the tokenizer's and the model's, at most MAX_LENGTH_CAP."""
    limits = [MAX_LENGTH_CAP, getattr(tokenizer, "model_max_length", None)]
    limits += [getattr(config, k, None) for k in ("max_position_embeddings", "n_positions")]
    return min(int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < 1e9)
