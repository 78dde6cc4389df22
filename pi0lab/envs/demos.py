"""Expert demonstrations on disk: written from the tabletop's scripted expert, read by the SFT stage.

On-disk format (a directory):

    index.json            {"format": "pi0lab-demos", "version": 1, "suite": str, "image_size": int,
                           "noise_std": float, "privileged_state": bool, "state_dim": int,
                           "episodes": [{"file": "episode_00000.npz",
                           "task_id": int, "init_state_id": int, "instruction": str,
                           "success": bool, "length": T}, ...]}
    episode_00000.npz     main_images  uint8   [T, H, W, 3]   what the policy saw before action t
                          wrist_images uint8   [T, H, W, 3]
                          states       float32 [T, S]         eef pos, axis-angle, gripper qpos (S = 8),
                                                              then the things' poses with privileged_state
                          actions      float32 [T, 7]         the expert's action at step t (in [-1, 1])
                          rewards      float32 [T]            1 at the step that succeeded, else 0

Episodes are recorded one action per env step (chunk 1), so every step has its observation; a
training sample is (observation t, actions t .. t+H-1), padded past the end by the caller.

With `noise_std` > 0 the recording is DART-style: the env executes the expert's action plus Gaussian
noise on dims 0-5, but the file stores the expert's clean action, so the demos show how to recover
from the small mistakes a learned policy makes without teaching it the noise.

With `privileged_state` the states are the tabletop's state-based control (a control, not pi0): the
robot's 8 dims then the true (x, y, z, yaw) of every thing (`pi0lab.envs.tabletop`), S =
`privileged_state_dim(suite)`; SFT then takes 8+P-wide state stats from them. Indexes written before
this key existed have 8-wide states (`demo_state_layout` reads them as privileged_state=False).

Demos come from the last initial states of each task (49, 48, ... in a suite of 50): evaluation
pairs start at init state 0 (`pi0lab.train.evaluate`), so an evaluation never replays a scene the
policy was trained on as long as demos and evaluation together use at most the initial states of a task.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pi0lab.envs.tabletop import TabletopVectorEnv

FORMAT, VERSION = "pi0lab-demos", 1
MAX_TRIES = 5  # recordings of one (task, init state) before a noisy expert is given up on
ARRAYS = ("main_images", "wrist_images", "states", "actions", "rewards")


def with_execution_noise(actions: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """DART's executed actions [..., 7]: a copy with N(0, noise_std^2) added to dims 0-5 (the arm; not
    the gripper), clipped to [-1, 1]."""
    executed = actions.copy()
    executed[..., :6] = np.clip(actions[..., :6] + noise_std * rng.standard_normal(actions[..., :6].shape), -1, 1)
    return executed


def record_expert_episodes(env: TabletopVectorEnv, task_ids, init_state_ids, noise_std: float = 0.0) -> list[dict]:
    """Run the expert in every env (one action per step, executed with `noise_std` noise on dims 0-5)
    until each episode ends; return one dict per env with the arrays of `ARRAYS` (actions: the clean
    expert actions) cut to the episode length, plus task_id, init_state_id, instruction, success."""
    obs = env.reset(task_ids=task_ids, init_state_ids=init_state_ids)
    n = env.num_envs
    steps = {key: [] for key in ARRAYS}
    ended = np.zeros(n, bool)
    while not ended.all():
        actions = env.expert_actions(1).astype(np.float32)  # [N,1,7] the labels
        executed = with_execution_noise(actions, noise_std, env.expert_rng)
        steps["main_images"].append(obs["main_images"])
        steps["wrist_images"].append(obs["wrist_images"])
        steps["states"].append(obs["states"])
        steps["actions"].append(actions[:, 0])
        obs, rewards, terminated, truncated, info = env.step(executed)
        steps["rewards"].append(rewards[:, 0])
        ended |= terminated[:, 0] | truncated[:, 0]
    stacked = {key: np.stack(value, axis=1) for key, value in steps.items()}  # [N, T_max, ...]
    episodes = []
    for i in range(n):
        length = int(info["episode_len"][i])
        episode = {key: stacked[key][i, :length] for key in ARRAYS}
        episode.update(task_id=int(env.task_ids[i]), init_state_id=int(env.init_state_ids[i]),
                       instruction=env.task_description(int(env.task_ids[i])), success=bool(info["success_once"][i]))
        episodes.append(episode)
    return episodes


def write_demos(suite: str, out_dir: str | os.PathLike, episodes_per_task: int = 10, task_ids=None,
                image_size: int = 64, noise_std: float = 0.0, seed: int = 0, num_envs: int = 16,
                privileged_state: bool = False) -> Path:
    """Record `episodes_per_task` successful expert episodes for each task, from the last init states (49, 48, ...)
    (see the module docstring), and write them in the format above; return the index path.

    With noise a recording can fail (too slow to recover); that (task, init state) is recorded again
    with fresh noise, up to MAX_TRIES times, and only successful episodes are written.
    `privileged_state=True` records the control's wide states (module docstring).
    """
    env = TabletopVectorEnv(suite, num_envs, image_size=image_size, seed=seed, privileged_state=privileged_state)
    task_ids = list(range(env.num_tasks)) if task_ids is None else list(task_ids)
    if not 1 <= episodes_per_task <= env.num_init_states(0):
        raise ValueError(f"episodes_per_task must be in 1..{env.num_init_states(0)} (one per init state)")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0; got {noise_std}")
    last = env.num_init_states(0) - 1
    pending = [(t, last - k) for t in task_ids for k in range(episodes_per_task)]
    tries = dict.fromkeys(pending, 0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recorded = {}
    with tqdm(total=len(pending), desc=f"demos {suite}") as bar:
        while pending:
            batch, pending = pending[:num_envs], pending[num_envs:]
            padded = batch + [batch[-1]] * (num_envs - len(batch))  # extras are dropped
            for pair, episode in zip(batch, record_expert_episodes(env, *zip(*padded), noise_std)):
                tries[pair] += 1
                if episode["success"]:
                    recorded[pair] = episode
                    bar.update()
                elif tries[pair] < MAX_TRIES:
                    pending.append(pair)
                else:
                    raise RuntimeError(f"the expert failed {MAX_TRIES} times on task {pair[0]}, init state {pair[1]} "
                                       f"with action noise {noise_std}; use a smaller noise_std")
    index = {"format": FORMAT, "version": VERSION, "suite": suite, "image_size": image_size,
             "noise_std": noise_std, "privileged_state": bool(privileged_state), "state_dim": env.state_dim,
             "episodes": []}
    for pair in sorted(recorded, key=lambda p: (task_ids.index(p[0]), -p[1])):
        episode = recorded[pair]
        name = f"episode_{len(index['episodes']):05d}.npz"
        np.savez_compressed(out / name, **{key: episode[key] for key in ARRAYS})
        index["episodes"].append({"file": name, "task_id": episode["task_id"], "init_state_id": episode["init_state_id"],
                                  "instruction": episode["instruction"], "success": True, "length": len(episode["actions"])})
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return out / "index.json"


def read_demo_index(demo_dir: str | os.PathLike) -> dict:
    """The parsed index.json of a demo directory (checked to be this format)."""
    path = Path(demo_dir) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"no demo index at {path}; write one with pi0lab.envs.demos.write_demos")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{path} is not a {FORMAT} v{VERSION} index (format={index.get('format')!r}, "
                         f"version={index.get('version')!r})")
    return index


def demo_state_layout(index: dict) -> tuple[bool, int]:
    """(privileged_state, state width) of a demo index; indexes older than the key are (False, 8)."""
    privileged = bool(index.get("privileged_state", False))
    return privileged, int(index.get("state_dim", 8))


def read_demos(demo_dir: str | os.PathLike, only_success: bool = True) -> list[dict]:
    """Every episode of a demo directory: the index entry plus its arrays (see the module docstring)."""
    index = read_demo_index(demo_dir)
    episodes = []
    for entry in index["episodes"]:
        if only_success and not entry["success"]:
            continue
        with np.load(Path(demo_dir) / entry["file"]) as arrays:
            episode = dict(entry, **{key: arrays[key] for key in ARRAYS})
        if len(episode["actions"]) != entry["length"]:
            raise ValueError(f"{entry['file']}: {len(episode['actions'])} actions but the index says {entry['length']}")
        episodes.append(episode)
    return episodes
