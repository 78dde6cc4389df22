"""Advantages for chunked, sparse-reward rollouts: GAE, chunk folding, the episode mask.

Time layout used everywhere here (one row = one policy call = one action chunk):

    values[t], dones[t]   describe the state *before* step t   (t = 0..T, so T+1 rows)
    rewards[t]            is what step t earned                 (t = 0..T-1)
    dones[t+1]            says step t ended its episode; dones[0] belongs to the window before.
"""

import torch

from ._checks import as_bool, check_same_shape, shape_str


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016), batched over any trailing shape.

    Args:
        rewards: [T,*B] reward of step t.
        values:  [T+1,*B] V(s_t); row T is the value of the state after the last step (bootstrap).
        dones:   [T+1,*B] bool; dones[t+1] is True when step t ended its episode. Row 0 is unused.

    Formula (backwards from A_T = 0), with d = dones:
        delta_t = r_t + gamma * V_{t+1} * (1 - d_{t+1}) - V_t
        A_t     = delta_t + gamma * lam * (1 - d_{t+1}) * A_{t+1}
        R_t     = A_t + V_t          (the value target)

    Returns:
        (advantages [T,*B], returns [T,*B]). No normalisation here: see `normalize_advantages`.
    """
    if rewards.ndim < 1 or values.shape != (rewards.shape[0] + 1, *rewards.shape[1:]):
        raise ValueError(
            f"compute_gae: values must be [T+1,*B] for rewards [T,*B]; "
            f"got rewards {shape_str(rewards)}, values {shape_str(values)}"
        )
    check_same_shape("compute_gae", values=values, dones=dones)
    not_done = (~as_bool("compute_gae", "dones", dones[1:])).to(values.dtype)  # [T,*B], 1 - d_{t+1}

    advantage = torch.zeros_like(values[0])
    advantages = []
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * values[t + 1] * not_done[t] - values[t]  # TD error
        advantage = delta + gamma * lam * not_done[t] * advantage  # A_t = delta_t + gamma lam A_{t+1}
        advantages.append(advantage)
    advantages = torch.stack(advantages[::-1])
    return advantages, advantages + values[:-1]  # R_t = A_t + V_t


def reduce_chunks(rewards: torch.Tensor, dones: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold the C sub-steps of each chunk into one RL step.

    Args:
        rewards: [T,*B,C] reward of each executed action of the chunk.
        dones:   [T+1,*B,C] bool, per sub-step.

    Returns:
        (rewards [T,*B] = sum over the chunk, dones [T+1,*B] = any over the chunk).
    """
    if rewards.ndim < 2 or dones.shape != (rewards.shape[0] + 1, *rewards.shape[1:]):
        raise ValueError(
            f"reduce_chunks: expected rewards [T,*B,C] and dones [T+1,*B,C]; "
            f"got rewards {shape_str(rewards)}, dones {shape_str(dones)}"
        )
    return rewards.sum(-1), as_bool("reduce_chunks", "dones", dones).any(-1)


def episode_mask(dones: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which sub-steps belong to the episode that was running when the window started.

    Without auto-reset an env that finished keeps stepping (doing nothing) until the window ends;
    those sub-steps must not enter the losses. Flatten the sub-steps in time order
    (row 0's last sub-step, then rows 1..T, each chunk in order): sub-step k is valid iff no earlier
    sub-step (nor the last sub-step of row 0) ended the episode. The sub-step that ends it is valid.

    Args:
        dones: [T+1,B,C] bool (any number of batch dims: [T+1,*B,C]).

    Returns:
        mask [T,B,C] bool, and valid_steps [B] long = number of valid sub-steps per env.
    """
    if dones.ndim < 3:
        raise ValueError(f"episode_mask: expected dones [T+1,B,C], got {shape_str(dones)}")
    dones = as_bool("episode_mask", "dones", dones)
    steps, chunk = dones.shape[0] - 1, dones.shape[-1]
    batch = dones.shape[1:-1]
    in_time_order = dones.movedim(-1, 1).reshape((steps + 1) * chunk, *batch)  # [(T+1)*C,*B]
    in_time_order = in_time_order[chunk - 1 :]  # [T*C+1,*B]: row 0's last sub-step, then the window
    # entry k of the cumsum counts the dones of row 0's last sub-step and of sub-steps 0..k-1
    nothing_ended_before = (in_time_order.long().cumsum(0) == 0)[:-1]  # [T*C,*B]
    mask = nothing_ended_before.reshape(steps, chunk, *batch).movedim(1, -1)  # [T,*B,C]
    valid_steps = mask.sum(dim=(0, mask.ndim - 1))  # [*B]
    return mask, valid_steps


def episode_weights(mask: torch.Tensor) -> torch.Tensor:
    """Per-entry loss weights that give every episode the same total weight, whatever its length.

    Dim 0 is time, dim 1 is the env (the episode), further dims are sub-steps of one step.
        w = 1 / (number of valid entries of the env)  on valid entries, 0 elsewhere.
    Pass as `weights=` to `ppo_actor_loss` / `value_loss`: the loss becomes the mean over episodes
    of each episode's mean, so a short successful episode counts as much as a long failed one.

    Args:
        mask: [T,B,...] bool, e.g. from `episode_mask` (or `.any(-1)` of it for chunk-level losses).

    Returns:
        weights [T,B,...] float.
    """
    if mask.ndim < 2:
        raise ValueError(f"episode_weights: expected mask [T,B,...], got {shape_str(mask)}")
    mask = as_bool("episode_weights", "mask", mask)
    per_env_dims = [d for d in range(mask.ndim) if d != 1]
    valid_per_env = mask.sum(dim=per_env_dims, keepdim=True)  # [1,B,1...]
    weights = 1.0 / valid_per_env.clamp_min(1).to(torch.get_default_dtype())
    return torch.where(mask, weights, 0.0)


def normalize_advantages(
    adv: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Whiten advantages with statistics of the valid entries only.

        A' = (A - mean) / (std + eps),  mean and unbiased std over entries where mask is True.

    Every entry is transformed with those statistics (invalid ones too; the losses mask them).

    Args:
        adv:  [*S] advantages.
        mask: [*S] bool or None (all valid).
    """
    if mask is not None:
        check_same_shape("normalize_advantages", adv=adv, mask=mask)
    valid = adv if mask is None else adv[as_bool("normalize_advantages", "mask", mask)]
    if valid.numel() < 2:
        raise ValueError(
            f"normalize_advantages: need at least 2 valid entries for an unbiased std, got {valid.numel()}"
        )
    return (adv - valid.mean()) / (valid.std() + eps)
