"""PPO actor and value losses: hand-worked values, gradient properties, masks, weights, metrics."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pi0lab.rl import episode_weights, explained_variance, ppo_actor_loss, value_loss

D = torch.float64


def test_actor_loss_and_metrics_by_hand():
    # ratio 1.5 for both samples; clip 0.2 -> clipped ratio 1.2.
    # A=+1: max(-1.5, -1.2) = -1.2 (clipped term strictly larger: counted in clipfrac)
    # A=-1: max(+1.5, +1.2) = +1.5 (unclipped)
    old = torch.tensor([0.0, 0.0], dtype=D)
    new = old + math.log(1.5)
    loss, m = ppo_actor_loss(new, old, torch.tensor([1.0, -1.0], dtype=D))
    assert loss.item() == pytest.approx((-1.2 + 1.5) / 2)
    assert m["clipfrac"].item() == pytest.approx(0.5)
    assert m["ratio"].item() == pytest.approx(1.5)
    assert m["approx_kl"].item() == pytest.approx(-math.log(1.5))
    assert m["kl_k3"].item() == pytest.approx(1 / 1.5 + math.log(1.5) - 1)


def test_asymmetric_clip_bounds():
    old = torch.zeros(2, dtype=D)
    new = torch.log(torch.tensor([0.5, 2.0], dtype=D))
    loss, _ = ppo_actor_loss(new, old, torch.tensor([-1.0, 1.0], dtype=D), clip_low=0.1, clip_high=0.3)
    # A=-1, r=0.5: max(0.5, 0.9) = 0.9;  A=+1, r=2: max(-2, -1.3) = -1.3
    assert loss.item() == pytest.approx((0.9 - 1.3) / 2)


def test_dual_clip_bounds_the_loss_of_negative_advantages_only():
    old = torch.zeros(2, dtype=D)
    new = torch.log(torch.tensor([10.0, 10.0], dtype=D)).requires_grad_()
    adv = torch.tensor([-1.0, 1.0], dtype=D)
    loss, _ = ppo_actor_loss(new, old, adv, dual_clip=3.0)
    # A=-1, r=10: min(max(10, 1.2), 3) = 3;  A=+1: max(-10, -1.2) = -1.2 (untouched)
    assert loss.item() == pytest.approx((3.0 - 1.2) / 2)
    loss.backward()
    assert new.grad.tolist() == [0.0, 0.0]
    no_dual, _ = ppo_actor_loss(new, old, adv)
    assert no_dual.item() == pytest.approx((10.0 - 1.2) / 2)


samples = st.lists(
    st.tuples(st.floats(-1.5, 1.5), st.floats(-1.5, 1.5), st.floats(-3, 3).filter(lambda a: abs(a) > 1e-3)),
    min_size=1,
    max_size=20,
)


@settings(max_examples=80, deadline=None)
@given(samples, st.floats(0.05, 0.5), st.floats(0.05, 0.5))
def test_gradient_is_zero_exactly_where_the_ratio_is_clipped_against_the_advantage(rows, clip_low, clip_high):
    new, old, adv = (torch.tensor(col, dtype=D) for col in zip(*rows))
    new.requires_grad_()
    loss, _ = ppo_actor_loss(new, old, adv, clip_low=clip_low, clip_high=clip_high)
    loss.backward()
    ratio = torch.exp(new.detach() - old)
    clipped = ((adv > 0) & (ratio > 1 + clip_high)) | ((adv < 0) & (ratio < 1 - clip_low))
    # d/d lp of -A r / n is -A r / n where the surrogate is not clipped
    expected = torch.where(clipped, torch.zeros_like(ratio), -adv * ratio / len(rows))
    torch.testing.assert_close(new.grad, expected)


def test_masked_entries_change_nothing_even_when_they_are_garbage():
    new = torch.tensor([0.1, -0.2, 500.0, float("nan")], dtype=D, requires_grad=True)
    old = torch.tensor([0.0, 0.0, -500.0, 0.0], dtype=D)
    adv = torch.tensor([1.0, -0.5, 2.0, 1.0], dtype=D)
    mask = torch.tensor([True, True, False, False])
    loss, m = ppo_actor_loss(new, old, adv, mask=mask, kl_coef=0.1)
    loss.backward()
    ref_new = new.detach()[:2].clone().requires_grad_()
    ref_loss, ref_m = ppo_actor_loss(ref_new, old[:2], adv[:2], kl_coef=0.1)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(new.grad[:2], ref_new.grad)
    assert new.grad[2:].tolist() == [0.0, 0.0]
    for key in m:
        torch.testing.assert_close(m[key], ref_m[key])


def test_all_masked_batch_gives_zero_loss():
    loss, m = ppo_actor_loss(torch.zeros(3), torch.zeros(3), torch.ones(3), mask=torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0 and m["clipfrac"].item() == 0.0


def test_kl_penalty_adds_coef_times_mean_k3():
    g = torch.Generator().manual_seed(0)
    new, old, adv = (torch.randn(16, generator=g, dtype=D) for _ in range(3))
    base, m = ppo_actor_loss(new, old, adv)
    with_kl, _ = ppo_actor_loss(new, old, adv, kl_coef=0.3)
    k3 = torch.exp(old - new) - (old - new) - 1
    torch.testing.assert_close(with_kl, base + 0.3 * k3.mean())
    torch.testing.assert_close(m["kl_k3"], k3.mean())


def test_k3_estimates_the_kl_between_two_gaussians():
    # samples from the new policy N(0.3, 1); old policy N(0, 1): KL(new || old) = 0.3^2 / 2
    g = torch.Generator().manual_seed(0)
    x = 0.3 + torch.randn(200_000, generator=g, dtype=D)
    new = torch.distributions.Normal(0.3, 1.0).log_prob(x)
    old = torch.distributions.Normal(0.0, 1.0).log_prob(x)
    _, m = ppo_actor_loss(new, old, torch.ones_like(x))
    assert m["kl_k3"].item() == pytest.approx(0.045, rel=0.03)


def test_episode_weights_make_the_loss_a_mean_of_episode_means():
    g = torch.Generator().manual_seed(1)
    steps, envs = 6, 3
    mask = torch.ones(steps, envs, dtype=torch.bool)
    mask[2:, 0] = False  # env 0 lasted 2 steps, env 1 lasted 6, env 2 lasted 4
    mask[4:, 2] = False
    new, old, adv = (torch.randn(steps, envs, generator=g, dtype=D) for _ in range(3))
    loss, _ = ppo_actor_loss(new, old, adv, mask=mask, weights=episode_weights(mask).to(D))
    per_episode = []
    for b in range(envs):
        valid = mask[:, b]
        episode_loss, _ = ppo_actor_loss(new[valid, b], old[valid, b], adv[valid, b])
        per_episode.append(episode_loss)
    torch.testing.assert_close(loss, torch.stack(per_episode).mean())

    values, old_values, returns = (torch.randn(steps, envs, generator=g, dtype=D) for _ in range(3))
    vloss, _ = value_loss(values, old_values, returns, mask=mask, weights=episode_weights(mask).to(D))
    per_episode = [value_loss(values[mask[:, b], b], old_values[mask[:, b], b], returns[mask[:, b], b])[0] for b in range(envs)]
    torch.testing.assert_close(vloss, torch.stack(per_episode).mean())


def test_value_loss_by_hand():
    # v=1.5, old=1.0, R=2.0, clip 0.2: v_c=1.2 -> max(0.5*0.5^2, 0.5*0.8^2) = 0.32, clipped
    # v=1.1, old=1.0, R=2.0: inside the clip range -> 0.5*0.9^2 = 0.405
    values = torch.tensor([1.5, 1.1], dtype=D)
    old = torch.tensor([1.0, 1.0], dtype=D)
    returns = torch.tensor([2.0, 2.0], dtype=D)
    loss, m = value_loss(values, old, returns, clip=0.2)
    assert loss.item() == pytest.approx((0.32 + 0.405) / 2)
    assert m["value_clip_ratio"].item() == pytest.approx(0.5)
    # Huber delta 0.5: errors 0.8 and 0.9 are both in the linear part, delta * (|x| - delta/2)
    huber_loss, _ = value_loss(values, old, returns, clip=0.2, huber_delta=0.5)
    assert huber_loss.item() == pytest.approx((0.5 * (0.8 - 0.25) + 0.5 * (0.9 - 0.25)) / 2)


def test_value_clip_ratio_counts_real_clipping_not_round_off():
    old = torch.zeros(4)
    values = torch.tensor([0.19, -0.19, 0.21, 0.0])
    _, m = value_loss(values, old, torch.ones(4), clip=0.2)
    assert m["value_clip_ratio"].item() == pytest.approx(0.25)


def test_value_loss_gradient_vanishes_when_clipping_makes_it_worse():
    # v jumped from 0 past R=1 to 1.5: v_c = 0.2 has the larger error (0.8), constant in v
    values = torch.tensor([1.5], requires_grad=True)
    loss, _ = value_loss(values, torch.tensor([0.0]), torch.tensor([1.0]), clip=0.2)
    loss.backward()
    assert loss.item() == pytest.approx(0.5 * 0.8**2) and values.grad.item() == 0.0


def test_explained_variance():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=D)
    assert explained_variance(returns, returns).item() == 1.0
    assert explained_variance(torch.full_like(returns, 2.5), returns).item() == pytest.approx(0.0)
    preds = torch.tensor([1.5, 1.5, 3.5, 3.0], dtype=D)
    expected = 1 - np.var(returns.numpy() - preds.numpy()) / np.var(returns.numpy())
    assert explained_variance(preds, returns).item() == pytest.approx(expected)
    mask = torch.tensor([True, True, True, False])
    _, m = value_loss(preds, preds, returns, mask=mask)
    expected_masked = 1 - np.var([-0.5, 0.5, -0.5]) / np.var([1.0, 2.0, 3.0])
    assert m["explained_variance"].item() == pytest.approx(expected_masked)
    assert math.isnan(explained_variance(returns, torch.ones(4, dtype=D)).item())


@pytest.mark.parametrize(
    "call",
    [
        lambda: ppo_actor_loss(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4)),
        lambda: ppo_actor_loss(torch.zeros(4), torch.zeros(4), torch.zeros(4), mask=torch.ones(5, dtype=torch.bool)),
        lambda: value_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3, 1)),
    ],
)
def test_mismatched_shapes_raise_value_error_naming_the_shapes(call):
    with pytest.raises(ValueError, match=r"\[\d+(,\d+)*\]"):
        call()


def test_dual_clip_must_exceed_one():
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_actor_loss(torch.zeros(2), torch.zeros(2), torch.ones(2), dual_clip=0.5)
