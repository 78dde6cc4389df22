"""The tabletop's privileged-state control: the things' true poses appended to the robot state.

A control, not pi0: it separates "the RL works" from "perception is the limit".
"""

import numpy as np
import pytest

from pi0lab.cli import main as cli_main
from pi0lab.envs import STATE_DIM, TABLETOP_SUITES, make_env
from pi0lab.envs.demos import demo_state_layout, read_demo_index, read_demos, write_demos
from pi0lab.envs.tabletop import TabletopVectorEnv
from pi0lab.envs.tabletop.suites import POSE_DIMS, max_things, privileged_state_dim, task_layout
from pi0lab.models.checkpoint import load_pi0
from pi0lab.models.policy import Pi0Policy
from pi0lab.train.config import ConfigError, load_config
from pi0lab.train.roles import build_envs
from pi0lab.train.sft import run_sft

WIDTHS = {"tabletop_spatial": 24, "tabletop_object": 28, "tabletop_goal": 32, "tabletop_long": 28,
          "tabletop_pretrain": 32}


def expected_poses(world, width):
    poses = np.zeros((width - STATE_DIM) // POSE_DIMS * POSE_DIMS, np.float32)
    for i, thing in enumerate(world.things):
        poses[POSE_DIMS * i: POSE_DIMS * (i + 1)] = [thing.pos[0], thing.pos[1], thing.pos[2], thing.yaw]
    return poses


def test_the_widths_per_suite_fit_the_model_state_width():
    assert {suite: privileged_state_dim(suite) for suite in TABLETOP_SUITES} == WIDTHS
    assert all(width <= 32 for width in WIDTHS.values())  # the nano's and pi0's action_dim: no change needed


@pytest.mark.parametrize("suite", TABLETOP_SUITES)
def test_every_task_of_a_suite_has_the_same_width_and_the_world_poses(suite):
    num_tasks = 10
    env = TabletopVectorEnv(suite, num_tasks, image_size=8, privileged_state=True)
    plain = TabletopVectorEnv(suite, num_tasks, image_size=8)
    tasks, inits = list(range(num_tasks)), [(3 * t) % 50 for t in range(num_tasks)]
    obs, narrow = env.reset(tasks, inits), plain.reset(tasks, inits)
    assert env.state_dim == obs["states"].shape[1] == WIDTHS[suite] and obs["states"].dtype == np.float32
    np.testing.assert_array_equal(obs["states"][:, :STATE_DIM], narrow["states"])
    for i, single in enumerate(env.envs):
        np.testing.assert_array_equal(obs["states"][i, STATE_DIM:], expected_poses(single.world, WIDTHS[suite]))
        assert len(single.world.things) <= max_things(suite)


def test_poses_follow_the_world_while_the_expert_carries_things_and_keep_the_layout_order():
    env = TabletopVectorEnv("tabletop_long", 2, image_size=8, privileged_state=True)
    obs = env.reset([0, 3], [5, 17])
    for single in env.envs:  # the task's layout order, the same for every initial state
        assert [t.name for t in single.world.things] == [t.name for t in task_layout("tabletop_long", single.task_id)]
    moved = False
    for _ in range(8):
        before = obs["states"][:, STATE_DIM:].copy()
        obs, *_ = env.step(env.expert_actions(4))
        moved |= not np.array_equal(before, obs["states"][:, STATE_DIM:])
        for i, single in enumerate(env.envs):
            np.testing.assert_array_equal(obs["states"][i, STATE_DIM:], expected_poses(single.world, 28))
    assert moved  # some thing was picked up and carried within 32 steps


@pytest.mark.parametrize("suite", ["tabletop_goal", "tabletop_long"])
def test_the_expert_still_clears_episodes_with_it_on(suite):
    env = make_env(suite, 2, image_size=8, privileged_state=True)
    env.reset([2, 5], [0, 1])
    ended = np.zeros(2, bool)
    while not ended.all():
        _, _, terminated, truncated, info = env.step(env.expert_actions(5))
        ended |= terminated[:, -1] | truncated[:, -1]
    assert info["success_once"].all()


def test_the_subprocess_env_gives_the_same_wide_states():
    with make_env("tabletop_goal", 2, image_size=8, seed=1, num_workers=1, privileged_state=True) as env:
        local = TabletopVectorEnv("tabletop_goal", 2, image_size=8, seed=1, privileged_state=True)
        a, b = env.reset([0, 7], [4, 9]), local.reset([0, 7], [4, 9])
        assert env.state_dim == 32 and a["states"].shape == (2, 32)
        np.testing.assert_array_equal(a["states"], b["states"])
        actions = local.expert_actions(6)
        np.testing.assert_array_equal(env.step(actions)[0]["states"], local.step(actions)[0]["states"])


def test_libero_refuses_it_and_accepts_it_off():
    with pytest.raises(ValueError, match="privileged_state is a tabletop control; LIBERO"):
        make_env("libero_spatial", 1, privileged_state=True)
    with pytest.raises(ConfigError, match="env.train.privileged_state=true is a tabletop control"):
        load_config("libero_10_ppo_openpi", ["env.train.privileged_state=true", "env.eval.privileged_state=true"])


def test_the_config_check_names_both_keys_and_build_envs_passes_it():
    with pytest.raises(ConfigError, match=r"env.train.privileged_state=True != env.eval.privileged_state=False"):
        load_config("tabletop_ppo_nano", ["env.train.privileged_state=true"])
    cfg = load_config("tabletop_ppo_nano", ["env.train.privileged_state=true", "env.eval.privileged_state=true",
                                            "env.train.total_num_envs=1", "env.train.image_size=8"])
    assert load_config("tabletop_ppo_nano").env.eval.privileged_state is False  # the schema default
    envs = build_envs(cfg.env.train, seed=0)
    assert envs.state_dim == WIDTHS["tabletop_spatial"] and envs.reset()["states"].shape == (1, 24)


@pytest.fixture(scope="module")
def wide_demos(tmp_path_factory):
    out = tmp_path_factory.mktemp("wide_demos")
    write_demos("tabletop_spatial", out, episodes_per_task=2, task_ids=[0], num_envs=2, privileged_state=True)
    return out


def test_privileged_demos_record_the_wide_layout(wide_demos):
    index = read_demo_index(wide_demos)
    assert demo_state_layout(index) == (True, 24)
    for episode in read_demos(wide_demos):
        states = episode["states"]
        assert states.shape == (episode["length"], 24) and states.dtype == np.float32
        # the first step's poses are those of the initial world of that (task, init state)
        env = TabletopVectorEnv("tabletop_spatial", 1, image_size=8, privileged_state=True)
        env.reset([episode["task_id"]], [episode["init_state_id"]])
        np.testing.assert_array_equal(states[0], env.envs[0].state())


def test_the_demos_command_records_wide_states(tmp_path, capsys):
    assert cli_main(["demos", "--suite", "tabletop_long", "--per-task", "1", "--image-size", "8",
                     "--out", str(tmp_path), "--privileged-state"]) == 0
    assert demo_state_layout(read_demo_index(tmp_path)) == (True, 28)
    assert {e["states"].shape[1] for e in read_demos(tmp_path)} == {28}


def _sft_cfg(demo_dir, out, *overrides):
    return load_config("tabletop_sft_nano", [
        f"sft.demo_path={demo_dir}", f"runner.logger.log_path={out}", "sft.num_steps=2", "sft.batch_size=4",
        "sft.demos_per_task=2", "sft.eval_interval=-1", "env.eval.num_episodes=1", "env.eval.total_num_envs=1",
        "runner.logger.logger_backends=[]", *overrides,
    ])


def test_an_sft_checkpoint_on_wide_states_refuses_a_narrow_env(wide_demos, tmp_path):
    with pytest.raises(ValueError, match="recorded with privileged_state=True .* env.eval.privileged_state=False"):
        run_sft(_sft_cfg(wide_demos, tmp_path / "narrow"), progress=False)
    cfg = _sft_cfg(wide_demos, tmp_path / "wide", "env.train.privileged_state=true", "env.eval.privileged_state=true")
    result = run_sft(cfg, progress=False)  # its evaluation runs on wide states
    assert result.success_rate is not None
    assert load_pi0(result.checkpoint).norm_stats["state"].dim == 24
    policy = Pi0Policy.from_checkpoint(result.checkpoint)
    narrow = make_env("tabletop_spatial", 1, image_size=64)
    with pytest.raises(ValueError, match=r"states are 8 wide but this policy's state norm stats are 24 wide.*"
                                         r"set env.train.privileged_state and env.eval.privileged_state"):
        policy.preprocess(narrow.reset([0], [0]))
    wide = make_env("tabletop_spatial", 1, image_size=64, privileged_state=True)
    assert policy.preprocess(wide.reset([0], [0])).state.shape == (1, 32)
