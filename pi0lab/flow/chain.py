"""Sampling chains: N denoising steps from given noise, noise injected at chosen steps, kept for PPO.

A chain is x_0 = noise (t = 1), x_1, ..., x_N = action (t = 0).  Step i maps x_i -> x_{i+1} through a
Gaussian transition N(mean_i, std_i^2).  At a *noisy* step the transition comes from the chosen method:

    ode       mean = x - dt v,                                   std = 0 (never noisy)
    flow_sde  mean/std of `flow_sde_step` with sigma_i = sde_sigmas(t, noise_level)[i]
    cps       mean/std of `cps_step` with noise_level
    reinflow  mean = x - dt v (the ODE mean),                    std = std_fn(features or x, t)

Every other step is the deterministic ODE step (std 0, log-prob 0).  The policy log-prob of a chain is
the sum of the transition log-probs at its noisy steps; `recompute_logprobs` re-evaluates exactly those
transitions under a new velocity function, which is what a PPO ratio needs.

Velocity functions take x `[B,*S]` and t `[B]` (float32, one time per sample) and return v `[B,*S]`,
or (v, features) where features feed a ReinFlow `std_fn` (e.g. a pi0 noise head on the action tokens).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pi0lab.flow.logprob import gaussian_logprob
from pi0lab.flow.steps import cps_step, flow_sde_step, ode_step, sde_sigmas, time_grid

VelocityFn = Callable[[Tensor, Tensor], Tensor | tuple[Tensor, Tensor]]
StdFn = Callable[[Tensor, Tensor], Tensor]

METHODS = ("ode", "flow_sde", "cps", "reinflow")
# The reference recipe: flow-SDE / CPS add noise at one random step per call, ReinFlow at every step.
DEFAULT_NOISE_STEPS = {"ode": None, "flow_sde": "one", "cps": "one", "reinflow": "all"}


@dataclass
class FlowChain:
    """A sampled chain.  B = batch, N = steps, K = noisy steps per sample, S = sample shape (e.g. H, A).

    chain        `[B,N+1,*S]`  x_0 = noise ... x_N = action
    noisy_steps  `[B,K]` long  indices i of the noisy transitions x_i -> x_{i+1} (sorted, same for all rows)
    means, stds  `[B,N,*S]`    transition i ~ N(means[:, i], stds[:, i]^2); std 0 at deterministic steps
    logprobs     `[B,N,*S]`    elementwise log N(x_{i+1}; mean_i, std_i^2); 0 at deterministic steps
    """

    chain: Tensor
    noisy_steps: Tensor
    means: Tensor
    stds: Tensor
    logprobs: Tensor

    @property
    def actions(self) -> Tensor:
        """The sampled actions x_N `[B,*S]`."""
        return self.chain[:, -1]

    @property
    def noisy_logprobs(self) -> Tensor:
        """Log-probs of the noisy transitions only, `[B,K,*S]` (what `recompute_logprobs` returns)."""
        return gather_steps(self.logprobs, self.noisy_steps)


@dataclass
class Transitions:
    """Noisy transitions re-evaluated under a velocity function: means, stds, logprobs, each `[B,K,*S]`."""

    means: Tensor
    stds: Tensor
    logprobs: Tensor


def gather_steps(per_step: Tensor, steps: Tensor) -> Tensor:
    """Pick per-sample steps: per_step `[B,N,*S]`, steps `[B,K]` long -> `[B,K,*S]`.

    out[b, k] = per_step[b, steps[b, k]]
    """
    if steps.ndim != 2 or steps.shape[0] != per_step.shape[0]:
        raise ValueError(f"steps must be [B,K] with B = {per_step.shape[0]}, got shape {tuple(steps.shape)}")
    rows = torch.arange(per_step.shape[0], device=per_step.device)[:, None]  # [B,1]
    return per_step[rows, steps]


def sample_chain(
    velocity_fn: VelocityFn,
    noise: Tensor,
    num_steps: int,
    method: str = "flow_sde",
    noise_level: float = 0.5,
    noise_steps: str | Sequence[int] | None = None,
    std_fn: StdFn | None = None,
    generator: torch.Generator | None = None,
    std_min: float = 0.0,
) -> FlowChain:
    """Run `num_steps` denoising steps from `noise` `[B,*S]` on the grid t_i = 1 - i/N.

    method       one of "ode", "flow_sde", "cps", "reinflow" (table in the module docstring).
    noise_level  a for flow_sde (sigma_i = a sqrt(t_i / (1 - t_i))) and cps (angle pi a / 2).
    noise_steps  which transitions are noisy, the same for every row of the batch:
                 "one" = one step drawn uniformly from 0..N-1 per call, "all" = every step,
                 or a sequence of step indices.  None = the method's default
                 (flow_sde/cps "one", reinflow "all"); "ode" takes none.
    std_fn       reinflow only: (features or x `[B,*S]`, t `[B]`) -> std `[B,*S]`.
    generator    a torch.Generator on noise.device, for the step draw and the injected noise.
    std_min      a floor on the std of every noisy transition, std = max(std, std_min) (0: none);
                 flow-SDE's std falls to sigma_i sqrt(dt_i) ~ 0.14 near t = 0, where a tiny change of
                 the mean moves the log-prob a lot.

    Returns a `FlowChain` (shapes there).  Runs with autograd as the caller sets it (wrap in
    torch.no_grad() for rollouts).
    """
    _check_method(method, std_fn)
    if noise.ndim < 1:
        raise ValueError("noise must be [B,*S] with a batch dimension")
    batch, device = noise.shape[0], noise.device
    steps = _resolve_noise_steps(noise_steps, method, num_steps, generator, device)  # [K]
    noisy = set(steps.tolist())
    t_grid = time_grid(num_steps).to(device)
    sigmas = sde_sigmas(t_grid, noise_level) if method == "flow_sde" else None  # [N]

    x = noise
    chain, means, stds, logprobs = [noise], [], [], []
    for i in range(num_steps):
        step = torch.full((batch,), i, dtype=torch.long, device=device)  # [B]
        mean, std = _transition(velocity_fn, x, step, t_grid, sigmas, method, noise_level, std_fn, i in noisy, std_min)
        if i in noisy:
            eps = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype)
            x = mean + std * eps  # x_{i+1} ~ N(mean, std^2)
            logprob = gaussian_logprob(x, mean, std)
        else:
            x, logprob = mean, torch.zeros_like(mean)  # deterministic step: no log-prob
        chain.append(x)
        means.append(mean)
        stds.append(std)
        logprobs.append(logprob)
    return FlowChain(
        chain=torch.stack(chain, dim=1),
        noisy_steps=steps.expand(batch, -1).clone(),
        means=torch.stack(means, dim=1),
        stds=torch.stack(stds, dim=1),
        logprobs=torch.stack(logprobs, dim=1),
    )


def recompute_logprobs(
    velocity_fn: VelocityFn,
    chain: Tensor,
    noisy_steps: Tensor,
    method: str,
    noise_level: float = 0.5,
    std_fn: StdFn | None = None,
    std_min: float = 0.0,
) -> Transitions:
    """Log-probs of stored noisy transitions x_i -> x_{i+1} under `velocity_fn` (e.g. the policy being trained).

    chain `[B,N+1,*S]` and noisy_steps `[B,K]` as stored from `sample_chain` (rows may come from
    different calls, so each row has its own steps); method / noise_level / std_fn / std_min as used there.
    Returns `Transitions` with means, stds, logprobs `[B,K,*S]`:
        logprobs[b,k] = log N(x_{i+1}; mean_i(x_i), std_i^2),  i = noisy_steps[b,k]
    With the sampling velocity function these equal `FlowChain.noisy_logprobs` exactly (same inputs,
    same arithmetic).  Gradients flow into `velocity_fn` and `std_fn`.
    """
    _check_method(method, std_fn)
    if method == "ode":
        raise ValueError(
            "an 'ode' chain has no noisy transitions; recompute log-probs of a flow_sde, cps or reinflow chain"
        )
    if chain.ndim < 2:
        raise ValueError(f"chain must be [B,N+1,*S], got shape {tuple(chain.shape)}")
    batch, num_steps = chain.shape[0], chain.shape[1] - 1
    if noisy_steps.ndim != 2 or noisy_steps.shape[0] != batch or noisy_steps.dtype != torch.long:
        raise ValueError(
            f"noisy_steps must be a long tensor [B,K] with B = {batch} (chain {tuple(chain.shape)}), "
            f"got {noisy_steps.dtype} of shape {tuple(noisy_steps.shape)}"
        )
    if noisy_steps.numel() and not (0 <= int(noisy_steps.min()) and int(noisy_steps.max()) < num_steps):
        raise ValueError(f"noisy_steps must lie in [0, N-1] = [0, {num_steps - 1}] for chain {tuple(chain.shape)}")
    t_grid = time_grid(num_steps).to(chain.device)
    sigmas = sde_sigmas(t_grid, noise_level) if method == "flow_sde" else None  # [N]
    rows = torch.arange(batch, device=chain.device)

    means, stds, logprobs = [], [], []
    for k in range(noisy_steps.shape[1]):
        step = noisy_steps[:, k]  # [B]
        x, x_next = chain[rows, step], chain[rows, step + 1]  # [B,*S]
        mean, std = _transition(velocity_fn, x, step, t_grid, sigmas, method, noise_level, std_fn, True, std_min)
        means.append(mean)
        stds.append(std)
        logprobs.append(gaussian_logprob(x_next, mean, std))
    empty = chain.new_empty((batch, 0, *chain.shape[2:]))
    return Transitions(*(torch.stack(s, dim=1) if s else empty for s in (means, stds, logprobs)))


def _transition(
    velocity_fn: VelocityFn,
    x: Tensor,
    step: Tensor,
    t_grid: Tensor,
    sigmas: Tensor | None,
    method: str,
    noise_level: float,
    std_fn: StdFn | None,
    noisy: bool,
    std_min: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Mean and std `[B,*S]` of transition `step` `[B]` from x `[B,*S]`; the ODE step unless `noisy`.

    t_grid `[N+1]`; sigmas `[N]` (flow_sde only); a noisy step's std is at least `std_min`.
    """
    if std_min < 0:
        raise ValueError(f"std_min must be >= 0, got {std_min}")
    t = t_grid[step]  # [B]
    dt = t - t_grid[step + 1]  # dt_i = t_i - t_{i+1}
    v, features = _velocity(velocity_fn, x, t)
    t_x, dt_x = _per_sample(t, x), _per_sample(dt, x)  # [B,1,...,1]
    if not noisy or method == "ode":
        return ode_step(x, v, t_x, dt_x)
    if method == "flow_sde":
        mean, std = flow_sde_step(x, v, t_x, dt_x, _per_sample(sigmas[step], x))
    elif method == "cps":
        mean, std = cps_step(x, v, t_x, dt_x, noise_level)
    else:
        mean, _ = ode_step(x, v, t_x, dt_x)  # reinflow: ODE mean, learned std
        std = std_fn(x if features is None else features, t)
        if std.shape != mean.shape:
            raise ValueError(f"std_fn must return std of the sample shape {tuple(mean.shape)}, got {tuple(std.shape)}")
    return mean, std.clamp_min(std_min)  # std = max(std, std_min)


def _velocity(velocity_fn: VelocityFn, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
    out = velocity_fn(x, t)
    v, features = out if isinstance(out, tuple) else (out, None)
    if v.shape != x.shape:
        raise ValueError(f"velocity_fn must return v of x's shape {tuple(x.shape)}, got {tuple(v.shape)}")
    return v, features


def _per_sample(values: Tensor, x: Tensor) -> Tensor:
    """[B] -> [B,1,...,1] so it broadcasts against x [B,*S]."""
    return values.reshape(values.shape + (1,) * (x.ndim - 1))


def _check_method(method: str, std_fn: StdFn | None) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if (method == "reinflow") != (std_fn is not None):
        raise ValueError("method 'reinflow' needs std_fn (the noise head); the other methods take no std_fn")


def _resolve_noise_steps(
    noise_steps: str | Sequence[int] | None,
    method: str,
    num_steps: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """The sorted noisy step indices `[K]` long, shared by the whole batch."""
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if method == "ode":
        if noise_steps is not None:
            raise ValueError(f"method 'ode' is deterministic and takes no noise_steps, got {noise_steps!r}")
        return torch.zeros(0, dtype=torch.long, device=device)
    if noise_steps is None:
        noise_steps = DEFAULT_NOISE_STEPS[method]
    if noise_steps == "one":
        return torch.randint(num_steps, (1,), generator=generator, device=device)  # uniform over 0..N-1
    if noise_steps == "all":
        return torch.arange(num_steps, device=device)
    if isinstance(noise_steps, str):
        raise ValueError(f"noise_steps must be 'one', 'all' or a sequence of step indices, got {noise_steps!r}")
    steps = sorted(int(i) for i in noise_steps)
    if not steps or len(set(steps)) != len(steps) or steps[0] < 0 or steps[-1] >= num_steps:
        raise ValueError(f"noise_steps must be distinct indices in [0, {num_steps - 1}], got {list(noise_steps)}")
    return torch.tensor(steps, dtype=torch.long, device=device)
