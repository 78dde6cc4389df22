"""The RL math of pi0lab: GAE, chunk folding and episode masks, GRPO group advantages, PPO losses, SAC.

Pure torch functions; shapes and formulas are in each docstring.
"""

from .advantages import compute_gae, episode_mask, episode_weights, normalize_advantages, reduce_chunks
from .grpo import episode_scores, group_advantages, group_filter
from .ppo import explained_variance, huber, ppo_actor_loss, value_loss
from .sac import (n_step_returns, polyak_update, sac_actor_loss, sac_critic_loss, sac_q_target, sac_temperature_loss,
                  squashed_gaussian_sample)
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
    "sac_q_target",
    "n_step_returns",
    "sac_critic_loss",
    "sac_actor_loss",
    "sac_temperature_loss",
    "polyak_update",
    "squashed_gaussian_sample",
]
