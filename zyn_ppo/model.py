"""The policy: a causal LM with a value head and a frozen reference (a hydra branch or a full copy).

`freeze_layers` decides which parameters train, for PPO and for the GRPO script alike; `load_policy`
loads model and tokenizer in an explicit dtype (fp32 unless asked otherwise).
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch
import torch.nn as nn

from zyn_models import resolve_model_path

from .config import TRLConfig, UserError

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
    "gemma3_text": ("model", "layers", "norm"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def arch_parts(lm: nn.Module) -> tuple[nn.Module, nn.ModuleList, nn.Module]:
    """(backbone, blocks, final norm) of a supported causal LM."""
    model_type = getattr(lm.config, "model_type", type(lm).__name__)
    if model_type not in ARCHITECTURES:
        raise UserError(
            f"architecture '{model_type}' ({type(lm).__name__}) is not supported by zyn_ppo; supported causal LM "
            f"types: {', '.join(ARCHITECTURES)}. Add its attribute paths to zyn_ppo.model.ARCHITECTURES."
        )
    backbone_name, blocks_name, norm_name = ARCHITECTURES[model_type]
    backbone = getattr(lm, backbone_name)
    return backbone, getattr(backbone, blocks_name), getattr(backbone, norm_name)


def freeze_layers(lm: nn.Module, num_layers_unfrozen: int, freeze_embeddings: bool = False) -> None:
    """Which parameters of `lm` train, the same rule for PPO and GRPO.

    num_layers_unfrozen = k > 0: the top k blocks train, the blocks below are frozen; k = 0: no block
    trains; k = -1: every block trains. The final norm and the LM head always train. The input embeddings
    (and with them an LM head tied to them) train as in trlx, unless freeze_embeddings is True."""
    _, blocks, norm = arch_parts(lm)
    k = num_layers_unfrozen
    if k > len(blocks):
        raise UserError(f"model.num_layers_unfrozen={k} but the model has {len(blocks)} blocks")
    lm.requires_grad_(True)
    trainable = list(blocks) if k < 0 else list(blocks)[len(blocks) - k:]
    for block in blocks:
        block.requires_grad_(any(block is b for b in trainable))
    if freeze_embeddings:
        lm.get_input_embeddings().requires_grad_(False)
        backbone = arch_parts(lm)[0]
        for name, module in backbone.named_children():  # position embeddings and the like
            if module is not blocks and module is not norm and any(p.requires_grad for p in module.parameters()):
                module.requires_grad_(False)
        tied = lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
        if not tied:
            lm.get_output_embeddings().requires_grad_(True)
    norm.requires_grad_(True)


def block_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden state a transformer block was called with (positionally or as `hidden_states=`)."""
    return args[0] if args else kwargs["hidden_states"]


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
        freeze_layers(lm, self.k, freeze_embeddings)
        self.cache_trunk = freeze_embeddings and self.k > 0
        self.ref_blocks = self.ref_norm = self.ref_head = None
        if self.k > 0:  # the hydra reference branch: its own copies, never tied to the policy's weights
            self.ref_blocks = copy.deepcopy(nn.ModuleList(list(blocks)[-self.k:])).requires_grad_(False)
            self.ref_norm = copy.deepcopy(norm).requires_grad_(False)
            self.ref_head = copy.deepcopy(lm.get_output_embeddings()).requires_grad_(False)  # own weight, untied

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

        if trunk is not None:  # before `capture`, so that the reference branch starts from `trunk` too
            hooks.append(blocks[-self.k].register_forward_pre_hook(substitute, with_kwargs=True))
            setattr(self.backbone, self.blocks_name, nn.ModuleList(list(blocks)[-self.k:]))
        if with_ref:
            hooks.append(blocks[-self.k].register_forward_pre_hook(capture, with_kwargs=True))
        try:
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        finally:
            for hook in hooks:
                hook.remove()
            if trunk is not None:
                setattr(self.backbone, self.blocks_name, blocks)
        # a contiguous copy: on a CPU the LM head on the strided slice runs as a batched matmul, ~1.6x slower
        hidden = out.last_hidden_state[:, logits_from:-1].contiguous()
        logits = self.lm.get_output_embeddings()(hidden)
        values = self.v_head(hidden).squeeze(-1)
        ref_logits = branch_input = None
        if with_ref:
            args, kwargs = captured["args"], captured["kwargs"]
            h = branch_input = block_input(args, kwargs)
            kwargs.pop("hidden_states", None)
            for block in self.ref_blocks:
                h = block(h, *args[1:], **kwargs)
                h = h[0] if isinstance(h, tuple) else h
            ref_logits = self.ref_head(self.ref_norm(h)[:, logits_from:-1].contiguous())
        return logits, values, ref_logits, branch_input

    @contextlib.contextmanager
    def recording_trunk(self):
        """Inside the block, every forward pass of the LM (each step of `generate`) appends the trunk's hidden
        state entering the top blocks to the yielded list: [batch, prompt length] for the prompt, then
        [batch, 1] per new token. With a frozen trunk these are the states a full forward would compute."""
        states: list[torch.Tensor] = []

        def record(module, args, kwargs):
            states.append(block_input(args, kwargs))

        hook = getattr(self.backbone, self.blocks_name)[-self.k].register_forward_pre_hook(record, with_kwargs=True)
        try:
            yield states
        finally:
            hook.remove()

    def reference_logits(self, ref_model: nn.Module | None, input_ids, attention_mask, position_ids, logits_from: int):
        """Logits of a full reference copy (used when there is no hydra branch)."""
        hidden = arch_parts(ref_model)[0](input_ids=input_ids, attention_mask=attention_mask,
                                          position_ids=position_ids, use_cache=False)
        return ref_model.get_output_embeddings()(hidden.last_hidden_state[:, logits_from:-1].contiguous())


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


def load_causal_lm(path: str, dtype: str = "float32", **kwargs) -> nn.Module:
    """A causal LM in an explicit dtype (transformers >= 5 would follow the checkpoint's own, e.g. fp16)."""
    from transformers import AutoModelForCausalLM

    with quiet_hf():
        lm = AutoModelForCausalLM.from_pretrained(resolve_model_path(path), dtype=DTYPES[dtype], **kwargs)
    return lm.to(DTYPES[dtype])


def load_tokenizer(path: str, truncation_side: str = "right", **kwargs):
    """The policy's tokenizer, left-padding, with a pad token (the EOS token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(path), **kwargs)
    if tokenizer.eos_token_id is None:
        raise UserError(f"the tokenizer of '{path}' has no EOS token; set one (tokenizer.eos_token = ...)")
    if tokenizer.pad_token_id is None:
        warnings.warn(f"the tokenizer of '{path}' has no pad token; using the EOS token '{tokenizer.eos_token}' as pad")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = truncation_side
    return tokenizer


def load_policy(config: TRLConfig, path: str | None = None):
    """Load the LM (from `path` or model.model_path) and the tokenizer; return (PolicyWithValueHead, tokenizer)."""
    from transformers import GenerationConfig

    tokenizer = load_tokenizer(config.tokenizer.tokenizer_path or config.model.model_path,
                               config.tokenizer.truncation_side, **config.tokenizer.tokenizer_extra_configs)
    lm = load_causal_lm(path or config.model.model_path, config.model.dtype, **config.model.model_extra_configs)
    arch_parts(lm)  # clear error for unsupported architectures
    # sample from the policy's own distribution: only gen_kwargs shape generation, not the model's defaults
    lm.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id
    )
    lm.train(False)
    return PolicyWithValueHead(lm, config.model.num_layers_unfrozen, config.model.freeze_embeddings), tokenizer
