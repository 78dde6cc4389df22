"""The built-in tabletop simulator: numpy only (no GL, no downloads), LIBERO's action / state conventions.

    env = make_env("tabletop_goal", num_envs=8)           # pi0lab.envs.make_env
    obs = env.reset(task_ids=[0] * 8, init_state_ids=range(8))
    actions = env.expert_actions(chunk=5)                  # [8, 5, 7], the privileged scripted expert
    obs, rewards, terminated, truncated, info = env.step(actions)

World and dynamics: `world.py`; cameras: `render.py`; suites, tasks and initial states: `suites.py`;
the expert: `expert.py`.

The privileged-state control (`privileged_state=True`; config keys `env.train.privileged_state` /
`env.eval.privileged_state`): each observation's `states` is the robot's 8 dims followed by the true
(x, y, z, yaw) of every thing of the scene, in the task's layout order, zero-padded to the suite's
fullest scene (`suites.thing_poses`), so every task of a suite has the same width
`suites.privileged_state_dim(suite)`: spatial 24, object 28, goal 32, long 28, pretrain 32. It is a
control, not pi0 (no real robot or LIBERO observation has it): a policy that does well with it and badly
without it is limited by perception, not by the RL. Images are still rendered and fed as usual.
"""

from __future__ import annotations

import functools

import numpy as np

from pi0lab.envs.base import STATE_DIM, SingleEnv, check_actions
from pi0lab.envs.tabletop.expert import expert_chunk
from pi0lab.envs.tabletop.render import render_worlds
from pi0lab.envs.tabletop.suites import (
    MAX_EPISODE_STEPS, NUM_INIT_STATES, POSE_DIMS, check_suite, holds, make_world, privileged_state_dim,
    resolve_goals, thing_poses,
)
from pi0lab.envs.vector import SubprocVectorEnv, SyncVectorEnv


class TabletopEnv(SingleEnv):
    """One tabletop world (a `SingleEnv`): one suite, any task / initial state, square images of any size.

    `privileged_state=True` appends the things' true poses to the state (the control described in the
    module docstring; not pi0): `state_dim` is then `privileged_state_dim(suite)` instead of 8.
    """

    def __init__(self, suite: str, image_size: int = 64, privileged_state: bool = False,
                 max_episode_steps: int | None = None):
        self.tasks = check_suite(suite)
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels; got {image_size}")
        if max_episode_steps is not None and not (isinstance(max_episode_steps, int) and max_episode_steps > 0):
            raise ValueError(f"max_episode_steps must be a positive int or None (the suite's); got {max_episode_steps!r}")
        self.suite = suite
        self.num_tasks = len(self.tasks)
        self.max_episode_steps = MAX_EPISODE_STEPS[suite] if max_episode_steps is None else max_episode_steps
        self.image_size = image_size
        self.privileged_state = bool(privileged_state)
        self.state_dim = privileged_state_dim(suite, STATE_DIM) if self.privileged_state else STATE_DIM
        self.world = None

    def task_description(self, task_id: int) -> str:
        return self.tasks[task_id].instruction

    def num_init_states(self, task_id: int) -> int:
        return NUM_INIT_STATES[self.suite]

    def reset(self, task_id: int, init_state_id: int) -> dict:
        self.start(task_id, init_state_id)
        return self.observe()

    def start(self, task_id: int, init_state_id: int) -> None:
        """`reset` without rendering."""
        self.task_id = task_id
        self.world = make_world(self.suite, task_id, init_state_id)
        self.goals = resolve_goals(self.world, self.tasks[task_id].goals)
        self.elapsed = 0
        self.success = False

    def observe(self) -> dict:
        main, wrist = render_worlds([self.world], self.image_size)
        return {"main_image": main[0], "wrist_image": wrist[0], "state": self.state(),
                "task_description": self.tasks[self.task_id].instruction}

    def state(self) -> np.ndarray:
        """float32 [state_dim]: the robot's 8 dims, then (privileged control only) the things' poses."""
        robot = self.world.state()
        if not self.privileged_state:
            return robot
        return np.concatenate([robot, thing_poses(self.world, (self.state_dim - STATE_DIM) // POSE_DIMS)])

    def step_chunk(self, actions: np.ndarray):
        rewards, terminated, truncated = self.advance(actions)
        return self.observe(), rewards, terminated, truncated, {"success": self.success, "episode_len": self.elapsed}

    def advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`step_chunk` without rendering: the physics of up to C sub-steps -> rewards, terminated, truncated [C]."""
        if self.world is None:
            raise RuntimeError("call reset() before step_chunk()")
        actions = check_actions(np.asarray(actions)[None], 1)[0]
        chunk = len(actions)
        rewards = np.zeros(chunk, np.float32)
        terminated, truncated = np.zeros(chunk, bool), np.zeros(chunk, bool)
        for k in range(chunk):
            if self.success or self.elapsed >= self.max_episode_steps:
                terminated[k], truncated[k] = self.success, not self.success
                continue
            self.world.step(actions[k])
            self.elapsed += 1
            self.success = all(holds(self.world, g) for g in self.goals)
            rewards[k] = float(self.success)
            terminated[k] = self.success
            truncated[k] = not self.success and self.elapsed >= self.max_episode_steps
        return rewards, terminated, truncated

    def expert_actions(self, chunk: int, noise_std: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
        """The scripted expert's next `chunk` actions [chunk, 7]; with `noise_std` > 0, Gaussian noise
        drawn from `rng` is added to dims 0-5 of each action (the next action corrects it)."""
        if self.world is None:
            raise RuntimeError("call reset() before expert_actions()")
        if noise_std < 0 or (noise_std > 0 and rng is None):
            raise ValueError(f"noise_std must be >= 0 and needs an rng when > 0; got noise_std={noise_std}, rng={rng}")
        return expert_chunk(self.world, self.goals, chunk, noise_std, rng)


class TabletopVectorEnv(SyncVectorEnv):
    """N tabletop worlds stepped in this process, rendered in one batched pass, with the scripted expert.
    `privileged_state`: see `TabletopEnv` (a control, not pi0)."""

    def __init__(self, suite: str, num_envs: int, image_size: int = 64, seed: int = 0, auto_reset: bool = False,
                 privileged_state: bool = False, max_episode_steps: int | None = None):
        super().__init__([TabletopEnv(suite, image_size, privileged_state, max_episode_steps) for _ in range(num_envs)],
                         seed=seed, auto_reset=auto_reset)
        self.expert_rng = np.random.default_rng([seed, 1])

    def _observe(self, env_ids: np.ndarray) -> dict:
        envs = [self.envs[i] for i in env_ids.tolist()]
        main, wrist = render_worlds([e.world for e in envs], self.image_size)
        return {"main_images": main, "wrist_images": wrist, "states": np.stack([e.state() for e in envs]),
                "task_descriptions": [e.tasks[e.task_id].instruction for e in envs]}

    def _reset_envs(self, env_ids, task_ids, init_state_ids):
        for i, task, init in zip(env_ids.tolist(), task_ids.tolist(), init_state_ids.tolist()):
            self.envs[i].start(task, init)
        return self._observe(env_ids)

    def _step_envs(self, env_ids, actions):
        results = [self.envs[i].advance(a) for i, a in zip(env_ids.tolist(), actions)]
        rewards, terminated, truncated = (np.stack([r[j] for r in results]) for j in range(3))
        success = np.array([self.envs[i].success for i in env_ids.tolist()])
        return self._observe(env_ids), rewards, terminated, truncated, success

    def expert_actions(self, chunk: int, noise_std: float = 0.0) -> np.ndarray:
        """Expert actions [N, chunk, 7] for every env from its current state (ended envs get zeros)."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1; got {chunk}")
        return np.stack([
            np.zeros((chunk, 7)) if ended else env.expert_actions(chunk, noise_std, self.expert_rng)
            for env, ended in zip(self.envs, self._ended)
        ])


def make_tabletop_env(name: str, num_envs: int, image_size: int = 64, seed: int = 0, auto_reset: bool = False,
                      num_workers: int = 0, worker_timeout_s: float = 60.0, privileged_state: bool = False,
                      max_episode_steps: int | None = None):
    """In-process (`num_workers=0`, with `expert_actions`) or subprocess (`num_workers>=1`) tabletop env;
    `privileged_state=True`: the state-based control (module docstring), states `privileged_state_dim(name)` wide;
    `max_episode_steps`: env steps per episode (None: the suite's limit)."""
    check_suite(name)
    if num_workers == 0:
        return TabletopVectorEnv(name, num_envs, image_size=image_size, seed=seed, auto_reset=auto_reset,
                                 privileged_state=privileged_state, max_episode_steps=max_episode_steps)
    factory = functools.partial(TabletopEnv, name, image_size, privileged_state, max_episode_steps)
    return SubprocVectorEnv([factory] * num_envs, num_workers=num_workers, seed=seed, auto_reset=auto_reset,
                            timeout_s=worker_timeout_s)
