"""The RL math of pi0lab: GAE, chunk folding and episode masks, GRPO group advantages, PPO losses.

Pure torch functions; shapes and formulas are in each docstring.
"""

from .advantages import compute_gae, episode_mask, episode_weights, normalize_advantages, reduce_chunks
from .grpo import episode_scores, group_advantages, group_filter
from .ppo import explained_variance, huber, ppo_actor_loss, value_loss
from ._checks import masked_mean

__all__ = [
    "compute_gae",
    "reduce_chunks",
    "episode_mask",
    "episode_weights",
    "normalize_advantages",
    "episode_scores",
    "group_advantages",
    "group_filter",
    "ppo_actor_loss",
    "value_loss",
    "explained_variance",
    "huber",
    "masked_mean",
]
