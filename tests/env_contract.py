"""The vectorised env contract (DESIGN.md §6) as one reusable check, run against every env.

    from env_contract import check_vector_env_contract
    check_vector_env_contract(env)                     # env freshly built, auto_reset off
    check_vector_env_contract(env, twin=env_same_seed) # also: reset() draws depend only on the seed

It runs one episode per env to the step limit, so build slow envs (LIBERO on CPU) with a small
`max_episode_steps`. Success handling needs an env-specific way to reach the goal and is tested
next to each env.
"""

from __future__ import annotations

import numpy as np
import pytest

from pi0lab.envs.base import ACTION_DIM, STATE_DIM


def check_obs(env, obs) -> None:
    """Shapes, dtypes, value ranges and descriptions of one vector observation."""
    n, s = env.num_envs, env.image_size
    assert set(obs) == {"main_images", "wrist_images", "states", "task_descriptions"}
    for key in ("main_images", "wrist_images"):
        assert obs[key].dtype == np.uint8 and obs[key].shape == (n, s, s, 3), (key, obs[key].shape)
        assert (obs[key].std(axis=(1, 2, 3)) > 1.0).all(), f"{key}: an image is blank"
    assert obs["states"].dtype == np.float32 and obs["states"].shape == (n, STATE_DIM)
    assert np.isfinite(obs["states"]).all()
    assert obs["task_descriptions"] == [env.task_description(int(t)) for t in env.task_ids]
    assert all(isinstance(t, str) and t for t in obs["task_descriptions"])


def check_step_outputs(env, out, chunk: int) -> None:
    """Shapes and dtypes of one `step` result."""
    obs, rewards, terminated, truncated, info = out
    n = env.num_envs
    check_obs(env, obs)
    assert rewards.dtype == np.float32 and rewards.shape == (n, chunk)
    assert terminated.dtype == bool and terminated.shape == (n, chunk)
    assert truncated.dtype == bool and truncated.shape == (n, chunk)
    assert info["success_once"].dtype == bool and info["success_once"].shape == (n,)
    assert np.issubdtype(info["episode_len"].dtype, np.integer) and info["episode_len"].shape == (n,)
    assert info["return"].shape == (n,)
    # a flag, once raised inside a chunk, stays raised for the rest of the chunk
    done = terminated | truncated
    assert (np.diff(done.astype(int), axis=1) >= 0).all()


def check_vector_env_contract(env, twin=None, chunk: int = 3) -> None:
    """Run the shared contract checks on a freshly built vector env (auto_reset off)."""
    n = env.num_envs
    assert not env.auto_reset, "run the contract on an env built with auto_reset=False"

    # reset without ids: valid ids drawn; with a twin built from the same seed, the same draws and obs
    obs = env.reset()
    check_obs(env, obs)
    assert ((0 <= env.task_ids) & (env.task_ids < env.num_tasks)).all()
    if twin is not None:
        twin_obs = twin.reset()
        np.testing.assert_array_equal(twin.task_ids, env.task_ids)
        np.testing.assert_array_equal(twin.init_state_ids, env.init_state_ids)
        np.testing.assert_array_equal(twin_obs["main_images"], obs["main_images"])

    # reset by explicit ids, and determinism: the same ids and actions give the same results
    tasks = [t % env.num_tasks for t in range(n)]
    inits = [t % env.num_init_states(tasks[t]) for t in range(n)]
    first = env.reset(task_ids=tasks, init_state_ids=inits)
    np.testing.assert_array_equal(env.task_ids, tasks)
    np.testing.assert_array_equal(env.init_state_ids, inits)
    check_obs(env, first)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(n, chunk, ACTION_DIM))
    step_a = env.step(actions)
    again = env.reset(task_ids=tasks, init_state_ids=inits)
    step_b = env.step(actions)
    for key in ("main_images", "wrist_images", "states"):
        np.testing.assert_array_equal(first[key], again[key])
        np.testing.assert_array_equal(step_a[0][key], step_b[0][key])
    for a, b in zip(step_a[1:4], step_b[1:4]):
        np.testing.assert_array_equal(a, b)

    # bad ids and bad actions raise errors that say what is valid
    with pytest.raises(ValueError, match="out of range"):
        env.reset(task_ids=[env.num_tasks] * n, init_state_ids=[0] * n)
    with pytest.raises(ValueError, match="out of range"):
        env.reset(task_ids=[0] * n, init_state_ids=[env.num_init_states(0)] * n)
    with pytest.raises(ValueError, match="one per env"):
        env.reset(task_ids=[0] * (n + 1), init_state_ids=[0] * (n + 1))
    env.reset(task_ids=tasks, init_state_ids=inits)
    for bad_shape in [(n, chunk, ACTION_DIM - 1), (n + 1, chunk, ACTION_DIM), (n, ACTION_DIM), (n, 0, ACTION_DIM)]:
        with pytest.raises(ValueError, match="actions must have shape"):
            env.step(np.zeros(bad_shape))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full((n, chunk, ACTION_DIM), np.nan))

    # chunk semantics: each live sub-step counts once; the step limit truncates at exactly
    # max_episode_steps sub-steps and the ended env stays ended (frozen obs, zero reward).
    # The "hold still" action (zero deltas, gripper open) must not solve any task.
    hold = np.zeros((n, chunk, ACTION_DIM))
    hold[..., 6] = -1.0
    out = env.step(hold)
    check_step_outputs(env, out, chunk)
    np.testing.assert_array_equal(out[4]["episode_len"], min(chunk, env.max_episode_steps))
    steps_done = chunk
    while steps_done < env.max_episode_steps:
        out = env.step(hold)
        steps_done += chunk
        check_step_outputs(env, out, chunk)
    obs_end, rewards, terminated, truncated, info = out
    assert not terminated.any() and (rewards == 0).all() and not info["success_once"].any()
    last = (env.max_episode_steps - 1) % chunk  # sub-step index of the final allowed step
    assert truncated[:, last:].all() and not truncated[:, :last].any()
    np.testing.assert_array_equal(info["episode_len"], env.max_episode_steps)
    frozen = env.step(np.random.default_rng(1).uniform(-1, 1, size=(n, chunk, ACTION_DIM)))
    assert frozen[3].all() and not frozen[2].any() and (frozen[1] == 0).all()
    np.testing.assert_array_equal(frozen[4]["episode_len"], env.max_episode_steps)
    for key in ("main_images", "wrist_images", "states"):
        np.testing.assert_array_equal(frozen[0][key], obs_end[key])

    # a reset brings an ended env back
    env.reset(task_ids=tasks, init_state_ids=inits)
    out = env.step(hold)
    assert not (out[2] | out[3]).any() or env.max_episode_steps <= chunk
