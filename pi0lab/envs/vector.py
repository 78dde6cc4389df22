"""Vector envs over `SingleEnv`s: in this process (`SyncVectorEnv`) or in worker processes (`SubprocVectorEnv`).

`SubprocVectorEnv` starts workers with the `spawn` method (never fork a process that holds a GL
context), gives each a contiguous block of envs, and passes whole chunks per call. Images come back
through shared memory (`main`, `wrist` uint8 [N,H,W,3], `states` float32 [N,8]); the small arrays
(rewards, flags) come back through the pipe. Every wait on a worker has a deadline: a worker that
dies or does not answer within `timeout_s` raises `EnvWorkerError` naming the worker, its envs and
their tasks. `restart_worker(w)` replaces it (its envs then need a `reset`); `close()` reaps every
process and frees the shared memory.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable, Sequence
from multiprocessing import shared_memory

import numpy as np

from pi0lab.envs.base import STATE_DIM, SingleEnv, VectorEnv, stack_single_obs


def _describe(env: SingleEnv) -> dict:
    """The suite facts a vector env needs from its single envs."""
    return {
        "suite": env.suite,
        "num_tasks": env.num_tasks,
        "max_episode_steps": env.max_episode_steps,
        "image_size": env.image_size,
        "descriptions": [env.task_description(t) for t in range(env.num_tasks)],
        "num_init_states": [env.num_init_states(t) for t in range(env.num_tasks)],
    }


class _SuiteFacts:
    """Task descriptions and init-state counts shared by the vector envs in this module."""

    def _set_facts(self, facts: dict) -> None:
        self.suite = facts["suite"]
        self.num_tasks = facts["num_tasks"]
        self.max_episode_steps = facts["max_episode_steps"]
        self.image_size = facts["image_size"]
        self._descriptions = facts["descriptions"]
        self._num_init_states = facts["num_init_states"]

    def task_description(self, task_id: int) -> str:
        return self._descriptions[task_id]

    def num_init_states(self, task_id: int) -> int:
        return self._num_init_states[task_id]


class SyncVectorEnv(_SuiteFacts, VectorEnv):
    """N single envs stepped one after another in this process."""

    def __init__(self, envs: Sequence[SingleEnv], seed: int = 0, auto_reset: bool = False):
        super().__init__(len(envs), seed, auto_reset)
        self.envs = list(envs)
        facts = [_describe(e) for e in self.envs]
        if any(f != facts[0] for f in facts[1:]):
            raise ValueError("all single envs of a vector env must be the same suite at the same image size")
        self._set_facts(facts[0])

    def _reset_envs(self, env_ids, task_ids, init_state_ids):
        return stack_single_obs(
            [self.envs[i].reset(int(t), int(k)) for i, t, k in zip(env_ids.tolist(), task_ids, init_state_ids)]
        )

    def _step_envs(self, env_ids, actions):
        results = [self.envs[i].step_chunk(a) for i, a in zip(env_ids.tolist(), actions)]
        obs = stack_single_obs([r[0] for r in results])
        rewards, terminated, truncated = (np.stack([r[j] for r in results]) for j in (1, 2, 3))
        success = np.array([r[4]["success"] for r in results], dtype=bool)
        return obs, rewards.astype(np.float32), terminated.astype(bool), truncated.astype(bool), success

    def close(self):
        for env in self.envs:
            env.close()
