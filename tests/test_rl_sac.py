"""SAC math: the clipped ensemble target, n-step returns, the three losses, polyak averaging and the tanh-squashed Gaussian,
against hand-worked values, a numerical change of variables and a few properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pi0lab.rl import (n_step_returns, polyak_update, sac_actor_loss, sac_critic_loss, sac_q_target, sac_temperature_loss,
                       squashed_gaussian_sample)

D = torch.float64


def test_q_target_by_hand():
    # sample 0: min(2.0, 1.5) = 1.5; soft value 1.5 - 0.1 * (-1) = 1.6; y = 1 + 0.9 * 1.6 = 2.44
    # sample 1: the episode ended, nothing is bootstrapped: y = r = 0.5
    target = sac_q_target(rewards=torch.tensor([1.0, 0.5], dtype=D), dones=torch.tensor([False, True]),
                          next_q=torch.tensor([[2.0, 3.0], [1.5, 4.0]], dtype=D),
                          next_logprob=torch.tensor([-1.0, 0.5], dtype=D), alpha=0.1, gamma=0.9)
    assert target.tolist() == pytest.approx([2.44, 0.5])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=6), st.floats(0, 10))
def test_q_target_uses_the_minimum_head(heads, raise_by):
    next_q = torch.tensor(heads, dtype=D)[:, None]  # [E,1]
    args = dict(rewards=torch.tensor([0.3], dtype=D), dones=torch.tensor([False]),
                next_logprob=torch.tensor([0.2], dtype=D), alpha=0.5, gamma=0.99)
    expected = 0.3 + 0.99 * (min(heads) - 0.5 * 0.2)
    assert sac_q_target(next_q=next_q, **args).item() == pytest.approx(expected)
    raised = next_q.clone()
    raised[next_q[:, 0] != next_q.min()] += raise_by  # any head above the minimum changes nothing
    assert sac_q_target(next_q=raised, **args).item() == pytest.approx(expected)


def test_q_target_is_detached_and_checks_shapes():
    next_q = torch.ones(2, 3, requires_grad=True)
    target = sac_q_target(torch.zeros(3), torch.zeros(3), next_q, torch.zeros(3), torch.tensor(0.2, requires_grad=True), 0.9)
    assert not target.requires_grad
    with pytest.raises(ValueError, match=r"q \[E,B\]"):
        sac_q_target(torch.zeros(3), torch.zeros(3), torch.ones(3), torch.zeros(3), 0.2, 0.9)
    with pytest.raises(ValueError, match="bool"):
        sac_q_target(torch.zeros(3), torch.full((3,), 0.5), torch.ones(2, 3), torch.zeros(3), 0.2, 0.9)


def test_n_step_returns_by_hand():
    # one env, 4 steps, the episode ends at step 2 (its step 3 belongs to no episode); gamma 0.5, n 2
    # t=0: 1 + 0.5 * 2 = 2, not ended, bootstraps from t=2;  t=1: 2 + 0.5 * 4 = 4, ended at 2
    # t=2: 4, ended there;  t=3: 8 + nothing (the window ends), not ended
    returns, ended, next_step = n_step_returns(torch.tensor([[1.0], [2.0], [4.0], [8.0]], dtype=D),
                                               torch.tensor([[False], [False], [True], [False]]), 0.5, 2)
    assert returns[:, 0].tolist() == [2.0, 4.0, 4.0, 8.0]
    assert ended[:, 0].tolist() == [False, True, True, False]
    assert next_step[:, 0].tolist() == [2, 3, 3, 3]


def plain_n_step(rewards: list[float], dones: list[bool], gamma: float, n: int, t: int) -> tuple[float, bool]:
    """R_t and d_t of one env by the definition, step by step."""
    total = 0.0
    for k in range(n):
        if t + k >= len(rewards):
            return total, False
        total += gamma**k * rewards[t + k]
        if dones[t + k]:
            return total, True
    return total, False


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 8), st.integers(1, 4), st.integers(1, 10), st.floats(0.5, 1.0), st.integers(0, 10**6))
def test_n_step_returns_equal_the_definition_and_n1_is_one_step(steps, envs, n, gamma, seed):
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.randn(steps, envs, generator=generator, dtype=D)
    dones = torch.rand(steps, envs, generator=generator) < 0.3
    returns, ended, next_step = n_step_returns(rewards, dones, gamma, n)
    for env in range(envs):
        for t in range(steps):
            expected, expected_end = plain_n_step(rewards[:, env].tolist(), dones[:, env].tolist(), gamma, n, t)
            assert returns[t, env].item() == pytest.approx(expected)
            assert ended[t, env].item() == expected_end
            assert next_step[t, env].item() == min(t + n, steps - 1)
    one_step = n_step_returns(rewards, dones, gamma, 1)
    assert torch.equal(one_step[0], rewards) and torch.equal(one_step[1], dones)


def test_n_step_returns_check_their_input():
    with pytest.raises(ValueError, match="n >= 1"):
        n_step_returns(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool), 0.9, 0)
    with pytest.raises(ValueError, match="n_step_returns"):
        n_step_returns(torch.zeros(3, 2), torch.zeros(3, dtype=torch.bool), 0.9, 2)


def test_critic_loss_is_the_mean_over_heads_of_each_mse():
    q = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=D, requires_grad=True)
    target = torch.tensor([1.0, 1.0], dtype=D, requires_grad=True)
    loss = sac_critic_loss(q, target)
    assert loss.item() == pytest.approx((0 + 1 + 4 + 9) / 4)  # head MSEs 0.5 and 6.5, mean 3.5
    loss.backward()
    assert target.grad is None  # the target is a constant
    assert q.grad.flatten().tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5])  # 2 (q - y) / (E B)


def test_actor_loss_uses_the_mean_head_and_detaches_alpha():
    q = torch.tensor([[1.0, 3.0], [3.0, 5.0]], dtype=D)  # mean over heads: [2, 4]
    logprob = torch.tensor([0.5, -0.5], dtype=D)
    alpha = torch.tensor(0.2, dtype=D, requires_grad=True)
    loss = sac_actor_loss(q, logprob, alpha)
    assert loss.item() == pytest.approx(((0.1 - 2.0) + (-0.1 - 4.0)) / 2)
    assert not loss.requires_grad  # nothing here depends on a parameter except through alpha, which is detached


def test_temperature_loss_by_hand_and_alpha_rises_when_entropy_is_below_target():
    log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
    logprob = torch.tensor([4.0, 6.0])  # entropy estimate -5, far below a target of -2
    loss = sac_temperature_loss(log_alpha, logprob, target_entropy=-2.0)
    assert loss.item() == pytest.approx(-math.log(0.5) * 3.0)  # -log_alpha * mean(log pi + H_target)
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(-3.0)  # H - H_target = -5 - (-2)
    optimizer = torch.optim.SGD([log_alpha], lr=0.1)
    optimizer.step()
    assert log_alpha.exp().item() > 0.5  # entropy below target: alpha rises

    log_alpha = torch.tensor(0.0, requires_grad=True)
    sac_temperature_loss(log_alpha, torch.tensor([-10.0]), target_entropy=-2.0).backward()
    assert log_alpha.grad.item() > 0  # entropy 10 above the target: gradient descent lowers alpha


def test_polyak_update():
    target, source = [torch.zeros(2), torch.ones(3)], [torch.ones(2) * 4, torch.zeros(3)]
    polyak_update(target, source, tau=0.25)
    assert target[0].tolist() == [1.0, 1.0] and target[1].tolist() == [0.75, 0.75, 0.75]
    polyak_update(target, source, tau=1.0)
    assert all(torch.equal(t, s) for t, s in zip(target, source))  # tau = 1 copies
    net, copy = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    polyak_update(copy.parameters(), net.parameters(), tau=1.0)
    assert all(torch.equal(a, b) for a, b in zip(copy.parameters(), net.parameters()))
    with pytest.raises(ValueError, match="tau"):
        polyak_update(target, source, tau=1.5)
    with pytest.raises(ValueError, match="target tensors"):
        polyak_update(target[:1], source, tau=0.5)


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-2.0, 2.0), st.floats(-1.5, 0.5)), min_size=1, max_size=3),
       st.integers(0, 2**31 - 1))
def test_squashed_logprob_equals_a_numerical_change_of_variables(params, seed):
    """Per dim p_A(a) ~ P(a - h < A < a + h) / 2h, P from the Gaussian CDF through atanh (no Jacobian formula);
    the dims are independent, so log pi is the sum of their log-densities."""
    mean, log_std = (torch.tensor(column, dtype=D) for column in zip(*params))
    action, logprob = squashed_gaussian_sample(mean, log_std, torch.Generator().manual_seed(seed))
    numerical = 0.0
    for a, m, s in zip(action.tolist(), mean.tolist(), log_std.exp().tolist()):
        assert -1.0 < a < 1.0
        h = 1e-6 * (1.0 - abs(a))
        mass = _normal_cdf((math.atanh(a + h) - m) / s) - _normal_cdf((math.atanh(a - h) - m) / s)
        numerical += math.log(mass / (2 * h))
    assert logprob.item() == pytest.approx(numerical, abs=1e-4)


def test_squashed_sample_is_reproducible_reparameterised_and_finite():
    mean = torch.tensor([[0.3, -1.0, 20.0]], requires_grad=True)  # u near 20: tanh(u) = 1 in float32
    log_std = torch.tensor([[-1.0, 0.0, -3.0]], requires_grad=True)
    action, logprob = squashed_gaussian_sample(mean, log_std, torch.Generator().manual_seed(0))
    assert action.shape == (1, 3) and logprob.shape == (1,) and torch.isfinite(logprob).all()
    again, again_logprob = squashed_gaussian_sample(mean, log_std, torch.Generator().manual_seed(0))
    assert torch.equal(action, again) and torch.equal(logprob, again_logprob)  # the generator decides the draw
    (action.sum() + logprob.sum()).backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_std.grad).all()
