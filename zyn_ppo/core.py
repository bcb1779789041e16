"""The PPO maths as small pure functions, each checked against a plain loop in tests/test_core.py."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


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
