"""Vector envs: the contract on a toy world, and worker faults (crash, hang, kill) in the subprocess env."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from env_contract import check_vector_env_contract
from pi0lab.envs.base import SingleEnv
from pi0lab.envs import make_env
from pi0lab.envs.tabletop import TabletopVectorEnv
from pi0lab.envs.vector import EnvWorkerError, SubprocVectorEnv, SyncVectorEnv


class LineWorld(SingleEnv):
    """A point on a line. dx moves it by 0.1 * action; success when it passes x = 1 + task_id / 10.

    The images encode the position (brightness), so frozen / reset obs are checkable.
    """

    suite = "line"
    num_tasks = 3
    max_episode_steps = 9
    image_size = 8

    def task_description(self, task_id):
        return f"move right past {1 + task_id / 10:.1f}"

    def num_init_states(self, task_id):
        return 4

    def reset(self, task_id, init_state_id):
        self.task, self.x, self.t = task_id, 0.1 * init_state_id, 0
        return self._obs()

    def _obs(self):
        image = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        image[: self.image_size // 2] = int(np.clip(self.x * 100 + 50, 0, 255))
        state = np.array([self.x, 0, 0, 0, 0, 0, 0, 0], np.float32)
        return {"main_image": image, "wrist_image": image[::-1].copy(), "state": state,
                "task_description": self.task_description(self.task)}

    def step_chunk(self, actions):
        chunk = len(actions)
        rewards = np.zeros(chunk, np.float32)
        terminated, truncated = np.zeros(chunk, bool), np.zeros(chunk, bool)
        success = False
        for k, action in enumerate(actions):
            self.x += 0.1 * float(action[0])
            self.t += 1
            success = self.x > 1 + self.task / 10
            if success or self.t >= self.max_episode_steps:
                rewards[k] = float(success)
                terminated[k:], truncated[k:] = success, not success
                break
        return self._obs(), rewards, terminated, truncated, {"success": success, "episode_len": self.t}


def test_sync_vector_env_meets_the_contract():
    env = SyncVectorEnv([LineWorld() for _ in range(3)], seed=3)
    twin = SyncVectorEnv([LineWorld() for _ in range(3)], seed=3)
    check_vector_env_contract(env, twin=twin)


def test_success_inside_a_chunk_terminates_the_rest_of_it():
    env = SyncVectorEnv([LineWorld(), LineWorld()], seed=0)
    env.reset(task_ids=[0, 2], init_state_ids=[3, 0])  # x0 = 0.3 and 0.0
    right = np.zeros((2, 10, 7))
    right[..., 0] = 1.0
    # env 0 passes 1.0 after 8 moves of 0.1 from 0.3 -> sub-step 7; env 1 needs 1.2 -> beyond the 9-step limit
    obs, rewards, terminated, truncated, info = env.step(right)
    np.testing.assert_array_equal(terminated[0], np.arange(10) >= 7)
    assert rewards[0, 7] == 1 and rewards.sum() == 1
    np.testing.assert_array_equal(truncated[1], np.arange(10) >= 8)
    np.testing.assert_array_equal(info["episode_len"], [8, 9])
    np.testing.assert_array_equal(info["success_once"], [True, False])


def test_auto_reset_starts_a_new_episode_at_the_chunk_boundary():
    env = SyncVectorEnv([LineWorld()], seed=0, auto_reset=True)
    env.reset(task_ids=[0], init_state_ids=[3])
    right = np.ones((1, 10, 7))
    obs, rewards, terminated, truncated, info = env.step(right)
    assert terminated[0, -1] and info["success_once"][0] and info["episode_len"][0] == 8
    # the returned obs is the new episode's first frame: x = 0.1 * init id
    assert obs["states"][0, 0] == pytest.approx(0.1 * env.init_state_ids[0])
    _, _, terminated, _, info = env.step(np.zeros((1, 2, 7)))
    assert not terminated.any() and info["episode_len"][0] == 2 and not info["success_once"][0]


# ---- the subprocess vector env -------------------------------------------------------------------


class FaultyLine(LineWorld):
    """LineWorld whose task 1 hangs and task 2 crashes the process inside step_chunk."""

    def step_chunk(self, actions):
        if self.task == 1:
            time.sleep(3600)
        if self.task == 2:
            os._exit(3)
        return super().step_chunk(actions)


class BrokenLine(LineWorld):
    def __init__(self):
        raise ValueError("simulator assets missing")


class SlowLine(LineWorld):
    def step_chunk(self, actions):
        time.sleep(2.0)  # long enough to be killed in the middle of it, even on a loaded machine
        return super().step_chunk(actions)


def test_subprocess_env_meets_the_contract_and_matches_in_process_tabletop():
    with make_env("tabletop_goal", 3, image_size=32, seed=1, num_workers=2) as env:
        assert isinstance(env, SubprocVectorEnv)
        check_vector_env_contract(env, twin=TabletopVectorEnv("tabletop_goal", 3, image_size=32, seed=1))
        local = TabletopVectorEnv("tabletop_goal", 3, image_size=32, seed=1)
        tasks, inits = [0, 5, 9], [3, 4, 49]
        a, b = env.reset(tasks, inits), local.reset(tasks, inits)
        actions = local.expert_actions(8)
        out_a, out_b = env.step(actions), local.step(actions)
    for key in ("main_images", "wrist_images", "states"):
        np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_array_equal(out_a[0][key], out_b[0][key])
    for x, y in zip(out_a[1:4], out_b[1:4]):
        np.testing.assert_array_equal(x, y)


def test_a_crashed_worker_is_named_restarted_and_reaped():
    with SubprocVectorEnv([FaultyLine] * 4, num_workers=2, timeout_s=20) as env:
        procs = _crash_restart_and_step(env)
    assert all(p is None for p in env._procs)
    assert all(not p.is_alive() and p.exitcode is not None for p in procs)


def _crash_restart_and_step(env):
    procs = list(env._procs)
    env.reset(task_ids=[0, 0, 2, 0], init_state_ids=[0, 0, 0, 0])
    with pytest.raises(EnvWorkerError, match=r"env worker 1 .*env 2: task 2 .*died during step \(exit code 3\)") as err:
        env.step(np.zeros((4, 2, 7)))
    assert err.value.worker == 1
    with pytest.raises(EnvWorkerError, match="restart_worker"):
        env.step(np.zeros((4, 2, 7)))
    env.restart_worker(1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((4, 2, 7)))
    env.reset(task_ids=[0, 0, 0, 0], init_state_ids=[1, 1, 1, 1])
    assert env.step(np.ones((4, 2, 7)))[4]["episode_len"].tolist() == [2, 2, 2, 2]
    return procs + list(env._procs)


def test_a_hung_worker_times_out_with_its_task_named():
    with SubprocVectorEnv([FaultyLine] * 2, num_workers=2, timeout_s=60) as env:  # generous while starting
        procs = list(env._procs)
        env.reset(task_ids=[1, 0], init_state_ids=[0, 0])
        env.timeout_s = 1.5
        with pytest.raises(EnvWorkerError, match=r"env worker 0 .*env 0: task 1 'move right past 1.1'.*within 1.5 s \(hung\)"):
            env.step(np.zeros((2, 1, 7)))
        env.timeout_s = 60
        env.restart_worker(0)
        env.reset(task_ids=[0, 0], init_state_ids=[0, 0])
        env.step(np.zeros((2, 1, 7)))
        procs += list(env._procs)
    assert all(not p.is_alive() for p in procs)


def test_a_worker_killed_mid_step_raises_and_close_reaps_everything():
    with SubprocVectorEnv([SlowLine] * 2, num_workers=2, timeout_s=20) as env:
        procs = list(env._procs)
        env.reset(task_ids=[0, 0], init_state_ids=[0, 0])
        killer = threading.Timer(0.2, os.kill, args=(procs[1].pid, signal.SIGKILL))
        killer.start()
        with pytest.raises(EnvWorkerError, match=r"env worker 1 .*died during step \(exit code -9\)"):
            env.step(np.zeros((2, 1, 7)))
        killer.join()
        env.restart_worker(1)
        env.reset(task_ids=[0, 0], init_state_ids=[0, 0])
        env.step(np.zeros((2, 1, 7)))
        procs += list(env._procs)
    assert all(not p.is_alive() and p.exitcode is not None for p in procs)
    assert not env._shm  # shared memory unlinked


def test_a_worker_that_cannot_build_its_env_reports_why():
    with pytest.raises(EnvWorkerError, match=r"env worker 0 \(envs 0-1, starting up\) raised during start:(?s:.*)simulator assets missing"):
        SubprocVectorEnv([BrokenLine] * 2, num_workers=1, timeout_s=20)


def test_a_worker_killed_between_calls_is_reported_on_the_next_call():
    with SubprocVectorEnv([LineWorld] * 2, num_workers=2, timeout_s=20) as env:
        env.reset(task_ids=[0, 2], init_state_ids=[0, 0])
        os.kill(env._procs[0].pid, signal.SIGKILL)
        env._procs[0].join(5)
        with pytest.raises(EnvWorkerError, match=r"env worker 0 .*env 0: task 0 .*died during step"):
            env.step(np.zeros((2, 1, 7)))


def test_restricted_init_states_are_the_only_ones_drawn_and_scored():
    from pi0lab.envs import make_env
    from pi0lab.train.evaluate import evaluation_pairs

    envs = make_env("tabletop_spatial", 16, seed=3, auto_reset=True)
    envs.restrict_init_states(30, 40)
    envs.reset()
    drawn = set(envs.init_state_ids.tolist())
    for _ in range(3):  # auto-resets draw from the same range
        envs.step(np.zeros((16, 5, 7), dtype=np.float32))
        drawn |= set(envs.init_state_ids.tolist())
    assert drawn <= set(range(30, 40)) and len(drawn) > 3
    pairs = evaluation_pairs(25, envs.num_tasks, envs.num_init_states, envs.init_states)
    assert pairs[:11] == [(t, 30) for t in range(10)] + [(0, 31)]
    with pytest.raises(ValueError, match=r"has only 10 to score \(init states 30..39\)"):
        evaluation_pairs(101, envs.num_tasks, envs.num_init_states, envs.init_states)
    with pytest.raises(ValueError, match="0 <= first < stop"):
        envs.restrict_init_states(10, 60)
    envs.close()


def test_the_trainers_env_role_draws_only_the_configured_init_states():
    """`env.train.init_states` reaches the resets RL trains on (held-out runs practise only [first, stop))."""
    from pi0lab.train.config import load_config
    from pi0lab.train.roles import EnvRole

    cfg = load_config("tabletop_ppo_nano", ["env.train.total_num_envs=8", "env.train.init_states=[0,30]"])
    role = EnvRole(cfg.env.train, seed=0)
    drawn = set()
    for _ in range(30):
        role.reset()
        drawn |= set(role.envs.init_state_ids.tolist())
    role.envs.close()
    assert drawn <= set(range(30)) and max(drawn) > 20
