"""PPOTrainer: rollouts, the PPO update, evaluation and checkpoints (see the package docstring)."""

from __future__ import annotations

import atexit
import contextlib
import datetime
import math
import os
import random
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch


from . import runio
from .card import write_model_card
from .config import TRLConfig, UserError, collection_minibatches, step_budget
from .core import (AdaptiveKLController, FixedKLController, RunningMoments, gae_advantages, kl_penalty_rewards,
                   logprobs_of_labels, masked_mean, pad_cat, policy_loss, trim, value_loss, whiten)
from .model import load_causal_lm, load_policy, position_ids_from, quiet_hf


def check_scores(scores: Any, samples: list[str], what: str = "reward_fn") -> torch.Tensor:
    """One finite float per sample, or a clear error naming the sample."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().reshape(-1).tolist()
    elif isinstance(scores, np.ndarray):
        scores = scores.reshape(-1).tolist()
    if not isinstance(scores, (list, tuple)):
        raise TypeError(f"{what} must return a list of floats (one per sample), got {type(scores).__name__}")
    if len(scores) != len(samples):
        raise ValueError(f"{what} returned {len(scores)} values for {len(samples)} samples")
    out = []
    for i, (s, text) in enumerate(zip(scores, samples)):
        if isinstance(s, torch.Tensor) and s.numel() == 1:
            s = s.item()
        if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)):
            raise TypeError(f"{what} returned a non-number for sample {i} ({text[:80]!r}): {s!r} ({type(s).__name__})")
        if not math.isfinite(float(s)):
            raise ValueError(f"{what} returned {float(s)} for sample {i} ({text[:80]!r})")
        out.append(float(s))
    return torch.tensor(out, dtype=torch.float32)


def split_prompt(p: Any) -> tuple[str, dict]:
    """A prompt is a string or a dict {"prompt": str, **metadata} (metadata reach reward_fn as lists)."""
    if isinstance(p, str):
        return p, {}
    if isinstance(p, dict) and isinstance(p.get("prompt"), str):
        return p["prompt"], {k: v for k, v in p.items() if k != "prompt"}
    raise UserError(f"a prompt must be a string or a dict with a 'prompt' string, got {p!r:.80}")


def cut_at_stop(text: str, stop_sequences: Sequence[str] | None) -> int | None:
    """Index of the first stop sequence in text, or None."""
    hits = [text.find(s) for s in stop_sequences or [] if s and s in text]
    return min(hits) if hits else None


def check_launch(environ=os.environ) -> None:
    """Stop when accelerate was asked for several processes but started one. `accelerate launch --cpu
    --num_processes N`, and `--num_processes N` on a machine with fewer than N GPUs, go through accelerate's
    single-process launcher: it sets MASTER_ADDR (only when N > 1) but no RANK/WORLD_SIZE (its one multi-CPU
    path is mpirun, with --mpirun_hostfile), so the run would silently be one process."""
    launched = {"ACCELERATE_USE_CPU", "MASTER_ADDR"} <= set(environ)
    ranked = any(k in environ for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                                        "MV2_COMM_WORLD_SIZE"))
    if launched and not ranked:
        raise UserError("accelerate launch started one process where --num_processes asked for more (with --cpu, "
                        "or with fewer GPUs, it runs one); for CPU processes run `torchrun --nproc_per_node N "
                        "script.py ...`, for one process drop --num_processes")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _no_resume(value) -> bool:
    return value in (None, False, "", "none", "None", "false")


def gather_cat(accelerator, x: torch.Tensor) -> torch.Tensor:
    """Concatenate a 1-D tensor over all processes (on the CPU)."""
    x = x.detach().float().reshape(-1).cpu()
    if accelerator.num_processes == 1:
        return x
    from accelerate.utils import gather_object

    return torch.tensor(gather_object(x.tolist()))


def mean_across(accelerator, values: dict) -> dict:
    """Each value averaged over all processes."""
    if accelerator.num_processes == 1:
        return values
    keys = sorted(values)
    t = accelerator.reduce(torch.tensor([float(values[k]) for k in keys], device=accelerator.device), reduction="mean")
    return {k: v.item() for k, v in zip(keys, t)}


def global_mean_var(accelerator, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance of the masked entries of x over all processes."""
    s = accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum()]), reduction="sum")
    mean = s[0] / s[1]
    sq = accelerator.reduce((((x - mean) * mask) ** 2).sum(), reduction="sum")
    return mean, sq / (s[1] - 1).clamp(min=1)


class Prompts:
    """The train and evaluation prompts, tokenized once, and the shuffled passes rollouts draw them in
    (identical on all ranks; each rank takes its own slice)."""

    def __init__(self, tokenizer, max_length: int, seed: int, warn: bool = True):
        self.tokenizer, self.max_length, self.warn = tokenizer, max_length, warn
        self.train: list[dict] = []
        self.eval: list[dict] = []
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.pos = 0

    def tokenize(self, prompts: Sequence, name: str) -> list[dict]:
        if prompts is None or len(prompts) == 0:
            raise UserError(f"{name} is empty: give at least one prompt")
        tok, items, n_cut = self.tokenizer, [], 0
        for i, p in enumerate(prompts):
            text, meta = split_prompt(p)
            ids = tok(text, add_special_tokens=False).input_ids
            if len(ids) == 0:
                warnings.warn(f"{name}[{i}] is empty; generation starts from the BOS/EOS token instead")
                ids = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
            if len(ids) > self.max_length:
                n_cut += 1
                ids = ids[-self.max_length:] if tok.truncation_side == "left" else ids[: self.max_length]
                text = tok.decode(ids, skip_special_tokens=True)
            items.append(dict(ids=ids, text=text, meta=meta))
        if n_cut and self.warn:
            warnings.warn(f"{n_cut} of {len(items)} {name} were longer than seq_length - max_new_tokens = "
                          f"{self.max_length} tokens and were cut on the {tok.truncation_side} (tokenizer.truncation_side)")
        return items

    def next_indices(self, n: int) -> list[int]:
        """The next n indices of shuffled passes over the train prompts."""
        out = []
        while len(out) < n:
            if self.pos >= len(self.order):
                self.order = torch.randperm(len(self.train), generator=self.generator).tolist()
                self.pos = 0
            take = self.order[self.pos : self.pos + n - len(out)]
            self.pos += len(take)
            out += take
        return out

    def state_dict(self) -> dict:
        return dict(prompt_gen=self.generator.get_state(), prompt_order=self.order, prompt_pos=self.pos)

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["prompt_gen"])
        self.order, self.pos = state["prompt_order"], state["prompt_pos"]


class InverseCDFSampling:
    """A logits processor that draws the next token itself: softmax, cumulative sum (float64) and one uniform
    number per row (inverse transform sampling, exact). It returns 0 at the drawn token and -inf elsewhere,
    so `generate(do_sample=False)` picks it. torch.multinomial draws one exponential number per vocabulary
    entry (49152 per row for SmolLM2): on a 2-core CPU that took ~0.1 s of every 0.3 s decoding step."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cdf = torch.softmax(scores.double(), -1).cumsum(-1)
        u = torch.rand(scores.shape[0], 1, dtype=torch.float64, device=scores.device) * cdf[:, -1:]
        drawn = torch.searchsorted(cdf, u, right=True).clamp_(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, drawn, 0.0)


# sampling settings the fast path applies itself (with transformers' own warpers, in generate's order)
FAST_SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p")
SAMPLING_ONLY_KEYS = ("top_h", "typical_p", "epsilon_cutoff", "eta_cutoff")


def fast_sampling_kwargs(gen_kwargs: dict, generation_config) -> dict:
    """gen_kwargs with plain ancestral sampling (do_sample, temperature, top_k, top_p, min_p) done by
    InverseCDFSampling: the same distribution as transformers' sampling, different random numbers. Anything
    else (beams, typical_p, ...) is returned unchanged for transformers to sample."""
    from transformers import (LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)

    setting = lambda k: gen_kwargs.get(k, getattr(generation_config, k, None))  # noqa: E731
    if (not setting("do_sample") or (setting("num_beams") or 1) > 1 or (setting("num_return_sequences") or 1) > 1
            or any(setting(k) not in (None, 1.0) for k in SAMPLING_ONLY_KEYS)):
        return gen_kwargs
    temperature, top_k, top_p, min_p = (setting(k) for k in FAST_SAMPLING_KEYS)
    warpers = []
    if temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    if min_p is not None:
        warpers.append(MinPLogitsWarper(min_p))
    kwargs = {k: v for k, v in gen_kwargs.items() if k not in FAST_SAMPLING_KEYS}
    kwargs.update(do_sample=False, logits_processor=LogitsProcessorList(
        [*(gen_kwargs.get("logits_processor") or []), *warpers, InverseCDFSampling()]))
    return kwargs


class Sampler:
    """Samples continuations of left-padded prompts; a response ends at (and includes) its first EOS, or
    at the shortest token prefix that contains a stop sequence."""

    def __init__(self, policy, tokenizer, stop_sequences: Sequence[str], autocast, device):
        self.policy, self.tokenizer, self.stop_sequences = policy, tokenizer, list(stop_sequences)
        self.autocast, self.device = autocast, device

    def left_pad(self, ids_list: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(x) for x in ids_list)
        ids = torch.full((len(ids_list), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids_list), width), dtype=torch.long)
        for i, x in enumerate(ids_list):
            ids[i, width - len(x):] = torch.tensor(x)
            mask[i, width - len(x):] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def __call__(self, items: list[dict], gen_kwargs: dict, keep_trunk: bool = False) -> dict:
        """Prompt ids/mask, response ids/mask and the decoded texts; keep_trunk (frozen trunk only): also the
        trunk's hidden states that generation computed, so that the rollout forward runs only the top blocks."""
        tok, eos = self.tokenizer, self.tokenizer.eos_token_id
        query, qmask = self.left_pad([it["ids"] for it in items])
        recording = self.policy.recording_trunk() if keep_trunk else contextlib.nullcontext()
        with self.autocast, recording as states:
            lm = self.policy.lm
            out = lm.generate(input_ids=query, attention_mask=qmask, **fast_sampling_kwargs(gen_kwargs, lm.generation_config))
        response = out[:, query.shape[1]:]
        if response.shape[1] == 0:
            response = torch.full((len(items), 1), eos, dtype=torch.long, device=self.device)
        is_eos = response == eos
        rmask = (~((is_eos.long().cumsum(1) - is_eos.long()) > 0)).long()  # up to and including the first EOS
        outputs = []
        for i in range(len(items)):
            toks = response[i, :int(rmask[i].sum())].tolist()
            body = toks[:-1] if toks and toks[-1] == eos else toks
            text = tok.decode(body, skip_special_tokens=True)
            cut = cut_at_stop(text, self.stop_sequences)
            if cut is not None:
                for m in range(1, len(body) + 1):  # the shortest token prefix that contains the stop sequence
                    if cut_at_stop(tok.decode(body[:m], skip_special_tokens=True), self.stop_sequences) is not None:
                        break
                rmask[i, m:] = 0
                text = text[:cut].rstrip()
            outputs.append(text)
        width = max(int(rmask.sum(1).max()), 1)
        trunk = None
        if keep_trunk and states and sum(x.shape[1] for x in states) >= query.shape[1] + width - 1:
            # states of every token but the last sampled one, which no forward pass has read yet; its own
            # output is never used (logits and values stop one short), so a zero state stands in for it
            trunk = torch.cat(states, 1)[:, : query.shape[1] + width]
            if trunk.shape[1] < query.shape[1] + width:
                trunk = torch.cat([trunk, trunk.new_zeros(trunk.shape[0], 1, trunk.shape[2])], 1)
        return dict(
            trunk=trunk, query=query, query_mask=qmask, response=response[:, :width], response_mask=rmask[:, :width],
            prompts=[it["text"] for it in items], outputs=outputs,
            samples=[it["text"] + o for it, o in zip(items, outputs)],
            meta={k: [it["meta"].get(k) for it in items] for k in (items[0]["meta"] if items else {})},
        )


class PPOTrainer:
    """Holds the policy, reference, optimizer, KL controller and rollout store; `learn()` runs the loop.

    Construction checks the run directory (same run, one writer, nothing overwritten) before any model
    loads, then loads the models, from the latest good checkpoint when the run continues."""

    def __init__(self, config: TRLConfig, reward_fn: Callable, metric_fn: Callable | None = None,
                 stop_sequences: Sequence[str] | None = None, prompts: Sequence | None = None,
                 eval_prompts: Sequence | None = None, run_info: dict | None = None, overwrite: bool = False):
        from accelerate import Accelerator

        if isinstance(config, dict):
            config = TRLConfig.from_dict(config)
        self.config, self.reward_fn, self.metric_fn = config, reward_fn, metric_fn
        check_launch()
        # processes started by torchrun on a machine without CUDA: CPU processes talking over gloo
        multi_cpu = int(os.environ.get("LOCAL_RANK", -1)) != -1 and not torch.cuda.is_available()
        self.accelerator = Accelerator(cpu=True) if multi_cpu else Accelerator()
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        if self.world > 1:  # leave the process group together at exit, after the caller's own use of the trainer
            atexit.register(leave_process_group, self.accelerator)
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device
        tc, mc = config.train, config.method
        self.scale_reward = str(mc.scale_reward).lower() if str(mc.scale_reward).lower() in ("ref", "running") else None
        self.max_new_tokens = int(mc.gen_kwargs.get("max_new_tokens", 40))
        self.max_prompt_length = tc.seq_length - self.max_new_tokens
        self.minibatches = collection_minibatches(config)
        self.total_steps = step_budget(config)  # one rule for every trainer (config.py)

        # the run: what defines it, where it lives, whether it continues (decided on the main process)
        self.record = dict(config=config.to_dict(), run=run_info or {})
        self.run_dir = Path(tc.logging_dir or os.path.join("runs", f"{tc.project_name}-{runio.short_hash(self.record)}"))
        self.lock = runio.RunLock(self.run_dir) if self.is_main else None
        self.logger: runio.RunLogger | None = None
        self.checkpoint = self._decide_start(overwrite)

        seed_everything(tc.seed + self.rank)
        self.policy, self.tokenizer = load_policy(config, str(self.checkpoint / "policy") if self.checkpoint else None)
        self.ref_model = None
        if not self.policy.has_hydra:
            self.ref_model = load_causal_lm(config.model.model_path, config.model.dtype, **config.model.model_extra_configs)
            self.ref_model.requires_grad_(False).train(False).to(self.device)
        opt_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[config.optimizer.name.lower()]
        opt_kwargs = dict(config.optimizer.kwargs)
        if opt_cls is not torch.optim.SGD and not {"fused", "foreach"} & set(opt_kwargs) and self.device.type in ("cpu", "cuda"):
            opt_kwargs["fused"] = True  # one kernel for all tensors (torch's CPU default loops over them in Python)
        self.optimizer = opt_cls([p for p in self.policy.parameters() if p.requires_grad], **opt_kwargs)
        sched = config.scheduler.name.lower()
        if sched == "cosine_annealing":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, **config.scheduler.kwargs)
        elif sched == "linear":
            self.scheduler = torch.optim.lr_scheduler.LinearLR(self.optimizer, **config.scheduler.kwargs)
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        self.model, self.optimizer = self.accelerator.prepare(self.policy, self.optimizer)
        self.kl_ctl = AdaptiveKLController(mc.init_kl_coef, mc.target, mc.horizon) if mc.target is not None \
            else FixedKLController(mc.init_kl_coef)
        self.running = RunningMoments()
        self.ref_mean, self.ref_std = mc.ref_mean, mc.ref_std
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if config.model.autocast == "bfloat16" \
            else contextlib.nullcontext()

        # loop state: all of it goes into checkpoints
        self.step, self.n_collections, self.n_evals, self.episodes = 0, 0, 0, 0
        self.store: dict | None = None
        self.order: list[int] | None = None
        self.mb_index, self.inner = 0, 0  # the next minibatch of the store, and the next epoch on it
        self.store_kl, self.last_approx_kl = 0.0, 0.0
        self.rollout_stats: dict = {}
        self.elapsed_before, self.t_start, self.wandb_id = 0.0, time.time(), None
        self.sampler = Sampler(self.policy, self.tokenizer, stop_sequences or [], self.autocast, self.device)
        self.prompts = Prompts(self.tokenizer, self.max_prompt_length, tc.seed, warn=self.is_main)
        self.train_prompts = self.prompts.tokenize(prompts, "prompts") if prompts is not None else []
        self.eval_prompts = self.prompts.tokenize(eval_prompts, "eval_prompts") if eval_prompts is not None else []

    # ----------------------------------------------------------------------------------- the run directory
    def _decide_start(self, overwrite: bool) -> Path | None:
        """Lock the run directory, check that it holds this run (or nothing), pick the checkpoint to continue
        from. Runs on the main process; the others follow its decision."""
        resume = self.config.train.resume_from_checkpoint
        decision: dict = {}
        if self.is_main:
            try:
                self.lock.acquire()
                if not _no_resume(resume) and resume not in ("auto", True):  # an explicit checkpoint folder
                    problem = runio.verify_checkpoint(Path(resume))
                    if problem:
                        raise UserError(f"train.resume_from_checkpoint={resume!r}: {problem}")
                    decision["checkpoint"] = str(resume)
                elif runio.check_run_dir(self.run_dir, self.record, not _no_resume(resume), overwrite) == "continue":
                    runio.tidy_run_dir(self.run_dir)
                    found = runio.good_checkpoint(self.run_dir)
                    if found is None:  # the run died before its first checkpoint: start it again, keep the old
                        moved = runio.move_aside(self.run_dir)
                        self.lock = runio.RunLock(self.run_dir).acquire()
                        print(f"zyn_ppo: {self.run_dir} has no checkpoint to continue from; its partial results "
                              f"were moved to {moved} and the run starts again", file=sys.stderr)
                    decision["checkpoint"] = str(found) if found else None
            except UserError as error:
                decision["error"] = str(error)
        if self.world > 1:
            from accelerate.utils import broadcast_object_list

            decision = broadcast_object_list([decision], from_process=0)[0]
        if "error" in decision:
            self.close()
            raise UserError(decision["error"])
        return Path(decision["checkpoint"]) if decision.get("checkpoint") else None

    def _open_run(self) -> None:
        """Write run.json and config.yaml, cut metrics.jsonl back to the checkpoint, open the logger."""
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            runio.write_json_atomic(self.run_dir / runio.RUN_RECORD, {**self.record, "environment": runio.environment()})
            runio.write_text_atomic(self.run_dir / "config.yaml", str(self.config))
            if self.checkpoint is not None:  # what was logged after the checkpoint is done again
                runio.keep_metrics_until(self.run_dir / "metrics.jsonl", self.step)
                runio.keep_samples_until(self.run_dir, self.step)
        tc = self.config.train
        self.logger = runio.RunLogger(self.run_dir, tc.tracker, self.record, enabled=self.is_main, resume_id=self.wandb_id,
                                      project=tc.project_name, entity=tc.entity_name, group=tc.group_name, tags=tc.tags)
        self.accelerator.wait_for_everyone()

    def close(self) -> None:
        """Release the run directory (also done at the end of learn())."""
        if self.logger is not None:
            self.logger.close()
        if self.lock is not None:
            self.lock.release()

    # ----------------------------------------------------------------------------------- prompts, sampling
    def _tokenize_prompts(self, prompts: Sequence, name: str) -> list[dict]:
        return self.prompts.tokenize(prompts, name)

    @property
    def train_prompts(self) -> list[dict]:
        return self.prompts.train

    @train_prompts.setter
    def train_prompts(self, items: list[dict]) -> None:
        self.prompts.train = items

    def generate(self, items: list[dict], gen_kwargs: dict, keep_trunk: bool = False) -> dict:
        return self.sampler(items, gen_kwargs, keep_trunk)

    def _score(self, fn: Callable, gen: dict) -> torch.Tensor:
        scores = fn(samples=gen["samples"], prompts=gen["prompts"], outputs=gen["outputs"], **gen["meta"])
        return check_scores(scores, gen["samples"])

    # ----------------------------------------------------------------------------------- rollouts
    @torch.no_grad()
    def make_experience(self) -> dict:
        """Collect `num_rollouts` (per process) rollouts in chunks and return the rollout store."""
        mc = self.config.method
        gen_kwargs = mc.gen_experience_kwargs or mc.gen_kwargs
        chunks, times = [], dict(t_gen=0.0, t_score=0.0, t_fwd=0.0)
        n = 0
        while n < mc.num_rollouts:
            idx = self.prompts.next_indices(mc.chunk_size * self.world)[self.rank * mc.chunk_size:(self.rank + 1) * mc.chunk_size]
            t = time.time()
            gen = self.generate([self.train_prompts[i] for i in idx], gen_kwargs, keep_trunk=self.policy.cache_trunk)
            times["t_gen"] += time.time() - t
            t = time.time()
            raw = self._score(self.reward_fn, gen)
            times["t_score"] += time.time() - t
            t = time.time()
            chunks.append(self._process_chunk(gen, raw.to(self.device)))
            times["t_fwd"] += time.time() - t
            n += len(idx)
        pad_id = self.tokenizer.pad_token_id
        store = {k: pad_cat([c[k] for c in chunks], left=k.startswith("query"), value=pad_id if k in ("query", "response") else 0)
                 for k in chunks[0] if chunks[0][k].dim() >= 2}
        store.update({k: torch.cat([c[k] for c in chunks]) for k in ("raw_scores", "kl_ref")})
        self.rollout_stats = self._rollout_stats(store, times)
        self.n_collections += 1
        self.episodes += int(self.rollout_stats["rollout/count"])
        return store

    def _process_chunk(self, gen: dict, raw: torch.Tensor) -> dict:
        mc = self.config.method
        everyone = gather_cat(self.accelerator, raw)
        if self.ref_mean is None:  # statistics of the first rollout chunk as reference (trlx)
            self.ref_mean, self.ref_std = everyone.mean().item(), everyone.std().item() if len(everyone) > 1 else 1.0
        self.running.update(everyone)
        scores = raw.clone()
        if self.scale_reward == "running":
            scores /= self.running.std
        elif self.scale_reward == "ref":
            scores /= self.ref_std
        if mc.cliprange_reward:
            scores = scores.clamp(-mc.cliprange_reward, mc.cliprange_reward)
        query, qmask, response, rmask = gen["query"], gen["query_mask"], gen["response"], gen["response_mask"]
        tokens = torch.cat([query, response], 1)
        attn = torch.cat([qmask, rmask], 1)
        pos = position_ids_from(attn)
        start = query.shape[1] - 1
        with self.autocast:
            logits, values, ref_logits, trunk = self.policy(tokens, attn, pos, logits_from=start, with_ref=self.policy.has_hydra,
                                                            trunk=gen.get("trunk"))
            if ref_logits is None:
                ref_logits = self.policy.reference_logits(self.ref_model, tokens, attn, pos, start)
        logprobs = logprobs_of_labels(logits, response)
        ref_logprobs = logprobs_of_labels(ref_logits, response)
        m = rmask.float()
        rewards = kl_penalty_rewards(logprobs, ref_logprobs, m, scores, self.kl_ctl.value)
        chunk = dict(query=query, query_mask=qmask, response=response, response_mask=rmask,
                     logprobs=logprobs * m, values=values.float() * m, rewards=rewards,
                     raw_scores=raw, kl_ref=((logprobs - ref_logprobs) * m).sum(1))
        if self.policy.cache_trunk:  # reused by every gradient step on these rollouts
            chunk.update(query_trunk=trunk[:, : query.shape[1]], response_trunk=trunk[:, query.shape[1]:])
        return chunk

    def _rollout_stats(self, store: dict, t: dict) -> dict:
        raw = gather_cat(self.accelerator, store["raw_scores"])
        kl = gather_cat(self.accelerator, store["kl_ref"])
        lengths = gather_cat(self.accelerator, store["response_mask"].sum(1).float())
        self.store_kl = kl.mean().item()
        return {
            "rollout/score_mean": raw.mean().item(), "rollout/score_std": raw.std().item() if len(raw) > 1 else 0.0,
            "rollout/score_running_mean": float(self.running.mean), "rollout/score_running_std": float(self.running.std),
            "rollout/response_length": lengths.mean().item(), "rollout/count": float(len(raw)),
            "kl/ref": self.store_kl, "kl/ref_per_token": (kl.sum() / lengths.sum().clamp(min=1)).item(),
            "time/rollout_generate": t["t_gen"], "time/rollout_score": t["t_score"], "time/rollout_forward": t["t_fwd"],
        }

    # ----------------------------------------------------------------------------------- optimisation
    def train_step(self, idx: torch.Tensor) -> dict:
        """One optimizer step on the rollouts `idx` of the store."""
        mc, store = self.config.method, self.store
        mb = trim({k: v[idx.to(v.device)] for k, v in store.items() if v.dim() >= 2})
        mask = mb["response_mask"].float()
        adv, returns = gae_advantages(mb["rewards"], mb["values"], mask, mc.gamma, mc.lam)
        adv = whiten(adv, mask, stats=global_mean_var(self.accelerator, adv, mask) if self.world > 1 else None)
        micro = self.config.train.minibatch_size or len(idx)
        n_total = mask.sum()
        sums = dict(total=0.0, policy=0.0, value=0.0, clipfrac=0.0, approx_kl=0.0, vclipfrac=0.0, values=0.0)
        pieces = list(range(0, len(idx), micro))
        for j, s in enumerate(pieces):
            sl = slice(s, s + micro)
            m = mask[sl]
            weight = (m.sum() / n_total).item()
            tokens = torch.cat([mb["query"][sl], mb["response"][sl]], 1)
            attn = torch.cat([mb["query_mask"][sl], mb["response_mask"][sl]], 1)
            trunk = torch.cat([mb["query_trunk"][sl], mb["response_trunk"][sl]], 1) if "query_trunk" in mb else None
            ctx = self.accelerator.no_sync(self.model) if j < len(pieces) - 1 else contextlib.nullcontext()
            with ctx:
                with self.autocast:
                    logits, values, _, _ = self.model(tokens, attn, position_ids_from(attn),
                                                      logits_from=mb["query"].shape[1] - 1, trunk=trunk)
                logprobs = logprobs_of_labels(logits, mb["response"][sl])
                pl, clipfrac, approx_kl = policy_loss(logprobs, mb["logprobs"][sl], adv[sl], m, mc.cliprange)
                vl, vclipfrac = value_loss(values.float(), mb["values"][sl], returns[sl], m, mc.cliprange_value)
                loss = pl + mc.vf_coef * vl
                self.accelerator.backward(loss * weight)
            for k, v in dict(total=loss, policy=pl, value=vl, clipfrac=clipfrac, approx_kl=approx_kl,
                             vclipfrac=vclipfrac, values=masked_mean(values.detach().float(), m)).items():
                sums[k] += v.item() * weight
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        stats = {"loss/total": sums["total"], "loss/policy": sums["policy"], "loss/value": sums["value"],
                 "policy/approx_kl": sums["approx_kl"], "policy/clipfrac": sums["clipfrac"],
                 "values/clipfrac": sums["vclipfrac"], "values/mean": sums["values"],
                 "returns/mean": masked_mean(returns, mask).item()}
        stats = mean_across(self.accelerator, stats)
        stats["lr"] = lr
        return stats

    # ----------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Generate on eval prompts (sharded over ranks), score, show, save samples; returns stats."""
        t0 = time.time()
        mine = list(range(self.rank, len(self.eval_prompts), self.world))
        rows = []
        cs = self.config.method.chunk_size
        for s in range(0, len(mine), cs):
            part = mine[s:s + cs]
            gen = self.generate([self.eval_prompts[i] for i in part], self.config.method.gen_kwargs)
            rewards = self._score(self.reward_fn, gen).tolist()
            metrics = {}
            if self.metric_fn is not None:
                out = self.metric_fn(samples=gen["samples"], prompts=gen["prompts"], outputs=gen["outputs"], **gen["meta"])
                if not isinstance(out, dict):
                    raise TypeError(f"metric_fn must return a dict name -> list of floats, got {type(out).__name__}")
                metrics = {k: check_scores(v, gen["samples"], f"metric_fn['{k}']").tolist() for k, v in out.items()}
            for j, i in enumerate(part):
                rows.append(dict(index=i, prompt=gen["prompts"][j], output=gen["outputs"][j], reward=rewards[j],
                                 metrics={k: v[j] for k, v in metrics.items()}))
        if self.world > 1:
            from accelerate.utils import gather_object

            rows = gather_object(rows)
        rows = sorted(rows, key=lambda r: r["index"])
        stats = {"reward/mean": float(np.mean([r["reward"] for r in rows]))}
        for name in rows[0]["metrics"] if rows else []:
            stats[f"metrics/{name}"] = float(np.mean([r["metrics"][name] for r in rows]))
        stats["eval/index"] = self.n_evals
        stats["time/eval"] = time.time() - t0
        if self.is_main:
            self.logger.log_samples(rows, self.step)
            runio.print_evaluation(rows, stats, self.n_evals, self.step)
        self.n_evals += 1
        return stats

    # ----------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self, name: str) -> None:
        """<run_dir>/checkpoints/<name>: policy, value head, hydra branch, trainer state, checksums; the final
        one's policy/ also gets its model card (README.md), before the checksums are taken."""
        rng = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
                   cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        rngs = [rng]
        if self.world > 1:
            from accelerate.utils import gather_object

            rngs = gather_object([rng])

        def write(folder: Path) -> None:
            self._write_state(folder, rngs)
            if name == "final":
                try:
                    write_model_card(folder / "policy", self.run_dir, self.step)
                except Exception as error:  # a card must never cost the final checkpoint
                    warnings.warn(f"no model card in the final checkpoint: {type(error).__name__}: {error}")

        if self.is_main:
            runio.write_checkpoint(self.run_dir / "checkpoints", name, write, self.step)
        self.accelerator.wait_for_everyone()

    def _write_state(self, folder: Path, rngs: list) -> None:
        write_state(self, folder, rngs)

    def load_checkpoint(self, path: Path) -> None:
        read_state(self, path)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Save the policy LM and tokenizer (loadable with AutoModelForCausalLM.from_pretrained)."""
        if self.is_main:
            with quiet_hf():
                self.accelerator.unwrap_model(self.model).lm.save_pretrained(directory)
            self.tokenizer.save_pretrained(directory)
        self.accelerator.wait_for_everyone()

    def push_to_hub(self, repo_id: str, token: str | None = None) -> str | None:
        """Upload checkpoints/final/policy (weights, tokenizer, model card) to the Hugging Face Hub repo
        `repo_id`, created if missing; token: HF_TOKEN or the stored login by default. Main process only;
        returns the repo's URL there."""
        if not self.is_main:
            return None
        folder = self.run_dir / "checkpoints" / "final" / "policy"
        if not folder.is_dir():
            raise UserError(f"--push-to-hub {repo_id}: {folder} does not exist (the run has not finished)")
        from huggingface_hub import HfApi

        try:
            api = HfApi(token=token)
            url = api.create_repo(repo_id, exist_ok=True)
            api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                              commit_message=f"zyn_ppo: {self.run_dir.name}, step {self.step}")
        except Exception as error:  # network, permissions, quota: the trained policy stays on disk
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"--push-to-hub {repo_id}: the upload failed ({first}); the policy is in {folder}, "
                            f"upload it with `hf upload {repo_id} {folder}`") from error
        print(f"zyn_ppo: pushed {folder} to {url}", file=sys.stderr)
        return str(url)

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t_start

    # ----------------------------------------------------------------------------------- the loop
    def learn(self) -> None:
        """collection -> minibatch -> PPO epoch, as trlx; a resumed run re-enters at its saved position."""
        tc, mc = self.config.train, self.config.method
        self.t_start = time.time()
        if self.checkpoint is not None:
            self.load_checkpoint(self.checkpoint)
            if self.is_main:
                print(f"zyn_ppo: continuing {self.run_dir} from {self.checkpoint.name} at step {self.step}", file=sys.stderr)
        self._open_run()
        done_before = self.step >= self.total_steps
        bar = runio.progress_bar(self.total_steps, self.step, self.is_main)
        stop = runio.StopSignals(announce=self.is_main)
        stopped = False  # checked after each step, as trlx's loop would see it
        try:
            with stop:
                if self.step == 0 and self.n_evals == 0:
                    self.logger.log(self.evaluate(), step=0)
                while self.step < self.total_steps and not stopped:  # collections
                    stats = {}
                    if self.store is None or self.mb_index >= self.minibatches:
                        self.store = self.make_experience()
                        self.order = torch.randperm(len(self.store["rewards"])).tolist()
                        self.mb_index, self.inner = 0, 0
                        stats = dict(self.rollout_stats)
                    while self.mb_index < self.minibatches and self.step < self.total_steps and not stopped:
                        idx = torch.tensor(self.order[self.mb_index * tc.batch_size:(self.mb_index + 1) * tc.batch_size])
                        while self.inner < mc.ppo_epochs and self.step < self.total_steps and not stopped:
                            self._one_step(idx, stats, bar)  # one PPO epoch on this minibatch
                            stats, stopped = {}, self._should_stop(stop)
                        if self.inner == mc.ppo_epochs:
                            self.inner, self.mb_index = 0, self.mb_index + 1
            saved = None
            if stop.received is not None and self.step < self.total_steps:
                saved = f"step_{self.step}"
            elif not done_before:
                saved = "final"
            if saved:
                self.save_checkpoint(saved)
            if stop.received is not None:
                message = (f"zyn_ppo: stopped by {signal.Signals(stop.received).name} at step {self.step} of "
                           f"{self.total_steps}; checkpoint {self.run_dir / 'checkpoints' / (saved or 'final')} is "
                           "saved; run the same command to continue")
                if stop.received != signal.SIGTERM:
                    raise KeyboardInterrupt(message)
                if self.is_main:
                    print(message, file=sys.stderr, flush=True)
                raise SystemExit(128 + signal.SIGTERM)
        finally:
            bar.close()
            self.close()
        if self.is_main:
            print(runio.summarize(self.run_dir), flush=True)

    def _one_step(self, idx: torch.Tensor, stats: dict, bar) -> None:
        """One optimizer step, then the KL controller (after a minibatch's last epoch), logging, evaluation
        and the periodic checkpoint."""
        tc, mc = self.config.train, self.config.method
        t0 = time.time()
        stats.update(self.train_step(idx))
        self.last_approx_kl = stats["policy/approx_kl"]
        self.inner += 1
        if self.inner == mc.ppo_epochs:  # trlx: after the minibatch's ppo_epochs steps
            self.kl_ctl.update(self.last_approx_kl if mc.kl_signal == "approx" else self.store_kl, n_steps=tc.batch_size)
        self.step += 1
        stats.update({"kl/ref": self.store_kl, "kl_coef": self.kl_ctl.value,
                      "rollout/score_mean": self.rollout_stats["rollout/score_mean"],
                      "episodes": self.episodes, "time/step": time.time() - t0})
        if self.step % tc.eval_interval == 0 or self.step == self.total_steps:
            stats.update(self.evaluate())
        stats["time/elapsed"] = self.elapsed()
        self.logger.log(stats, step=self.step)
        bar.update(1)
        bar.set_postfix(reward=f"{stats['rollout/score_mean']:.3g}", kl=f"{stats['kl/ref']:.3g}", refresh=False)
        if self.step % tc.checkpoint_interval == 0 and self.step < self.total_steps:
            self.save_checkpoint(f"step_{self.step}")

    def _should_stop(self, stop: runio.StopSignals) -> bool:
        """Whether any process received a stop signal (all processes agree)."""
        flag = int(stop.received or 0)
        if self.world > 1:
            t = self.accelerator.reduce(torch.tensor([flag], device=self.device), reduction="sum")
            flag = int(t.item()) and (flag or int(signal.SIGTERM))
            if flag and stop.received is None:
                stop.received = flag
        return bool(flag)


# ----------------------------------------------------------------------------------- the checkpoint format
def write_state(trainer: PPOTrainer, folder: Path, rngs: list) -> None:
    """A checkpoint's files: policy (save_pretrained + tokenizer), value head, hydra branch, trainer state."""
    policy = trainer.accelerator.unwrap_model(trainer.model)
    with quiet_hf():
        policy.lm.save_pretrained(folder / "policy")
    trainer.tokenizer.save_pretrained(folder / "policy")
    torch.save(policy.v_head.state_dict(), folder / "value_head.pt")
    if policy.has_hydra:
        torch.save(dict(blocks=policy.ref_blocks.state_dict(), norm=policy.ref_norm.state_dict(),
                        head=policy.ref_head.state_dict()), folder / "reference_branch.pt")
    multi = trainer.world > 1 and trainer.store is not None  # each rank holds its own store: resume collects anew
    mb_index, inner = (trainer.mb_index + 1, 0) if trainer.inner == trainer.config.method.ppo_epochs else (trainer.mb_index, trainer.inner)
    state = dict(
        step=trainer.step, n_collections=trainer.n_collections, n_evals=trainer.n_evals, episodes=trainer.episodes,
        optimizer=trainer.optimizer.state_dict() if trainer.config.train.save_optimizer else None,
        scheduler=trainer.scheduler.state_dict(), kl_coef=trainer.kl_ctl.value,
        running=vars(trainer.running).copy(), ref_mean=trainer.ref_mean, ref_std=trainer.ref_std,
        store=None if trainer.store is None or multi else {k: v.cpu() for k, v in trainer.store.items()},
        store_kl=trainer.store_kl, rollout_stats=trainer.rollout_stats,
        order=None if multi else trainer.order, mb_index=0 if multi else mb_index, inner=0 if multi else inner,
        **trainer.prompts.state_dict(), elapsed=trainer.elapsed(), wandb_id=trainer.logger.run_id or trainer.wandb_id,
        rng=rngs, world=trainer.world,
    )
    torch.save(state, folder / "trainer_state.pt")


def read_state(trainer: PPOTrainer, path: Path) -> None:
    """Restore what write_state wrote (weights, optimizer, scheduler, KL, statistics, loop position, RNGs)."""
    state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    policy.v_head.load_state_dict(torch.load(path / "value_head.pt", map_location=trainer.device))
    if policy.has_hydra:
        branch = torch.load(path / "reference_branch.pt", map_location=trainer.device)
        policy.ref_blocks.load_state_dict(branch["blocks"])
        policy.ref_norm.load_state_dict(branch["norm"])
        policy.ref_head.load_state_dict(branch["head"])
    if state["optimizer"] is not None:
        trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.kl_ctl.value = state["kl_coef"]
    vars(trainer.running).update(state["running"])
    trainer.ref_mean, trainer.ref_std = state["ref_mean"], state["ref_std"]
    for k in ("step", "n_collections", "n_evals", "episodes", "order", "mb_index", "inner", "store_kl"):
        setattr(trainer, k, state[k])
    trainer.store = None if state["store"] is None else {k: v.to(trainer.device) for k, v in state["store"].items()}
    trainer.rollout_stats = state["rollout_stats"] or {}
    trainer.prompts.load_state_dict(state)
    trainer.elapsed_before, trainer.wandb_id = state["elapsed"], state["wandb_id"]
    if len(state["rng"]) == trainer.world:
        rng = state["rng"][trainer.rank]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


def leave_process_group(accelerator) -> None:
    """At interpreter exit: wait for every rank, then tear the process group down. A rank whose peer has already
    torn down, or that exits with the group's threads still running, can die in a C++ abort (seen with gloo:
    "terminate called without an active exception", exit -6, after a finished run)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    try:  # gloo can time out, so a peer that died does not hang this one; nccl has only the plain barrier
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=120))
        else:
            dist.barrier()
    except Exception:  # a peer is gone: tear down alone
        pass
    accelerator.end_training()


def train(
    reward_fn: Callable | None = None,
    prompts: Sequence | None = None,
    eval_prompts: Sequence | None = None,
    metric_fn: Callable | None = None,
    config: TRLConfig | dict | None = None,
    stop_sequences: Sequence[str] | None = None,
    run_info: dict | None = None,
    overwrite: bool = False,
) -> PPOTrainer:
    """Train a policy with PPO against `reward_fn(samples, prompts=..., outputs=...) -> list[float]`.

    prompts / eval_prompts: strings, or dicts {"prompt": str, **metadata}; eval_prompts defaults to the
    first batch_size prompts (as trlx). metric_fn(samples, prompts=..., outputs=...) -> {name: [float]} is
    logged as metrics/<name> at each evaluation. stop_sequences cut outputs at the first occurrence.
    run_info: what else defines the run (judge, questions, data source...), recorded in run.json beside the
    config and a content hash of the prompts; a later run into the same directory must match it.
    overwrite: where the run directory holds other results, move them aside instead of refusing.
    Returns the trainer (trainer.save_pretrained(dir) saves the policy)."""
    if reward_fn is None:
        raise UserError("zyn_ppo.train needs a reward_fn (offline training from samples is not implemented)")
    config = config or TRLConfig()
    if isinstance(config, dict):
        config = TRLConfig.from_dict(config)
    if prompts is None or len(prompts) == 0:
        raise UserError("prompts is empty: give at least one prompt")
    if eval_prompts is not None and len(eval_prompts) == 0:
        raise UserError("eval_prompts is empty: give at least one prompt or None (then the first batch_size prompts)")
    eval_prompts = eval_prompts if eval_prompts is not None else list(prompts)[: config.train.batch_size]
    info = dict(run_info or {})
    info["prompts_sha256"] = runio.content_hash([split_prompt(p) for p in prompts])
    info["eval_prompts_sha256"] = runio.content_hash([split_prompt(p) for p in eval_prompts])
    info["stop_sequences"] = list(stop_sequences or [])
    trainer = PPOTrainer(config, reward_fn=reward_fn, metric_fn=metric_fn, stop_sequences=stop_sequences,
                         prompts=prompts, eval_prompts=eval_prompts, run_info=info, overwrite=overwrite)
    trainer.learn()
    return trainer
