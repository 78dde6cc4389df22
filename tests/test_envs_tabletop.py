"""The built-in tabletop: contract, expert, physics by hand, images, and tasks that need both the image and the instruction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from env_contract import check_vector_env_contract
from pi0lab.envs import TABLETOP_SUITES, make_env
from pi0lab.envs.tabletop.expert import expert_action
from pi0lab.envs.tabletop.render import render_worlds
from pi0lab.envs.tabletop.suites import (
    LAYOUT_JITTER, SUITES, YAW_JITTER, holds, make_world, resolve_goals, task_layout,
)
from pi0lab.envs.tabletop.world import (
    DRAWER_TRAVEL, HANDLE, HELD, MAX_GAP, TABLE, WORKSPACE_HIGH, WORKSPACE_LOW, Thing, World,
)


@pytest.mark.parametrize("suite", TABLETOP_SUITES)
def test_tabletop_meets_the_contract(suite):
    env = make_env(suite, num_envs=3, seed=5)
    check_vector_env_contract(env, twin=make_env(suite, num_envs=3, seed=5), chunk=7)


def test_bad_names_and_options_say_what_is_valid():
    with pytest.raises(ValueError, match="valid names: tabletop_spatial, .*libero_90"):
        make_env("tabletop_nope", 2)
    with pytest.raises(ValueError, match="num_envs must be >= 1"):
        make_env("tabletop_goal", 0)
    with pytest.raises(ValueError, match="init_state_ids needs task_ids"):
        make_env("tabletop_goal", 1).reset(init_state_ids=[0])


# ---- the expert -----------------------------------------------------------------------------------
def _run_expert(env, tasks, inits, chunk=10, noise_std=0.0):
    env.reset(task_ids=tasks, init_state_ids=inits)
    while True:
        _, _, terminated, truncated, info = env.step(env.expert_actions(chunk, noise_std))
        if (terminated[:, -1] | truncated[:, -1]).all():
            return info


@pytest.mark.parametrize("suite", TABLETOP_SUITES)
def test_noise_free_expert_clears_every_task_and_init_state(suite):
    env = make_env(suite, num_envs=50, image_size=8)
    success = [_run_expert(env, [task] * 50, list(range(50)))["success_once"] for task in range(env.num_tasks)]
    assert np.mean(success) >= 0.98


def test_noisy_expert_still_mostly_succeeds_and_takes_longer():
    env = make_env("tabletop_long", num_envs=20, image_size=8, seed=3)
    tasks, inits = [t % 10 for t in range(20)], list(range(20))
    clean = _run_expert(env, tasks, inits)
    noisy = _run_expert(env, tasks, inits, noise_std=0.2)
    assert noisy["success_once"].mean() >= 0.9
    assert noisy["episode_len"].mean() > clean["episode_len"].mean()


# ---- tasks need the image and the instruction ----------------------------------------------------
def _expert_episode(world, goals, max_steps):
    """Run the expert on a world; return its actions and whether the goals were reached."""
    actions = []
    for _ in range(max_steps):
        actions.append(expert_action(world, goals))
        world.step(actions[-1])
        if all(holds(world, g) for g in goals):
            return actions, True
    return actions, False


def _replay(world, goals, actions):
    for action in actions:
        world.step(action)
        if all(holds(world, g) for g in goals):
            return True
    return False


@pytest.mark.parametrize("suite", [s for s in TABLETOP_SUITES if s != "tabletop_pretrain"])
def test_initial_states_jitter_each_thing_around_its_spot_in_the_task_layout(suite):
    """As LIBERO's per-object regions: every initial state of a task has the layout's things, each
    within LAYOUT_JITTER (x, y) and YAW_JITTER of its spot; the goal suite's tasks share one layout."""
    for task_id in range(len(SUITES[suite])):
        layout = task_layout(suite, task_id)
        if suite == "tabletop_goal":
            assert [t.pos.tolist() for t in layout] == [t.pos.tolist() for t in task_layout(suite, 0)]
        for init in range(0, 50, 7):
            world = make_world(suite, task_id, init)
            assert [t.name for t in world.things] == [t.name for t in layout]
            for thing, spot in zip(world.things, layout):
                assert np.all(np.abs(thing.pos[:2] - spot.pos[:2]) <= LAYOUT_JITTER + 1e-12)
                assert abs(thing.yaw - spot.yaw) <= YAW_JITTER + 1e-12
        movable = [i for i, t in enumerate(layout) if t.kind != "cabinet"]
        spread = np.std([[make_world(suite, task_id, init).things[i].pos[:2] for i in movable] for init in range(50)], axis=0)
        assert spread.mean() > LAYOUT_JITTER / 3  # uniform on [-J, J]: std J / sqrt(3), less near edges and neighbours


@pytest.mark.parametrize("suite", TABLETOP_SUITES)
def test_a_blind_policy_that_knows_the_instruction_fails_most_episodes(suite):
    """Replaying the expert's actions from another initial state of the same task (the instruction
    is known, the image is not) fails most episodes: the layout is known, the jitter around it is not."""
    outcomes = []
    for task_id, task in enumerate(SUITES[suite]):
        for init in range(0, 50, 5):
            seen = make_world(suite, task_id, init)
            actions, ok = _expert_episode(seen, resolve_goals(seen, task.goals), 200)
            assert ok
            unseen = make_world(suite, task_id, (init + 1) % 50)
            outcomes.append(_replay(unseen, resolve_goals(unseen, task.goals), actions))
    assert np.mean(outcomes) < 0.4  # measured: 0.31 (goal) at most


@pytest.mark.parametrize("suite", TABLETOP_SUITES)
def test_the_expert_following_a_wrong_instruction_fails_most_episodes(suite):
    """The privileged expert sees everything but pursues another task's goal in the same scene."""
    rng = np.random.default_rng(0)
    tasks, outcomes = SUITES[suite], []
    for task_id, task in enumerate(tasks):
        for init in range(0, 50, 5):
            world = make_world(suite, task_id, init)
            true_goals = resolve_goals(world, task.goals)
            wrong = []
            for other in rng.permutation(len(tasks)).tolist():
                if other == task_id:
                    continue
                try:
                    wrong = resolve_goals(world, tasks[other].goals)
                except KeyError:  # that task's things are not in this scene
                    continue
                break
            if not wrong:
                outcomes.append(False)  # no other task fits the scene: ignoring the instruction gives nothing to do
                continue
            for _ in range(120):
                world.step(expert_action(world, wrong))
            outcomes.append(all(holds(world, g) for g in true_goals))
    assert np.mean(outcomes) < 0.3


# ---- physics, by hand -----------------------------------------------------------------------------
def _thing(name, kind, x, y, z, yaw=0.0):
    return Thing(name, kind, (1.0, 0.0, 0.0), np.array([x, y, z]), yaw)


def _act(world, dx=0.0, dy=0.0, dz=0.0, dyaw=0.0, close=False, times=1):
    for _ in range(times):
        world.step(np.array([dx, dy, dz, 0, 0, dyaw, 1.0 if close else -1.0]))


def test_a_bar_is_only_grasped_with_the_fingers_across_it():
    along = World([_thing("bar", "bar", 0.0, 0.0, 0.025)], eef=np.array([0.0, 0.0, 0.025]), yaw=0.0)
    _act(along, close=True, times=3)  # fingers close along the bar's long axis: 16 cm does not fit in 9 cm
    assert along.held == -1 and along.gap == 0.0
    across = World([_thing("bar", "bar", 0.0, 0.0, 0.025)], eef=np.array([0.0, 0.0, 0.025]), yaw=math.pi / 2)
    _act(across, close=True, times=2)  # 0.09 -> 0.055 -> 0.02 passes the bar's 5 cm width
    assert across.held == 0 and across.gap == pytest.approx(0.05)
    np.testing.assert_allclose(across.state()[6:], [0.025, -0.025])  # finger qpos stop on the bar


def test_carry_and_release_drops_onto_the_highest_surface_below():
    plate = _thing("plate", "plate", 0.15, 0.0, 0.01)
    cube = _thing("cube", "cube", 0.0, 0.0, 0.03)
    other = _thing("cube2", "cube", -0.15, 0.0, 0.03)
    world = World([plate, cube, other], eef=np.array([0.0, 0.0, 0.03]))
    _act(world, close=True, times=1)  # 0.09 -> 0.055 <= 0.06: grasped
    assert world.held == 1 and world.support[1] == HELD
    _act(world, dz=1.0, times=2, close=True)  # lift 10 cm
    _act(world, dx=1.0, times=3, close=True)  # carry 15 cm to the right, over the plate
    np.testing.assert_allclose(world.things[1].pos, [0.15, 0.0, 0.13])
    _act(world)  # open: drops onto the plate top (z = 0.02) -> centre at 0.05
    assert world.support[1] == 0 and world.things[1].pos[2] == pytest.approx(0.05)
    # pick the other cube and stack it on the first one
    world.eef = np.array([-0.15, 0.0, 0.03])
    _act(world, close=True)
    _act(world, dz=1.0, times=3, close=True)
    _act(world, dx=1.0, times=6, close=True)
    _act(world)
    assert world.support[2] == 1 and world.things[2].pos[2] == pytest.approx(0.05 + 0.06)
    # a cube with something on it cannot be picked
    world.eef = world.things[1].pos.copy()
    _act(world, times=2)
    _act(world, close=True, times=3)
    assert world.held == -1


def test_releasing_over_nothing_drops_to_the_table():
    world = World([_thing("cube", "cube", 0.0, 0.0, 0.03)], eef=np.array([0.0, 0.0, 0.03]))
    _act(world, close=True)
    _act(world, dz=1.0, dy=1.0, times=2, close=True)
    _act(world)
    assert world.support[0] == TABLE
    np.testing.assert_allclose(world.things[0].pos, [0.0, 0.1, 0.03])


def test_the_drawer_slides_out_when_its_handle_is_pulled():
    world = World([_thing("cabinet", "cabinet", 0.0, 0.25, 0.08)], yaw=math.pi / 2)
    world.eef = world.handle_pos()
    front = world.handle_pos()[1]
    _act(world, close=True, times=3)
    assert world.held == HANDLE
    _act(world, dy=-1.0, dx=1.0, dz=1.0, close=True, times=2)  # only the pull along y acts
    assert world.drawer == pytest.approx(0.1)
    np.testing.assert_allclose(world.eef, [0.0, front - 0.1, world.handle_pos()[2]])
    _act(world, dy=-1.0, close=True, times=2)
    assert world.drawer == pytest.approx(DRAWER_TRAVEL)


@settings(max_examples=25, deadline=None)
@given(suite=st.sampled_from(TABLETOP_SUITES), task=st.integers(0, 9), init=st.integers(0, 49),
       seed=st.integers(0, 2**16), expert_every=st.integers(1, 4))
def test_random_and_expert_actions_keep_the_world_consistent(suite, task, init, seed, expert_every):
    """Invariants under a mix of random and expert actions: the hand stays in the workspace, the
    fingers and drawer within their ranges, every resting thing sits exactly on its support, and a
    held thing keeps its offset to the hand."""
    rng = np.random.default_rng(seed)
    world = make_world(suite, task, init)
    goals = resolve_goals(world, SUITES[suite][task].goals)
    for step in range(60):
        action = expert_action(world, goals) if step % expert_every == 0 else rng.uniform(-1, 1, 7)
        held_before = world.held
        offset_before = world.things[held_before].pos - world.eef if held_before >= 0 else None
        world.step(action)
        assert (WORKSPACE_LOW - 1e-9 <= world.eef).all() and (world.eef <= WORKSPACE_HIGH + 1e-9).all()
        assert 0.0 <= world.gap <= MAX_GAP and 0.0 <= world.drawer <= DRAWER_TRAVEL
        np.testing.assert_allclose(world.state()[6:], [world.gap / 2, -world.gap / 2], atol=1e-7)
        for i, thing in enumerate(world.things):
            support = world.support[i]
            if support == HELD:
                assert world.held == i
                continue
            floor = 0.0 if support == TABLE else world.top(support)
            assert thing.pos[2] - thing.half[2] == pytest.approx(floor)
        if held_before >= 0 and world.held == held_before:  # rigid: turning about the hand keeps the distance
            distance = np.linalg.norm(world.things[world.held].pos - world.eef)
            assert distance == pytest.approx(np.linalg.norm(offset_before), abs=1e-9)


def _rodrigues(rotvec):
    angle = np.linalg.norm(rotvec)
    k = rotvec / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


@pytest.mark.parametrize("yaw", [-1.5, -0.4, 0.0, 0.7, 1.5])
def test_state_orientation_is_the_axis_angle_of_a_downward_gripper_turned_by_yaw(yaw):
    world = World([], yaw=yaw)
    c, s = math.cos(yaw), math.sin(yaw)
    expected = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.0, -1.0, -1.0])  # Rz(yaw) Rx(pi)
    np.testing.assert_allclose(_rodrigues(world.state()[3:6].astype(float)), expected, atol=1e-6)


def test_actions_are_clipped_and_the_hand_stays_in_the_workspace():
    env = make_env("tabletop_goal", 1)
    env.reset(task_ids=[0], init_state_ids=[0])
    big = env.step(np.full((1, 40, 7), 50.0))[0]["states"][0]
    assert big[0] <= 0.32 + 1e-6 and big[2] <= 0.30 + 1e-6


# ---- images ---------------------------------------------------------------------------------------
def _blue_pixels(image):
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return int(((b > 120) & (b > r + 60) & (b > g + 60)).sum())


def test_a_cube_behind_the_cabinet_is_hidden_in_the_main_view():
    blue = Thing("blue cube", "cube", (0.1, 0.2, 0.9), np.array([0.0, 0.2, 0.03]))
    cabinet = Thing("cabinet", "cabinet", (0.5, 0.3, 0.2), np.array([0.0, 0.05, 0.08]))
    far = np.array([0.3, -0.25, 0.28])
    alone = World([blue], eef=far.copy())
    hidden = World([Thing(blue.name, blue.kind, blue.color, blue.pos.copy()), cabinet], eef=far.copy())
    main, _ = render_worlds([alone, hidden], 96)
    assert _blue_pixels(main[0]) > 20 and _blue_pixels(main[1]) == 0


def test_the_wrist_view_follows_the_gripper_and_the_main_view_shows_it():
    world = make_world("tabletop_object", 0, 0)
    moved = world.copy()
    moved.step(np.array([1.0, 0, 0, 0, 0, 0, -1]))
    (main_a, main_b), (wrist_a, wrist_b) = render_worlds([world, moved], 64)
    assert (wrist_a != wrist_b).mean() > 0.2  # the whole wrist picture shifts
    changed = (main_a != main_b).any(-1)
    assert 0 < changed.mean() < 0.2  # only the gripper (and its shadow) moves in the main view


@pytest.mark.parametrize("size", [32, 224])
def test_any_square_image_size(size):
    env = make_env("tabletop_spatial", 2, image_size=size)
    obs = env.reset()
    assert obs["main_images"].shape == (2, size, size, 3) and obs["wrist_images"].shape == (2, size, size, 3)


def test_the_pretrain_suite_shares_only_three_goal_instructions_and_has_many_scenes():
    pretrain = SUITES["tabletop_pretrain"]
    shared = {suite: {t.instruction for t in pretrain} & {t.instruction for t in SUITES[suite]}
              for suite in TABLETOP_SUITES if suite != "tabletop_pretrain"}
    assert shared == {"tabletop_spatial": set(), "tabletop_object": set(), "tabletop_long": set(), "tabletop_goal": {
        "put the red cube on the plate", "put the blue cube on the plate", "put the yellow bar on the plate"}}
    env = make_env("tabletop_pretrain", 1)
    assert env.num_init_states(0) == 1000
    world = make_world("tabletop_pretrain", 3, 999)
    names = [t.name for t in world.things]
    assert len(names) == 6 and {"plate", "basket", pretrain[3].scene[0]} <= set(names)
    with pytest.raises(ValueError, match="out of range: 0..999"):
        make_world("tabletop_pretrain", 0, 1000)


def test_max_episode_steps_option_shortens_episodes():
    env = make_env("tabletop_goal", 2, max_episode_steps=7)
    env.reset(np.array([0, 1]), np.array([0, 0]))
    _, _, terminated, truncated, info = env.step(np.zeros((2, 10, 7)))
    assert env.max_episode_steps == 7
    assert list(info["episode_len"]) == [7, 7]
    assert truncated[:, 6].all() and not terminated.any()
    with pytest.raises(ValueError, match="max_episode_steps"):
        make_env("tabletop_goal", 1, max_episode_steps=0)
