"""GRPO: critic-free advantages from groups of episodes that share a task and an initial state.

Envs are laid out in contiguous groups: envs [0, G) form group 0, [G, 2G) group 1, and so on.
Each episode gets one score; its advantage says how much better it did than its siblings.
"""

import torch

from ._checks import as_bool, shape_str


def episode_scores(rewards: torch.Tensor, dones: torch.Tensor) -> torch.Tensor:
    """Undiscounted return of the first episode in the window, up to and including its first done.

        score_b = sum_t r_{t,b} * [no step before t ended the episode],  "ended" = dones[t+1].

    Args:
        rewards: [T,B] (any batch shape [T,*B]).
        dones:   [T+1,B] bool; dones[t+1] says step t ended its episode, row 0 is unused.

    Returns:
        scores [B].
    """
    if rewards.ndim < 1 or dones.shape != (rewards.shape[0] + 1, *rewards.shape[1:]):
        raise ValueError(
            f"episode_scores: expected rewards [T,B] and dones [T+1,B]; "
            f"got rewards {shape_str(rewards)}, dones {shape_str(dones)}"
        )
    ended_at = as_bool("episode_scores", "dones", dones)[1:].long()  # [T,*B]: step t ended it
    ended_before = (ended_at.cumsum(0) - ended_at) > 0  # some step < t ended it
    return torch.where(ended_before, torch.zeros_like(rewards), rewards).sum(0)


def _groups(where: str, scores: torch.Tensor, group_size: int) -> torch.Tensor:
    """scores [N] -> [N / group_size, group_size] (contiguous blocks), as floats."""
    if scores.ndim != 1:
        raise ValueError(f"{where}: expected scores [N], got {shape_str(scores)}")
    if group_size < 1 or scores.shape[0] % group_size != 0:
        raise ValueError(
            f"{where}: group_size {group_size} must divide the number of scores, got scores {shape_str(scores)}"
        )
    if not scores.is_floating_point():
        scores = scores.to(torch.get_default_dtype())
    return scores.reshape(-1, group_size)


def group_advantages(
    scores: torch.Tensor, group_size: int, eps: float = 1e-6, std_normalize: bool = True
) -> torch.Tensor:
    """Group-relative advantages.

        A_i = (s_i - mean_g) / (std_g + eps)    (unbiased std over the group)
        A_i = s_i - mean_g                      when std_normalize=False
        A_i = 0                                 when every score of the group is equal

    Args:
        scores: [N] one score per episode (e.g. success), N = groups * group_size.
        group_size: episodes per group; groups are contiguous blocks.

    Returns:
        advantages [N].
    """
    groups = _groups("group_advantages", scores, group_size)  # [G, group_size]
    advantages = groups - groups.mean(-1, keepdim=True)
    if std_normalize and group_size > 1:  # a group of one is all-equal: 0 below
        advantages = advantages / (groups.std(-1, keepdim=True) + eps)
    all_equal = groups.amax(-1, keepdim=True) == groups.amin(-1, keepdim=True)
    return torch.where(all_equal, torch.zeros_like(advantages), advantages).reshape(-1)


def group_filter(
    scores: torch.Tensor, group_size: int, low: float = 0.1, high: float = 0.9
) -> torch.Tensor:
    """Keep only groups that still teach something: low <= mean_g <= high.

    With success scores, a group that always (or never) succeeds has zero advantage everywhere
    and is dropped.

    Args:
        scores: [N]; groups are contiguous blocks of group_size.

    Returns:
        keep [N] bool (the same value for every member of a group).
    """
    group_mean = _groups("group_filter", scores, group_size).mean(-1)  # [G]
    keep = (group_mean >= low) & (group_mean <= high)
    return keep.repeat_interleave(group_size)
