"""Gaussian log-probabilities and entropies of denoising steps, and their sum over an executed chunk.

A deterministic step (std = 0) has no density; by convention it contributes log-prob 0 and entropy 0,
so summing over all steps of a chain adds up only the noisy ones.
"""

import math

import torch
from torch import Tensor

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_logprob(x: Tensor, mean: Tensor | float, std: Tensor | float) -> Tensor:
    """Elementwise log N(x; mean, std^2), and 0 where std == 0.

        log p = -log(std) - log(sqrt(2 pi)) - (x - mean)^2 / (2 std^2)

    x `[*B]`, mean and std (tensors or floats) broadcastable to `[*B]` -> `[*B]`.
    Gradients are finite at std = 0 entries.
    """
    mean, std = (torch.as_tensor(value, dtype=x.dtype, device=x.device) for value in (mean, std))
    _check_broadcasts_to(x, mean=mean, std=std)
    if bool((std < 0).any()):
        raise ValueError("std must be >= 0")
    deterministic = std == 0
    safe_std = torch.where(deterministic, torch.ones_like(std), std)  # avoids 0/0 in the masked entries
    logprob = -torch.log(safe_std) - _LOG_SQRT_2PI - 0.5 * ((x - mean) / safe_std) ** 2
    return torch.where(deterministic, torch.zeros_like(logprob), logprob)


def gaussian_entropy(std: Tensor) -> Tensor:
    """Elementwise entropy of N(., std^2): H = 0.5 * log(2 pi e std^2), and 0 where std == 0.  `[*B]` -> `[*B]`."""
    if bool((std < 0).any()):
        raise ValueError("std must be >= 0")
    deterministic = std == 0
    safe_std = torch.where(deterministic, torch.ones_like(std), std)
    entropy = 0.5 * torch.log(2 * math.pi * math.e * safe_std**2)  # H = 0.5 log(2 pi e std^2)
    return torch.where(deterministic, torch.zeros_like(entropy), entropy)


def chunk_logprob(logprobs: Tensor, chunk: int, action_dim: int) -> Tensor:
    """Log-prob of the executed part of an action chunk.

    logprobs `[*B,H,A]` (elementwise, H = model horizon, A = padded action dims) -> `[*B]`:
        sum_{h < chunk} sum_{d < action_dim} logprobs[..., h, d]
    Horizon steps the env does not execute and padding dims beyond the robot's are excluded.
    """
    if logprobs.ndim < 2:
        raise ValueError(f"logprobs must be [*B,H,A], got shape {tuple(logprobs.shape)}")
    horizon, dims = logprobs.shape[-2:]
    if not 1 <= chunk <= horizon:
        raise ValueError(f"chunk must be in [1, H={horizon}] for logprobs {tuple(logprobs.shape)}, got {chunk}")
    if not 1 <= action_dim <= dims:
        raise ValueError(f"action_dim must be in [1, A={dims}] for logprobs {tuple(logprobs.shape)}, got {action_dim}")
    return logprobs[..., :chunk, :action_dim].sum(dim=(-2, -1))


def _check_broadcasts_to(x: Tensor, **others: Tensor) -> None:
    for name, other in others.items():
        try:
            shape = torch.broadcast_shapes(other.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(f"{name} of shape {tuple(other.shape)} does not broadcast to x of shape {tuple(x.shape)}")
