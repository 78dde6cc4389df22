"""Built-in tabletop speed and expert quality.

    .venv/bin/python benchmarks/env_speed.py [--quick]

Prints
  1. steps/s of the in-process env with both 64-px cameras (rendered once per chunk), per core:
     env sub-steps per second of this process's CPU time, and per wall-clock second;
  2. steps/s through the subprocess vector env with 1 and 2 worker processes (wall clock);
  3. reset time (new scene + both cameras) per env;
  4. the noise-free expert's success rate and episode length on every (task, init) pair of every
     suite (500 per suite), through the env;
  5. the success of a blind replay (the expert's actions from another initial state of the same task).
LIBERO numbers (with and without cameras) come from benchmarks/libero_speed.py.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np

from pi0lab.envs import TABLETOP_SUITES, make_env
from pi0lab.envs.tabletop import TabletopEnv
from pi0lab.envs.vector import SubprocVectorEnv


def steps_per_second(env, chunk: int, calls: int) -> tuple[float, float]:
    """(sub-steps per CPU second of this process, per wall second) under random actions."""
    rng = np.random.default_rng(0)
    env.reset()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, size=(env.num_envs, chunk, 7)))
        if (terminated | truncated).any():  # keep every env live so every sub-step is simulated
            env.reset()
    steps = calls * chunk * env.num_envs
    return steps / (time.process_time() - cpu), steps / (time.perf_counter() - wall)


def expert_success(suite: str, inits: int, image_size: int = 64, chunk: int = 10) -> tuple[float, float]:
    env = make_env(suite, num_envs=inits, image_size=image_size)
    success, lengths = [], []
    for task in range(env.num_tasks):
        env.reset(task_ids=[task] * inits, init_state_ids=list(range(inits)))
        while True:
            _, _, terminated, truncated, info = env.step(env.expert_actions(chunk))
            if (terminated[:, -1] | truncated[:, -1]).all():
                break
        success += info["success_once"].tolist()
        lengths += info["episode_len"][info["success_once"]].tolist()
    return float(np.mean(success)), float(np.mean(lengths))


def blind_replay(suite: str, task_ids, init_state_ids, expert_init_state_ids, chunk: int = 10) -> np.ndarray:
    """Success flags [n] of replaying, in each (task, init state) pair, the expert's actions from another
    initial state of the same task (`expert_init_state_ids`): a policy that knows the instruction and
    the layout but does not look."""
    n = len(task_ids)
    expert, blind = make_env(suite, num_envs=n, image_size=8), make_env(suite, num_envs=n, image_size=8)
    expert.reset(task_ids=task_ids, init_state_ids=expert_init_state_ids)
    blind.reset(task_ids=task_ids, init_state_ids=init_state_ids)
    while True:
        actions = expert.expert_actions(chunk)
        _, _, terminated, truncated, _ = expert.step(actions)
        _, _, _, _, info = blind.step(actions)
        if (terminated[:, -1] | truncated[:, -1]).all():
            return info["success_once"]


def blind_replay_success(suite: str, inits: int, chunk: int = 10) -> float:
    """Blind replay on init states 1..inits of every task, of the expert's actions from init state k - 1."""
    env = make_env(suite, num_envs=1, image_size=8)
    tasks = [task for task in range(env.num_tasks) for _ in range(inits)]
    expert_inits = [k for _ in range(env.num_tasks) for k in range(inits)]
    blind_inits = [(k + 1) % env.num_init_states(task) for task, k in zip(tasks, expert_inits)]
    return float(np.mean(blind_replay(suite, tasks, blind_inits, expert_inits, chunk)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls and 10 init states per task")
    args = parser.parse_args()
    calls = 10 if args.quick else 40
    num_envs = 16

    print(f"1. in-process tabletop_goal, {num_envs} envs, both cameras at 64 px, random actions")
    for chunk in (5, 10):
        cpu, wall = steps_per_second(make_env("tabletop_goal", num_envs, image_size=64), chunk, calls)
        print(f"   chunk {chunk:2d}: {cpu:7.0f} steps/s per core (CPU time)   {wall:7.0f} steps/s wall")
    cpu, wall = steps_per_second(make_env("tabletop_goal", 4, image_size=224), 5, max(calls // 4, 3))
    print(f"   224 px, 4 envs, chunk 5: {cpu:7.0f} steps/s per core   {wall:7.0f} wall")

    print(f"2. subprocess vector env, {num_envs} envs, chunk 5, 64 px (wall clock)")
    factory = functools.partial(TabletopEnv, "tabletop_goal", 64)
    for workers in (1, 2):
        with SubprocVectorEnv([factory] * num_envs, num_workers=workers) as env:
            _, wall = steps_per_second(env, 5, calls)
        print(f"   {workers} worker(s): {wall:7.0f} steps/s")

    env = make_env("tabletop_long", num_envs, image_size=64)
    env.reset()
    start = time.perf_counter()
    for _ in range(calls // 4 + 1):
        env.reset()
    per_env_ms = (time.perf_counter() - start) / (calls // 4 + 1) / num_envs * 1e3
    print(f"3. reset (new scene + both 64-px cameras): {per_env_ms:.2f} ms per env")

    inits = 10 if args.quick else 50
    print(f"4. noise-free expert on {10 * inits} (task, init) pairs per suite")
    for suite in TABLETOP_SUITES:
        rate, length = expert_success(suite, inits)
        print(f"   {suite:17s} success {rate:6.1%}   mean episode length {length:5.1f} steps")

    print(f"5. blind replay: the expert's actions from init k executed in init k + 1, {10 * inits} pairs per suite")
    for suite in TABLETOP_SUITES:
        print(f"   {suite:17s} success {blind_replay_success(suite, inits):6.1%}")


if __name__ == "__main__":
    main()
