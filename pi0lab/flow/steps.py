"""One denoising step of a flow-matching policy: the time grid and the ODE / flow-SDE / CPS / ReinFlow steps.

Convention (openpi): a point on the path from an action `a` to Gaussian noise `e` is

    x_t = t * e + (1 - t) * a,        t in [0, 1],

and the network predicts the velocity v(x_t, t) ~ e - a. Sampling runs t from 1 (pure noise) to 0 (the
action) on a grid t_0 = 1 > t_1 > ... > t_N = 0; step i goes t_i -> t_{i+1} with dt_i = t_i - t_{i+1} > 0.
From x_t and v the network's guesses of both ends of the path are

    x0 = x_t - t * v            (the action,   t = 0 end)
    x1 = x_t + (1 - t) * v      (the noise,    t = 1 end)

Every step returns a Gaussian transition x_{t-dt} ~ N(mean, std^2) (elementwise); std = 0 means a
deterministic step. `t`, `dt`, `sigma` may be Python floats or tensors broadcastable to `x_t`
(e.g. `[B,1,1]` for one time per sample of `x_t [B,H,A]`).
"""

import math

import torch
from torch import Tensor

Scalar = float | Tensor


def _as_tensor(value: Scalar, like: Tensor, name: str) -> Tensor:
    """`value` as a tensor with `like`'s dtype/device; raises if it does not broadcast to `like`."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    try:
        shape = torch.broadcast_shapes(value.shape, like.shape)
    except RuntimeError:
        shape = None
    if shape != like.shape:
        raise ValueError(
            f"{name} of shape {tuple(value.shape)} does not broadcast to x_t of shape {tuple(like.shape)}; "
            f"give a scalar or a tensor such as [B,1,...,1] for one value per sample"
        )
    return value


def _check_velocity(x_t: Tensor, v: Tensor) -> None:
    if x_t.shape != v.shape:
        raise ValueError(f"x_t {tuple(x_t.shape)} and v {tuple(v.shape)} must have the same shape")


def time_grid(num_steps: int) -> Tensor:
    """The sampling times t_i = 1 - i/N, i = 0..N.  Returns `[N+1]` float32, t_0 = 1, t_N = 0."""
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    return 1.0 - torch.arange(num_steps + 1, dtype=torch.float32) / num_steps  # t_i = 1 - i/N


def sde_sigmas(t_grid: Tensor, noise_level: float) -> Tensor:
    """Flow-SDE diffusion scale per step: sigma_i = a * sqrt(t_i / (1 - t_i)).

    t_grid `[N+1]` (from 1 down to 0), noise_level a >= 0.  Returns `[N]` (one sigma per step i = 0..N-1).
    At t_i = 1 the denominator would be 0; there it uses (1 - t_1) instead, so on a uniform grid
    sigma_0 = a * sqrt(N) and the first step injects std sigma_0 * sqrt(dt_0) = a.
    """
    if t_grid.ndim != 1 or t_grid.shape[0] < 2:
        raise ValueError(f"t_grid must be 1-D with at least 2 times (N+1), got shape {tuple(t_grid.shape)}")
    if not bool((t_grid[1:] < t_grid[:-1]).all()) or t_grid[0] > 1 or t_grid[-1] < 0:
        raise ValueError(f"t_grid must decrease strictly from <= 1 to >= 0, got {t_grid.tolist()}")
    if noise_level < 0:
        raise ValueError(f"noise_level must be >= 0, got {noise_level}")
    denominator = 1 - torch.where(t_grid == 1, t_grid[1], t_grid)  # 1 - t_i, with 1 - t_1 at t_i = 1
    return (noise_level * torch.sqrt(t_grid / denominator))[:-1]  # sigma_i = a sqrt(t_i / (1 - t_i))


def ode_step(x_t: Tensor, v: Tensor, t: Scalar, dt: Scalar) -> tuple[Tensor, Tensor]:
    """Deterministic Euler step t -> t - dt.  x_t, v `[*B]` -> (mean `[*B]`, std = zeros `[*B]`).

    mean = x_t - dt * v
    (`t` is unused by the Euler step; it is taken so every step has the same signature.)
    """
    _check_velocity(x_t, v)
    _as_tensor(t, x_t, "t")
    dt = _as_tensor(dt, x_t, "dt")
    mean = x_t - dt * v  # x_{t-dt} = x_t - dt v
    return mean, torch.zeros_like(mean)


def flow_sde_step(x_t: Tensor, v: Tensor, t: Scalar, dt: Scalar, sigma: Scalar) -> tuple[Tensor, Tensor]:
    """Flow-SDE step t -> t - dt: the ODE plus noise, with the drift corrected so marginals are unchanged.

    The reverse SDE  dx = [v - (sigma^2 / 2) * score] dt' + sigma dW  with score(x_t) = -x1 / t,
    discretised with Euler-Maruyama, gives (x_t, v `[*B]`, t > 0):

        x0 = x_t - t * v,   x1 = x_t + (1 - t) * v
        mean = (1 - (t - dt)) * x0 + (t - dt - sigma^2 * dt / (2 t)) * x1
        std  = sigma * sqrt(dt)

    Returns (mean `[*B]`, std `[*B]`).  sigma = 0 gives the ODE step.
    """
    _check_velocity(x_t, v)
    t, dt, sigma = (_as_tensor(value, x_t, name) for value, name in ((t, "t"), (dt, "dt"), (sigma, "sigma")))
    if bool((t <= 0).any()):
        raise ValueError("flow_sde_step needs t > 0 (the drift correction divides by t); the last step ends at t = 0")
    x0 = x_t - t * v  # predicted action
    x1 = x_t + (1 - t) * v  # predicted noise
    mean = (1 - (t - dt)) * x0 + (t - dt - sigma**2 * dt / (2 * t)) * x1
    std = sigma * torch.sqrt(dt)  # std = sigma sqrt(dt)
    return mean, std.expand_as(mean)


def cps_step(x_t: Tensor, v: Tensor, t: Scalar, dt: Scalar, noise_level: float) -> tuple[Tensor, Tensor]:
    """Coefficients-preserving sampling (CPS) step t -> t - dt, noise_level a in [0, 1].

    The noise part of the next point is split into a deterministic share cos(pi a / 2) of the predicted
    noise and a fresh share sin(pi a / 2), so its total scale stays (t - dt):

        x0 = x_t - t * v,   x1 = x_t + (1 - t) * v
        mean = (1 - (t - dt)) * x0 + (t - dt) * cos(pi a / 2) * x1
        std  = (t - dt) * sin(pi a / 2)

    x_t, v `[*B]` -> (mean `[*B]`, std `[*B]`).  The last step (t - dt = 0) is deterministic.
    """
    _check_velocity(x_t, v)
    if not 0 <= noise_level <= 1:
        raise ValueError(f"cps noise_level must be in [0, 1], got {noise_level}")
    t, dt = _as_tensor(t, x_t, "t"), _as_tensor(dt, x_t, "dt")
    x0 = x_t - t * v
    x1 = x_t + (1 - t) * v
    t_next = t - dt
    mean = (1 - t_next) * x0 + t_next * math.cos(math.pi * noise_level / 2) * x1
    std = t_next * math.sin(math.pi * noise_level / 2)  # std = (t - dt) sin(pi a / 2)
    return mean, std.expand_as(mean)


def bounded_std(raw: Tensor, min_std: float = 0.08, max_std: float = 0.16) -> Tensor:
    """ReinFlow noise-head output -> std in [min_std, max_std], via a tanh-squashed log-variance.

        log_var = log(min_std^2) + (log(max_std^2) - log(min_std^2)) * (tanh(raw) + 1) / 2
        std     = exp(log_var / 2)

    raw `[*B]` (unbounded network output) -> std `[*B]`.
    """
    if not 0 < min_std <= max_std:
        raise ValueError(f"need 0 < min_std <= max_std, got min_std={min_std}, max_std={max_std}")
    log_var_min, log_var_max = 2 * math.log(min_std), 2 * math.log(max_std)
    log_var = log_var_min + (log_var_max - log_var_min) * (torch.tanh(raw) + 1) / 2
    return torch.exp(0.5 * log_var)
