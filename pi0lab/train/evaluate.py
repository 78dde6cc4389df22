"""Evaluation: success per task and per suite with the deterministic ODE sampler.

Episodes walk fixed (task, init state) pairs in order, task-major: pair k is task k % num_tasks,
init state k // num_tasks, so any number of episodes covers the tasks evenly and two runs with
the same count score exactly the same pairs.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pi0lab.envs import VectorEnv
from pi0lab.envs.base import select_envs
from pi0lab.envs.video import VideoRecorder, encode_mp4


@dataclass
class EvalResult:
    suite: str
    successes: dict[int, list[bool]] = field(default_factory=dict)  # task id -> one flag per episode
    episode_lens: list[int] = field(default_factory=list)
    descriptions: dict[int, str] = field(default_factory=dict)
    videos: dict[tuple[int, int], Path] = field(default_factory=dict)  # (task, init state) -> mp4, when recorded
    first_init_state: int = 0  # the pairs of each task are its init states from this one on

    @property
    def per_task(self) -> dict[int, float]:
        return {task: float(np.mean(flags)) for task, flags in sorted(self.successes.items())}

    @property
    def success_rate(self) -> float:
        """Mean over tasks of each task's success rate (every task counts the same)."""
        return float(np.mean(list(self.per_task.values())))

    @property
    def num_episodes(self) -> int:
        return sum(len(flags) for flags in self.successes.values())

    def success(self, task: int, init_state: int) -> bool:
        """The outcome of pair (task, init state): pairs of a task are scored in init-state order from
        `first_init_state`."""
        return self.successes[task][init_state - self.first_init_state]


def evaluation_pairs(num_episodes: int, num_tasks: int, num_init_states: Callable[[int], int],
                     init_states: tuple[int, int | None] = (0, None)) -> list[tuple[int, int]]:
    """The first `num_episodes` (task, init state) pairs in task-major order, init states counted from
    `init_states[0]` and below `init_states[1]` (None: the task's own count) — an env's `init_states`."""
    first, stop = init_states
    pairs = []
    for k in range(num_episodes):
        task, init = k % num_tasks, first + k // num_tasks
        limit = stop or num_init_states(task)
        if init >= limit:
            raise ValueError(f"{num_episodes} episodes need init state {init} of task {task}, which has only "
                             f"{limit - first} to score (init states {first}..{limit - 1})")
        pairs.append((task, init))
    return pairs


class EpisodeVideos:
    """One mp4 per scored episode of `evaluate`: `<video_dir>/<prefix>_task<t>_init<i>.mp4` (main and wrist
    views; the banner shows the instruction, step, reward, return and success).

    Pass `add` as evaluate's `on_step` and `start_round` as its `on_round`, then call `finish()`; `paths` maps
    (task, init state) -> file. Only `env_ids` are recorded (env i of a round plays pair start + i), one round
    at a time, so memory holds one round's frames.
    """

    def __init__(self, video_dir: str | os.PathLike, prefix: str, pairs: list[tuple[int, int]], env_ids,
                 info_on_video: bool = True, view_size: int = 256):
        self.video_dir = Path(video_dir)
        self.prefix = prefix
        self.pairs = pairs
        self.recorder = VideoRecorder(env_ids, info_on_video=info_on_video, with_wrist=True, view_size=view_size)
        self.round_start: int | None = None
        self.paths: dict[tuple[int, int], Path] = {}

    def add(self, obs: dict, rewards: np.ndarray, info: dict) -> None:
        self.recorder.add(obs, rewards, info)

    def start_round(self, start: int) -> None:
        self.finish()
        self.round_start = start

    def finish(self) -> None:
        """Write the videos of the round in progress (spare envs that replay pair 0 unscored are left out)."""
        if self.round_start is not None:
            self.video_dir.mkdir(parents=True, exist_ok=True)
            for i in self.recorder.env_ids:
                if self.round_start + i < len(self.pairs):
                    task, init = self.pairs[self.round_start + i]
                    path = self.video_dir / f"{self.prefix}_task{task:02d}_init{init:02d}.mp4"
                    encode_mp4(self.recorder.frames[i], path, self.recorder.fps)
                    self.paths[(task, init)] = path
        self.recorder.clear()
        self.round_start = None


def evaluate(
    act: Callable[[dict], np.ndarray],
    envs: VectorEnv,
    num_episodes: int,
    chunk: int,
    on_step: Callable[[dict, np.ndarray, dict], None] | None = None,
    progress: bool = True,
    on_round: Callable[[int], None] | None = None,
    live_only: bool = False,
) -> EvalResult:
    """Score `act` (env obs -> actions [N,C,7]) on the first `num_episodes` fixed pairs.

    Envs must not auto-reset: each round resets all envs to the next pairs and steps until every
    episode has ended. The last round may hold fewer pairs; its spare envs replay pair 0, unscored.
    `on_round(start)`, if given, is called before each round with the index of its first pair.
    live_only: call `act` on the envs whose episode is still running only (the ended ones are frozen and
    ignore their actions), which saves the policy's time on them; right for a policy whose action for one
    env depends on that env's observation alone (no random draws shared across the batch).
    """
    if envs.auto_reset:
        raise ValueError("evaluate() needs envs built with auto_reset=False (it resets them to fixed pairs)")
    pairs = evaluation_pairs(num_episodes, envs.num_tasks, envs.num_init_states, envs.init_states)
    result = EvalResult(envs.suite, first_init_state=envs.init_states[0])
    max_chunks = -(-envs.max_episode_steps // chunk)
    bar = tqdm(total=num_episodes, desc=f"eval {envs.suite}", unit="ep", disable=not progress)
    for start in range(0, len(pairs), envs.num_envs):
        round_pairs = pairs[start : start + envs.num_envs]
        padded = round_pairs + [pairs[0]] * (envs.num_envs - len(round_pairs))
        if on_round is not None:
            on_round(start)
        obs = envs.reset([p[0] for p in padded], [p[1] for p in padded])
        info = {}
        live = np.arange(envs.num_envs)
        for _ in range(max_chunks):
            obs, rewards, terminated, truncated, info = envs.step(act_on_envs(act, obs, live) if live_only else act(obs))
            if on_step is not None:
                on_step(obs, rewards, info)
            ended = (terminated | truncated)[:, -1]
            if ended.all():
                break
            live = np.flatnonzero(~ended)
        for i, (task, _) in enumerate(round_pairs):
            result.successes.setdefault(task, []).append(bool(info["success_once"][i]))
            result.episode_lens.append(int(info["episode_len"][i]))
            result.descriptions[task] = envs.task_description(task)
        bar.update(len(round_pairs))
    bar.close()
    return result


def act_on_envs(act: Callable[[dict], np.ndarray], obs: dict, env_ids: np.ndarray) -> np.ndarray:
    """Actions [N,C,7] for all N envs of `obs`, `act` called on the listed envs only; the others' are 0."""
    chosen = act(select_envs(obs, env_ids))
    actions = np.zeros((len(obs["states"]), *chosen.shape[1:]), dtype=chosen.dtype)
    actions[env_ids] = chosen
    return actions


def paired_difference(before: EvalResult, after: EvalResult) -> tuple[float, float]:
    """Success difference of two evaluations of the same fixed pairs, and its standard error.

    d_k = s_after,k - s_before,k for every pair k (0/1 flags); returns (mean_k d_k, std(d) / sqrt(n)),
    the standard error of a paired difference (unbiased std). Equal per-task counts make the mean
    the difference of the two success rates.
    """
    if {t: len(f) for t, f in before.successes.items()} != {t: len(f) for t, f in after.successes.items()}:
        raise ValueError("paired_difference needs two evaluations of the same pairs (same tasks and episode counts)")
    d = np.array([float(a) - float(b) for task in before.successes
                  for b, a in zip(before.successes[task], after.successes[task], strict=True)])
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def results_table(rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    """A markdown table shaped like the reference recipe's: one row per model, one column per suite + Average.

    rows: model name -> {column: success rate in [0, 1]}; missing cells print as "-".
    """
    header = "| Model | " + " | ".join(columns) + " | Average |"
    rule = "|---|" + "---|" * (len(columns) + 1)
    lines = [header, rule]
    for name, cells in rows.items():
        values = [cells.get(c) for c in columns]
        present = [v for v in values if v is not None]
        average = float(np.mean(present)) if present else None
        lines.append(f"| {name} | " + " | ".join(_percent(v) for v in values + [average]) + " |")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def evaluate_policy(
    policy,
    envs: VectorEnv,
    num_episodes: int,
    seed: int = 0,
    on_step: Callable[[dict, np.ndarray, dict], None] | None = None,
    progress: bool = True,
    reseed_each_round: bool = False,
    on_round: Callable[[int], None] | None = None,
) -> EvalResult:
    """Score a `Pi0Policy` with its deterministic ODE sampler (initial noise from a generator seeded `seed`;
    from x_1 = 0 the policy acts on the running envs only, `evaluate`'s live_only).

    reseed_each_round: restart the generator before each round, from (seed, the round's first pair), so
    that two runs on the same pairs draw the same noise for each pair's k-th chunk even when their rounds
    last different numbers of chunks (default False: one generator for the whole run, as `pi0lab eval`).
    on_step, on_round: as in `evaluate` (an `EpisodeVideos` fits).
    """
    generator = torch.Generator(policy.device).manual_seed(seed)

    def start_round(start: int) -> None:
        if reseed_each_round:
            generator.manual_seed(int(np.random.SeedSequence([seed, start]).generate_state(1, np.uint64)[0]))
        if on_round is not None:
            on_round(start)

    was_training = policy.training
    policy.eval()
    try:
        return evaluate(lambda obs: policy.rollout(obs, deterministic=True, generator=generator)["actions"].cpu().numpy(),
                        envs, num_episodes, policy.action_chunk, on_step=on_step, progress=progress,
                        on_round=start_round, live_only=policy.initial_noise == "zero")
    finally:
        policy.train(was_training)


def evaluate_checkpoint(
    path: str,
    suite: str,
    num_episodes: int = 100,
    num_envs: int = 50,
    chunk: int = 5,
    num_steps: int = 4,
    image_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
    precision: str = "fp32",
    initial_noise: str = "gaussian",
    privileged_state: bool = False,
    init_states: tuple[int, int] | None = None,
    video_dir: str | os.PathLike | None = None,
) -> EvalResult:
    """Load a checkpoint (any layout `load_pi0` reads) and score it on `suite` with the ODE sampler
    (started from x_1 ~ N(0, I), or from x_1 = 0 with initial_noise="zero": then the score is deterministic).
    `privileged_state`: the tabletop's state-based control, for checkpoints trained with it.
    `video_dir`: also write every episode's video there (`EpisodeVideos`, 128 px views), listed in `result.videos`."""
    from pi0lab.envs import make_env
    from pi0lab.models.policy import Pi0Policy

    policy = Pi0Policy.from_checkpoint(path, action_chunk=chunk, num_steps=num_steps, precision=precision,
                                       initial_noise=initial_noise)
    policy.to("cuda" if torch.cuda.is_available() else "cpu")
    envs = make_env(suite, min(num_envs, num_episodes), image_size=image_size or policy.model.config.vision.image_size,
                    seed=seed, privileged_state=privileged_state)
    if init_states is not None:
        envs.restrict_init_states(*init_states)
    videos = None
    if video_dir is not None:
        pairs = evaluation_pairs(num_episodes, envs.num_tasks, envs.num_init_states, envs.init_states)
        videos = EpisodeVideos(video_dir, suite, pairs, range(envs.num_envs), view_size=128)
    try:
        result = evaluate_policy(policy, envs, num_episodes, seed, progress=progress,
                                 on_step=videos and videos.add, on_round=videos and videos.start_round)
    finally:
        envs.close()
    if videos is not None:
        videos.finish()
        result.videos = videos.paths
    return result
