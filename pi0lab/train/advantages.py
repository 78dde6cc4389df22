"""From a rollout's rewards and dones to per-chunk-step advantages, value targets and a loss mask.

One RL step is one action chunk (DESIGN §5). Shapes: T chunk steps, N envs, C actions per chunk.
"""

from dataclasses import dataclass

import torch

from pi0lab.rl import compute_gae, episode_mask, episode_scores, group_advantages, group_filter, normalize_advantages, reduce_chunks


@dataclass
class Advantages:
    advantages: torch.Tensor  # [T,N]
    returns: torch.Tensor | None  # [T,N] value targets (GAE only)
    mask: torch.Tensor  # [T,N] bool: chunk steps that enter the losses
    scores: torch.Tensor  # [N] undiscounted return of each env's episode
    kept_groups: float  # GRPO: fraction of groups kept by the filter (1.0 for GAE)


def chunk_step_mask(dones: torch.Tensor) -> torch.Tensor:
    """dones [T+1,N,C] -> [T,N] bool: a chunk step counts iff its first action ran inside the episode."""
    sub_step_mask, _ = episode_mask(dones)  # [T,N,C]
    return sub_step_mask[..., 0]


def gae_advantages(
    rewards: torch.Tensor, dones: torch.Tensor, values: torch.Tensor, gamma: float, lam: float, normalize: bool
) -> Advantages:
    """PPO: GAE on chunk steps.

    rewards [T,N,C], dones [T+1,N,C] bool, values [T+1,N] (row T: value after the last chunk).
    A step's reward is the sum over its chunk; it is done if any of its actions ended the episode.
    """
    step_rewards, step_dones = reduce_chunks(rewards, dones)  # [T,N], [T+1,N]
    advantages, returns = compute_gae(step_rewards, values, step_dones, gamma, lam)
    mask = chunk_step_mask(dones)
    if normalize:
        advantages = normalize_advantages(advantages, mask)
    scores = episode_scores(step_rewards, step_dones)
    return Advantages(advantages * mask, returns, mask, scores, kept_groups=1.0)


def grpo_advantages(
    rewards: torch.Tensor,
    dones: torch.Tensor,
    group_size: int,
    filter_groups: bool,
    low: float,
    high: float,
) -> Advantages:
    """GRPO: one advantage per episode from its group, shared by every valid chunk step of it.

    Envs [g*G, (g+1)*G) form group g (same task and initial state). Score = the episode's return
    (with sparse success rewards: success). Groups whose mean score is outside [low, high] are dropped.
    """
    step_rewards, step_dones = reduce_chunks(rewards, dones)
    scores = episode_scores(step_rewards, step_dones)  # [N]
    per_episode = group_advantages(scores, group_size)  # [N]
    mask = chunk_step_mask(dones)  # [T,N]
    kept = group_filter(scores, group_size, low, high) if filter_groups else torch.ones_like(mask[0])
    mask = mask & kept[None, :]
    advantages = per_episode[None, :].expand_as(mask) * mask
    return Advantages(advantages, None, mask, scores, kept_groups=kept.float().mean().item())
