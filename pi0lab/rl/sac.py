"""Soft actor-critic (SAC) with a Q ensemble: the TD target, the three losses, target networks, and the
tanh-squashed Gaussian policy.

    y      = r + gamma (1 - d) (min_e Q'_e(s', a') - alpha log pi(a'|s')),    a' ~ pi(.|s')
    n-step: r -> R_t = sum_{k<n} gamma^k r_{t+k}, gamma -> gamma^n, s' -> s_{t+n}   (`n_step_returns`)
    L_Q    = mean_e mean_b (Q_e(s, a) - y)^2
    L_pi   = mean_b (alpha log pi(a|s) - mean_e Q_e(s, a)),                    a ~ pi(.|s) (reparameterised)
    L_alpha = -mean_b log_alpha (log pi(a|s) + H_target)

Q tensors are `[E,B]`: one row per ensemble head. Everything the loss must not differentiate through
(the target, alpha, the entropy gap) is detached inside, so the losses can be fed live tensors.
"""

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from ._checks import as_bool, check_same_shape, shape_str


def _check_heads(where: str, q: torch.Tensor, per_sample: torch.Tensor, name: str) -> None:
    if q.ndim != 2 or per_sample.shape != q.shape[1:]:
        raise ValueError(f"{where}: expected q [E,B] and {name} [B], got q {shape_str(q)}, {name} {shape_str(per_sample)}")


def sac_q_target(
    rewards: torch.Tensor,
    dones: torch.Tensor,
    next_q: torch.Tensor,
    next_logprob: torch.Tensor,
    alpha: float | torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """Clipped soft TD target.

        y = r + gamma (1 - d) (min_e Q'_e(s', a') - alpha log pi(a'|s'))

    Args:
        rewards: [B].
        dones: [B] bool (or 0/1): the episode ended at this step, so nothing is bootstrapped.
        next_q: [E,B] target-network values at (s', a'), a' ~ pi(.|s'); pass the subset of heads the
            minimum should run over (e.g. 2 random heads of 10, as REDQ does).
        next_logprob: [B] log pi(a'|s').
        alpha: the entropy temperature (a tensor is detached).

    Returns:
        y [B], detached.
    """
    check_same_shape("sac_q_target", rewards=rewards, dones=dones, next_logprob=next_logprob)
    _check_heads("sac_q_target", next_q, rewards, "rewards")
    not_done = (~as_bool("sac_q_target", "dones", dones)).to(rewards.dtype)
    alpha = alpha.detach() if isinstance(alpha, torch.Tensor) else alpha
    soft_value = next_q.min(dim=0).values - alpha * next_logprob  # V(s') = min_e Q'_e - alpha log pi
    return (rewards + gamma * not_done * soft_value).detach()


def n_step_returns(rewards: torch.Tensor, dones: torch.Tensor, gamma: float, n: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n-step returns of a window of whole episodes, for the TD target y = R_t + gamma^n (1 - d_t) V(s_{t+n}).

        R_t = sum_{k < m} gamma^k r_{t+k},   m = min(n, e - t + 1),   e = the first end at or after t
        d_t = (e < t + n): the episode ended within the n steps, so nothing is bootstrapped

    n = 1 gives back (r_t, done_t, t + 1). With n at least the episode's length, R_t is the Monte Carlo
    return and d_t is always true. Steps after an end (a finished env in a synchronous window) get
    values too; drop them.

    Args:
        rewards: [T,N] (time, envs).
        dones: [T,N] bool: the episode ended at this step (success or time limit).
        gamma: the per-step discount.
        n: steps summed before bootstrapping, >= 1.

    Returns:
        returns [T,N], ended [T,N] bool, and next_step [T,N] long: t + n (clamped to T - 1; read it only where
        not ended) -- the step whose state the target bootstraps from.
    """
    check_same_shape("n_step_returns", rewards=rewards, dones=dones)
    if rewards.ndim != 2 or n < 1:
        raise ValueError(f"n_step_returns: expected rewards and dones [T,N] and n >= 1, got {shape_str(rewards)} "
                         f"and n={n}")
    dones = as_bool("n_step_returns", "dones", dones)
    steps, device = rewards.shape[0], rewards.device
    returns, ended = torch.zeros_like(rewards), torch.zeros_like(dones)
    alive = torch.ones_like(dones)  # no end in [t, t + k) yet
    for k in range(n):
        later = torch.arange(k, steps + k, device=device).clamp(max=steps - 1)  # row t reads step t + k
        alive = alive & (torch.arange(steps, device=device) + k < steps)[:, None]
        returns = returns + torch.where(alive, gamma**k * rewards[later], 0.0)
        ended = ended | (alive & dones[later])
        alive = alive & ~dones[later]
    next_step = (torch.arange(steps, device=device) + n).clamp(max=steps - 1)[:, None].expand_as(rewards)
    return returns, ended, next_step


def sac_critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over heads of each head's MSE to the (detached) target.

        L_Q = mean_e mean_b (Q_e(s, a) - y)^2

    Args:
        q: [E,B] every head's value at the stored (s, a).
        target: [B] from `sac_q_target`.
    """
    _check_heads("sac_critic_loss", q, target, "target")
    return (q - target.detach()[None]).square().mean()


def sac_actor_loss(q: torch.Tensor, logprob: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """Policy loss on the ensemble's *mean* value (the minimum is for the target only, as in REDQ).

        L_pi = mean_b (alpha log pi(a|s) - mean_e Q_e(s, a)),   a = the policy's reparameterised sample

    Args:
        q: [E,B] the critic at (s, a) with a from the policy (gradients flow into a).
        logprob: [B] log pi(a|s) of the same a.
        alpha: the temperature (a tensor is detached).
    """
    _check_heads("sac_actor_loss", q, logprob, "logprob")
    alpha = alpha.detach() if isinstance(alpha, torch.Tensor) else alpha
    return (alpha * logprob - q.mean(dim=0)).mean()


def sac_temperature_loss(log_alpha: torch.Tensor, logprob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """Automatic entropy tuning.

        L_alpha = -mean_b log_alpha (log pi(a|s) + H_target)       (the bracket is detached)

    dL/dlog_alpha = -mean(log pi + H_target) = H - H_target with H = -mean(log pi): gradient descent
    raises alpha when the policy's entropy is below the target and lowers it when above.

    Args:
        log_alpha: 0-dim learnable tensor.
        logprob: [B] log-probs of fresh policy samples.
        target_entropy: H_target (e.g. -D/2 for D action dims).
    """
    if log_alpha.ndim != 0 or logprob.ndim != 1:
        raise ValueError(f"sac_temperature_loss: expected log_alpha [] and logprob [B], "
                         f"got {shape_str(log_alpha)} and {shape_str(logprob)}")
    return -(log_alpha * (logprob + target_entropy).detach()).mean()


@torch.no_grad()
def polyak_update(target_params: Iterable[torch.Tensor], params: Iterable[torch.Tensor], tau: float) -> None:
    """Move target networks towards the online ones, in place: theta' <- (1 - tau) theta' + tau theta.

    tau = 1 copies, tau = 0 leaves the targets as they are.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"polyak_update: tau must be in [0, 1], got {tau}")
    target_params, params = list(target_params), list(params)
    if len(target_params) != len(params):
        raise ValueError(f"polyak_update: {len(target_params)} target tensors for {len(params)} tensors")
    for target, source in zip(target_params, params):
        if target.shape != source.shape:
            raise ValueError(f"polyak_update: target {shape_str(target)} vs source {shape_str(source)}")
        target.lerp_(source, tau)  # theta' + tau (theta - theta')


def squashed_gaussian_sample(
    mean: torch.Tensor, log_std: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised sample of a = tanh(u), u ~ N(mean, std^2), and its log-density in a-space.

        u = mean + std * eps,  eps ~ N(0, I)
        log pi(a) = sum_d [log N(u_d; mean_d, std_d^2) - log(1 - tanh(u_d)^2)]
        log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))       (stable for large |u|)

    The action lies in (-1, 1)^D; scale it outside (a constant scale c only shifts log pi by -D log c).
    The deterministic action is tanh(mean).

    Args:
        mean, log_std: [*B,D].
        generator: draws eps (None: the global generator).

    Returns:
        action [*B,D] and logprob [*B] (summed over D), both differentiable in mean and log_std.
    """
    check_same_shape("squashed_gaussian_sample", mean=mean, log_std=log_std)
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    u = mean + log_std.exp() * eps
    gaussian = -0.5 * eps.square() - log_std - 0.5 * math.log(2 * math.pi)  # log N(u; mean, std^2)
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))  # log |d tanh(u) / du|
    return torch.tanh(u), (gaussian - log_det).sum(dim=-1)
