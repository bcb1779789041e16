"""A ZYN judge served over HTTP, for distributed RL engines (OpenRLHF, verl, TRL) on many machines.

    python zyn_serve.py --model smollm2-135m-instruct --question "Is this movie review positive?"
    python zyn_serve.py --model google/flan-t5-large --question "Is this movie review positive?" \\
        --question "Is this text too repetitive?" --target yes --target no --host 0.0.0.0 --token "$TOKEN"
    python zyn_serve.py --backend vllm --model Qwen/Qwen2.5-7B-Instruct --question "..."   # pip install vllm

POST /score speaks OpenRLHF's remote reward format; every field but query (or responses) is optional:
    {"query": [prompt + response], "prompts": [prompt], "labels": [...], "responses": [text],
     "questions": [null | "question" | {"question", "target", "weight", "template"} | [...]]}
 -> {"rewards": [transform(P)], "scores": [P in 0..1], "extra_logs": {"zyn_prob": [P], ...}}
GET /health -> {"status": "ok", backend, model, questions, limits, stats}

P is exactly what ZeroShotRewardModel computes in-process (Eq. 4 over the questions). Requests that
arrive within --batch-wait-ms of each other are scored as one batch, off the event loop, so that the
one-sample requests of many rollout actors still run as batches. Clients: `verl_compute_score` (verl's
custom_reward_function), `trl_reward_func` (TRL's reward_funcs), OpenRLHF's `--reward.remote_url`.
verl's and OpenRLHF's need only httpx (verl runs this file without registering it in sys.modules: keep
it free of `from __future__ import annotations`); TRL's imports zyn_reward for its join of prompt and
completion; the server imports torch, zyn_reward (the judge, its answer words, transforms, calibration,
errors) and the server stack.
"""

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import re
import socket
import sys
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields

DEFAULT_URL = "http://127.0.0.1:8000"
# special tokens of common policy tokenizers: <|im_end|>, <|eot_id|>, <｜end▁of▁sentence｜>, </s>, [PAD]...
SPECIAL_TOKENS = (r"<\|[^<>|\s]{1,48}\|>|<｜[^<>｜]{1,48}｜>|</?s>|<pad>|<unk>|<eos>|<bos>|<mask>"
                  r"|<start_of_turn>|<end_of_turn>|\[(?:PAD|CLS|SEP|MASK|UNK)\]")
QUESTION_KEYS = ("question", "target", "weight", "template")
SURROGATE = re.compile("[\\ud800-\\udfff]")  # a lone surrogate: valid as a JSON escape, not as text
JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # strings, escapes included
log = logging.getLogger("zyn_serve")


# --------------------------------------------------------------------------------------------------
# Judges: question_probabilities(questions or None for the defaults, texts) -> [question][text] P(target)
# --------------------------------------------------------------------------------------------------


class HFJudge:
    """ZeroShotRewardModel: any judge (T5 included), CPU or GPU; per-item question sets share its weights."""

    backend = "hf"

    def __init__(self, model, questions, tokenizer=None, cache_size: int = 16, **kwargs):
        from zyn_reward import ZeroShotRewardModel

        self._cls, self._kwargs, self._cache_size = ZeroShotRewardModel, kwargs, cache_size
        self.base = ZeroShotRewardModel(model, questions, tokenizer=tokenizer, **kwargs)
        self.questions, self.batch_size = self.base.questions, kwargs.get("batch_size")
        self.model_name = str(model) if isinstance(model, str) else self.base.model.name_or_path
        self._models: OrderedDict = OrderedDict()

    def question_probabilities(self, questions, texts: list[str]) -> list[list[float]]:
        key = questions and tuple((q.question, q.target, q.template, q.weight) for q in questions)
        rm = self.base if key is None else self._models.get(key)
        if rm is None:  # the same weights and tokenizer, other questions
            kwargs = {k: v for k, v in self._kwargs.items() if k != "device"}
            rm = self._cls(self.base.model, list(questions), tokenizer=self.base.tokenizer, **kwargs)
            self._models[key] = rm
            while len(self._models) > self._cache_size:
                self._models.popitem(last=False)
        elif key is not None:
            self._models.move_to_end(key)
        probs = rm.question_probabilities(texts)
        return [probs[q.name] for q in rm.questions]


class VLLMJudge:
    """vLLM's offline engine for decoder-only judges: P(yes) vs P(no) at the first answer token."""

    backend = "vllm"

    def __init__(self, model, questions, yes_words=("Yes",), no_words=("No",), chat_template=True,
                 calibrate=False, max_length=None, dtype=None, gpu_memory_utilization=0.85,
                 tensor_parallel_size=1, **_):
        from zyn_reward import CONTENT_FREE, UserError, YesNoQuestion
        from zyn_reward.model import default_max_length
        from zyn_reward.recipe import resolve_words

        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise UserError("--backend vllm needs vLLM (NVIDIA GPU): pip install vllm") from None
        from transformers import AutoConfig, AutoTokenizer

        from zyn_models import resolve_model_path

        path = resolve_model_path(str(model))
        config = AutoConfig.from_pretrained(path)
        if getattr(config, "is_encoder_decoder", False):
            raise UserError("vLLM serves decoder-only judges only; use --backend hf for T5 judges")
        questions = [questions] if isinstance(questions, (str, YesNoQuestion)) else list(questions)
        self.questions = [YesNoQuestion(q) if isinstance(q, str) else q for q in questions]
        self.model_name, self.tokenizer = str(model), AutoTokenizer.from_pretrained(path)
        self.chat = bool(chat_template and getattr(self.tokenizer, "chat_template", None))
        self.max_length = max_length or default_max_length(self.tokenizer, config)
        self.yes_ids = resolve_words(self.tokenizer, yes_words, "yes_words")
        self.no_ids = resolve_words(self.tokenizer, no_words, "no_words")
        self.llm = LLM(model=path, tokenizer=path, dtype=dtype or "auto", seed=0,
                       max_model_len=self.max_length + 1, gpu_memory_utilization=gpu_memory_utilization,
                       tensor_parallel_size=tensor_parallel_size)
        ids = self.yes_ids + self.no_ids
        if hasattr(SamplingParams(), "logprob_token_ids"):  # exact log-probs of exactly these ids
            self.params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids)
        else:  # the top-20; an id outside them is scored exactly below
            self.params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=20)
        self.prompt_params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        self._free = (list(CONTENT_FREE) if calibrate is True else [calibrate] if isinstance(calibrate, str)
                      else list(calibrate or []))
        self._calibration: dict = {}  # (question, template) -> offset

    def _ids(self, question, text: str) -> list[int]:
        def encode(t):
            prompt = question.format(t)
            if self.chat:
                prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                            tokenize=False, add_generation_prompt=True)
            return self.tokenizer(prompt, add_special_tokens=not self.chat)["input_ids"]

        ids = encode(text)
        if len(ids) <= self.max_length:
            return ids
        budget = self.max_length - len(encode(""))
        if budget < 1:
            raise ValueError(f"template and question alone exceed max_length {self.max_length}")
        text_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        keep_end = getattr(self.tokenizer, "truncation_side", "right") == "left"
        while True:  # cut the text, never the template: keep its start (its end for left truncation)
            ids = encode(self.tokenizer.decode(text_ids[-budget:] if keep_end else text_ids[:budget]))
            if len(ids) <= self.max_length or budget <= 1:
                return ids[-self.max_length:]
            budget = max(1, budget - (len(ids) - self.max_length))

    def _log_odds(self, prompts: list[list[int]]) -> list[float]:
        """log P(yes set) - log P(no set) at the next token of each prompt."""
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], self.params, use_tqdm=False)
        table = [{t: getattr(v, "logprob", v) for t, v in out.outputs[0].logprobs[0].items()} for out in outs]
        ids = self.yes_ids + self.no_ids
        missing = [(k, t) for k, row in enumerate(table) for t in ids if t not in row]
        if missing:  # outside the top-20: the exact log-prob of the id appended to the prompt
            extra = [{"prompt_token_ids": prompts[k] + [t]} for k, t in missing]
            for (k, t), out in zip(missing, self.llm.generate(extra, self.prompt_params, use_tqdm=False)):
                table[k][t] = getattr(out.prompt_logprobs[-1][t], "logprob", out.prompt_logprobs[-1][t])

        def lse(xs):
            top = max(xs)
            return top + math.log(sum(math.exp(x - top) for x in xs))

        return [lse([row[t] for t in self.yes_ids]) - lse([row[t] for t in self.no_ids]) for row in table]

    def question_probabilities(self, questions, texts: list[str]) -> list[list[float]]:
        """As ZeroShotRewardModel._target_log_odds, then sigmoid: [question][text] P(target)."""
        import torch

        questions = self.questions if questions is None else questions
        flat = self._log_odds([self._ids(q, t) for q in questions for t in texts]) if texts else []
        log_odds = torch.tensor(flat, dtype=torch.float64).view(len(questions), len(texts))
        sign = torch.tensor([1.0 if q.target == "yes" else -1.0 for q in questions], dtype=torch.float64)
        return torch.sigmoid((log_odds - self._calibrated(questions)[:, None]) * sign[:, None]).tolist()

    def _calibrated(self, questions):
        """zyn_reward's contextual calibration offset of each question (0 without --calibrate)."""
        import torch

        from zyn_reward import calibration_offset

        for q in questions:
            key = (q.question, q.template)
            if self._free and key not in self._calibration:
                free = torch.tensor([self._log_odds([self._ids(q, t) for t in self._free])], dtype=torch.float64)
                self._calibration[key] = float(calibration_offset(free)[0])
        return torch.tensor([self._calibration.get((q.question, q.template), 0.0) for q in questions],
                            dtype=torch.float64)


# --------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------


@dataclass
class Limits:
    max_items: int = 256  # items per request (413)
    max_chars: int = 32768  # characters per text, prompt, query, response or question (413)
    max_questions: int = 8  # questions per item (413)
    max_body_bytes: int = 64 * 2**20  # request body (413)
    max_depth: int = 32  # nesting of JSON arrays and objects in a body (400; a valid request needs 4)
    header_timeout: float = 10.0  # seconds to a request's last header from its first byte or a new connection
    body_timeout: float = 30.0  # seconds to read a request's body once its headers are in (408)


class RequestError(Exception):
    def __init__(self, status: int, message: str, **where):
        super().__init__(message)
        self.status, self.body = status, {"error": message, **where}


def _check_text(text: str, field: str, limits: Limits, **where) -> None:
    """413 for a text longer than max_chars; 400 for one that is not Unicode text (a lone surrogate)."""
    if len(text) > limits.max_chars:
        raise RequestError(413, f"{field} has {len(text)} characters, more than max_chars {limits.max_chars}",
                           field=field, limit="max_chars", **where)
    bad = SURROGATE.search(text)
    if bad:
        raise RequestError(400, f"{field} has a lone surrogate {bad.group()!r} at character {bad.start()}: "
                           "not valid Unicode text", field=field, **where)


def _depth(raw: bytes) -> int:
    """How deep the arrays and objects of a JSON body nest (strings skipped), without parsing it."""
    import numpy as np

    brackets = JSON_STRING.sub(b"", raw).translate(bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff"),
                                                   bytes(set(range(256)) - set(b"[{]}")))
    return int(np.cumsum(np.frombuffer(brackets, np.int8), dtype=np.int64).max(initial=0))


def _strings(body: dict, name: str, n: int | None, limits: Limits) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise RequestError(400, f"{name} must be a list of strings, got {type(value).__name__}", field=name)
    if n is not None and len(value) != n:
        raise RequestError(400, f"{name} has {len(value)} items, expected {n} (one per item)", field=name)
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise RequestError(400, f"{name}[{i}] must be a string, got {type(text).__name__}",
                               field=f"{name}[{i}]")
        _check_text(text, f"{name}[{i}]", limits, index=i)
    return value


def _question_set(entry, field: str, template: str, limits: Limits):
    """None (the server's questions) or, for one item, a tuple of (question, target, template, weight)."""
    from zyn_reward import YesNoQuestion

    if entry is None:
        return None
    many = isinstance(entry, list)
    entries = entry if many else [entry]
    if not entries:
        raise RequestError(400, f"{field} must name at least one question", field=field)
    if len(entries) > limits.max_questions:
        raise RequestError(413, f"{field} has {len(entries)} questions, more than max_questions "
                           f"{limits.max_questions}", field=field, limit="max_questions")
    out = []
    for j, spec in enumerate(entries):
        where = f"{field}[{j}]" if many else field
        spec = {"question": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict):
            raise RequestError(400, f"{where} must be a question string or an object with 'question'",
                               field=where)
        for key in spec:
            if key not in QUESTION_KEYS:
                raise RequestError(400, f"{where}: unknown key {key!r}; use {QUESTION_KEYS}",
                                   field=f"{where}.{key}")
        for key in ("question", "template"):
            if isinstance(spec.get(key), str):
                _check_text(spec[key], f"{where}.{key}", limits)
        try:
            out.append(YesNoQuestion(spec.get("question"), target=spec.get("target", "yes"),
                                     template=spec.get("template", template), weight=spec.get("weight", 1.0),
                                     name=f"q{j}"))
        except (TypeError, ValueError) as error:
            key = next((k for k in QUESTION_KEYS if str(error).startswith(k)), None)
            raise RequestError(400, f"{where}: {error}", field=f"{where}.{key}" if key else where) from None
    if sum(q.weight for q in out) <= 0:
        raise RequestError(400, f"{field}: question weights must not all be zero", field=field)
    return tuple((q.question, q.target, q.template, q.weight) for q in out)


def response_text(query: str, prompt: str | None, strip: re.Pattern, i: int = 0) -> str:
    """The response inside OpenRLHF's query (prompt + response, special tokens kept, maybe padded)."""
    rest = query
    if prompt is not None:
        if query.startswith(prompt):
            rest = query[len(prompt):]
        else:
            q, p = strip.sub("", query), strip.sub("", prompt)
            if not q.startswith(p):
                raise RequestError(400, f"prompts[{i}] is not the start of query[{i}], with or without "
                                   "special tokens (send responses instead)", field=f"prompts[{i}]")
            rest = q[len(p):]
    return strip.sub("", rest).strip()


def parse_request(raw: bytes, limits: Limits, template: str, strip: re.Pattern, question_from_labels=False):
    """Texts to judge and their question sets (None: the server's questions), or a RequestError."""
    depth = _depth(raw)
    if depth > limits.max_depth:
        raise RequestError(400, f"body nests arrays and objects {depth} deep, more than max_depth "
                           f"{limits.max_depth}", field="body", limit="max_depth")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise RequestError(400, f"body is not valid JSON: {error}", field="body") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"body must be a JSON object, got {type(body).__name__}", field="body")
    for name in ("query", "responses", "prompts", "labels", "questions"):
        value = body.get(name)
        if value is not None and not isinstance(value, list):
            raise RequestError(400, f"{name} must be a list, got {type(value).__name__}", field=name)
        if value is not None and len(value) > limits.max_items:
            raise RequestError(413, f"{name} has {len(value)} items, more than max_items {limits.max_items}",
                               field=name, limit="max_items")
    if body.get("query") is None and body.get("responses") is None:
        raise RequestError(400, "query is missing (give query, or responses)", field="query")
    query = _strings(body, "query", None, limits)
    n = len(query) if query is not None else len(body["responses"])
    responses = _strings(body, "responses", n, limits)
    prompts = _strings(body, "prompts", n, limits)
    labels = body.get("labels")
    if labels is not None and len(labels) != n:
        raise RequestError(400, f"labels has {len(labels)} items, expected {n} (one per item)",
                           field="labels")
    entries = body.get("questions")
    if entries is not None and len(entries) != n:
        raise RequestError(400, f"questions has {len(entries)} items, expected {n} (one per item)",
                           field="questions")
    texts, sets = [], []
    for i in range(n):
        if responses is not None:
            texts.append(responses[i])
        else:
            texts.append(response_text(query[i], prompts[i] if prompts is not None else None, strip, i))
        entry = entries[i] if entries is not None else None
        field = f"questions[{i}]"
        if entry is None and question_from_labels and labels is not None and labels[i] not in (None, ""):
            entry, field = labels[i], f"labels[{i}]"
            if not isinstance(entry, str):
                raise RequestError(400, f"{field} must be a question string", field=field)
        sets.append(_question_set(entry, field, template, limits))
    return texts, sets


# --------------------------------------------------------------------------------------------------
# Micro-batching: gather concurrent requests for a few ms, then one judge call in a worker thread
# --------------------------------------------------------------------------------------------------


class MicroBatcher:
    """Requests wait in a list; one task takes a micro-batch of them at a time to the judge's thread."""

    def __init__(self, judge, wait_s: float = 0.005, max_batch: int = 256):
        self.judge, self.wait_s, self.max_batch = judge, wait_s, max_batch
        multiple = getattr(judge, "batch_size", None)  # a fixed forward batch of the judge: keep it full
        self.multiple = multiple if isinstance(multiple, int) and multiple > 1 else 1
        self.stats = {"requests": 0, "items": 0, "batches": 0, "largest_batch": 0, "judge_errors": 0,
                      "waiting": 0}
        self._pending: list = []  # (texts, question sets, future, arrival time)
        self._size = 0  # items in self._pending
        self._wakeup: asyncio.Event | None = None  # something is pending
        self._full: asyncio.Event | None = None  # max_batch items are pending
        self._task: asyncio.Task | None = None
        self.closing = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="zyn-judge")  # one judge call at a time

    async def submit(self, texts: list[str], sets: list) -> list[tuple[float, list[float]]]:
        """(P, [P per question]) for each text, once its micro-batch has been judged."""
        if self.closing:
            raise RuntimeError("the server is shutting down")
        if self._task is None or self._task.done():  # started on first use (restarted, should it fail)
            self._wakeup, self._full = asyncio.Event(), asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        self._pending.append((texts, sets, future, time.monotonic()))
        self._size += len(texts)
        self._wakeup.set()
        if self._size >= self.max_batch:
            self._full.set()
        self.stats["waiting"] += 1
        try:
            return await future
        finally:
            self.stats["waiting"] -= 1

    async def close(self):
        self.closing = True
        if self._task is not None:
            self._wakeup.set()
            self._full.set()
            await self._task
        self._executor.shutdown(wait=True)

    async def _run(self):
        loop = asyncio.get_running_loop()
        while self._pending or not self.closing:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            jobs, size = [], 0
            try:
                # the gather window: until the oldest waiting request is wait_s old, or the batch is full
                left = self.wait_s - (time.monotonic() - self._pending[0][3])
                if left > 0 and not self.closing and self._size < self.max_batch:
                    self._full.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._full.wait(), left)
                # whole forward batches when there are enough items: the rest joins the next call, where the
                # requests that return meanwhile fill it up (a call of 44 would run as 32 + a wasteful 12)
                limit = self.max_batch
                if self.multiple > 1 and self._size >= self.multiple:
                    limit = min(limit, self._size // self.multiple * self.multiple)
                while self._pending and (not jobs or size + len(self._pending[0][0]) <= limit):
                    jobs.append(self._pending.pop(0))
                    size += len(jobs[-1][0])
                    self._size -= len(jobs[-1][0])
                results = await loop.run_in_executor(self._executor, self._score, jobs)
            except Exception as error:  # noqa: BLE001  (fail these requests, never the loop)
                log.exception("micro-batch failed")
                results = [error] * len(jobs)
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], size)
            for (texts, _, future, _), result in zip(jobs, results):
                self.stats["requests"] += 1
                if isinstance(result, BaseException):
                    self.stats["judge_errors"] += 1
                    if not future.done():
                        future.set_exception(result)
                else:
                    self.stats["items"] += len(texts)
                    if not future.done():
                        future.set_result(result)

    def _score(self, jobs) -> list:
        """Group the items of all jobs by question set; one judge call per set; Eq. (4) per item."""
        groups: dict = {}
        for j, (texts, sets, _, _) in enumerate(jobs):
            for i, (text, qs) in enumerate(zip(texts, sets)):
                groups.setdefault(qs, []).append((j, i, text))
        results: list = [[None] * len(job[0]) for job in jobs]
        for qs, members in groups.items():
            self._score_group(qs, members, results)
        return results

    def _score_group(self, qs, members, results):
        from zyn_reward import YesNoQuestion

        questions = qs and [YesNoQuestion(q, target=t, template=template, weight=w, name=f"q{j}")
                            for j, (q, t, template, w) in enumerate(qs)]
        weights = [q.weight for q in (questions or self.judge.questions)]
        try:
            probs = self.judge.question_probabilities(questions, [text for _, _, text in members])
            per_item = [[float(probs[qi][k]) for qi in range(len(weights))] for k in range(len(members))]
        except Exception as error:
            requests = sorted({j for j, _, _ in members})
            if len(requests) > 1:  # again one request at a time: a bad request fails only itself
                for j in requests:
                    self._score_group(qs, [m for m in members if m[0] == j], results)
                return
            log.exception("judge call failed")
            results[requests[0]] = error
            return
        for (j, i, _), per_q in zip(members, per_item):
            if not isinstance(results[j], BaseException):
                results[j][i] = (sum(w * p for w, p in zip(weights, per_q)) / sum(weights), per_q)


# --------------------------------------------------------------------------------------------------
# The ASGI app
# --------------------------------------------------------------------------------------------------


def create_app(judge, *, token: str | None = None, limits: Limits | None = None, batch_wait_ms: float = 5.0,
               max_batch: int = 256, transform: str = "centered", question_from_labels: bool = False,
               strip_tokens=(), template: str | None = None):
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from zyn_reward import TRANSFORMS, transform_reward

    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    limits = limits or Limits()
    template = template or judge.questions[0].template
    strip = re.compile("|".join([re.escape(t) for t in strip_tokens if t] + [SPECIAL_TOKENS]))
    batcher = MicroBatcher(judge, batch_wait_ms / 1000, max_batch)
    names = [q.name for q in judge.questions]

    def error(status, message, **where):
        return JSONResponse({"error": message, **where}, status_code=status)

    def authorized(request) -> bool:
        if not token:
            return True
        given = request.headers.get("authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else request.query_params.get("token", "")
        return hmac.compare_digest(given.encode(), token.encode())

    async def read_body(request) -> bytes:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limits.max_body_bytes:
            raise RequestError(413, f"body of {length} bytes is more than max_body_bytes "
                               f"{limits.max_body_bytes}", limit="max_body_bytes")
        chunks, size = [], 0
        try:
            async with asyncio.timeout(limits.body_timeout):  # a client that stalls is dropped
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limits.max_body_bytes:
                        raise RequestError(413, f"body is more than max_body_bytes {limits.max_body_bytes}",
                                           limit="max_body_bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise RequestError(408, f"body not received within body_timeout {limits.body_timeout} s "
                               f"({size} bytes came)", limit="body_timeout") from None
        return b"".join(chunks)

    async def score(request):
        if not authorized(request):
            return error(401, "missing or wrong token: send 'Authorization: Bearer <token>'", field="token")
        try:
            body = await read_body(request)
            texts, sets = parse_request(body, limits, template, strip, question_from_labels)
        except RequestError as bad:  # a body cut short leaves the connection unusable: close it
            close = {"connection": "close"} if bad.status in (408, 413) else None
            return JSONResponse(bad.body, status_code=bad.status, headers=close)
        except ClientDisconnect:  # gone before its body arrived: nobody to answer
            return error(400, "client disconnected")
        if not texts:
            return JSONResponse({"rewards": [], "scores": [], "extra_logs": {"zyn_prob": []}})
        try:
            results = await batcher.submit(texts, sets)
        except Exception as failure:  # noqa: BLE001
            status = 503 if batcher.closing else 500
            return error(status, f"judge failed: {type(failure).__name__}: {failure}")
        scores = [p for p, _ in results]
        extra = {"zyn_prob": scores}
        if len(names) > 1 and all(s is None for s in sets):  # per question, for the server's own questions
            extra.update({f"zyn_prob_{name}": [per_q[k] for _, per_q in results]
                          for k, name in enumerate(names)})
        return JSONResponse({"rewards": [transform_reward(p, transform) for p in scores], "scores": scores,
                             "extra_logs": extra})

    async def health(request):
        return JSONResponse({
            "status": "ok", "backend": judge.backend, "model": judge.model_name, "transform": transform,
            "questions": [{"name": q.name, "question": q.question, "target": q.target, "weight": q.weight}
                          for q in judge.questions],
            "limits": asdict(limits), "batch_wait_ms": batch_wait_ms, "max_batch": max_batch,
            "stats": dict(batcher.stats),
        })

    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail), path=request.url.path)

    async def server_error(request, exc):
        log.exception("unexpected error")
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await batcher.close()  # uvicorn has finished the requests in flight by now
        print(f"zyn_serve stopped: {json.dumps(batcher.stats)}", flush=True)

    routes = [Route("/score", score, methods=["POST"]), Route("/health", health, methods=["GET"])]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error},
                    lifespan=lifespan)
    app.state.batcher = batcher
    return app


# --------------------------------------------------------------------------------------------------
# Clients (httpx only)
# --------------------------------------------------------------------------------------------------


class ZynServeError(RuntimeError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status of a refused request, None when there was no answer


_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # one connection pool per event loop


def _endpoint(url: str | None) -> str:
    url = (url or os.environ.get("ZYN_SERVE_URL") or DEFAULT_URL).rstrip("/")
    return url if url.endswith("/score") else url + "/score"


async def score_remote(responses, questions=None, url: str | None = None, token: str | None = None,
                       timeout: float = 180.0, retries: int = 5) -> dict:
    """POST texts (and optional per-item questions) to a zyn_serve server; its JSON answer."""
    import httpx

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = _clients[loop] = httpx.AsyncClient(limits=httpx.Limits(max_connections=256))
    token = token or os.environ.get("ZYN_SERVE_TOKEN")
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    payload = {"responses": list(responses)}
    if questions is not None:
        payload["questions"] = list(questions)
    body = json.dumps(payload).encode()  # ASCII: a lone surrogate travels, and the server names it (400)
    endpoint, problem = _endpoint(url), ""
    for attempt in range(retries):
        try:
            reply = await client.post(endpoint, content=body, headers=headers, timeout=timeout)
        except httpx.TransportError as failure:
            problem = f"{type(failure).__name__}: {failure}"
        else:
            if reply.status_code == 200:
                return reply.json()
            problem = f"HTTP {reply.status_code}: {reply.text[:500]}"
            if reply.status_code < 500:  # refused: the same request would be refused again
                raise ZynServeError(f"{endpoint}: {problem}", reply.status_code)
        await asyncio.sleep(min(0.5 * 2**attempt, 8.0))
    raise ZynServeError(f"{endpoint}: no answer after {retries} tries ({problem})")


class _Coalescer:
    """Concurrent one-sample calls in one event loop, sent as one request every few ms (verl calls
    compute_score once per sample, all at once); a request the server refuses is retried item by item."""

    def __init__(self, url, token, wait_s: float = 0.002, max_items: int = 256):
        self.url, self.token, self.wait_s, self.max_items = url, token, wait_s, max_items
        self.pending: list = []
        self.tasks: set = set()  # keeps the requests in flight referenced

    async def score(self, text: str, question) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        if not self.pending:
            loop.call_later(self.wait_s, self._flush)
        future = loop.create_future()
        self.pending.append((text, question, future))
        return await future

    def _flush(self):
        batch, self.pending = self.pending, []
        for i in range(0, len(batch), self.max_items):
            task = asyncio.get_running_loop().create_task(self._send(batch[i:i + self.max_items]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _send(self, chunk):
        questions = [q for _, q, _ in chunk]
        if all(q is None for q in questions):
            questions = None
        try:
            out = await score_remote([t for t, _, _ in chunk], questions, url=self.url, token=self.token)
        except Exception as error:  # noqa: BLE001  (every waiting caller hears of it)
            if isinstance(error, ZynServeError) and error.status is not None and len(chunk) > 1:
                await asyncio.gather(*[self._send([item]) for item in chunk])  # a bad item fails only itself
                return
            for _, _, future in chunk:
                if not future.done():
                    future.set_exception(error)
            return
        for k, (_, _, future) in enumerate(chunk):
            if not future.done():
                future.set_result((out["rewards"][k], out["scores"][k]))


_coalescers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


async def verl_compute_score(data_source, solution_str, ground_truth, extra_info=None, url=None, token=None,
                             **kwargs) -> dict:
    """verl custom_reward_function (async). The question(s) travel in extra_info["question"/"questions"]
    (plus "target"), else the server's; url/token from custom_reward_function.reward_kwargs or
    $ZYN_SERVE_URL / $ZYN_SERVE_TOKEN. Concurrent calls share one HTTP request."""
    info = extra_info if isinstance(extra_info, dict) else {}
    question = info.get("questions", info.get("question"))
    if isinstance(question, str) and "target" in info:
        question = {"question": question, "target": info["target"]}
    per_loop = _coalescers.setdefault(asyncio.get_running_loop(), {})
    key = (_endpoint(url), token or os.environ.get("ZYN_SERVE_TOKEN"))
    coalescer = per_loop.get(key) or per_loop.setdefault(key, _Coalescer(*key))
    reward, p = await coalescer.score(solution_str, question)
    return {"score": reward, "zyn_prob": p}


def trl_reward_func(url=None, token=None, include_prompt: bool = True, question_column: str = "question",
                    chunk: int = 256):
    """An async TRL reward function f(prompts, completions, **kwargs) -> list[float] served by zyn_serve.
    A dataset column named `question_column` gives per-sample questions; P(target) is logged as zyn/prob."""

    async def zyn_remote(prompts=None, completions=None, log_metric=None, **kwargs) -> list[float]:
        from zyn_reward.model import join_turns  # as ZeroShotRewardModel.as_trl_reward joins them

        completions = list(completions)
        prompts = list(prompts) if prompts is not None and include_prompt else [""] * len(completions)
        texts = [join_turns(p, c, i) for i, (p, c) in enumerate(zip(prompts, completions))]
        questions = kwargs.get(question_column)
        parts = await asyncio.gather(*[
            score_remote(texts[i:i + chunk], None if questions is None else list(questions[i:i + chunk]),
                         url=url, token=token) for i in range(0, len(texts), chunk)])
        scores = [p for part in parts for p in part["scores"]]
        if log_metric is not None and scores:
            log_metric("zyn/prob", sum(scores) / len(scores))
        return [r for part in parts for r in part["rewards"]]

    return zyn_remote


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


POSITIVE_FLAGS = ("max_items", "max_chars", "max_questions", "max_body_bytes", "max_depth", "header_timeout",
                  "body_timeout", "max_batch", "batch_size", "max_length", "graceful_timeout",
                  "tensor_parallel_size", "gpu_memory_utilization")


def build_judge(args):
    from zyn_reward import TEMPLATES, ModelLoadError, UserError, YesNoQuestion

    n = len(args.question)
    for name in ("target", "weight"):
        values = getattr(args, name) or []
        if len(values) not in (0, 1, n):
            raise UserError(f"give --{name} once, or once per --question ({n}), got {len(values)}")
    targets = args.target or ["yes"]
    weights = args.weight or [1.0]
    template = TEMPLATES.get(args.template, args.template.replace("\\n", "\n"))
    try:
        questions = [YesNoQuestion(q, target=targets[min(i, len(targets) - 1)], template=template,
                                   weight=weights[min(i, len(weights) - 1)])
                     for i, q in enumerate(args.question)]
    except (TypeError, ValueError) as error:
        raise UserError(str(error)) from None
    kwargs = {"chat_template": not args.no_chat_template, "dtype": args.dtype, "calibrate": args.calibrate,
              "max_length": args.max_length}
    if args.batch_size:  # else the judge's own default grouping
        kwargs["batch_size"] = args.batch_size
    try:
        if args.backend == "vllm":
            return VLLMJudge(args.model, questions, gpu_memory_utilization=args.gpu_memory_utilization,
                             tensor_parallel_size=args.tensor_parallel_size, **kwargs)
        return HFJudge(args.model, questions, device=args.device, **kwargs)
    except (ModelLoadError, ValueError) as error:  # as zyn_reward's command line: the user's to fix
        raise UserError(str(error)) from error


def http_protocol(header_timeout: float):
    """uvicorn's h11 protocol, which also closes a connection whose next request's headers are not all in
    within header_timeout seconds of the connection's start or of that request's first byte."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        _timer = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def data_received(self, data):
            if self._timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the first bytes of the next request
            super().data_received(data)
            if self._timer is not None and self.cycle is not self._since:  # its headers are in
                self._timer.cancel()
                self._timer = None

        def connection_lost(self, exc):
            if self._timer is not None:
                self._timer.cancel()
            super().connection_lost(exc)

        def _arm(self):
            self._since = self.cycle
            self._timer = self.loop.call_later(header_timeout, self._expire)

        def _expire(self):
            self._timer = None
            if self.cycle is self._since and not self.transport.is_closing():
                self.transport.close()

    return Protocol


def server_config(app, limits: Limits, **kwargs):
    """uvicorn's settings for `app`: the header timeout of `limits`, 30 s keep-alive."""
    import uvicorn

    return uvicorn.Config(app, http=http_protocol(limits.header_timeout), timeout_keep_alive=30, **kwargs)


def main(argv=None):
    """The command line. A start-up error (bad flag, judge not found, port taken) is one line
    `error: ...` on stderr and exit status 2."""
    from zyn_reward import ModelLoadError, UserError
    from zyn_reward.cli import OneLineParser
    from zyn_reward.errors import one_line

    try:
        serve(OneLineParser, argv)
    except (UserError, ModelLoadError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(parser_class, argv=None):
    from zyn_reward import TRANSFORMS, UserError

    parser = parser_class(prog="zyn_serve.py", description="Serve a ZYN yes/no judge over HTTP.")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="hub name, folder or embedded name")
    parser.add_argument("--question", action="append", required=True, help="repeat for an ensemble (Eq. 4)")
    parser.add_argument("--target", action="append", choices=["yes", "no"], help="once, or once per question")
    parser.add_argument("--weight", action="append", type=float, help="once, or once per question")
    parser.add_argument("--template", default="flan_review", help="a zyn_reward TEMPLATES name or a string")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept other machines")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--token", default=os.environ.get("ZYN_SERVE_TOKEN"),
                        help="require 'Authorization: Bearer TOKEN' (or ?token=); default $ZYN_SERVE_TOKEN")
    parser.add_argument("--transform", choices=TRANSFORMS, default="centered", help="rewards = transform(P)")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="gather window of a micro-batch")
    parser.add_argument("--max-batch", type=int, default=256, help="items per judge call")
    parser.add_argument("--batch-size", type=int, default=None, help="texts per judge forward pass (hf)")
    parser.add_argument("--max-items", type=int, default=Limits.max_items, help="items per request")
    parser.add_argument("--max-chars", type=int, default=Limits.max_chars, help="characters per text")
    parser.add_argument("--max-questions", type=int, default=Limits.max_questions, help="questions per item")
    parser.add_argument("--max-body-bytes", type=int, default=Limits.max_body_bytes, help="bytes per body")
    parser.add_argument("--max-depth", type=int, default=Limits.max_depth, help="JSON nesting of a body")
    parser.add_argument("--header-timeout", type=float, default=Limits.header_timeout,
                        help="seconds for a request's headers (from a new connection or its first byte)")
    parser.add_argument("--body-timeout", type=float, default=Limits.body_timeout,
                        help="seconds for a request's body once its headers are in")
    parser.add_argument("--question-from-labels", action="store_true",
                        help="a non-empty string label is the item's question (OpenRLHF --data.label_key)")
    parser.add_argument("--strip-token", action="append", default=[], help="more special tokens to strip")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--max-length", type=int, default=None, help="prompt token limit")
    parser.add_argument("--no-chat-template", action="store_true")
    parser.add_argument("--calibrate", action="store_true", help="contextual calibration")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="vllm backend")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm backend")
    parser.add_argument("--graceful-timeout", type=float, default=60.0, help="seconds to finish on SIGTERM")
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args(argv)
    for name in POSITIVE_FLAGS:  # checked before anything starts, not at the first request
        value = getattr(args, name)
        if value is not None and not 0 < value < math.inf:
            raise UserError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if not 0 <= args.batch_wait_ms < math.inf:
        raise UserError(f"--batch-wait-ms must be 0 or more, got {args.batch_wait_ms}")
    if args.gpu_memory_utilization > 1:
        raise UserError(f"--gpu-memory-utilization must be at most 1, got {args.gpu_memory_utilization}")
    limits = Limits(**{f.name: getattr(args, f.name) for f in fields(Limits)})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import uvicorn

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:  # the port is taken before the judge loads (minutes), and refuses connections until it has
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    except (OSError, OverflowError) as error:  # taken, not this machine's address, or no such port
        sock.close()
        why = getattr(error, "strerror", None) or error
        raise UserError(f"cannot listen on {args.host} port {args.port}: {why}") from None
    judge = build_judge(args)
    app = create_app(judge, token=args.token, batch_wait_ms=args.batch_wait_ms, max_batch=args.max_batch,
                     transform=args.transform, question_from_labels=args.question_from_labels,
                     strip_tokens=args.strip_token, limits=limits)
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    host, port = sock.getsockname()[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.token:
        log.warning("listening on %s without --token: anyone who reaches this port can use the judge", host)
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"zyn_serve listening on http://{shown}:{port} "
          f"({judge.backend}, {judge.model_name}, {len(judge.questions)} question(s))", flush=True)
    config = server_config(app, limits, log_level="info", access_log=args.access_log, lifespan="on",
                           timeout_graceful_shutdown=args.graceful_timeout)
    uvicorn.Server(config).run(sockets=[sock])  # SIGTERM/SIGINT: stop accepting, finish, exit


if __name__ == "__main__":
    sys.exit(main())
