"""The environment contract: one world (`SingleEnv`) and a batch of worlds (`VectorEnv`).

Conventions (LIBERO's, DESIGN.md §6):

    action  float [7]  = (dx, dy, dz, drx, dry, drz, gripper), each in [-1, 1];
                         gripper -1 opens, +1 closes. Values outside [-1, 1] are clipped
                         (the actuator limit), NaN / inf raise.
    state   float32 [8] = eef position (3), eef orientation as axis-angle (3), gripper qpos (2).
    images  uint8 [H, W, 3], square, upright: `main` (fixed third-person camera) and `wrist`.

A vector env steps a whole chunk of C actions per call:

    obs = env.reset(task_ids=None, init_state_ids=None)
    obs, rewards [N,C], terminated [N,C], truncated [N,C], info = env.step(actions [N,C,7])

    obs  = {"main_images": uint8 [N,H,W,3], "wrist_images": uint8 [N,H,W,3],
            "states": float32 [N,8], "task_descriptions": list of N str}
    info = {"success_once": bool [N], "episode_len": int64 [N], "return": float32 [N]}

Rewards are sparse: 1 at the sub-step where the task first succeeds. Once an episode ends inside
a chunk (success -> terminated, step limit -> truncated) the remaining sub-steps do nothing and keep
the flag raised. Without auto-reset an ended env stays ended (all flags raised, reward 0, obs frozen)
until `reset`; with auto-reset it is reset at the chunk boundary: `step` returns the new episode's
first observation while `info` still describes the episode that just ended.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

ACTION_DIM = 7
STATE_DIM = 8


class SingleEnv(ABC):
    """One world. Implemented by the built-in tabletop and by LIBERO; vectorised by `pi0lab.envs.vector`.

    `reset` returns a single observation {"main_image": uint8 [H,W,3], "wrist_image": uint8 [H,W,3],
    "state": float32 [8], "task_description": str}. `step_chunk(actions [C,7])` executes up to C
    sub-steps, renders once at the end, and returns (obs, rewards [C] float32, terminated [C] bool,
    truncated [C] bool, {"success": bool, "episode_len": int}).
    """

    suite: str
    num_tasks: int
    max_episode_steps: int
    image_size: int
    state_dim: int = STATE_DIM  # wider only for the tabletop's privileged-state control

    @abstractmethod
    def task_description(self, task_id: int) -> str: ...

    @abstractmethod
    def num_init_states(self, task_id: int) -> int: ...

    @abstractmethod
    def reset(self, task_id: int, init_state_id: int) -> dict: ...

    @abstractmethod
    def step_chunk(self, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]: ...

    def close(self) -> None:
        """Release simulator resources (nothing to do for a pure-numpy world)."""


def check_actions(actions, num_envs: int) -> np.ndarray:
    """Validate a chunk of actions [N, C, 7] and clip it to the actuator range [-1, 1]."""
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 3 or actions.shape[0] != num_envs or actions.shape[2] != ACTION_DIM or actions.shape[1] < 1:
        raise ValueError(
            f"actions must have shape [num_envs={num_envs}, chunk>=1, {ACTION_DIM}] "
            f"(dx, dy, dz, drx, dry, drz, gripper); got {list(actions.shape)}"
        )
    if not np.isfinite(actions).all():
        raise ValueError("actions contain NaN or inf")
    return np.clip(actions, -1.0, 1.0)


def check_task_ids(task_ids, num_tasks: int, num_envs: int, suite: str) -> np.ndarray:
    """Validate one task id per env: ints in [0, num_tasks)."""
    ids = np.asarray(task_ids)
    if ids.shape != (num_envs,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"task_ids must be {num_envs} ints (one per env); got {task_ids!r}")
    bad = ids[(ids < 0) | (ids >= num_tasks)]
    if bad.size:
        raise ValueError(f"task id(s) {bad.tolist()} out of range: {suite} has tasks 0..{num_tasks - 1}")
    return ids.astype(np.int64)


def check_init_state_ids(init_state_ids, task_ids: np.ndarray, num_init_states, suite: str) -> np.ndarray:
    """Validate one initial-state id per env: ints in [0, num_init_states(task))."""
    ids = np.asarray(init_state_ids)
    if ids.shape != task_ids.shape or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"init_state_ids must be {len(task_ids)} ints (one per env); got {init_state_ids!r}")
    for task, init in zip(task_ids.tolist(), ids.tolist()):
        count = num_init_states(task)
        if not 0 <= init < count:
            raise ValueError(f"init state id {init} out of range: {suite} task {task} has init states 0..{count - 1}")
    return ids.astype(np.int64)


class VectorEnv(ABC):
    """N worlds stepped a chunk at a time. Subclasses supply `_reset_envs` and `_step_envs`.

    This class keeps the bookkeeping every backend shares: id validation, seeded (task, init) draws,
    frozen ended envs, per-episode success / length / return, and auto-reset at chunk boundaries.
    """

    suite: str
    num_tasks: int
    max_episode_steps: int
    image_size: int
    state_dim: int = STATE_DIM  # width of `states`; wider only for the tabletop's privileged-state control

    def __init__(self, num_envs: int, seed: int, auto_reset: bool):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1; got {num_envs}")
        self.num_envs = num_envs
        self.auto_reset = auto_reset
        self.rng = np.random.default_rng(seed)
        self.init_states: tuple[int, int | None] = (0, None)  # [first, stop) drawn from; stop None: all of a task's
        self.task_ids = np.zeros(num_envs, dtype=np.int64)
        self.init_state_ids = np.zeros(num_envs, dtype=np.int64)
        self._obs: dict | None = None
        self._ended = np.zeros(num_envs, dtype=bool)
        self._ended_by_success = np.zeros(num_envs, dtype=bool)
        self._success_once = np.zeros(num_envs, dtype=bool)
        self._episode_len = np.zeros(num_envs, dtype=np.int64)
        self._return = np.zeros(num_envs, dtype=np.float32)

    # ---- what a backend provides --------------------------------------------------------------
    @abstractmethod
    def task_description(self, task_id: int) -> str: ...

    @abstractmethod
    def num_init_states(self, task_id: int) -> int: ...

    @abstractmethod
    def _reset_envs(self, env_ids: np.ndarray, task_ids: np.ndarray, init_state_ids: np.ndarray) -> dict:
        """Reset the listed envs; return their obs batch (keys of the vector obs, n = len(env_ids))."""

    @abstractmethod
    def _step_envs(self, env_ids: np.ndarray, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the listed envs by actions [n,C,7]; return (obs batch, rewards [n,C], terminated [n,C],
        truncated [n,C], success [n])."""

    def close(self) -> None:
        """Release the worlds."""

    # ---- the public contract ------------------------------------------------------------------
    def reset(self, task_ids: Sequence[int] | None = None, init_state_ids: Sequence[int] | None = None) -> dict:
        """Reset every env. Ids given -> used as is (validated); omitted -> drawn from the seeded RNG.

        `init_state_ids` without `task_ids` is ambiguous and raises.
        """
        if task_ids is None and init_state_ids is not None:
            raise ValueError("init_state_ids needs task_ids too (an init state id belongs to a task)")
        if task_ids is None:
            tasks = self.rng.integers(0, self.num_tasks, size=self.num_envs)
        else:
            tasks = check_task_ids(task_ids, self.num_tasks, self.num_envs, self.suite)
        if init_state_ids is None:
            inits = self._draw_init_states(tasks)
        else:
            inits = check_init_state_ids(init_state_ids, tasks, self.num_init_states, self.suite)
        all_envs = np.arange(self.num_envs)
        self._obs = self._reset_envs(all_envs, tasks, inits)
        self._start_episodes(all_envs, tasks, inits)
        return self._copy_obs(self._obs)

    def step(self, actions) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Execute one chunk of actions [N, C, 7] in every env (see the module docstring)."""
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        actions = check_actions(actions, self.num_envs)
        chunk = actions.shape[1]
        rewards = np.zeros((self.num_envs, chunk), dtype=np.float32)
        terminated = np.repeat(self._ended_by_success[:, None], chunk, axis=1)
        truncated = np.repeat((self._ended & ~self._ended_by_success)[:, None], chunk, axis=1)
        live = np.flatnonzero(~self._ended)
        if live.size:
            obs, rew, term, trunc, success = self._step_envs(live, actions[live])
            self._write_obs(live, obs)
            rewards[live], terminated[live], truncated[live] = rew, term, trunc
            self._episode_len[live] += (~np.concatenate([np.zeros((live.size, 1), bool), (term | trunc)[:, :-1]], 1)).sum(1)
            self._return[live] += rew.sum(1)
            self._success_once[live] |= success
            self._ended[live] = term[:, -1] | trunc[:, -1]
            self._ended_by_success[live] = term[:, -1]
        info = {
            "success_once": self._success_once.copy(),
            "episode_len": self._episode_len.copy(),
            "return": self._return.copy(),
        }
        if self.auto_reset and self._ended.any():
            ended = np.flatnonzero(self._ended)
            tasks = self.rng.integers(0, self.num_tasks, size=ended.size)
            inits = self._draw_init_states(tasks)
            self._write_obs(ended, self._reset_envs(ended, tasks, inits))
            self._start_episodes(ended, tasks, inits)
        return self._copy_obs(self._obs), rewards, terminated, truncated, info

    def restrict_init_states(self, first: int, stop: int) -> None:
        """Draw init states from [first, stop) of every task from now on (e.g. train on 0-29, score 30-39)."""
        counts = {t: self.num_init_states(t) for t in range(self.num_tasks)}
        if not 0 <= first < stop or any(stop > n for n in counts.values()):
            raise ValueError(f"init states [{first}, {stop}) must satisfy 0 <= first < stop <= the init states of "
                             f"every task of {self.suite} ({min(counts.values())} at least)")
        self.init_states = (first, stop)

    def _draw_init_states(self, tasks: np.ndarray) -> np.ndarray:
        """One init state per task id, uniform over `init_states` (all of the task's by default)."""
        first, stop = self.init_states
        return np.array([self.rng.integers(first, stop or self.num_init_states(t)) for t in tasks.tolist()],
                        dtype=np.int64)

    # ---- bookkeeping ----------------------------------------------------------------------------
    def _start_episodes(self, env_ids: np.ndarray, tasks: np.ndarray, inits: np.ndarray) -> None:
        self.task_ids[env_ids] = tasks
        self.init_state_ids[env_ids] = inits
        self._ended[env_ids] = False
        self._ended_by_success[env_ids] = False
        self._success_once[env_ids] = False
        self._episode_len[env_ids] = 0
        self._return[env_ids] = 0.0

    def _write_obs(self, env_ids: np.ndarray, obs: dict) -> None:
        for key in ("main_images", "wrist_images", "states"):
            self._obs[key][env_ids] = obs[key]
        for i, text in zip(env_ids.tolist(), obs["task_descriptions"]):
            self._obs["task_descriptions"][i] = text

    @staticmethod
    def _copy_obs(obs: dict) -> dict:
        return {
            "main_images": obs["main_images"].copy(),
            "wrist_images": obs["wrist_images"].copy(),
            "states": obs["states"].copy(),
            "task_descriptions": list(obs["task_descriptions"]),
        }

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stack_single_obs(observations: Sequence[dict]) -> dict:
    """Stack single-env observations (main_image, wrist_image, state, task_description) into a batch."""
    return {
        "main_images": np.stack([o["main_image"] for o in observations]),
        "wrist_images": np.stack([o["wrist_image"] for o in observations]),
        "states": np.stack([o["state"] for o in observations]).astype(np.float32),
        "task_descriptions": [o["task_description"] for o in observations],
    }


def select_envs(obs: dict, env_ids: np.ndarray) -> dict:
    """The observations of the listed envs (rows `env_ids` of each field, in that order)."""
    return {
        "main_images": obs["main_images"][env_ids],
        "wrist_images": obs["wrist_images"][env_ids],
        "states": obs["states"][env_ids],
        "task_descriptions": [obs["task_descriptions"][i] for i in env_ids.tolist()],
    }
