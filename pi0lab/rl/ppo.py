"""PPO losses for the actor (clipped surrogate) and the critic (clipped value), with their metrics.

Every loss is a mean over valid entries (`mask`), or a weighted mean when `weights` are given
(see `episode_weights`). Metrics are detached 0-dim tensors, always plain masked means.
"""

import torch

from ._checks import as_bool, check_same_shape, masked_mean, weighted_mean


def _reduce(per_sample: torch.Tensor, mask: torch.Tensor | None, weights: torch.Tensor | None) -> torch.Tensor:
    return masked_mean(per_sample, mask) if weights is None else weighted_mean(per_sample, mask, weights)


def ppo_actor_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    mask: torch.Tensor | None = None,
    dual_clip: float | None = None,
    kl_coef: float = 0.0,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate policy loss.

    Per sample (log-probs already summed over the chunk and action dims):
        r  = exp(lp - lp_old)
        l  = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))
        l  = min(l, -A * dual_clip)                   if dual_clip and A < 0 (bounds the loss of
                                                      a bad action whose ratio exploded)
        l += kl_coef * (exp(lp_old - lp) - (lp_old - lp) - 1)     k3 KL estimate, if kl_coef > 0

    Args:
        logprobs, old_logprobs, advantages: [*S] one entry per sample.
        mask: [*S] bool, valid entries (None = all). Masked entries count as ratio 1 and get no gradient.
        dual_clip: c > 1, or None.
        kl_coef: weight of the k3 KL penalty towards the behaviour policy.
        weights: [*S] non-negative, or None; loss = sum(m w l) / sum(m w) instead of the masked mean.

    Returns:
        loss (0-dim) and metrics: approx_kl = mean(lp_old - lp); clipfrac = fraction where the
        clipped term is strictly larger; ratio = mean r; kl_k3 = mean k3 estimate.
    """
    check_same_shape(
        "ppo_actor_loss", logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages,
        mask=mask, weights=weights,
    )
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"ppo_actor_loss: dual_clip must be > 1 (or None), got {dual_clip}")
    if mask is not None:
        mask = as_bool("ppo_actor_loss", "mask", mask)
        log_ratio = torch.where(mask, logprobs - old_logprobs, 0.0)  # keeps masked entries finite
    else:
        log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)  # r = pi / pi_old
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_sample = torch.maximum(unclipped, clipped)  # pessimistic bound
    if dual_clip is not None:
        per_sample = torch.where(advantages < 0, torch.minimum(per_sample, -advantages * dual_clip), per_sample)
    kl_k3 = torch.exp(-log_ratio) + log_ratio - 1.0  # exp(old - new) - (old - new) - 1 >= 0
    if kl_coef > 0:
        per_sample = per_sample + kl_coef * kl_k3

    loss = _reduce(per_sample, mask, weights)
    with torch.no_grad():
        metrics = {
            "approx_kl": masked_mean(-log_ratio, mask),  # mean(old - new)
            "clipfrac": masked_mean((clipped > unclipped).to(ratio.dtype), mask),
            "ratio": masked_mean(ratio, mask),
            "kl_k3": masked_mean(kl_k3, mask),
        }
    return loss, metrics


def huber(x: torch.Tensor, delta: float | None) -> torch.Tensor:
    """0.5 x^2, or Huber: 0.5 x^2 if |x| <= delta else delta * (|x| - delta / 2)."""
    if delta is None:
        return 0.5 * x.square()
    return torch.where(x.abs() <= delta, 0.5 * x.square(), delta * (x.abs() - 0.5 * delta))


def explained_variance(
    predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """1 - Var[R - V] / Var[R] over valid entries: 1 is perfect, 0 is no better than a constant.

    NaN when the targets have no variance (or fewer than 2 valid entries).
    """
    check_same_shape("explained_variance", predictions=predictions, targets=targets, mask=mask)
    with torch.no_grad():
        if mask is not None:
            mask = as_bool("explained_variance", "mask", mask)
            predictions, targets = predictions[mask], targets[mask]
        if targets.numel() < 2:
            return torch.tensor(float("nan"), dtype=targets.dtype, device=targets.device)
        target_var = targets.var()
        return torch.where(target_var > 0, 1.0 - (targets - predictions).var() / target_var, float("nan"))


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    clip: float = 0.2,
    huber_delta: float | None = None,
    mask: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss.

        v_c = v_old + clamp(v - v_old, -clip, clip)
        l   = max(h(R - v), h(R - v_c)),    h(x) = 0.5 x^2, or Huber(huber_delta)

    Args:
        values, old_values, returns: [*S].
        mask: [*S] bool or None. weights: [*S] or None, as in `ppo_actor_loss`.

    Returns:
        loss (0-dim) and metrics: value_clip_ratio = fraction where |v - v_old| > clip (measured
        before clamping, so it counts real clipping); explained_variance of v against R.
    """
    check_same_shape(
        "value_loss", values=values, old_values=old_values, returns=returns, mask=mask, weights=weights
    )
    if mask is not None:
        mask = as_bool("value_loss", "mask", mask)
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    per_sample = torch.maximum(huber(returns - values, huber_delta), huber(returns - clipped_values, huber_delta))
    loss = _reduce(per_sample, mask, weights)
    with torch.no_grad():
        metrics = {
            "value_clip_ratio": masked_mean(((values - old_values).abs() > clip).to(values.dtype), mask),
            "explained_variance": explained_variance(values, returns, mask),
        }
    return loss, metrics
