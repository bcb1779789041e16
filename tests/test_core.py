"""zyn_ppo.core: the PPO maths against plain loops."""

import math

import numpy as np
import pytest
import torch

import zyn_ppo

# ----------------------------------------------------------------------------------- PPO maths


def random_batch(seed=0, B=5, T=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 1, 5, 6])[:B]
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    return (torch.randn(B, T, generator=g), torch.randn(B, T, generator=g), mask, lengths)


def test_gae_matches_plain_loop():
    rewards, values, mask, lengths = random_batch()
    gamma, lam = 0.9, 0.8
    adv, ret = zyn_ppo.gae_advantages(rewards, values, mask, gamma, lam)
    for i, n in enumerate(lengths.tolist()):
        r, v = rewards[i, :n].tolist(), values[i, :n].tolist()
        expected, last = [0.0] * n, 0.0
        for t in reversed(range(n)):
            next_v = v[t + 1] if t + 1 < n else 0.0
            last = r[t] + gamma * next_v - v[t] + gamma * lam * last
            expected[t] = last
        assert torch.allclose(adv[i, :n], torch.tensor(expected), atol=1e-5)
        assert torch.allclose(ret[i, :n], torch.tensor(expected) + values[i, :n], atol=1e-5)
        assert (adv[i, n:] == 0).all() and (ret[i, n:] == 0).all()


def test_gae_gamma1_lam1_is_reward_to_go_minus_value():
    rewards, values, mask, _ = random_batch(1)
    adv, _ = zyn_ppo.gae_advantages(rewards, values, mask, 1.0, 1.0)
    to_go = torch.flip(torch.cumsum(torch.flip(rewards * mask, [1]), 1), [1])
    assert torch.allclose(adv, (to_go - values) * mask, atol=1e-5)


def test_whiten_masked_entries_only():
    x, _, mask, _ = random_batch(2)
    out = zyn_ppo.whiten(x * 3 + 1, mask)
    vals = np.array([v for v, m in zip((x * 3 + 1).flatten().tolist(), mask.flatten().tolist()) if m])
    expected = (vals - vals.mean()) / math.sqrt(vals.var(ddof=1) + 1e-8)
    got = np.array([v for v, m in zip(out.flatten().tolist(), mask.flatten().tolist()) if m])
    assert np.allclose(got, expected, atol=1e-5)
    assert (out[mask == 0] == 0).all()
    shifted = zyn_ppo.whiten(x, mask, shift_mean=False)
    assert abs(shifted[mask == 1].mean().item() - x[mask == 1].mean().item()) < 1e-5


def test_clipped_losses_match_plain_loop():
    logp, old_logp, mask, _ = random_batch(3)
    logp, old_logp = logp * 0.3, old_logp * 0.3
    adv, returns = torch.randn(5, 7), torch.randn(5, 7)
    values, old_values = torch.randn(5, 7), torch.randn(5, 7)
    c, cv = 0.2, 0.3
    pl, clipfrac, approx_kl = zyn_ppo.policy_loss(logp, old_logp, adv, mask, c)
    vl, vclipfrac = zyn_ppo.value_loss(values, old_values, returns, mask, cv)
    p_terms, p_clip, kls, v_terms, v_clip = [], [], [], [], []
    for i in range(5):
        for t in range(7):
            if not mask[i, t]:
                continue
            ratio = math.exp(logp[i, t] - old_logp[i, t])
            a = adv[i, t].item()
            unclipped, clipped = -a * ratio, -a * min(max(ratio, 1 - c), 1 + c)
            p_terms.append(max(unclipped, clipped))
            p_clip.append(clipped > unclipped)
            kls.append(ratio - 1 - math.log(ratio))
            v, vo, R = values[i, t].item(), old_values[i, t].item(), returns[i, t].item()
            vc = min(max(v, vo - cv), vo + cv)
            v_terms.append(0.5 * max((v - R) ** 2, (vc - R) ** 2))
            v_clip.append((vc - R) ** 2 > (v - R) ** 2)
    assert pl.item() == pytest.approx(np.mean(p_terms), abs=1e-5)
    assert clipfrac.item() == pytest.approx(np.mean(p_clip), abs=1e-6)
    assert approx_kl.item() == pytest.approx(np.mean(kls), abs=1e-5)
    assert vl.item() == pytest.approx(np.mean(v_terms), abs=1e-5)
    assert vclipfrac.item() == pytest.approx(np.mean(v_clip), abs=1e-6)


def test_kl_penalty_rewards_put_score_at_last_token():
    logp, ref, mask, lengths = random_batch(4)
    scores = torch.tensor([1.0, -2.0, 3.0, 0.5, 4.0])
    r = zyn_ppo.kl_penalty_rewards(logp, ref, mask, scores, 0.1)
    for i, n in enumerate(lengths.tolist()):
        expected = [-0.1 * (logp[i, t] - ref[i, t]).item() for t in range(n)]
        expected[-1] += scores[i].item()
        assert torch.allclose(r[i, :n], torch.tensor(expected), atol=1e-6)
        assert (r[i, n:] == 0).all()


def test_kl_controllers_match_formula():
    ctl, beta = zyn_ppo.AdaptiveKLController(0.05, target=6.0, horizon=10000), 0.05
    for kl in [0.01, 3.0, 6.0, 9.0, 100.0, 0.0]:
        ctl.update(kl, n_steps=64)
        beta *= 1 + min(max(kl / 6.0 - 1, -0.2), 0.2) * 64 / 10000
        assert ctl.value == pytest.approx(beta, rel=1e-12)
    fixed = zyn_ppo.FixedKLController(0.3)
    fixed.update(100.0, 64)
    assert fixed.value == 0.3


def test_running_moments_match_numpy():
    rm, seen = zyn_ppo.RunningMoments(), []
    g = torch.Generator().manual_seed(5)
    for n in (4, 7, 1, 10):
        xs = torch.randn(n, generator=g) * 2 + 3
        seen += xs.tolist()
        rm.update(xs)
    assert rm.mean == pytest.approx(np.mean(seen), abs=1e-6)
    assert rm.std == pytest.approx(np.std(seen, ddof=1), abs=1e-6)


