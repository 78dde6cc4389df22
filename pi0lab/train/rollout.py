"""Collect one rollout window: the env and rollout roles take turns, one action chunk per step.

A window starts with every env reset and ends when all episodes have ended (success or the
suite's step limit), so its length T varies. Everything is stored time-major:

    obs          main_images / wrist_images uint8 [T,N,H,W,3], states float32 [T,N,8], task_descriptions [N]
    chains       [T,N,S+1,H,A] denoising chains; noisy_steps [T,N,K] long
    logprobs     [T,N] old log-probs (executed chunk, real action dims)
    values       [T+1,N] (row T is 0: every episode has ended by then, nothing to bootstrap)
    rewards      [T,N,C]; dones [T+1,N,C] bool (row 0 False: the window starts with fresh episodes)
    prefix       the rollout's prefix KV cache, time-major (keys / values [T,N,K,P,D] per layer, pad mask
                 [T,N,P]), kept when the prefix is frozen so the update runs only the expert; else None
"""

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pi0lab.models.pi0 import PrefixCache
from pi0lab.train.roles import EnvRole, RolloutRole


@dataclass
class Trajectory:
    obs: dict[str, np.ndarray]
    task_descriptions: list[str]
    chains: torch.Tensor
    noisy_steps: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor | None
    rewards: torch.Tensor
    dones: torch.Tensor
    episode_info: dict[str, np.ndarray]  # success_once / episode_len / return per env at the end
    prefix: PrefixCache | None = None

    def prefix_at(self, t: torch.Tensor, n: torch.Tensor, device: torch.device) -> PrefixCache | None:
        """The stored prefix cache of chunk steps (t, n) `[M]` each, on `device` (None when none is kept)."""
        if self.prefix is None:
            return None
        kv = [(k[t, n].to(device), v[t, n].to(device)) for k, v in self.prefix.kv]
        return PrefixCache(kv=kv, pad_mask=self.prefix.pad_mask[t, n].to(device))

    @property
    def num_steps(self) -> int:
        return self.rewards.shape[0]


def collect_rollout(
    env: EnvRole,
    rollout: RolloutRole,
    max_chunk_steps: int,
    on_step: Callable[[dict, np.ndarray, dict], None] | None = None,
) -> tuple[Trajectory, dict[str, float]]:
    """Run every env from reset until all episodes end (at most `max_chunk_steps` chunks).

    on_step(obs, rewards [N,C], info) is called after each chunk (a `VideoRecorder.add` fits).
    Returns the trajectory and timings in seconds (`time/env`, `time/rollout`).
    """
    timer = Timer()
    with timer("time/env"):
        obs = env.reset()
    frames = {k: [] for k in ("main_images", "wrist_images", "states")}
    chains, noisy, logprobs, values, rewards, dones, prefixes = [], [], [], [], [], [], []
    info = {}
    for _ in range(max_chunk_steps):
        with timer("time/rollout"):
            out = rollout.act(obs)
        for key in frames:
            frames[key].append(obs[key])
        with timer("time/env"):
            obs, reward, terminated, truncated, info = env.step(out["actions"].cpu().numpy())
        done = terminated | truncated
        chains.append(out["chain"].cpu())
        noisy.append(out["noisy_steps"].cpu())
        logprobs.append(out["logprobs"].cpu())
        if out["values"] is not None:
            values.append(out["values"].cpu())
        if out.get("prefix") is not None:
            prefixes.append(out["prefix"])
        rewards.append(torch.as_tensor(reward))
        dones.append(torch.as_tensor(done))
        if on_step is not None:
            on_step(obs, reward, info)
        if done[:, -1].all():
            break
    num_envs, chunk = rewards[0].shape
    trajectory = Trajectory(
        obs={k: np.stack(v) for k, v in frames.items()},
        task_descriptions=list(obs["task_descriptions"]),
        chains=torch.stack(chains),
        noisy_steps=torch.stack(noisy),
        logprobs=torch.stack(logprobs),
        values=torch.stack(values + [torch.zeros(num_envs)]) if values else None,
        rewards=torch.stack(rewards),
        dones=torch.cat([torch.zeros(1, num_envs, chunk, dtype=torch.bool), torch.stack(dones)]),
        episode_info={k: np.asarray(v) for k, v in info.items()},
        prefix=_stack_prefixes(prefixes) if prefixes else None,
    )
    return trajectory, timer.totals


def _stack_prefixes(prefixes: list[PrefixCache]) -> PrefixCache:
    """T per-step caches (keys / values [N,K,P,D] per layer, pad mask [N,P]) -> one time-major cache on the CPU."""
    kv = [(torch.stack([p.kv[i][0] for p in prefixes]).cpu(), torch.stack([p.kv[i][1] for p in prefixes]).cpu())
          for i in range(len(prefixes[0].kv))]
    return PrefixCache(kv=kv, pad_mask=torch.stack([p.pad_mask for p in prefixes]).cpu())


class Timer:
    """Accumulates wall-clock seconds per name: `with timer("time/env"): ...`."""

    def __init__(self):
        self.totals: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start
