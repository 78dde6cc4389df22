"""Sampling chains: samples land on the right distribution, recomputed log-probs equal stored ones, bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pi0lab.flow import (
    bounded_std,
    gaussian_logprob,
    ode_step,
    recompute_logprobs,
    sample_chain,
    sde_sigmas,
    time_grid,
)

# Gaussian "actions", one independent Gaussian per coordinate.
MU = torch.tensor([0.7, -1.5])
S = torch.tensor([0.4, 1.3])
NUM_STEPS = 200
NUM_SAMPLES = 10_000
TOLERANCE = 0.035  # on |mean - mu| / s and |std / s - 1|; Euler error at N = 200 plus sampling error


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    """These tests run many small elementwise ops: one thread is faster and does not fight other test workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Exact flow-matching velocity for actions a ~ N(mu, s^2), x `[B,D]`, t `[B]`.

    Derivation.  With noise e ~ N(0, 1) independent of a, the path point x_t = t e + (1 - t) a is
    Gaussian with mean m_t = (1 - t) mu and variance V_t = t^2 + (1 - t)^2 s^2.  The flow-matching
    loss E|v(x_t, t) - (e - a)|^2 is minimised by the conditional mean v(x, t) = E[e - a | x_t = x].
    (e, a, x_t) are jointly Gaussian with Cov(e, x_t) = t and Cov(a, x_t) = (1 - t) s^2, so
        E[e | x] = t (x - m_t) / V_t,     E[a | x] = mu + (1 - t) s^2 (x - m_t) / V_t,
    and the velocity is linear in x:
        v(x, t) = (t - (1 - t) s^2) / V_t * (x - m_t) - mu.
    Check: at t = 0 (x = a) it gives -x = E[e] - a; at t = 1 (x = e) it gives x - mu = e - E[a].
    """
    t = t[:, None]
    mean_t = (1 - t) * MU
    var_t = t**2 + (1 - t) ** 2 * S**2
    return (t - (1 - t) * S**2) / var_t * (x - mean_t) - MU


def _assert_lands_on_target(actions: torch.Tensor) -> None:
    mean_error = ((actions.mean(0) - MU) / S).abs().max()
    std_error = (actions.std(0) / S - 1).abs().max()
    assert mean_error < TOLERANCE, f"mean off by {mean_error:.3f} s"
    assert std_error < TOLERANCE, f"std off by {100 * std_error:.1f}%"


def _sample(method="flow_sde", seed=0, **kwargs) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(NUM_SAMPLES, 2, generator=gen)
    with torch.no_grad():
        return sample_chain(gaussian_velocity, noise, NUM_STEPS, method=method, generator=gen, **kwargs).actions


def test_exact_velocity_transports_noise_to_the_gaussian():
    # the closed form is right: at every t it equals E[e - a | x_t] estimated by regression on samples
    gen = torch.Generator().manual_seed(1)
    a, e = MU + S * torch.randn(200_000, 2, generator=gen), torch.randn(200_000, 2, generator=gen)
    for t in (0.2, 0.5, 0.9):
        x = t * e + (1 - t) * a
        target = e - a
        slope = ((x - x.mean(0)) * (target - target.mean(0))).mean(0) / x.var(0)  # least squares fit
        intercept = target.mean(0) - slope * x.mean(0)
        probe = torch.tensor([[-1.0, 2.0]])
        fitted = intercept + slope * probe
        torch.testing.assert_close(gaussian_velocity(probe, torch.tensor([t])), fitted, atol=0.02, rtol=0.02)


def test_ode_sampling_lands_on_the_gaussian():
    _assert_lands_on_target(_sample("ode"))


@pytest.mark.parametrize("noise_level", [0.3, 0.7, 1.0])
def test_flow_sde_with_noise_at_all_steps_lands_on_the_gaussian(noise_level):
    _assert_lands_on_target(_sample(noise_level=noise_level, noise_steps="all"))


@pytest.mark.parametrize(
    "noise_level, step",
    [(0.5, 0), (0.5, NUM_STEPS // 4), (1.0, NUM_STEPS // 2), (1.0, 3 * NUM_STEPS // 4), (1.0, NUM_STEPS - 1)],
)
def test_flow_sde_with_one_noisy_step_lands_on_the_gaussian(noise_level, step):
    # Near t = 1 the single Euler-Maruyama step injects std ~ a whatever N, and its error grows like a^4:
    # at a = 1 the first steps widen the result by ~11%, so the t = 1 step is checked at a = 0.5.
    _assert_lands_on_target(_sample(noise_level=noise_level, noise_steps=[step]))


def test_cps_with_one_noisy_step_lands_on_the_gaussian():
    _assert_lands_on_target(_sample("cps", noise_level=0.5, noise_steps=[NUM_STEPS // 2]))


def _flow_sde_actions_with_drift_scale(drift_scale: float, noise_level: float) -> torch.Tensor:
    """The flow-SDE at all steps with the score correction sigma^2 dt / (2t) multiplied by drift_scale."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(NUM_SAMPLES, 2, generator=gen)
    grid, sigmas = time_grid(NUM_STEPS), sde_sigmas(time_grid(NUM_STEPS), noise_level)
    for i in range(NUM_STEPS):
        t, t_next, sigma = grid[i], grid[i + 1], sigmas[i]
        v = gaussian_velocity(x, t.expand(NUM_SAMPLES))
        x0, x1 = x - t * v, x + (1 - t) * v
        mean = (1 - t_next) * x0 + (t_next - drift_scale * sigma**2 * (t - t_next) / (2 * t)) * x1
        x = mean + sigma * (t - t_next).sqrt() * torch.randn(x.shape, generator=gen)
    return x


@pytest.mark.parametrize("drift_scale", [0.0, 0.5, 2.0])
def test_a_wrong_drift_correction_fails_the_distribution_check(drift_scale):
    with pytest.raises(AssertionError, match="off by"):
        _assert_lands_on_target(_flow_sde_actions_with_drift_scale(drift_scale, noise_level=0.7))
    _assert_lands_on_target(_flow_sde_actions_with_drift_scale(1.0, noise_level=0.7))  # the helper itself is fine


class TinyPolicy(nn.Module):
    """An MLP velocity over [B,H,A] actions with a time input, and a ReinFlow noise head on its features."""

    def __init__(self, action_dim=4, width=16):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(action_dim + 1, width), nn.Tanh())
        self.out = nn.Linear(width, action_dim)
        self.noise_head = nn.Linear(width, action_dim)

    def velocity(self, x, t):
        time = t[:, None, None].expand(*x.shape[:-1], 1)
        features = self.body(torch.cat([x, time], dim=-1))
        return self.out(features), features

    def std(self, features, t):
        return bounded_std(self.noise_head(features))


METHOD_CASES = [
    ("flow_sde", "one"), ("flow_sde", "all"), ("flow_sde", [0, 2]), ("cps", "one"), ("cps", "all"), ("reinflow", "all"),
]


def _chain(policy, method, noise_steps, seed, batch=6):
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, 5, 4, generator=gen)
    std_fn = policy.std if method == "reinflow" else None
    with torch.no_grad():
        return sample_chain(policy.velocity, noise, 4, method, 0.5, noise_steps, std_fn, gen)


@pytest.mark.parametrize("method, noise_steps", METHOD_CASES)
def test_recomputed_logprobs_equal_stored_ones_exactly(method, noise_steps):
    torch.manual_seed(0)
    policy = TinyPolicy()
    chain = _chain(policy, method, noise_steps, seed=3)
    std_fn = policy.std if method == "reinflow" else None
    recomputed = recompute_logprobs(policy.velocity, chain.chain, chain.noisy_steps, method, 0.5, std_fn)
    assert torch.equal(recomputed.logprobs, chain.noisy_logprobs)
    assert recomputed.logprobs.shape == (6, chain.noisy_steps.shape[1], 5, 4)
    # deterministic steps carry no log-prob; the stored chain is consistent with its transitions
    noisy = torch.zeros(4, dtype=torch.bool)
    noisy[chain.noisy_steps[0]] = True
    assert torch.equal(chain.logprobs[:, ~noisy], torch.zeros_like(chain.logprobs[:, ~noisy]))
    assert torch.equal(chain.stds[:, ~noisy], torch.zeros_like(chain.stds[:, ~noisy]))
    torch.testing.assert_close(chain.logprobs, gaussian_logprob(chain.chain[:, 1:], chain.means, chain.stds))


def test_recompute_on_rows_from_different_calls_and_under_changed_weights():
    torch.manual_seed(0)
    policy = TinyPolicy()
    chains = [_chain(policy, "flow_sde", [step], seed=step) for step in (0, 1, 3)]
    chain = torch.cat([c.chain for c in chains])
    noisy_steps = torch.cat([c.noisy_steps for c in chains])  # each row has its own noisy step
    stored = torch.cat([c.noisy_logprobs for c in chains])
    recomputed = recompute_logprobs(policy.velocity, chain, noisy_steps, "flow_sde", 0.5)
    torch.testing.assert_close(recomputed.logprobs, stored, atol=1e-6, rtol=0)
    # a changed velocity changes the log-prob, and the gradient reaches the weights
    with torch.no_grad():
        policy.out.bias += 0.1
    changed = recompute_logprobs(policy.velocity, chain, noisy_steps, "flow_sde", 0.5)
    assert not torch.allclose(changed.logprobs, stored)
    changed.logprobs.sum().backward()
    assert policy.out.weight.grad.abs().sum() > 0


def test_reinflow_gradient_reaches_the_noise_head():
    torch.manual_seed(0)
    policy = TinyPolicy()
    chain = _chain(policy, "reinflow", "all", seed=0)
    assert chain.noisy_steps.shape == (6, 4)
    assert float(chain.stds.min()) >= 0.08 - 1e-6 and float(chain.stds.max()) <= 0.16 + 1e-6
    recomputed = recompute_logprobs(policy.velocity, chain.chain, chain.noisy_steps, "reinflow", std_fn=policy.std)
    recomputed.logprobs.sum().backward()
    assert policy.noise_head.weight.grad.abs().sum() > 0


def test_chain_shapes_and_ode_chain():
    policy = TinyPolicy()
    with torch.no_grad():
        chain = sample_chain(policy.velocity, torch.randn(3, 5, 4), 4, method="ode")
    assert chain.chain.shape == (3, 5, 5, 4) and chain.means.shape == chain.stds.shape == (3, 4, 5, 4)
    assert chain.noisy_steps.shape == (3, 0) and chain.noisy_steps.dtype == torch.long
    assert torch.equal(chain.logprobs, torch.zeros_like(chain.logprobs))
    assert torch.equal(chain.actions, chain.chain[:, -1])
    # an ODE chain is the Euler recursion x_{i+1} = x_i - dt v(x_i, t_i)
    x = chain.chain[:, 0]
    for i, (t, t_next) in enumerate(zip(time_grid(4)[:-1], time_grid(4)[1:])):
        with torch.no_grad():
            x = ode_step(x, policy.velocity(x, t.expand(3))[0], t, t - t_next)[0]
        torch.testing.assert_close(chain.chain[:, i + 1], x)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.sampled_from(["one", "all"]), st.floats(0.0, 1e-5), st.integers(0, 2**31 - 1))
def test_flow_sde_chain_with_vanishing_noise_level_is_the_ode_chain(num_steps, noise_steps, noise_level, seed):
    policy = TinyPolicy()
    noise = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ode = sample_chain(policy.velocity, noise, num_steps, method="ode")
        sde = sample_chain(policy.velocity, noise, num_steps, "flow_sde", noise_level, noise_steps,
                           generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(sde.chain, ode.chain, atol=1e-4, rtol=1e-4)


def test_generator_makes_chains_reproducible():
    policy = TinyPolicy()
    first, second, other = (_chain(policy, "flow_sde", "one", seed) for seed in (5, 5, 6))
    assert torch.equal(first.chain, second.chain) and torch.equal(first.noisy_steps, second.noisy_steps)
    assert not torch.equal(first.chain, other.chain)


def test_one_noisy_step_is_drawn_uniformly_per_call_and_shared_by_the_batch():
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(400):
        chain = sample_chain(lambda x, t: -x, torch.zeros(3, 2), 4, generator=gen)
        assert chain.noisy_steps.shape == (3, 1) and bool((chain.noisy_steps == chain.noisy_steps[0]).all())
        counts[chain.noisy_steps[0, 0]] += 1
    assert bool((counts > 60).all()) and bool((counts < 140).all()), counts  # ~100 each


def test_bad_inputs_raise():
    velocity = TinyPolicy().velocity
    noise = torch.zeros(2, 5, 4)
    with pytest.raises(ValueError, match="unknown method"):
        sample_chain(velocity, noise, 4, method="ddim")
    with pytest.raises(ValueError, match="std_fn"):
        sample_chain(velocity, noise, 4, method="reinflow")
    with pytest.raises(ValueError, match="std_fn"):
        sample_chain(velocity, noise, 4, method="flow_sde", std_fn=lambda f, t: f)
    with pytest.raises(ValueError, match="noise_steps"):
        sample_chain(velocity, noise, 4, noise_steps="some")
    with pytest.raises(ValueError, match=r"distinct indices in \[0, 3\]"):
        sample_chain(velocity, noise, 4, noise_steps=[4])
    with pytest.raises(ValueError, match="distinct"):
        sample_chain(velocity, noise, 4, noise_steps=[1, 1])
    with pytest.raises(ValueError, match="no noise_steps"):
        sample_chain(velocity, noise, 4, method="ode", noise_steps="one")
    with pytest.raises(ValueError, match="num_steps"):
        sample_chain(velocity, noise, 0)
    with pytest.raises(ValueError, match=r"\(2, 5, 4\).*\(2, 5, 3\)"):
        sample_chain(lambda x, t: x[..., :3], noise, 4)
    with pytest.raises(ValueError, match="std_fn must return"):
        sample_chain(velocity, noise, 4, method="reinflow", std_fn=lambda f, t: torch.ones(2))
    chain = sample_chain(velocity, noise, 4)
    with pytest.raises(ValueError, match=r"\[B,K\] with B = 2"):
        recompute_logprobs(velocity, chain.chain, chain.noisy_steps[:1], "flow_sde")
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        recompute_logprobs(velocity, chain.chain, chain.noisy_steps + 4, "flow_sde")
    with pytest.raises(ValueError, match="long"):
        recompute_logprobs(velocity, chain.chain, chain.noisy_steps.float(), "flow_sde")
    with pytest.raises(ValueError, match="no noisy transitions"):
        recompute_logprobs(velocity, chain.chain, chain.noisy_steps, "ode")
