"""A compact PPO engine for language models with trlx's behaviour (AcceleratePPOTrainer, 2023).

    import zyn_ppo
    config = zyn_ppo.TRLConfig.load_yaml("configs/ppo_flan_sentiments.yml")
    config = zyn_ppo.TRLConfig.update(config.to_dict(), {"train.total_steps": 100})
    trainer = zyn_ppo.train(reward_fn=reward_fn, prompts=prompts, eval_prompts=eval_prompts,
                            metric_fn=metric_fn, config=config)

Multi-process (DDP, each rank generates and scores its own rollouts):

    accelerate launch --num_processes 2 my_script.py          # GPUs (DeepSpeed/FSDP via accelerate config)
    torchrun --nproc_per_node 2 my_script.py                  # CPU processes (gloo), e.g. to test

One iteration, as trlx did it:
1. rollouts: `method.num_rollouts` prompts per process, in chunks of `method.chunk_size`, sampled with
   `method.gen_kwargs` (a response ends at the first EOS, which is part of the response; later tokens are
   masked out), scored with `reward_fn(samples, prompts=..., outputs=...)`;
2. score processing: optional scaling (`method.scale_reward`: none | "ref" | "running"), then clipping
   to +-`method.cliprange_reward`;
3. per-token reward: -kl_coef * (logp_policy - logp_ref) at every response token, plus the score at the
   last response token;
4. GAE (`gamma`, `lam`); returns = advantages + values; advantages whitened over the minibatch;
5. for each minibatch of `train.batch_size` rollouts, `method.ppo_epochs` gradient steps of the clipped
   policy loss + `vf_coef` * clipped value loss; then the adaptive KL controller updates once, fed with
   the approximate KL between the current and the rollout policy of the last step (trlx's signal; set
   `method.kl_signal: ref` to feed it the KL to the reference instead; `method.target: null` keeps the
   coefficient fixed);
6. when the rollout store is used up, new rollouts are collected (`train.epochs` collections at most).

The reference model: with `model.num_layers_unfrozen = k > 0`, only the top k blocks (plus embeddings,
final norm and LM head, as trlx left them trainable) train, and the reference is a "hydra" branch of
frozen copies of the top k blocks, final norm and LM head, fed by the shared trunk's hidden state; its
logits equal the policy's at the start. With k <= 0 everything trains (k = 0: only embeddings, final
norm and heads) and the reference is a full frozen copy.

Run directory (`train.logging_dir`, only the main process writes):
- config.yaml: the resolved config;
- metrics.jsonl: one JSON line per optimizer step (`step` = steps done; step 0 = the first evaluation).
  Evaluation lines (step 0, every eval_interval, the end): reward/mean, metrics/<name>, eval/index,
  time/eval. Training lines: loss/total, loss/policy, loss/value, policy/approx_kl, policy/clipfrac,
  values/clipfrac, values/mean, returns/mean, kl/ref (KL to the reference per sequence, sum over tokens of
  logp - logp_ref, mean over the current rollouts), kl_coef, rollout/score_mean, episodes, lr, time/step,
  time/elapsed; on steps that collected rollouts also rollout/score_std, rollout/score_running_mean,
  rollout/score_running_std, rollout/response_length, rollout/count, kl/ref_per_token,
  time/rollout_generate, time/rollout_score, time/rollout_forward;
- samples/eval_<step>.jsonl: prompt, output, reward, metrics per evaluation prompt;
- checkpoints/step_<n> (the latest periodic one) and checkpoints/final: policy/ (save_pretrained +
  tokenizer), value_head.pt, reference_branch.pt (hydra), trainer_state.pt (optimizer, scheduler, KL
  coefficient, reward statistics, rollout store, prompt order, RNG states, step), meta.json. Written to a
  temporary folder and renamed. `train.resume_from_checkpoint: auto` continues from the latest one: lines
  of metrics.jsonl after its step are dropped, time/elapsed continues, and on one process the resumed
  curve is identical to an uninterrupted run. Ctrl-C or SIGTERM saves a checkpoint after the current step;
  a second one quits at once without saving.

Deliberate differences from trlx: responses are kept as generated tokens (trlx decoded and re-tokenized
them) and include the EOS token; advantages are whitened over valid tokens only (trlx included padding);
dropout stays off (logprobs at the first PPO step equal the rollout's); the model's own generation defaults
are dropped so that sampling follows gen_kwargs only; multi-process runs score rewards on every rank
(trlx gathered samples to the main process); tracker defaults to none.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

# ---------------------------------------------------------------------------------------------------
# Config (trlx's TRLConfig layout: train, model, tokenizer, optimizer, scheduler, method)
# ---------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    model_path: str = "gpt2"
    """Hugging Face name or local folder of a causal LM (GPT-2, GPT-NeoX/Pythia, Llama/SmolLM, ...)."""
    model_arch_type: str = "causal"
    """Only "causal" is supported (trlx also had "seq2seq")."""
    num_layers_unfrozen: int = -1
    """Top blocks that train; > 0 uses the hydra reference, -1 trains everything with a full reference copy."""
    freeze_embeddings: bool = False
    """zyn_ppo only. trlx kept the input embeddings (and a tied LM head) trainable, so every step backprops
    through the whole trunk. True freezes everything below the top blocks except the final norm: with
    num_layers_unfrozen > 0 the trunk's hidden states are then computed once per rollout and reused by every
    gradient step (several times faster), and the hydra reference equals the initial model exactly."""
    delta_kwargs: dict | None = None
    """trlx-only (OpenDelta); must be null."""
    peft_config: Any = None
    """trlx-only (PEFT adapters); must be null."""
    model_extra_configs: dict = field(default_factory=dict)
    """Extra keyword arguments for `from_pretrained` (e.g. {"torch_dtype": "bfloat16"})."""


@dataclass
class TokenizerConfig:
    tokenizer_path: str | None = None
    """Defaults to model.model_path."""
    padding_side: str = "left"
    """Accepted for compatibility; prompts are always left-padded for generation."""
    truncation_side: str = "right"
    """Side cut from prompts longer than seq_length - max_new_tokens (a warning says how many)."""
    tokenizer_extra_configs: dict = field(default_factory=dict)
    """Extra keyword arguments for `AutoTokenizer.from_pretrained`."""


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    """adamw | adam | sgd."""
    kwargs: dict = field(default_factory=lambda: dict(lr=1.0e-4, betas=(0.9, 0.95), eps=1.0e-8, weight_decay=1.0e-6))


@dataclass
class SchedulerConfig:
    name: str = "cosine_annealing"
    """cosine_annealing (torch CosineAnnealingLR) | linear (torch LinearLR) | constant."""
    kwargs: dict = field(default_factory=lambda: dict(T_max=10000, eta_min=1.0e-4))


@dataclass
class TrainConfig:
    seq_length: int = 1024
    """Prompt tokens + max_new_tokens must fit in it."""
    epochs: int = 100
    """Rollout collections at most (each followed by one pass over the store)."""
    total_steps: int = 10000
    """Optimizer steps at most."""
    batch_size: int = 32
    """Rollouts per minibatch (per process)."""
    checkpoint_interval: int = 10000
    eval_interval: int = 100
    pipeline: str = "PromptPipeline"
    """trlx-only; ignored."""
    trainer: str = "AcceleratePPOTrainer"
    """trlx-only; must name the PPO trainer."""
    trainer_kwargs: dict = field(default_factory=dict)
    """trlx-only; ignored."""
    orchestrator: str | None = None
    """Old trlx; ignored."""
    project_name: str = "trlx"
    """W&B project."""
    entity_name: str | None = None
    group_name: str | None = None
    tags: list = field(default_factory=list)
    checkpoint_dir: str = "ckpts"
    """trlx-only; checkpoints go to <logging_dir>/checkpoints, this is ignored."""
    rollout_logging_dir: str | None = None
    """trlx-only (rollout export); ignored."""
    save_best: bool = True
    """trlx-only; ignored (checkpoints: latest and final)."""
    save_optimizer: bool = True
    """Save optimizer state in checkpoints (needed for an exact resume)."""
    tracker: str | None = None
    """"wandb" (offline when there is no API key) | "tensorboard" | null. trlx defaulted to wandb."""
    trackers: list | None = None
    """Old trlx spelling; the first entry is used when `tracker` is null."""
    logging_dir: str | None = None
    """The run directory; default runs/<project_name>."""
    seed: int = 1000
    minibatch_size: int | None = None
    """Rollouts per forward/backward pass; gradients are accumulated up to batch_size."""
    resume_from_checkpoint: Any = "auto"
    """"auto": resume from the latest checkpoint in logging_dir if any; null/false: start fresh
    (old checkpoints and metrics in logging_dir are removed); or a checkpoint folder."""


@dataclass
class MethodConfig:
    name: str = "PPOConfig"
    ppo_epochs: int = 4
    num_rollouts: int = 128
    chunk_size: int = 128
    init_kl_coef: float = 0.05
    target: float | None = 6.0
    """KL target of the adaptive controller; null: fixed coefficient."""
    horizon: int = 10000
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 1.0
    scale_reward: Any = None
    """null/false/"none" | "ref" (divide by the std of the first rollout's scores) | "running"."""
    ref_mean: float | None = None
    ref_std: float | None = None
    cliprange_reward: float = 10.0
    gen_kwargs: dict = field(
        default_factory=lambda: dict(max_new_tokens=40, top_k=0, top_p=1.0, do_sample=True)
    )
    gen_experience_kwargs: dict | None = None
    """Generation settings for rollouts when different from gen_kwargs (used for evaluation)."""
    num_value_layers_unfrozen: int = 0
    """Later trlx (separate value branch); must be 0."""
    kl_signal: str = "approx"
    """Fed to the adaptive controller: "approx" (trlx: KL current vs rollout policy) | "ref" (KL to reference)."""


SECTIONS = {
    "train": TrainConfig,
    "model": ModelConfig,
    "tokenizer": TokenizerConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "method": MethodConfig,
}


@dataclass
class TRLConfig:
    """All settings, loaded from trlx-style YAML; unknown keys are errors."""

    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    method: MethodConfig = field(default_factory=MethodConfig)

    @classmethod
    def load_yaml(cls, path: str | os.PathLike) -> "TRLConfig":
        with open(path) as f:
            return cls.from_dict(yaml.safe_load(f) or {})

    @classmethod
    def from_dict(cls, config: dict) -> "TRLConfig":
        sections = {}
        for name, values in config.items():
            if name not in SECTIONS:
                raise ValueError(f"Unknown config section '{name}' (valid: {', '.join(SECTIONS)})")
            known = {f.name for f in dataclasses.fields(SECTIONS[name])}
            for key in values or {}:
                if key not in known:
                    raise ValueError(f"Unknown config key '{name}.{key}' (valid keys in {name}: {', '.join(sorted(known))})")
            sections[name] = SECTIONS[name](**(values or {}))
        return cls(**sections)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def update(cls, base: "dict | TRLConfig", updates: dict) -> "TRLConfig":
        """Merge dotted keys ({"train.total_steps": 10, "method.gen_kwargs.max_new_tokens": 8}) or nested
        dicts into `base`; keys that are not in the config raise ValueError naming the key."""
        merged = base.to_dict() if isinstance(base, TRLConfig) else copy.deepcopy(base)
        merged = cls.from_dict(merged).to_dict()  # fill defaults, validate the base
        flat = {}
        for key, value in updates.items():
            if isinstance(value, dict) and key in SECTIONS:
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        for key, value in flat.items():
            parts = key.split(".")
            if parts[0] not in SECTIONS or len(parts) < 2:
                raise ValueError(f"Unknown config key '{key}' (use section.key with a section in {', '.join(SECTIONS)})")
            node = merged[parts[0]]
            for depth, part in enumerate(parts[1:-1], start=1):
                if not isinstance(node.get(part), dict):
                    raise ValueError(f"Unknown config key '{key}': '{'.'.join(parts[:depth + 1])}' is not a dict setting")
                node = node[part]
            if len(parts) == 2 and parts[1] not in node:
                raise ValueError(f"Unknown config key '{key}' (valid keys in {parts[0]}: {', '.join(sorted(node))})")
            node[parts[-1]] = value
        return cls.from_dict(merged)

    def __str__(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------------------------
# PPO maths: small pure functions (tested against plain loops in tests/test_ppo.py)
# ---------------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, stats: tuple | None = None) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over the masked entries (unbiased variance); masked entries -> 0.
    `stats` = (mean, var) overrides the local statistics (used for statistics across processes)."""
    if stats is None:
        n = mask.sum()
        mean = (x * mask).sum() / n
        var = (((x - mean) * mask) ** 2).sum() / (n - 1).clamp(min=1)
    else:
        mean, var = stats
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens (B, T); mask marks a prefix of valid tokens,
    the episode ends after the last valid one. Returns (advantages, returns = advantages + values)."""
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    T = rewards.shape[1]
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1-c, 1+c)).
    Returns (loss, clip fraction, approx KL(rollout policy || current) = mean((r - 1) - log r))."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(loss1, loss2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((loss2 > loss1).float(), mask)
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    return loss, clipfrac, approx_kl


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange_value: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: 0.5 * mean over tokens of max((v - R)^2, (clip(v, v_old +- c) - R)^2)."""
    clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    loss1 = (values - returns) ** 2
    loss2 = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(loss1, loss2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((loss2 > loss1).float(), mask)
    return loss, clipfrac


def kl_penalty_rewards(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards: -kl_coef * (logp - logp_ref), plus the score at the last valid token."""
    rewards = -kl_coef * (logprobs - ref_logprobs) * mask
    last = mask.sum(1).long().clamp(min=1) - 1
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def logprobs_of_labels(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.gather(F.log_softmax(logits.float(), dim=-1), -1, labels.unsqueeze(-1)).squeeze(-1)


class AdaptiveKLController:
    """Ziegler et al. (2019): kl_coef *= 1 + clip(kl / target - 1, -0.2, 0.2) * n_steps / horizon."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current: float, n_steps: int) -> None:
        error = float(np.clip(current / self.target - 1, -0.2, 0.2))
        self.value *= 1 + error * n_steps / self.horizon


class FixedKLController:
    """Keeps kl_coef constant."""

    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current: float, n_steps: int) -> None:
        pass


class RunningMoments:
    """Running mean and std of a stream of scores (parallel variance combination)."""

    def __init__(self):
        self.mean, self.var, self.std, self.count = 0.0, 1.0, 1.0, 1e-24

    def update(self, xs: torch.Tensor) -> tuple[float, float]:
        """Add a batch; returns the batch's (mean, std)."""
        n = xs.numel()
        batch_var, batch_mean = torch.var_mean(xs.double(), unbiased=False)
        batch_var, batch_mean = batch_var.item(), batch_mean.item()
        delta = batch_mean - self.mean
        total = self.count + n
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.std = math.sqrt(self.var * total / max(total - 1, 1e-24))
        self.count = total
        return batch_mean, math.sqrt(batch_var * n / max(n - 1, 1))


# ---------------------------------------------------------------------------------------------------
# Model: causal LM + value head, with a hydra (or full copy) reference
# ---------------------------------------------------------------------------------------------------

# model_type -> (backbone attribute, blocks attribute in the backbone, final norm attribute in the backbone)
ARCHITECTURES = {
    "gpt2": ("transformer", "h", "ln_f"),
    "gptj": ("transformer", "h", "ln_f"),
    "gpt_neox": ("gpt_neox", "layers", "final_layer_norm"),
    "llama": ("model", "layers", "norm"),
    "mistral": ("model", "layers", "norm"),
    "qwen2": ("model", "layers", "norm"),
    "qwen3": ("model", "layers", "norm"),
    "phi3": ("model", "layers", "norm"),
    "olmo2": ("model", "layers", "norm"),
    "smollm3": ("model", "layers", "norm"),
}


def arch_parts(lm: nn.Module) -> tuple[nn.Module, nn.ModuleList, nn.Module]:
    model_type = getattr(lm.config, "model_type", type(lm).__name__)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"Architecture '{model_type}' ({type(lm).__name__}) is not supported by zyn_ppo; supported causal LM "
            f"types: {', '.join(ARCHITECTURES)}. Add its attribute paths to zyn_ppo.ARCHITECTURES."
        )
    backbone_name, blocks_name, norm_name = ARCHITECTURES[model_type]
    backbone = getattr(lm, backbone_name)
    return backbone, getattr(backbone, blocks_name), getattr(backbone, norm_name)


class PolicyWithValueHead(nn.Module):
    """Causal LM + value head (hidden -> 2*hidden -> ReLU -> 1) and, when num_layers_unfrozen > 0, a frozen
    hydra reference branch (copies of the top blocks, final norm and LM head on the shared trunk)."""

    def __init__(self, lm: nn.Module, num_layers_unfrozen: int, freeze_embeddings: bool = False):
        super().__init__()
        self.lm = lm
        self.backbone, blocks, norm = arch_parts(lm)
        self.blocks_name = ARCHITECTURES[lm.config.model_type][1]
        hidden = lm.get_output_embeddings().weight.shape[1]
        dtype = lm.get_output_embeddings().weight.dtype
        self.v_head = nn.Sequential(nn.Linear(hidden, 2 * hidden, dtype=dtype), nn.ReLU(), nn.Linear(2 * hidden, 1, dtype=dtype))
        self.k = num_layers_unfrozen
        if self.k > len(blocks):
            raise ValueError(f"model.num_layers_unfrozen={self.k} but the model has {len(blocks)} blocks")
        frozen = list(blocks) if self.k == 0 else list(blocks)[: -self.k] if self.k > 0 else []
        if freeze_embeddings:  # everything in the trunk except the trainable blocks and the final norm
            self.backbone.requires_grad_(False)
            for block in (list(blocks)[-self.k:] if self.k > 0 else [] if self.k == 0 else blocks):
                block.requires_grad_(True)
            norm.requires_grad_(True)
        for block in frozen:
            block.requires_grad_(False)
        self.cache_trunk = freeze_embeddings and self.k > 0
        self.ref_blocks = self.ref_norm = self.ref_head = None
        if self.k > 0:  # the hydra reference branch
            self.ref_blocks = copy.deepcopy(nn.ModuleList(list(blocks)[-self.k :])).requires_grad_(False)
            self.ref_norm = copy.deepcopy(norm).requires_grad_(False)
            self.ref_head = copy.deepcopy(lm.get_output_embeddings()).requires_grad_(False)

    @property
    def has_hydra(self) -> bool:
        return self.ref_blocks is not None

    def forward(self, input_ids, attention_mask, position_ids, logits_from: int = 0, with_ref: bool = False,
                trunk: torch.Tensor | None = None) -> tuple:
        """Logits and values at positions logits_from..T-2 (the ones that predict tokens logits_from+1..T-1);
        with_ref: also the hydra reference's logits there and the trunk's hidden state entering the top blocks.
        trunk: that hidden state, precomputed; only the top blocks then run (frozen trunk only).
        Returns (logits, values, ref_logits or None, trunk hidden state or None)."""
        blocks = getattr(self.backbone, self.blocks_name)
        captured, hooks = {}, []

        def capture(module, args, kwargs):
            captured["args"], captured["kwargs"] = args, dict(kwargs)

        def substitute(module, args, kwargs):
            return ((trunk, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": trunk})

        if with_ref:
            hooks.append(blocks[-self.k].register_forward_pre_hook(capture, with_kwargs=True))
        if trunk is not None:
            hooks.append(blocks[-self.k].register_forward_pre_hook(substitute, with_kwargs=True))
            setattr(self.backbone, self.blocks_name, nn.ModuleList(list(blocks)[-self.k:]))
        try:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        finally:
            for hook in hooks:
                hook.remove()
            if trunk is not None:
                setattr(self.backbone, self.blocks_name, blocks)
        hidden = out.last_hidden_state[:, logits_from:-1]
        logits = self.lm.get_output_embeddings()(hidden)
        values = self.v_head(hidden).squeeze(-1)
        ref_logits = branch_input = None
        if with_ref:
            args, kwargs = captured["args"], captured["kwargs"]
            h = branch_input = args[0] if args else kwargs.pop("hidden_states")
            for block in self.ref_blocks:
                h = block(h, *args[1:], **kwargs)
                h = h[0] if isinstance(h, tuple) else h
            ref_logits = self.ref_head(self.ref_norm(h)[:, logits_from:-1])
        return logits, values, ref_logits, branch_input


class quiet_hf:
    """Silence transformers' per-file progress bars (loading/saving) inside the block."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        if self.was:
            hf_logging.enable_progress_bar()
        return False


def position_ids_from(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def resolve_model_path(name: str) -> str:
    """A hub name or folder as it is; an embedded model's short name (zyn_reward.EMBEDDED_MODELS, e.g.
    "smollm2-135m-instruct") becomes its cached Hugging Face folder, converted on first use."""
    import zyn_reward

    return zyn_reward.embedded_model_path(name) if name in zyn_reward.EMBEDDED_MODELS else name


def load_policy(config: TRLConfig, path: str | None = None):
    """Load the LM (from `path` or model.model_path) and the tokenizer; return (PolicyWithValueHead, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if config.model.model_arch_type != "causal":
        raise ValueError(f"model.model_arch_type '{config.model.model_arch_type}' is not supported (only 'causal')")
    if config.model.peft_config or config.model.delta_kwargs:
        raise ValueError("model.peft_config / model.delta_kwargs (adapters) are not supported by zyn_ppo; set them to null")
    if config.method.num_value_layers_unfrozen:
        raise ValueError("method.num_value_layers_unfrozen (a separate value branch) is not supported; set it to 0")
    tok_path = resolve_model_path(config.tokenizer.tokenizer_path or config.model.model_path)
    tokenizer = AutoTokenizer.from_pretrained(tok_path, **config.tokenizer.tokenizer_extra_configs)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"The tokenizer of '{tok_path}' has no EOS token; set one (tokenizer.eos_token = ...)")
    if tokenizer.pad_token_id is None:
        warnings.warn(f"The tokenizer of '{tok_path}' has no pad token; using the EOS token '{tokenizer.eos_token}' as pad")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = config.tokenizer.truncation_side
    with quiet_hf():
        lm = AutoModelForCausalLM.from_pretrained(
            resolve_model_path(path or config.model.model_path), **config.model.model_extra_configs
        )
    arch_parts(lm)  # clear error for unsupported architectures
    # sample from the policy's own distribution: only gen_kwargs shape generation, not the model's defaults
    lm.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    lm.train(False)
    return PolicyWithValueHead(lm, config.model.num_layers_unfrozen, config.model.freeze_embeddings), tokenizer


# ---------------------------------------------------------------------------------------------------
# For experiment scripts: config from YAML + preset + flags, and a fast failure without the hub
# ---------------------------------------------------------------------------------------------------


# settings the experiment scripts set from their own flags (the run directory's name depends on them)
SCRIPT_FLAGS = {"train.seed": "--seed", "train.logging_dir": "--logging-dir", "train.tracker": "--tracker",
                "train.total_steps": "--total-steps"}


def configure(path: str | os.PathLike, changes: dict, overrides: Sequence[str] = ()) -> tuple[TRLConfig, dict]:
    """Load a YAML config, apply `changes` ({"section.key": value}) and then `overrides` ("section.key=value"
    strings from the command line; values parsed as JSON first, so 3e-4 is a number, else as YAML).
    Settings with a flag of their own (SCRIPT_FLAGS) cannot be overridden: the flag is the one way to set them.
    Returns the config and {key: "old -> new"} for every setting that changed."""
    base = TRLConfig.load_yaml(path).to_dict()
    changes = dict(changes)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like section.key=value")
        if key in SCRIPT_FLAGS:
            raise ValueError(f"override {item!r}: {key} has its own flag, use {SCRIPT_FLAGS[key]} "
                             "(the run directory's default name follows it)")
        try:
            changes[key] = json.loads(value)
        except ValueError:
            changes[key] = yaml.safe_load(value)
    config = TRLConfig.update(base, changes)

    def get(d: dict, key: str):  # get(d, "a.b") == d["a"]["b"]
        for part in key.split("."):
            d = d.get(part) if isinstance(d, dict) else None
        return d

    new = config.to_dict()
    return config, {k: f"{get(base, k)} -> {get(new, k)}" for k in changes if get(base, k) != get(new, k)}


def check_hub(names: Sequence[str]) -> None:
    """Exit at once with a clear message when `names` (models, datasets) must come from the Hugging Face hub
    and the hub cannot be reached (instead of long download retries). Local folders, embedded model names
    and HF_HUB_OFFLINE=1 (use the local cache) skip the check."""
    import urllib.error
    import urllib.request

    import zyn_reward

    names = list(dict.fromkeys(n for n in names if n and not Path(n).exists() and n not in zyn_reward.EMBEDDED_MODELS))
    if not names or os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", ""):
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(endpoint, timeout=5)
    except urllib.error.HTTPError:
        pass  # the hub answered
    except OSError as error:
        sys.exit(f"Cannot reach {endpoint} ({error}) to download {', '.join(names)}.\n"
                 "Run offline with --preset cpu, or set HF_HUB_OFFLINE=1 if they are already cached.")


# ---------------------------------------------------------------------------------------------------
# Helpers: prompts, rewards, run directory, trackers
# ---------------------------------------------------------------------------------------------------


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
    raise TypeError(f"A prompt must be a string or a dict with a 'prompt' string, got {p!r:.80}")


def cut_at_stop(text: str, stop_sequences: Sequence[str] | None) -> int | None:
    """Index of the first stop sequence in text, or None."""
    hits = [text.find(s) for s in stop_sequences or [] if s and s in text]
    return min(hits) if hits else None


def to_json_value(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        x = x.item()
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def significant(x: Any, digits: int = 3) -> Any:
    if isinstance(x, float) and x != 0 and math.isfinite(x):
        return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return x


class Tracker:
    """metrics.jsonl always; W&B or TensorBoard when asked. Only the main process writes."""

    def __init__(self, run_dir: Path, config: TRLConfig, enabled: bool, resume_id: str | None):
        self.run_dir, self.enabled, self.kind, self.run = run_dir, enabled, None, None
        self.metrics_path = run_dir / "metrics.jsonl"
        kind = config.train.tracker or (config.train.trackers[0] if config.train.trackers else None)
        if not enabled or kind in (None, "none", ""):
            return
        if kind == "wandb":
            import wandb

            if not os.environ.get("WANDB_API_KEY") and not _wandb_logged_in():
                os.environ.setdefault("WANDB_MODE", "offline")
            self.run = wandb.init(
                project=config.train.project_name, entity=config.train.entity_name, group=config.train.group_name,
                tags=list(config.train.tags or []), dir=str(run_dir), config=config.to_dict(),
                name=run_dir.name, id=resume_id, resume="allow" if resume_id else None,
            )
        elif kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.run = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        else:
            raise ValueError(f"train.tracker must be 'wandb', 'tensorboard' or null, got {kind!r}")
        self.kind = kind

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.kind == "wandb" else None

    def log(self, stats: dict, step: int) -> None:
        if not self.enabled:
            return
        line = {"step": step, **{k: to_json_value(v) for k, v in stats.items()}}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(line) + "\n")
        scalars = {k: v for k, v in line.items() if isinstance(v, (int, float)) and k != "step"}
        if self.kind == "wandb":
            self.run.log(scalars, step=step)
        elif self.kind == "tensorboard":
            for k, v in scalars.items():
                self.run.add_scalar(k, v, step)

    def log_table(self, rows: list[dict], step: int) -> None:
        if self.enabled and self.kind == "wandb" and rows:
            import wandb

            columns = list(rows[0])
            self.run.log({"samples": wandb.Table(columns=columns, data=[[str(r[c]) for c in columns] for r in rows])}, step=step)

    def close(self) -> None:
        if self.kind == "wandb":
            self.run.finish()
        elif self.kind == "tensorboard":
            self.run.close()


def _wandb_logged_in() -> bool:
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except Exception:
        return False


def latest_checkpoint(run_dir: Path) -> Path | None:
    best, best_step = None, -1
    for d in (run_dir / "checkpoints").glob("*"):
        meta = d / "meta.json"
        if d.is_dir() and not d.name.startswith(".") and meta.exists() and (d / "trainer_state.pt").exists():
            step = json.loads(meta.read_text())["step"]
            if step > best_step or (step == best_step and d.name == "final"):
                best, best_step = d, step
    return best


# ---------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------


class PPOTrainer:
    """Holds the policy, reference, optimizer, KL controller and rollout store; `learn()` runs the loop."""

    def __init__(self, config: TRLConfig, reward_fn: Callable, metric_fn: Callable | None = None,
                 stop_sequences: Sequence[str] | None = None):
        from accelerate import Accelerator

        self.config, self.reward_fn, self.metric_fn = config, reward_fn, metric_fn
        self.stop_sequences = list(stop_sequences or [])
        # processes started by torchrun on a machine without CUDA: CPU processes talking over gloo
        multi_cpu = int(os.environ.get("LOCAL_RANK", -1)) != -1 and not torch.cuda.is_available()
        self.accelerator = Accelerator(cpu=True) if multi_cpu else Accelerator()
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.device = self.accelerator.device
        tc, mc = config.train, config.method
        if tc.trainer not in ("AcceleratePPOTrainer", "PPOTrainer"):
            raise ValueError(f"train.trainer '{tc.trainer}' is not supported; zyn_ppo implements AcceleratePPOTrainer")
        if mc.name.lower() not in ("ppoconfig", "ppo"):
            raise ValueError(f"method.name '{mc.name}' is not supported; zyn_ppo implements PPOConfig")
        if mc.kl_signal not in ("approx", "ref"):
            raise ValueError(f"method.kl_signal must be 'approx' or 'ref', got {mc.kl_signal!r}")
        if str(mc.scale_reward).lower() not in ("none", "false", "ref", "running"):
            raise ValueError(f"method.scale_reward must be null, 'ref' or 'running', got {mc.scale_reward!r}")
        self.scale_reward = str(mc.scale_reward).lower() if str(mc.scale_reward).lower() in ("ref", "running") else None
        self.max_new_tokens = int(mc.gen_kwargs.get("max_new_tokens", 40))
        self.max_prompt_length = tc.seq_length - self.max_new_tokens
        if self.max_prompt_length <= 0:
            raise ValueError(f"train.seq_length={tc.seq_length} leaves no room for prompts with max_new_tokens={self.max_new_tokens}")
        self.run_dir = Path(tc.logging_dir or os.path.join("runs", tc.project_name))

        seed_everything(tc.seed + self.rank)
        self.checkpoint = self._find_checkpoint()
        policy_path = str(self.checkpoint / "policy") if self.checkpoint else None
        self.policy, self.tokenizer = load_policy(config, policy_path)
        self.ref_model = None
        if not self.policy.has_hydra:
            from transformers import AutoModelForCausalLM

            with quiet_hf():
                self.ref_model = AutoModelForCausalLM.from_pretrained(
                    resolve_model_path(config.model.model_path), **config.model.model_extra_configs
                )
            self.ref_model.requires_grad_(False).train(False).to(self.device)
        opt_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}.get(config.optimizer.name.lower())
        if opt_cls is None:
            raise ValueError(f"optimizer.name '{config.optimizer.name}' is not supported (adamw, adam, sgd)")
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = opt_cls(params, **config.optimizer.kwargs)
        sched = config.scheduler.name.lower()
        if sched == "cosine_annealing":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, **config.scheduler.kwargs)
        elif sched == "linear":
            self.scheduler = torch.optim.lr_scheduler.LinearLR(self.optimizer, **config.scheduler.kwargs)
        elif sched == "constant":
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        else:
            raise ValueError(f"scheduler.name '{config.scheduler.name}' is not supported (cosine_annealing, linear, constant)")
        self.model, self.optimizer = self.accelerator.prepare(self.policy, self.optimizer)
        self.kl_ctl = AdaptiveKLController(mc.init_kl_coef, mc.target, mc.horizon) if mc.target is not None \
            else FixedKLController(mc.init_kl_coef)
        self.running = RunningMoments()
        self.ref_mean, self.ref_std = mc.ref_mean, mc.ref_std
        # loop state (all of it goes into checkpoints)
        self.step, self.n_collections, self.n_evals, self.episodes = 0, 0, 0, 0
        self.store, self.order, self.mb_index, self.inner = None, None, 0, 0
        self.elapsed_before, self.wandb_id, self.last_approx_kl, self.store_kl = 0.0, None, 0.0, 0.0
        self.prompt_gen = torch.Generator().manual_seed(tc.seed)
        self.prompt_order, self.prompt_pos = [], 0
        self._stop_signal = None

    # ----------------------------------------------------------------------------------- prompts
    def _tokenize_prompts(self, prompts: Sequence, name: str) -> list[dict]:
        if prompts is None or len(prompts) == 0:
            raise ValueError(f"{name} is empty: give at least one prompt")
        items, n_cut = [], 0
        for i, p in enumerate(prompts):
            text, meta = split_prompt(p)
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            if len(ids) == 0:
                start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
                warnings.warn(f"{name}[{i}] is empty; generation starts from the BOS/EOS token instead")
                ids = [start]
            if len(ids) > self.max_prompt_length:
                n_cut += 1
                ids = ids[-self.max_prompt_length:] if self.tokenizer.truncation_side == "left" else ids[: self.max_prompt_length]
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
            items.append(dict(ids=ids, text=text, meta=meta))
        if n_cut and self.is_main:
            warnings.warn(
                f"{n_cut} of {len(items)} {name} were longer than seq_length - max_new_tokens = {self.max_prompt_length} "
                f"tokens and were cut on the {self.tokenizer.truncation_side} (tokenizer.truncation_side)"
            )
        return items

    def _next_prompt_indices(self, n: int) -> list[int]:
        """Shuffled passes over the train prompts, identical on all ranks (each takes its own slice)."""
        out = []
        while len(out) < n:
            if self.prompt_pos >= len(self.prompt_order):
                self.prompt_order = torch.randperm(len(self.train_prompts), generator=self.prompt_gen).tolist()
                self.prompt_pos = 0
            take = self.prompt_order[self.prompt_pos : self.prompt_pos + n - len(out)]
            self.prompt_pos += len(take)
            out += take
        return out

    def _left_pad(self, ids_list: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(x) for x in ids_list)
        ids = torch.full((len(ids_list), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(ids_list), width), dtype=torch.long)
        for i, x in enumerate(ids_list):
            ids[i, width - len(x):] = torch.tensor(x)
            mask[i, width - len(x):] = 1
        return ids.to(self.device), mask.to(self.device)

    # ----------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, items: list[dict], gen_kwargs: dict) -> dict:
        """Sample continuations; returns prompt ids/mask, response ids/mask (up to and including the first
        EOS or stop sequence) and the decoded texts."""
        query, qmask = self._left_pad([it["ids"] for it in items])
        out = self.policy.lm.generate(input_ids=query, attention_mask=qmask, **gen_kwargs)
        response = out[:, query.shape[1]:]
        if response.shape[1] == 0:
            response = torch.full((len(items), 1), self.tokenizer.eos_token_id, dtype=torch.long, device=self.device)
        is_eos = response == self.tokenizer.eos_token_id
        after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
        rmask = (~after_eos).long()
        outputs = []
        for i in range(len(items)):
            n = int(rmask[i].sum())
            toks = response[i, :n].tolist()
            body = toks[:-1] if toks and toks[-1] == self.tokenizer.eos_token_id else toks
            text = self.tokenizer.decode(body, skip_special_tokens=True)
            cut = cut_at_stop(text, self.stop_sequences)
            if cut is not None:
                for m in range(1, len(body) + 1):  # the shortest token prefix that contains the stop sequence
                    if cut_at_stop(self.tokenizer.decode(body[:m], skip_special_tokens=True), self.stop_sequences) is not None:
                        break
                rmask[i, m:] = 0
                text = text[:cut].rstrip()
            outputs.append(text)
        width = max(int(rmask.sum(1).max()), 1)
        return dict(
            query=query, query_mask=qmask, response=response[:, :width], response_mask=rmask[:, :width],
            prompts=[it["text"] for it in items], outputs=outputs,
            samples=[it["text"] + o for it, o in zip(items, outputs)],
            meta={k: [it["meta"].get(k) for it in items] for k in (items[0]["meta"] if items else {})},
        )

    def _score(self, fn: Callable, gen: dict) -> torch.Tensor:
        scores = fn(samples=gen["samples"], prompts=gen["prompts"], outputs=gen["outputs"], **gen["meta"])
        return check_scores(scores, gen["samples"])

    # ----------------------------------------------------------------------------------- rollouts
    @torch.no_grad()
    def make_experience(self) -> dict:
        """Collect `num_rollouts` (per process) rollouts in chunks and return the rollout store."""
        mc = self.config.method
        gen_kwargs = mc.gen_experience_kwargs or mc.gen_kwargs
        chunks, stats = [], dict(t_gen=0.0, t_score=0.0, t_fwd=0.0)
        n = 0
        while n < mc.num_rollouts:
            idx = self._next_prompt_indices(mc.chunk_size * self.world)[self.rank * mc.chunk_size:(self.rank + 1) * mc.chunk_size]
            t = time.time()
            gen = self.generate([self.train_prompts[i] for i in idx], gen_kwargs)
            stats["t_gen"] += time.time() - t
            t = time.time()
            raw = self._score(self.reward_fn, gen)
            stats["t_score"] += time.time() - t
            t = time.time()
            chunks.append(self._process_chunk(gen, raw.to(self.device)))
            stats["t_fwd"] += time.time() - t
            n += len(idx)
        pad_id = self.tokenizer.pad_token_id
        store = {k: pad_cat([c[k] for c in chunks], left=k.startswith("query"), value=pad_id if k in ("query", "response") else 0)
                 for k in chunks[0] if chunks[0][k].dim() >= 2}
        store.update({k: torch.cat([c[k] for c in chunks]) for k in ("raw_scores", "kl_ref")})
        self.rollout_stats = self._rollout_stats(store, stats)
        self.n_collections += 1
        self.episodes += int(self.rollout_stats["rollout/count"])
        return store

    def _process_chunk(self, gen: dict, raw: torch.Tensor) -> dict:
        mc = self.config.method
        everyone = self._gather_cat(raw)
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
        logits, values, ref_logits, trunk = self.policy(tokens, attn, pos, logits_from=start, with_ref=self.policy.has_hydra)
        if ref_logits is None:
            hidden = arch_parts(self.ref_model)[0](input_ids=tokens, attention_mask=attn, position_ids=pos, use_cache=False)
            ref_logits = self.ref_model.get_output_embeddings()(hidden.last_hidden_state[:, start:-1])
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
        raw = self._gather_cat(store["raw_scores"])
        kl = self._gather_cat(store["kl_ref"])
        lengths = self._gather_cat(store["response_mask"].sum(1).float())
        self.store_kl = kl.mean().item()
        return {
            "rollout/score_mean": raw.mean().item(), "rollout/score_std": raw.std().item() if len(raw) > 1 else 0.0,
            "rollout/score_running_mean": float(self.running.mean), "rollout/score_running_std": float(self.running.std),
            "rollout/response_length": lengths.mean().item(), "rollout/count": float(len(raw)),
            "kl/ref": self.store_kl, "kl/ref_per_token": (kl.sum() / lengths.sum().clamp(min=1)).item(),
            "time/rollout_generate": t["t_gen"], "time/rollout_score": t["t_score"], "time/rollout_forward": t["t_fwd"],
        }

    def _gather_cat(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate a 1-D tensor over all processes (on the CPU)."""
        x = x.detach().float().reshape(-1).cpu()
        if self.world == 1:
            return x
        from accelerate.utils import gather_object

        return torch.tensor(gather_object(x.tolist()))

    def _mean_across(self, values: dict) -> dict:
        if self.world == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], device=self.device)
        t = self.accelerator.reduce(t, reduction="mean")
        return {k: v.item() for k, v in zip(keys, t)}

    # ----------------------------------------------------------------------------------- optimisation
    def train_step(self, idx: torch.Tensor) -> dict:
        """One optimizer step on the rollouts `idx` of the store."""
        mc, store = self.config.method, self.store
        mb = trim({k: v[idx.to(v.device)] for k, v in store.items() if v.dim() >= 2})
        mask = mb["response_mask"].float()
        adv, returns = gae_advantages(mb["rewards"], mb["values"], mask, mc.gamma, mc.lam)
        adv = whiten(adv, mask, stats=self._global_mean_var(adv, mask) if self.world > 1 else None)
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
                logits, values, _, _ = self.model(tokens, attn, position_ids_from(attn), logits_from=mb["query"].shape[1] - 1,
                                                  trunk=trunk)
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
        stats = self._mean_across(stats)
        stats["lr"] = lr
        return stats

    def _global_mean_var(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum()]), reduction="sum")
        mean = s[0] / s[1]
        sq = self.accelerator.reduce((((x - mean) * mask) ** 2).sum(), reduction="sum")
        return mean, sq / (s[1] - 1).clamp(min=1)

    # ----------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Generate on eval prompts (sharded over ranks), score, print a table, save samples; returns stats."""
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
            (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "samples" / f"eval_{self.step}.jsonl", "w") as f:
                for r in rows:
                    f.write(json.dumps({k: r[k] for k in ("prompt", "output", "reward", "metrics")}) + "\n")
            self._print_table(rows, stats)
            self.tracker.log_table([{"prompt": r["prompt"], "output": r["output"], "reward": r["reward"], **r["metrics"]} for r in rows], self.step)
        self.n_evals += 1
        return stats

    def _print_table(self, rows: list[dict], stats: dict) -> None:
        from rich.console import Console
        from rich.table import Table

        title = f"Evaluation #{self.n_evals} (step {self.step}) " + " ".join(
            f"{k}: {significant(v)}" for k, v in stats.items() if k.startswith(("reward", "metrics")))
        names = list(rows[0]["metrics"]) if rows else []
        table = Table("prompt", "output", "reward", *names, title=title, show_lines=True)
        for r in rows[:3]:
            table.add_row(r["prompt"], r["output"], str(significant(r["reward"])), *[str(significant(r["metrics"][n])) for n in names])
        Console(width=max(120, shutil.get_terminal_size().columns)).print(table)

    # ----------------------------------------------------------------------------------- checkpoints
    def _find_checkpoint(self) -> Path | None:
        resume = self.config.train.resume_from_checkpoint
        if resume in (None, False, "", "none", "None", "false"):
            return None
        if resume in ("auto", True):
            return latest_checkpoint(self.run_dir)
        path = Path(resume)
        if not (path / "trainer_state.pt").exists():
            raise FileNotFoundError(f"train.resume_from_checkpoint={resume!r} is not a zyn_ppo checkpoint (no trainer_state.pt)")
        return path

    def save_checkpoint(self, name: str) -> None:
        """Atomic write to <run_dir>/checkpoints/<name> (temp folder + rename); periodic ones replace the previous."""
        rng = dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
                   cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        rngs = [rng]
        if self.world > 1:
            from accelerate.utils import gather_object

            rngs = gather_object([rng])
        if self.is_main:
            root = self.run_dir / "checkpoints"
            tmp = root / f".tmp_{name}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            policy = self.accelerator.unwrap_model(self.model)
            with quiet_hf():
                policy.lm.save_pretrained(tmp / "policy")
            self.tokenizer.save_pretrained(tmp / "policy")
            torch.save(policy.v_head.state_dict(), tmp / "value_head.pt")
            if policy.has_hydra:
                torch.save(dict(blocks=policy.ref_blocks.state_dict(), norm=policy.ref_norm.state_dict(),
                                head=policy.ref_head.state_dict()), tmp / "reference_branch.pt")
            state = dict(
                step=self.step, n_collections=self.n_collections, n_evals=self.n_evals, episodes=self.episodes,
                optimizer=self.optimizer.state_dict() if self.config.train.save_optimizer else None,
                scheduler=self.scheduler.state_dict(), kl_coef=self.kl_ctl.value,
                running=vars(self.running).copy(), ref_mean=self.ref_mean, ref_std=self.ref_std,
                store=None if self.store is None else {k: v.cpu() for k, v in self.store.items()},
                store_kl=self.store_kl, rollout_stats=getattr(self, "rollout_stats", None),
                order=self.order, mb_index=self.mb_index, inner=self.inner,
                prompt_gen=self.prompt_gen.get_state(), prompt_order=self.prompt_order, prompt_pos=self.prompt_pos,
                elapsed=self.elapsed(), wandb_id=self.tracker.run_id or self.wandb_id, rng=rngs, world=self.world,
            )
            if self.world > 1 and self.store is not None:
                state["store"] = None  # each rank holds its own store; resume starts a fresh collection
                state["order"], state["mb_index"], state["inner"] = None, 0, 0
            torch.save(state, tmp / "trainer_state.pt")
            (tmp / "meta.json").write_text(json.dumps(dict(step=self.step, world=self.world)))
            final = root / name
            old = root / f".old_{name}"
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
            for d in root.glob("step_*"):
                if d.name != name:
                    shutil.rmtree(d, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self, path: Path) -> None:
        state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False)
        policy = self.accelerator.unwrap_model(self.model)
        policy.v_head.load_state_dict(torch.load(path / "value_head.pt", map_location=self.device))
        if policy.has_hydra:
            branch = torch.load(path / "reference_branch.pt", map_location=self.device)
            policy.ref_blocks.load_state_dict(branch["blocks"])
            policy.ref_norm.load_state_dict(branch["norm"])
            policy.ref_head.load_state_dict(branch["head"])
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl_ctl.value = state["kl_coef"]
        vars(self.running).update(state["running"])
        self.ref_mean, self.ref_std = state["ref_mean"], state["ref_std"]
        for k in ("step", "n_collections", "n_evals", "episodes", "order", "mb_index", "inner", "prompt_order",
                  "prompt_pos", "store_kl"):
            setattr(self, k, state[k])
        self.store = None if state["store"] is None else {k: v.to(self.device) for k, v in state["store"].items()}
        if state["rollout_stats"] is not None:
            self.rollout_stats = state["rollout_stats"]
        self.prompt_gen.set_state(state["prompt_gen"])
        self.elapsed_before, self.wandb_id = state["elapsed"], state["wandb_id"]
        if len(state["rng"]) == self.world:
            rng = state["rng"][self.rank]
            random.setstate(rng["python"])
            np.random.set_state(rng["numpy"])
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Save the policy LM and tokenizer (loadable with AutoModelForCausalLM.from_pretrained)."""
        if self.is_main:
            with quiet_hf():
                self.accelerator.unwrap_model(self.model).lm.save_pretrained(directory)
            self.tokenizer.save_pretrained(directory)
        self.accelerator.wait_for_everyone()

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t_start

    # ----------------------------------------------------------------------------------- the loop
    def _prepare_run_dir(self) -> None:
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            metrics = self.run_dir / "metrics.jsonl"
            if self.checkpoint is None:
                if (self.run_dir / "checkpoints").exists() or metrics.exists():
                    warnings.warn(f"Starting a fresh run in {self.run_dir}: old metrics and checkpoints there are removed")
                shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)
                shutil.rmtree(self.run_dir / "samples", ignore_errors=True)
                metrics.unlink(missing_ok=True)
            elif metrics.exists():  # drop what was logged after the checkpoint
                keep = [line for line in metrics.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= self.step]
                tmp = metrics.with_suffix(".tmp")
                tmp.write_text("".join(line + "\n" for line in keep))
                tmp.replace(metrics)
            with open(self.run_dir / "config.yaml", "w") as f:
                yaml.safe_dump(self.config.to_dict(), f, sort_keys=False)
        self.accelerator.wait_for_everyone()

    def _on_signal(self, signum, frame):
        if self._stop_signal is not None:  # the second signal quits at once, without saving
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
        self._stop_signal = signum
        if self.is_main:
            print(f"\nzyn_ppo: {signal.Signals(signum).name} received, saving a checkpoint after this step "
                  f"(send it again to quit without saving)", file=sys.stderr)

    def learn(self) -> None:
        tc, mc = self.config.train, self.config.method
        self.t_start = time.time()
        if self.checkpoint is not None:
            self.load_checkpoint(self.checkpoint)
            if self.is_main:
                print(f"zyn_ppo: resuming from {self.checkpoint} at step {self.step} (set train.resume_from_checkpoint=null "
                      f"or another train.logging_dir to start fresh)", file=sys.stderr)
        self._prepare_run_dir()
        self.tracker = Tracker(self.run_dir, self.config, self.is_main, self.wandb_id)
        store_size = mc.chunk_size * math.ceil(mc.num_rollouts / mc.chunk_size)  # whole chunks, per process
        self.total_steps = min(tc.total_steps, tc.epochs * mc.ppo_epochs * math.ceil(store_size / tc.batch_size))
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (self.is_main and sys.stderr.isatty()),
                   desc="zyn_ppo", dynamic_ncols=True)
        done_before = self.step >= self.total_steps
        stopped = 0
        try:
            if self.step == 0 and self.n_evals == 0:
                self.tracker.log(self.evaluate(), step=0)
            while self.step < self.total_steps:
                t0 = time.time()
                stats = {}
                if self.store is None or self.mb_index * tc.batch_size >= len(self.store["rewards"]):
                    self.store = self.make_experience()
                    self.order = torch.randperm(len(self.store["rewards"])).tolist()
                    self.mb_index, self.inner = 0, 0
                    stats.update(self.rollout_stats)
                idx = torch.tensor(self.order[self.mb_index * tc.batch_size:(self.mb_index + 1) * tc.batch_size])
                stats.update(self.train_step(idx))
                self.last_approx_kl = stats["policy/approx_kl"]
                self.inner += 1
                if self.inner == mc.ppo_epochs:  # trlx: after the minibatch's ppo_epochs steps
                    signal_value = self.last_approx_kl if mc.kl_signal == "approx" else self.store_kl
                    self.kl_ctl.update(signal_value, n_steps=tc.batch_size)
                    self.inner, self.mb_index = 0, self.mb_index + 1
                self.step += 1
                stats.update({"kl/ref": self.store_kl, "kl_coef": self.kl_ctl.value,
                              "rollout/score_mean": self.rollout_stats["rollout/score_mean"],
                              "episodes": self.episodes, "time/step": time.time() - t0})
                if self.step % tc.eval_interval == 0 or self.step == self.total_steps:
                    stats.update(self.evaluate())
                stats["time/elapsed"] = self.elapsed()
                self.tracker.log(stats, step=self.step)
                bar.update(1)
                bar.set_postfix(reward=f"{stats['rollout/score_mean']:.3g}", kl=f"{stats['kl/ref']:.3g}", refresh=False)
                stopped = self._agree_stop()
                if stopped:
                    break
                if self.step % tc.checkpoint_interval == 0 and self.step < self.total_steps:
                    self.save_checkpoint(f"step_{self.step}")
            if stopped and self.step < self.total_steps:
                self.save_checkpoint(f"step_{self.step}")
            elif not done_before:
                self.save_checkpoint("final")
            if stopped:
                raise SystemExit(128 + signal.SIGTERM) if stopped == signal.SIGTERM else KeyboardInterrupt()
        finally:
            bar.close()
            for sig, h in handlers.items():
                signal.signal(sig, h)
            self.tracker.close()

    def _agree_stop(self) -> int:
        flag = int(self._stop_signal or 0)
        if self.world > 1:
            t = self.accelerator.reduce(torch.tensor([flag], device=self.device), reduction="sum")
            flag = int(t.item()) and (flag or int(signal.SIGTERM))
        return flag


def pad_cat(tensors: list[torch.Tensor], left: bool, value: float) -> torch.Tensor:
    """Concatenate along dim 0, padding dim 1 on the left or right to the widest."""
    width = max(t.shape[1] for t in tensors)
    pads = [[0, 0] * (t.dim() - 2) + ([width - t.shape[1], 0] if left else [0, width - t.shape[1]]) for t in tensors]
    return torch.cat([F.pad(t, pad, value=value) for t, pad in zip(tensors, pads)])


def trim(mb: dict) -> dict:
    """Drop all-padding columns: left of the queries, right of the responses."""
    q_keep = mb["query_mask"].sum(0) > 0
    q0 = int(q_keep.float().argmax())
    r_len = max(int(mb["response_mask"].sum(1).max()), 1)
    return {k: v[:, q0:] if k.startswith("query") else v[:, :r_len] for k, v in mb.items()}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------


def train(
    reward_fn: Callable | None = None,
    prompts: Sequence | None = None,
    eval_prompts: Sequence | None = None,
    metric_fn: Callable | None = None,
    config: TRLConfig | None = None,
    stop_sequences: Sequence[str] | None = None,
) -> PPOTrainer:
    """Train a policy with PPO against `reward_fn(samples, prompts=..., outputs=...) -> list[float]`.

    prompts / eval_prompts: strings, or dicts {"prompt": str, **metadata}; eval_prompts defaults to the
    first batch_size prompts (as trlx). metric_fn(samples, prompts=..., outputs=...) -> {name: [float]} is
    logged as metrics/<name> at each evaluation. stop_sequences cut outputs at the first occurrence.
    Returns the trainer (trainer.save_pretrained(dir) saves the policy)."""
    if reward_fn is None:
        raise ValueError("zyn_ppo.train needs a reward_fn (offline training from samples is not implemented)")
    config = config or TRLConfig()
    if isinstance(config, dict):
        config = TRLConfig.from_dict(config)
    if prompts is None or len(prompts) == 0:
        raise ValueError("prompts is empty: give at least one prompt")
    if eval_prompts is not None and len(eval_prompts) == 0:
        raise ValueError("eval_prompts is empty: give at least one prompt or None (then the first batch_size prompts)")
    trainer = PPOTrainer(config, reward_fn=reward_fn, metric_fn=metric_fn, stop_sequences=stop_sequences)
    trainer.train_prompts = trainer._tokenize_prompts(prompts, "prompts")
    eval_prompts = eval_prompts if eval_prompts is not None else list(prompts)[: config.train.batch_size]
    trainer.eval_prompts = trainer._tokenize_prompts(eval_prompts, "eval_prompts")
    trainer.learn()
    return trainer
