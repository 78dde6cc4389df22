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
from pi0lab.runtime.spans import span
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
    trajectories, times = collect_rollouts([env], rollout, max_chunk_steps, on_step)
    return trajectories[0], times


def collect_rollouts(
    slices: list,
    rollout: RolloutRole,
    max_chunk_steps: int,
    on_step: Callable[[dict, np.ndarray, dict], None] | None = None,
) -> tuple[list[Trajectory], dict[str, float]]:
    """One window per env slice, the slices interleaved: while slice i's envs step, the rollout acts for slice i+1.

    A slice is anything with `send_reset()`, `send_step(actions)`, `receive()` and `end()`: a local `EnvRole`
    answers at once; a remote one (`pi0lab.train.placed.RemoteEnvSlice`) is an env process stepping its envs
    meanwhile, which is what pipelining (`rollout.pipeline_stage_num`) overlaps. on_step sees slice 0.
    """
    timer = Timer()
    windows = [_Window() for _ in slices]
    for env in slices:
        env.send_reset()
    pending = []
    for i, env in enumerate(slices):
        with timer("time/env", _env_phase(env)):
            obs = env.receive()
        windows[i].task_descriptions = list(obs["task_descriptions"])
        _act(env, rollout, obs, windows[i], timer)
        pending.append(i)
    while pending:
        for i in list(pending):
            env, window = slices[i], windows[i]
            with timer("time/env", _env_phase(env)):
                obs, reward, terminated, truncated, info = env.receive()
            done = terminated | truncated
            window.rewards.append(torch.as_tensor(reward))
            window.dones.append(torch.as_tensor(done))
            window.info = info
            if on_step is not None and i == 0:
                on_step(obs, reward, info)
            if done[:, -1].all() or len(window.rewards) == max_chunk_steps:
                env.end()
                pending.remove(i)
                continue
            _act(env, rollout, obs, window, timer)
    return [window.trajectory() for window in windows], timer.totals


def _env_phase(env) -> str:
    """A local env steps in this process; waiting for a remote one is idle time (its span ends in "wait")."""
    return "env wait" if getattr(env, "remote", False) else "env"


def _act(env, rollout: RolloutRole, obs: dict, window: "_Window", timer: "Timer") -> None:
    with timer("time/rollout"):
        out = rollout.act(obs)
    window.add(obs, out)
    env.send_step(out["actions"].cpu().numpy())


class _Window:
    """What one slice's window has seen so far (time-major lists)."""

    def __init__(self):
        self.frames = {k: [] for k in ("main_images", "wrist_images", "states")}
        self.chains, self.noisy, self.logprobs, self.values, self.prefixes = [], [], [], [], []
        self.rewards, self.dones = [], []
        self.info: dict = {}
        self.task_descriptions: list[str] = []

    def add(self, obs: dict, out: dict) -> None:
        for key in self.frames:
            self.frames[key].append(obs[key])
        self.chains.append(out["chain"].cpu())
        self.noisy.append(out["noisy_steps"].cpu())
        self.logprobs.append(out["logprobs"].cpu())
        if out["values"] is not None:
            self.values.append(out["values"].cpu())
        if out.get("prefix") is not None:
            self.prefixes.append(out["prefix"])

    def trajectory(self) -> Trajectory:
        num_envs, chunk = self.rewards[0].shape
        return Trajectory(
            obs={k: np.stack(v) for k, v in self.frames.items()},
            task_descriptions=self.task_descriptions,
            chains=torch.stack(self.chains),
            noisy_steps=torch.stack(self.noisy),
            logprobs=torch.stack(self.logprobs),
            values=torch.stack(self.values + [torch.zeros(num_envs)]) if self.values else None,
            rewards=torch.stack(self.rewards),
            dones=torch.cat([torch.zeros(1, num_envs, chunk, dtype=torch.bool), torch.stack(self.dones)]),
            episode_info={k: np.asarray(v) for k, v in self.info.items()},
            prefix=_stack_prefixes(self.prefixes) if self.prefixes else None,
        )


def concat_trajectories(parts: list[Trajectory]) -> Trajectory:
    """Slices' windows side by side along the env axis, in the given order; shorter windows are padded at the
    end with steps that every episode has already ended before (done, reward 0, invalid under `episode_mask`)."""
    if len(parts) == 1:
        return parts[0]
    steps = max(p.num_steps for p in parts)

    def pad(x, rows: int, value=0):
        """x [T,N,...] (tensor or array) -> [rows,N,...], padded with `value`."""
        missing = rows - x.shape[0]
        if missing == 0:
            return x
        if isinstance(x, np.ndarray):
            return np.concatenate([x, np.full((missing, *x.shape[1:]), value, dtype=x.dtype)])
        return torch.cat([x, torch.full((missing, *x.shape[1:]), value, dtype=x.dtype)])

    def cat(xs, dim=1):
        return np.concatenate(xs, axis=dim) if isinstance(xs[0], np.ndarray) else torch.cat(xs, dim=dim)

    prefix = None
    if all(p.prefix is not None for p in parts):
        layers = len(parts[0].prefix.kv)
        kv = [(cat([pad(p.prefix.kv[i][0], steps) for p in parts]), cat([pad(p.prefix.kv[i][1], steps) for p in parts]))
              for i in range(layers)]
        prefix = PrefixCache(kv=kv, pad_mask=cat([pad(p.prefix.pad_mask, steps, False) for p in parts]))
    return Trajectory(
        obs={k: cat([pad(p.obs[k], steps) for p in parts]) for k in parts[0].obs},
        task_descriptions=[d for p in parts for d in p.task_descriptions],
        chains=cat([pad(p.chains, steps) for p in parts]),
        noisy_steps=cat([pad(p.noisy_steps, steps) for p in parts]),
        logprobs=cat([pad(p.logprobs, steps) for p in parts]),
        values=cat([pad(p.values, steps + 1) for p in parts]) if parts[0].values is not None else None,
        rewards=cat([pad(p.rewards, steps) for p in parts]),
        dones=cat([pad(p.dones, steps + 1, True) for p in parts]),
        episode_info={k: np.concatenate([p.episode_info[k] for p in parts]) for k in parts[0].episode_info},
        prefix=prefix,
    )


def _stack_prefixes(prefixes: list[PrefixCache]) -> PrefixCache:
    """T per-step caches (keys / values [N,K,P,D] per layer, pad mask [N,P]) -> one time-major cache on the CPU."""
    kv = [(torch.stack([p.kv[i][0] for p in prefixes]).cpu(), torch.stack([p.kv[i][1] for p in prefixes]).cpu())
          for i in range(len(prefixes[0].kv))]
    return PrefixCache(kv=kv, pad_mask=torch.stack([p.pad_mask for p in prefixes]).cpu())


class Timer:
    """Accumulates wall-clock seconds per name: `with timer("time/env"): ...`; each block is also a time span
    (`pi0lab.runtime.spans`) named `phase`, by default the name without `time/`."""

    def __init__(self):
        self.totals: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, phase: str | None = None):
        start = time.perf_counter()
        try:
            with span(phase or name.removeprefix("time/").replace("_", " ")):
                yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start
