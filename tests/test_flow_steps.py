"""pi0lab.flow steps: hand-computed grids and steps, limits (hypothesis), and a second implementation of the
reference recipe (RLinf's openpi flow-SDE: weights on the predicted action/noise, linspace grid)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pi0lab.flow import bounded_std, cps_step, flow_sde_step, ode_step, sde_sigmas, time_grid


def test_time_grid_hand_cases():
    assert torch.equal(time_grid(1), torch.tensor([1.0, 0.0]))
    assert torch.equal(time_grid(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    grid = time_grid(10)
    assert grid.shape == (11,) and grid.dtype == torch.float32
    assert grid[0] == 1 and grid[-1] == 0
    torch.testing.assert_close(grid, torch.tensor([1 - i / 10 for i in range(11)]))


def test_sde_sigmas_hand_cases():
    # N = 4, a = 0.5: t = 1, .75, .5, .25 -> t/(1-t) = (1/.25), 3, 1, 1/3 (first uses 1 - t_1 = .25)
    expected = 0.5 * torch.tensor([2.0, math.sqrt(3), 1.0, math.sqrt(1 / 3)])
    torch.testing.assert_close(sde_sigmas(time_grid(4), 0.5), expected)
    # uniform grid: sigma_0 = a sqrt(N)
    for n in (2, 5, 10):
        torch.testing.assert_close(sde_sigmas(time_grid(n), 0.7)[0], torch.tensor(0.7 * math.sqrt(n)))
    assert torch.equal(sde_sigmas(time_grid(3), 0.0), torch.zeros(3))


def test_ode_step_hand_case():
    x, v = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 4.0])
    mean, std = ode_step(x, v, 0.75, 0.25)
    torch.testing.assert_close(mean, torch.tensor([0.875, -3.0]))  # x - dt v
    assert torch.equal(std, torch.zeros(2))


def test_flow_sde_step_hand_case():
    # x = 1, v = 2, t = .5, dt = .25, sigma = 1:
    # x0 = 1 - .5*2 = 0, x1 = 1 + .5*2 = 2; mean = .75*0 + (.25 - 1*.25/(2*.5))*2 = 0; std = sqrt(.25) = .5
    mean, std = flow_sde_step(torch.tensor([1.0]), torch.tensor([2.0]), 0.5, 0.25, 1.0)
    torch.testing.assert_close(mean, torch.tensor([0.0]))
    torch.testing.assert_close(std, torch.tensor([0.5]))


def test_cps_step_hand_case():
    # x = 1, v = 2, t = .5, dt = .25, a = 0.5: x0 = 0, x1 = 2, t - dt = .25
    # mean = .75*0 + .25*cos(pi/4)*2 = sqrt(2)/4, std = .25*sin(pi/4) = sqrt(2)/8
    mean, std = cps_step(torch.tensor([1.0]), torch.tensor([2.0]), 0.5, 0.25, 0.5)
    torch.testing.assert_close(mean, torch.tensor([math.sqrt(2) / 4]))
    torch.testing.assert_close(std, torch.tensor([math.sqrt(2) / 8]))


def test_steps_broadcast_one_time_per_sample():
    x, v = torch.randn(3, 5, 2), torch.randn(3, 5, 2)
    t, dt = torch.tensor([1.0, 0.5, 0.25]), torch.tensor([0.25, 0.25, 0.25])
    mean, std = flow_sde_step(x, v, t[:, None, None], dt[:, None, None], 0.3)
    for b in range(3):
        mean_b, std_b = flow_sde_step(x[b], v[b], float(t[b]), float(dt[b]), 0.3)
        torch.testing.assert_close(mean[b], mean_b)
        torch.testing.assert_close(std[b], std_b)
    assert std.shape == x.shape


time_and_step = st.tuples(st.floats(0.02, 1.0), st.floats(0.01, 1.0)).map(lambda p: (p[0], p[0] * p[1]))


@settings(max_examples=60, deadline=None)
@given(time_and_step, st.integers(0, 2**31 - 1), st.floats(1e-7, 1e-4))
def test_flow_sde_with_vanishing_noise_is_the_ode_step(t_dt, seed, sigma):
    t, dt = t_dt
    gen = torch.Generator().manual_seed(seed)
    x, v = torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.randn(4, 3, generator=gen, dtype=torch.float64)
    ode_mean, _ = ode_step(x, v, t, dt)
    sde_mean, sde_std = flow_sde_step(x, v, t, dt, sigma)
    torch.testing.assert_close(sde_mean, ode_mean, atol=1e-6, rtol=1e-6)
    assert float(sde_std.max()) < 1e-4
    exact_mean, exact_std = flow_sde_step(x, v, t, dt, 0.0)
    torch.testing.assert_close(exact_mean, ode_mean, atol=1e-12, rtol=1e-12)
    assert torch.equal(exact_std, torch.zeros_like(x))


@settings(max_examples=40, deadline=None)
@given(time_and_step, st.integers(0, 2**31 - 1))
def test_cps_with_zero_noise_is_the_ode_step(t_dt, seed):
    t, dt = t_dt
    gen = torch.Generator().manual_seed(seed)
    x, v = torch.randn(5, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)
    cps_mean, cps_std = cps_step(x, v, t, dt, 0.0)
    torch.testing.assert_close(cps_mean, ode_step(x, v, t, dt)[0])
    assert torch.equal(cps_std, torch.zeros_like(x))


# A second implementation of the reference recipe, written the way the reference writes it: grid from
# linspace(1, 1/N, N) + [0], the step as weights on the predicted action x0 and predicted noise x1.
def _reference_mean_std(x, v, idx, num_steps, noise_level, method):
    grid = torch.cat([torch.linspace(1, 1 / num_steps, num_steps), torch.zeros(1)]).double()
    t, delta = grid[idx], grid[idx] - grid[idx + 1]
    x0_pred, x1_pred = x - v * t, x + v * (1 - t)
    if method == "ode":
        w0, w1, std = 1 - (t - delta), t - delta, torch.zeros((), dtype=torch.float64)
    elif method == "flow_sde":
        sigmas = noise_level * torch.sqrt(grid / (1 - torch.where(grid == 1, grid[1], grid)))
        sigma = sigmas[:-1][idx]
        w0, w1, std = 1 - (t - delta), t - delta - sigma**2 * delta / (2 * t), torch.sqrt(delta) * sigma
    else:  # cps
        w0 = 1 - (t - delta)
        w1 = (t - delta) * math.cos(math.pi * noise_level / 2)
        std = (t - delta) * math.sin(math.pi * noise_level / 2)
    return x0_pred * w0 + x1_pred * w1, std.expand_as(x)


@pytest.mark.parametrize("num_steps", [1, 4, 10])
@pytest.mark.parametrize("noise_level", [0.2, 0.5, 0.9])
def test_steps_match_reference_recipe(num_steps, noise_level):
    gen = torch.Generator().manual_seed(num_steps)
    grid = time_grid(num_steps).double()
    sigmas = sde_sigmas(grid, noise_level)
    for idx in range(num_steps):
        x = torch.randn(2, 50, 32, generator=gen, dtype=torch.float64)
        v = torch.randn(2, 50, 32, generator=gen, dtype=torch.float64)
        t, dt = grid[idx], grid[idx] - grid[idx + 1]
        steps = {
            "ode": ode_step(x, v, t, dt),
            "flow_sde": flow_sde_step(x, v, t, dt, sigmas[idx]),
            "cps": cps_step(x, v, t, dt, noise_level),
        }
        for method, (mean, std) in steps.items():
            ref_mean, ref_std = _reference_mean_std(x, v, idx, num_steps, noise_level, method)
            torch.testing.assert_close(mean, ref_mean, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(std, ref_std, atol=1e-6, rtol=1e-6)


def test_bounded_std_range_and_midpoint():
    raw = torch.linspace(-30, 30, 201)
    std = bounded_std(raw)
    assert float(std.min()) >= 0.08 - 1e-7 and float(std.max()) <= 0.16 + 1e-7
    assert bool((std[1:] >= std[:-1]).all())  # monotone in the raw output
    torch.testing.assert_close(bounded_std(torch.tensor([-50.0, 50.0])), torch.tensor([0.08, 0.16]))
    # raw = 0 sits halfway in log-variance: the geometric mean of the bounds
    torch.testing.assert_close(bounded_std(torch.zeros(1)), torch.tensor([math.sqrt(0.08 * 0.16)]))
    torch.testing.assert_close(bounded_std(torch.zeros(1), 0.2, 0.2), torch.tensor([0.2]))


def test_bad_inputs_raise():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        ode_step(x, torch.zeros(2, 4), 0.5, 0.1)
    with pytest.raises(ValueError, match="does not broadcast"):
        flow_sde_step(x, x, torch.ones(2), 0.1, 0.5)  # [B] times against [B,3] need [B,1]
    with pytest.raises(ValueError, match="t > 0"):
        flow_sde_step(x, x, 0.0, 0.1, 0.5)
    with pytest.raises(ValueError, match="noise_level"):
        cps_step(x, x, 0.5, 0.1, 1.5)
    with pytest.raises(ValueError, match="num_steps"):
        time_grid(0)
    with pytest.raises(ValueError, match="decrease"):
        sde_sigmas(torch.tensor([0.0, 0.5, 1.0]), 0.5)
    with pytest.raises(ValueError, match="1-D"):
        sde_sigmas(torch.ones(2, 2), 0.5)
    with pytest.raises(ValueError, match="noise_level"):
        sde_sigmas(time_grid(4), -0.1)
    with pytest.raises(ValueError, match="min_std"):
        bounded_std(x, 0.2, 0.1)
