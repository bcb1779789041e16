"""The run's settings, in trlx's TRLConfig layout (train, model, tokenizer, optimizer, scheduler, method).

`TRLConfig.from_dict` and `TRLConfig.load_yaml` accept trlx's YAML files as they are: keys that only
meant something to trlx are accepted and listed in `config.ignored`, keys that select a trlx feature this
engine does not have must keep their neutral value, and every other value is checked (type, range,
cross-field rules) before anything loads. Each problem is a `ConfigError` naming key, value and what is
allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from zyn_models import UserError  # the project's one user-facing error: one line, exit status 2


class ConfigError(UserError):
    """A config value that is unknown, of the wrong type or out of range."""


@dataclass
class ModelConfig:
    model_path: str = "gpt2"
    """Hugging Face name or local folder of a causal LM (GPT-2, GPT-NeoX/Pythia, Llama/SmolLM, ...)."""
    num_layers_unfrozen: int = -1
    """Top blocks that train; > 0 uses the hydra reference, -1 trains everything with a full reference copy."""
    freeze_embeddings: bool = False
    """zyn_ppo only. trlx kept the input embeddings (and a tied LM head) trainable, so every step backprops
    through the whole trunk. True freezes everything below the top blocks except the final norm: with
    num_layers_unfrozen > 0 the trunk's hidden states are then computed once per rollout and reused by every
    gradient step, and the hydra reference equals the initial model exactly."""
    dtype: str = "float32"
    """Precision the policy, value head and reference are loaded and trained in: float32 (trlx) | bfloat16.
    Set explicitly because transformers >= 5 would otherwise follow the checkpoint (pythia-410m: float16)."""
    autocast: str | None = None
    """zyn_ppo only. null: none; "bfloat16": forward passes (generation, rollout and training forwards) under
    torch.autocast while weights, optimizer and losses stay in model.dtype."""
    model_extra_configs: dict = field(default_factory=dict)
    """Extra keyword arguments for `from_pretrained` (not the dtype: use model.dtype)."""


@dataclass
class TokenizerConfig:
    tokenizer_path: str | None = None
    """Defaults to model.model_path."""
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
    """Rollout collections at most (each followed by ppo_epochs passes over the store)."""
    total_steps: int = 10000
    """Optimizer steps at most (0: only the first evaluation)."""
    batch_size: int = 32
    """Rollouts per minibatch (per process)."""
    minibatch_size: int | None = None
    """Rollouts per forward/backward pass; gradients are accumulated up to batch_size."""
    checkpoint_interval: int = 10000
    eval_interval: int = 100
    project_name: str = "trlx"
    """W&B project."""
    entity_name: str | None = None
    group_name: str | None = None
    tags: list = field(default_factory=list)
    save_optimizer: bool = True
    """Save optimizer state in checkpoints (needed for an exact resume)."""
    tracker: str | None = None
    """"wandb" (offline when there is no API key) | "tensorboard" | null. trlx defaulted to wandb."""
    logging_dir: str | None = None
    """The run directory; default runs/<project_name>."""
    seed: int = 1000
    resume_from_checkpoint: Any = "auto"
    """"auto": continue the run in logging_dir from its latest good checkpoint, if any; null/false: start
    fresh (refused where results exist, unless train(overwrite=True) moves them aside); or a checkpoint folder."""


@dataclass
class MethodConfig:
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
    """null/false/"none" | "ref" (divide by the std of the first rollout chunk's scores) | "running"."""
    ref_mean: float | None = None
    ref_std: float | None = None
    cliprange_reward: float = 10.0
    gen_kwargs: dict = field(default_factory=lambda: dict(max_new_tokens=40, top_k=0, top_p=1.0, do_sample=True))
    gen_experience_kwargs: dict | None = None
    """Generation settings for rollouts when different from gen_kwargs (used for evaluation)."""
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

# trlx keys with no effect here: accepted, listed in config.ignored
TRLX_IGNORED = {
    "train.pipeline", "train.trainer_kwargs", "train.orchestrator", "train.checkpoint_dir",
    "train.rollout_logging_dir", "train.save_best", "tokenizer.padding_side",
}
# trlx keys that select a feature this engine does not have: only these values are accepted
TRLX_FIXED = {
    "train.trainer": ("AcceleratePPOTrainer", "PPOTrainer"),
    "method.name": ("PPOConfig", "ppoconfig", "ppo", "PPO"),
    "model.model_arch_type": ("causal",),
    "model.delta_kwargs": (None,),
    "model.peft_config": (None,),
    "method.num_value_layers_unfrozen": (0,),
}

INT_FLOORS = {key: 1 for key in (
    "train.seq_length", "train.epochs", "train.total_steps", "train.batch_size", "train.checkpoint_interval",
    "train.eval_interval", "method.ppo_epochs", "method.num_rollouts", "method.chunk_size", "method.horizon")}
INT_FLOORS["train.seed"] = 0
INT_FLOORS["train.total_steps"] = 0  # 0: evaluate the initial policy only (python -m zyn_ppo.reproduce)
CHOICES = {
    "train.tracker": (None, "wandb", "tensorboard", "none"),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "model.autocast": (None, "bfloat16"),
    "tokenizer.truncation_side": ("right", "left"),
    "optimizer.name": ("adamw", "adam", "sgd"),
    "scheduler.name": ("cosine_annealing", "linear", "constant"),
    "method.kl_signal": ("approx", "ref"),
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class TRLConfig:
    """All settings, loaded from trlx-style YAML; unknown keys and bad values are ConfigErrors."""

    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    ignored: dict = field(default_factory=dict, compare=False, repr=False)
    """trlx-only keys found in the input (not part of to_dict)."""

    @classmethod
    def load_yaml(cls, path: str | os.PathLike) -> "TRLConfig":
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, config: dict) -> "TRLConfig":
        sections, ignored = {}, {}
        for name, values in config.items():
            if name not in SECTIONS:
                raise ConfigError(f"unknown config section '{name}' (valid: {', '.join(SECTIONS)})")
            if values is not None and not isinstance(values, dict):
                raise ConfigError(f"config section '{name}' must be a mapping, got {values!r:.60}")
            known = {f.name for f in dataclasses.fields(SECTIONS[name])}
            kept = {}
            for key, value in (values or {}).items():
                dotted = f"{name}.{key}"
                if dotted in TRLX_IGNORED:
                    ignored[dotted] = value
                elif dotted in TRLX_FIXED:
                    if value not in TRLX_FIXED[dotted]:
                        raise ConfigError(f"{dotted}={value!r} selects a trlx feature zyn_ppo does not have; "
                                          f"allowed: {', '.join(map(repr, TRLX_FIXED[dotted]))}")
                elif dotted == "train.trackers":  # old trlx spelling of train.tracker
                    if value and not (values or {}).get("tracker"):
                        kept["tracker"] = value[0] if isinstance(value, (list, tuple)) else value
                elif key in known:
                    kept[key] = value
                else:
                    raise ConfigError(f"unknown config key '{dotted}' (valid keys in {name}: {', '.join(sorted(known))})")
            sections[name] = SECTIONS[name](**kept)
        out = cls(**sections, ignored=ignored)
        out.validate()
        return out

    def to_dict(self) -> dict:
        return json.loads(json.dumps({name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}))

    @classmethod
    def update(cls, base: "dict | TRLConfig", updates: dict) -> "TRLConfig":
        """Merge dotted keys ({"train.total_steps": 10, "method.gen_kwargs.max_new_tokens": 8}) or nested
        dicts into `base`; keys that are not in the config raise ConfigError naming the key."""
        merged = base.to_dict() if isinstance(base, TRLConfig) else copy.deepcopy(base)
        base_config = cls.from_dict(merged)  # fill defaults, validate the base
        merged = base_config.to_dict()
        flat = {}
        for key, value in updates.items():
            if isinstance(value, dict) and key in SECTIONS:
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        for key, value in flat.items():
            parts = key.split(".")
            if parts[0] not in SECTIONS or len(parts) < 2:
                raise ConfigError(f"unknown config key '{key}' (use section.key with a section in {', '.join(SECTIONS)})")
            node = merged[parts[0]]
            for depth, part in enumerate(parts[1:-1], start=1):
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"unknown config key '{key}': '{'.'.join(parts[:depth + 1])}' is not a dict setting")
                node = node[part]
            if len(parts) == 2 and parts[1] not in node:
                raise ConfigError(f"unknown config key '{key}' (valid keys in {parts[0]}: {', '.join(sorted(node))})")
            node[parts[-1]] = value
        out = cls.from_dict(merged)
        out.ignored = dict(base_config.ignored) if not isinstance(base, TRLConfig) else dict(base.ignored)
        return out

    def get(self, key: str) -> Any:
        """The value at a dotted key, e.g. config.get("method.gen_kwargs.max_new_tokens")."""
        node: Any = self.to_dict()
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def validate(self) -> None:
        """Types, ranges and cross-field rules; raises ConfigError naming key, value and what is allowed."""

        def bad(key: str, allowed: str):
            raise ConfigError(f"{key}={self.get(key)!r}: must be {allowed}")

        for key, floor in INT_FLOORS.items():
            value = self.get(key)
            if not _is_int(value) or value < floor:
                bad(key, f"an integer >= {floor}")
        mb = self.train.minibatch_size
        if mb is not None and (not _is_int(mb) or not 1 <= mb <= self.train.batch_size):
            bad("train.minibatch_size", f"null or an integer in 1..train.batch_size ({self.train.batch_size})")
        for key, (low, high, strict_low) in {
            "method.init_kl_coef": (0, None, False), "method.cliprange": (0, None, True),
            "method.cliprange_value": (0, None, True), "method.vf_coef": (0, None, False),
            "method.gamma": (0, 1, False), "method.lam": (0, 1, False),
        }.items():
            value = self.get(key)
            if not _is_number(value) or not math.isfinite(value) or value < low or (strict_low and value == low) \
                    or (high is not None and value > high):
                bad(key, f"a finite number {'>' if strict_low else '>='} {low}" + (f" and <= {high}" if high is not None else ""))
        for key in ("method.target", "method.ref_mean", "method.ref_std", "method.cliprange_reward"):
            value = self.get(key)
            if value is not None and value is not False and (not _is_number(value) or not math.isfinite(value)):
                bad(key, "null or a finite number")
        if self.method.target is not None and self.method.target <= 0:
            bad("method.target", "null (fixed KL coefficient) or a number > 0")
        if self.method.ref_std is not None and self.method.ref_std <= 0:
            bad("method.ref_std", "null or a number > 0")
        if str(self.method.scale_reward).lower() not in ("none", "false", "ref", "running"):
            bad("method.scale_reward", "null, 'ref' or 'running'")
        for key, choices in CHOICES.items():
            value = self.get(key)
            if (value.lower() if isinstance(value, str) and key.startswith(("optimizer", "scheduler")) else value) not in choices:
                bad(key, "one of " + ", ".join("null" if c is None else repr(c) for c in choices))
        for key in ("method.gen_kwargs", "model.model_extra_configs", "tokenizer.tokenizer_extra_configs",
                    "optimizer.kwargs", "scheduler.kwargs"):
            if not isinstance(self.get(key), dict):
                bad(key, "a mapping")
        if self.method.gen_experience_kwargs is not None and not isinstance(self.method.gen_experience_kwargs, dict):
            bad("method.gen_experience_kwargs", "null or a mapping")
        for key in ("dtype", "torch_dtype"):
            if key in self.model.model_extra_configs:
                raise ConfigError(f"model.model_extra_configs.{key}: set the precision with model.dtype instead")
        for key in ("method.gen_kwargs", "method.gen_experience_kwargs"):
            if self.get(key) is None:
                continue
            new = self.get(key).get("max_new_tokens", 40)
            if not _is_int(new) or new < 1:
                raise ConfigError(f"{key}.max_new_tokens={new!r}: must be an integer >= 1")
            if new >= self.train.seq_length:
                raise ConfigError(f"{key}.max_new_tokens={new} leaves no room for prompts in "
                                  f"train.seq_length={self.train.seq_length}; raise seq_length or lower max_new_tokens")
        lr = self.optimizer.kwargs.get("lr", 1e-3)
        if not _is_number(lr) or not math.isfinite(lr) or lr <= 0:
            raise ConfigError(f"optimizer.kwargs.lr={lr!r}: must be a finite number > 0")
        if not isinstance(self.model.model_path, str) or not self.model.model_path:
            bad("model.model_path", "a hub name or a folder")
        if not _is_int(self.model.num_layers_unfrozen) or self.model.num_layers_unfrozen < -1:
            bad("model.num_layers_unfrozen", "-1 (train everything), 0 or the number of top blocks that train")
        store = self.method.chunk_size * math.ceil(self.method.num_rollouts / self.method.chunk_size)
        if self.train.batch_size > store:
            raise ConfigError(f"train.batch_size={self.train.batch_size} is larger than the rollout store "
                              f"(method.num_rollouts={self.method.num_rollouts} in chunks of {self.method.chunk_size}); "
                              "lower the batch size or collect more rollouts")

    def __str__(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def collection_minibatches(config: TRLConfig) -> int:
    """Minibatches of train.batch_size in one collection of method.num_rollouts rollouts (whole chunks of
    method.chunk_size, per process)."""
    mc = config.method
    return math.ceil(mc.chunk_size * math.ceil(mc.num_rollouts / mc.chunk_size) / config.train.batch_size)


def step_budget(config: TRLConfig) -> int:
    """The optimiser steps a run takes, for every trainer (PPO's and the GRPO script's): train.total_steps,
    capped as trlx caps it at train.epochs collections, each used for method.ppo_epochs passes over its
    minibatches."""
    tc = config.train
    return min(tc.total_steps, tc.epochs * config.method.ppo_epochs * collection_minibatches(config))
