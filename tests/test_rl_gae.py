"""GAE, chunk folding, episode masks and advantage normalisation, against hand-worked cases and
brute-force re-derivations."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pi0lab.rl import (
    compute_gae,
    episode_mask,
    episode_weights,
    normalize_advantages,
    reduce_chunks,
)

D = torch.float64


def test_sparse_reward_episode_worked_on_paper():
    # 4 steps, success (reward 1) at the last one, which ends the episode.
    # gamma 0.9, lambda 0.8, gamma*lambda = 0.72. The bootstrap value (9.0) must be ignored.
    rewards = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=D)
    values = torch.tensor([0.2, 0.4, 0.6, 0.8, 9.0], dtype=D)
    dones = torch.tensor([False, False, False, False, True])
    # deltas: 0.9*0.4-0.2=0.16, 0.9*0.6-0.4=0.14, 0.9*0.8-0.6=0.12, 1-0.8=0.2
    # A3=0.2, A2=0.12+0.72*0.2=0.264, A1=0.14+0.72*0.264=0.33008, A0=0.16+0.72*0.33008=0.3976576
    adv, ret = compute_gae(rewards, values, dones, gamma=0.9, lam=0.8)
    torch.testing.assert_close(adv, torch.tensor([0.3976576, 0.33008, 0.264, 0.2], dtype=D))
    torch.testing.assert_close(ret, torch.tensor([0.5976576, 0.73008, 0.864, 1.0], dtype=D))


def test_episode_boundary_inside_the_window_cuts_bootstrap_and_trace():
    # step 1 ends an episode (reward 1); steps 2, 3 belong to the next one, bootstrapped by V_4.
    rewards = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=D)
    values = torch.full((5,), 0.5, dtype=D)
    dones = torch.tensor([False, False, True, False, False])
    # gamma = lambda = 0.5: A3=-0.25, A2=-0.25+0.25*(-0.25)=-0.3125, A1=1-0.5=0.5, A0=-0.25+0.25*0.5
    adv, _ = compute_gae(rewards, values, dones, gamma=0.5, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([-0.125, 0.5, -0.3125, -0.25], dtype=D))


@st.composite
def rollouts(draw):
    steps = draw(st.integers(1, 8))
    batch = draw(st.integers(1, 3))
    floats = st.floats(-2, 2, allow_nan=False)
    rewards = np.array(draw(st.lists(floats, min_size=steps * batch, max_size=steps * batch))).reshape(steps, batch)
    values = np.array(draw(st.lists(floats, min_size=(steps + 1) * batch, max_size=(steps + 1) * batch)))
    dones = np.array(draw(st.lists(st.booleans(), min_size=(steps + 1) * batch, max_size=(steps + 1) * batch)))
    gamma = draw(st.floats(0.0, 1.0))
    return rewards, values.reshape(steps + 1, batch), dones.reshape(steps + 1, batch), gamma


def _episode_end(dones, t, b):
    """Last step of the episode that step t belongs to (or None if it runs past the window)."""
    for k in range(t, dones.shape[0] - 1):
        if dones[k + 1, b]:
            return k
    return None


@settings(max_examples=60, deadline=None)
@given(rollouts())
def test_lambda_one_is_discounted_return_minus_value(rollout):
    rewards, values, dones, gamma = rollout
    adv, ret = compute_gae(torch.tensor(rewards), torch.tensor(values), torch.tensor(dones), gamma=gamma, lam=1.0)
    steps, batch = rewards.shape
    for b in range(batch):
        for t in range(steps):
            end = _episode_end(dones, t, b)
            last = steps - 1 if end is None else end
            discounted = sum(gamma ** (k - t) * rewards[k, b] for k in range(t, last + 1))
            if end is None:  # bootstrap from the value after the window
                discounted += gamma ** (steps - t) * values[steps, b]
            assert adv[t, b].item() == pytest.approx(discounted - values[t, b], abs=1e-9)
            assert ret[t, b].item() == pytest.approx(discounted, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(rollouts())
def test_lambda_zero_is_the_td_error(rollout):
    rewards, values, dones, gamma = rollout
    adv, _ = compute_gae(torch.tensor(rewards), torch.tensor(values), torch.tensor(dones), gamma=gamma, lam=0.0)
    next_value = np.where(dones[1:], 0.0, values[1:])
    np.testing.assert_allclose(adv.numpy(), rewards + gamma * next_value - values[:-1], atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(rollouts(), st.floats(0.0, 1.0))
def test_gae_is_the_discounted_sum_of_td_errors_within_the_episode(rollout, lam):
    rewards, values, dones, gamma = rollout
    adv, _ = compute_gae(torch.tensor(rewards), torch.tensor(values), torch.tensor(dones), gamma=gamma, lam=lam)
    next_value = np.where(dones[1:], 0.0, values[1:])
    deltas = rewards + gamma * next_value - values[:-1]
    steps, batch = rewards.shape
    for b in range(batch):
        for t in range(steps):
            end = _episode_end(dones, t, b)
            last = steps - 1 if end is None else end
            expected = sum((gamma * lam) ** (k - t) * deltas[k, b] for k in range(t, last + 1))
            assert adv[t, b].item() == pytest.approx(expected, abs=1e-9)


def test_gae_batches_over_any_trailing_shape():
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(6, 2, 3, generator=g)
    values = torch.rand(7, 2, 3, generator=g)
    dones = torch.rand(7, 2, 3, generator=g) < 0.2
    adv, ret = compute_gae(rewards, values, dones)
    for i in range(2):
        for j in range(3):
            a, r = compute_gae(rewards[:, i, j], values[:, i, j], dones[:, i, j])
            torch.testing.assert_close(adv[:, i, j], a)
            torch.testing.assert_close(ret[:, i, j], r)


def test_reduce_chunks_sums_rewards_and_ors_dones():
    rewards = torch.tensor([[[0.0, 0.0, 1.0]], [[0.0, 0.0, 0.0]]])  # [T=2, B=1, C=3]
    dones = torch.tensor([[[False] * 3], [[False, False, True]], [[True] * 3]])
    r, d = reduce_chunks(rewards, dones)
    torch.testing.assert_close(r, torch.tensor([[1.0], [0.0]]))
    assert d.tolist() == [[False], [True], [True]]


def _brute_force_mask(dones):
    """Walk every env's sub-steps in time order; valid until (and including) the first done."""
    steps, batch, chunk = dones.shape[0] - 1, dones.shape[1], dones.shape[2]
    mask = np.zeros((steps, batch, chunk), dtype=bool)
    for b in range(batch):
        ended = bool(dones[0, b, chunk - 1])
        for t in range(steps):
            for c in range(chunk):
                mask[t, b, c] = not ended
                ended = ended or bool(dones[t + 1, b, c])
    return mask


def test_episode_mask_by_hand():
    # T=2 chunks of C=3, 2 envs. Env 0 succeeds at sub-step (t=1, c=0) and stays done.
    # Env 1 was already done before the window (row 0's last sub-step).
    dones = torch.zeros(3, 2, 3, dtype=torch.bool)
    dones[2, 0, :] = True
    dones[0, 1, 2] = True
    mask, valid_steps = episode_mask(dones)
    assert mask[:, 0].tolist() == [[True, True, True], [True, False, False]]
    assert not mask[:, 1].any()
    assert valid_steps.tolist() == [4, 0]


def test_episode_mask_ignores_row_zero_except_its_last_sub_step():
    dones = torch.zeros(2, 1, 2, dtype=torch.bool)
    dones[0, 0, 0] = True  # an earlier sub-step of the previous chunk: not part of this window
    mask, valid_steps = episode_mask(dones)
    assert mask.all() and valid_steps.tolist() == [2]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 3), st.integers(1, 4), st.data())
def test_episode_mask_matches_a_sub_step_walk(steps, batch, chunk, data):
    flags = data.draw(st.lists(st.booleans(), min_size=(steps + 1) * batch * chunk, max_size=(steps + 1) * batch * chunk))
    dones = np.array(flags).reshape(steps + 1, batch, chunk)
    mask, valid_steps = episode_mask(torch.tensor(dones))
    expected = _brute_force_mask(dones)
    assert mask.dtype == torch.bool and mask.shape == (steps, batch, chunk)
    np.testing.assert_array_equal(mask.numpy(), expected)
    np.testing.assert_array_equal(valid_steps.numpy(), expected.sum(axis=(0, 2)))


def test_episode_weights_give_each_episode_equal_total_weight():
    mask = torch.tensor([[True, True], [True, False], [True, False]])  # env 0: 3 steps, env 1: 1
    w = episode_weights(mask)
    torch.testing.assert_close(w, torch.tensor([[1 / 3, 1.0], [1 / 3, 0.0], [1 / 3, 0.0]]))


def test_normalize_advantages_by_hand_and_masked_entries_do_not_count():
    adv = torch.tensor([1.0, 2.0, 3.0, 100.0], dtype=D)
    mask = torch.tensor([True, True, True, False])
    out = normalize_advantages(adv, mask, eps=1e-5)  # mean 2, unbiased std 1
    torch.testing.assert_close(out[:3], torch.tensor([-1.0, 0.0, 1.0], dtype=D) / (1 + 1e-5))
    torch.testing.assert_close(normalize_advantages(adv[:3]), out[:3])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=3, max_size=30).filter(lambda xs: np.std(xs) > 1e-3))
def test_normalized_advantages_have_zero_mean_and_unit_unbiased_std(xs):
    out = normalize_advantages(torch.tensor(xs, dtype=D), eps=0.0)
    assert out.mean().item() == pytest.approx(0.0, abs=1e-9)
    assert out.std().item() == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize(
    "call",
    [
        lambda: compute_gae(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(5, 2, dtype=torch.bool)),
        lambda: compute_gae(torch.zeros(4, 2), torch.zeros(5, 2), torch.zeros(5, 3, dtype=torch.bool)),
        lambda: reduce_chunks(torch.zeros(4, 2, 3), torch.zeros(4, 2, 3, dtype=torch.bool)),
        lambda: normalize_advantages(torch.zeros(4, 2), torch.ones(4, dtype=torch.bool)),
    ],
)
def test_mismatched_shapes_raise_value_error_naming_the_shapes(call):
    with pytest.raises(ValueError, match=r"\[\d+(,\d+)*\]"):
        call()


def test_bad_dones_and_too_few_entries_raise():
    with pytest.raises(ValueError, match="dones"):
        compute_gae(torch.zeros(2), torch.zeros(3), torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match=r"\[4\]"):
        episode_mask(torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least 2"):
        normalize_advantages(torch.tensor([1.0, 2.0]), torch.tensor([True, False]))
