"""Chunk-step advantages of a rollout, checked on episodes worked by hand."""

import pytest
import torch

from pi0lab.train.advantages import gae_advantages, grpo_advantages


def _two_envs():
    """T=3 chunk steps, N=2 envs, C=2 actions per chunk.

    env 0 succeeds at step 1, sub-step 0: reward 1 there, done from then on (also the unused sub-steps).
    env 1 never succeeds and is never done.
    """
    rewards = torch.zeros(3, 2, 2)
    rewards[1, 0, 0] = 1.0
    dones = torch.zeros(4, 2, 2, dtype=torch.bool)
    dones[2:, 0, :] = True  # dones[t+1] belongs to step t: step 1 and everything after
    return rewards, dones


def test_gae_on_hand_worked_episodes():
    rewards, dones = _two_envs()
    values = torch.tensor([[0.5, 0.2], [0.6, 0.1], [9.0, 0.3], [9.0, 0.4]])  # [T+1,N]
    out = gae_advantages(rewards, dones, values, gamma=0.9, lam=0.5, normalize=False)
    # env 0: step 1 ends the episode: A_1 = 1 - 0.6 = 0.4; A_0 = (0 + 0.9*0.6 - 0.5) + 0.45*0.4 = 0.22
    # step 2 lies after the end and is masked.
    assert out.mask.tolist() == [[True, True], [True, True], [False, True]]
    assert torch.allclose(out.advantages[:, 0], torch.tensor([0.22, 0.4, 0.0]))
    # env 1 (never done, bootstrapped by V_3 = 0.4): deltas d_t = 0.9 V_{t+1} - V_t
    d = [0.9 * 0.1 - 0.2, 0.9 * 0.3 - 0.1, 0.9 * 0.4 - 0.3]
    a2 = d[2]
    a1 = d[1] + 0.45 * a2
    a0 = d[0] + 0.45 * a1
    assert torch.allclose(out.advantages[:, 1], torch.tensor([a0, a1, a2]))
    assert torch.allclose(out.returns[:, 1], torch.tensor([a0 + 0.2, a1 + 0.1, a2 + 0.3]))
    assert out.scores.tolist() == [1.0, 0.0]


def test_normalised_gae_has_zero_mean_unit_std_over_valid_steps():
    rewards, dones = _two_envs()
    out = gae_advantages(rewards, dones, torch.rand(4, 2), 0.99, 0.95, normalize=True)
    valid = out.advantages[out.mask]
    assert valid.mean().abs() < 1e-6 and (valid.std() - 1).abs() < 1e-4


def test_grpo_shares_the_group_advantage_over_the_episode_and_filters_groups():
    # 4 envs in groups of 2, one chunk of 1 action per step, T=2
    rewards = torch.tensor([[[1.0], [0.0], [1.0], [1.0]], [[0.0], [0.0], [0.0], [0.0]]])  # [T,N,C]
    dones = torch.zeros(3, 4, 1, dtype=torch.bool)
    dones[1:, [0, 2, 3]] = True  # the successes end their episodes at step 0
    out = grpo_advantages(rewards, dones, group_size=2, filter_groups=True, low=0.1, high=0.9)
    # group 0 scores (1, 0): mean 0.5, unbiased std 0.7071 -> +-0.7071; group 1 (1, 1) is dropped
    expected = 0.5 / (2**-0.5 + 1e-6)
    assert out.mask.tolist() == [[True, True, False, False], [False, True, False, False]]
    assert out.advantages[0, 0].item() == pytest.approx(expected)
    assert out.advantages[:, 1].tolist() == pytest.approx([-expected, -expected])
    assert out.kept_groups == 0.5 and out.returns is None
