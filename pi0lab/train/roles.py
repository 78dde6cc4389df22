"""The three roles of RL training: env, rollout and actor.

Each role owns one thing and talks to the others only through plain batches (numpy observations,
tensors of policy outputs, weight state dicts), so the same roles can later sit in separate
processes or on separate devices (`cluster.component_placement`). Here they share one process; in
this collocated mode the rollout role uses the actor's module directly and weight sync is a no-op.

    env role      reset / step the vectorised envs; GRPO groups share task and initial state
    rollout role  env observations -> sampled actions, denoising chains, old log-probs, values
    actor role    the PPO / GRPO update on a finished rollout
"""

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from pi0lab.envs import VectorEnv, make_env
from pi0lab.models import Pi0, Pi0Config
from pi0lab.models.checkpoint import load_pi0
from pi0lab.models.heads import NoiseHead, ValueHead
from pi0lab.models.policy import Pi0Policy


# ------------------------------------------------------------------------------------------ env


class EnvRole:
    """Training envs with (task, init) draws of its own, so GRPO groups can share them."""

    def __init__(self, split_cfg: DictConfig, seed: int, group_size: int = 1):
        self.envs: VectorEnv = build_envs(split_cfg, seed)
        self.step_wait_s = split_cfg.step_wait_s * self.envs.num_envs
        self.group_size = group_size
        self.rng = np.random.default_rng(seed + 1)

    @property
    def num_envs(self) -> int:
        return self.envs.num_envs

    def reset(self) -> dict:
        """Reset every env; each block of `group_size` envs gets the same (task, init state), the init state
        drawn from the envs' `init_states` [first, stop) (`env.*.init_states`; default: all of the task's)."""
        num_groups = self.num_envs // self.group_size
        tasks = self.rng.integers(0, self.envs.num_tasks, size=num_groups)
        first, stop = self.envs.init_states
        inits = np.array([self.rng.integers(first, stop or self.envs.num_init_states(int(t))) for t in tasks])
        return self.envs.reset(np.repeat(tasks, self.group_size), np.repeat(inits, self.group_size))

    def step(self, actions: np.ndarray):
        if self.step_wait_s > 0:
            time.sleep(self.step_wait_s)
        return self.envs.step(actions)

    # A local env slice for `collect_rollouts`: it answers at once (a remote one answers from its process).
    def send_reset(self) -> None:
        self._answer = self.reset()

    def send_step(self, actions: np.ndarray) -> None:
        self._answer = self.step(actions)

    def receive(self):
        return self._answer

    def end(self) -> None:
        self._answer = None

    def close(self) -> None:
        self.envs.close()


def build_envs(split_cfg: DictConfig, seed: int) -> VectorEnv:
    """The vectorised env of an `env.train` / `env.eval` config group (no auto-reset: training windows
    and evaluation rounds both start every episode themselves). `privileged_state` is the tabletop's
    state-based control (things' true poses appended to the state; not pi0); `init_states` [first, stop)
    keeps the split to those init states of every task (training draws, evaluation pairs from first)."""
    options = {"privileged_state": split_cfg.privileged_state}
    if split_cfg.max_episode_steps is not None:
        options["max_episode_steps"] = split_cfg.max_episode_steps
    envs = make_env(
        split_cfg.task_suite_name,
        split_cfg.total_num_envs,
        image_size=split_cfg.image_size,
        seed=seed,
        auto_reset=False,
        **options,
    )
    if split_cfg.init_states is not None:
        try:
            envs.restrict_init_states(*split_cfg.init_states)
        except ValueError as err:
            envs.close()
            raise ValueError(f"env.*.init_states={list(split_cfg.init_states)}: {err}") from None
    return envs


# ------------------------------------------------------------------------------------------ policy


def build_policy(model_cfg: DictConfig, device: torch.device | str = "cpu", override_path: Path | None = None) -> Pi0Policy:
    """The policy of `actor.model`, loaded from `model_path` (any layout `load_pi0` reads).

    `override_path` (a resumed run's checkpoint) takes the place of `model_path`. A value head is
    attached when `add_value_head` asks for one and the checkpoint has none (an SFT checkpoint);
    `detach_critic_input` decides whether the critic's gradient reaches the expert.
    """
    openpi = model_cfg.openpi
    if override_path is None and model_cfg.model_path is None:
        raise ValueError("actor.model.model_path is not set: RL starts from a checkpoint "
                         "(train one with `pi0lab sft`, or point it at an openpi / lerobot / RLinf checkpoint)")
    path = Path(override_path or model_cfg.model_path)
    if not path.exists():
        raise FileNotFoundError(f"actor.model.model_path={path} does not exist (run `pi0lab sft` first?)")
    model = load_pi0(path)
    if model.norm_stats is None:
        raise ValueError(f"{path} carries no normalisation stats; save it with norm stats (pi0lab sft does)")
    attach_heads(model, value_head=model_cfg.add_value_head, detach_critic_input=openpi.detach_critic_input,
                 noise_head=openpi.noise_method == "reinflow")
    model.to(device)
    return Pi0Policy(
        model,
        model.norm_stats,
        action_chunk=model_cfg.num_action_chunks,
        action_env_dim=model_cfg.action_dim,
        num_steps=model_cfg.num_steps,
        noise_method=openpi.noise_method,
        noise_level=openpi.noise_level,
        train_expert_only=openpi.train_expert_only,
        precision=model_cfg.precision,
        initial_noise=openpi.initial_noise,
        logprob_reduction=openpi.logprob_reduction,
        noise_std_min=openpi.noise_std_min,
        noise_steps=openpi.noise_steps,
    )


def attach_heads(model: Pi0, value_head: bool, detach_critic_input: bool, noise_head: bool) -> None:
    """Give a loaded model the RL heads it lacks (fresh weights); set the critic's detach flag."""
    config: Pi0Config = model.config
    if value_head and not config.value_head:
        model.value_head = ValueHead(config.expert.width)
        config = dataclasses.replace(config, value_head=True)
    if value_head:
        model.value_head.detach = detach_critic_input
    if noise_head and not config.noise_head:
        model.noise_head = NoiseHead(config.expert.width, config.action_dim, config.noise_std_range)
        config = dataclasses.replace(config, noise_head=True)
    model.config = config


# ------------------------------------------------------------------------------------------ rollout


class RolloutRole:
    """Samples actions for env observations with the rollout policy (no gradients)."""

    def __init__(self, policy: Pi0Policy, generator: torch.Generator):
        self.policy = policy
        self.generator = generator

    def act(self, obs: dict, deterministic: bool = False) -> dict:
        self.policy.eval()
        return self.policy.rollout(obs, deterministic=deterministic, generator=self.generator)
