"""Input checks and masked reductions shared by the RL functions."""

import torch


def shape_str(x: torch.Tensor) -> str:
    return "[" + ",".join(str(d) for d in x.shape) + "]"


def check_same_shape(where: str, **tensors: torch.Tensor | None) -> None:
    """Raise ValueError unless every given (non-None) tensor has the same shape."""
    given = {name: t for name, t in tensors.items() if t is not None}
    shapes = {t.shape for t in given.values()}
    if len(shapes) > 1:
        listed = ", ".join(f"{name} {shape_str(t)}" for name, t in given.items())
        raise ValueError(f"{where}: expected tensors of one shape, got {listed}")


def as_bool(where: str, name: str, flags: torch.Tensor) -> torch.Tensor:
    """Flags as a bool tensor; 0/1 numbers are accepted, anything else raises ValueError."""
    if flags.dtype == torch.bool:
        return flags
    if not ((flags == 0) | (flags == 1)).all():
        raise ValueError(f"{where}: {name} must be bool (or 0/1), got {flags.dtype} with other values")
    return flags.bool()


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of x over the entries where mask is True (all entries when mask is None).

    sum(m * x) / max(sum(m), 1): an all-False mask gives 0, so a micro-batch with no valid
    entry contributes nothing. The values of masked-out entries do not affect the result.
    """
    if mask is None:
        return x.mean()
    total = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
    return total / mask.sum().clamp_min(1)


def weighted_mean(x: torch.Tensor, mask: torch.Tensor | None, weights: torch.Tensor) -> torch.Tensor:
    """sum(m * w * x) / sum(m * w); 0 when no valid entry has weight."""
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    if mask is not None:
        weights = torch.where(mask, weights, zero)
    total_weight = weights.sum()
    weighted_sum = torch.where(weights > 0, weights * x, zero).sum()
    return torch.where(total_weight > 0, weighted_sum / total_weight.clamp_min(torch.finfo(x.dtype).tiny), zero)
