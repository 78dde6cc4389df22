"""Evaluation: success per task and per suite with the deterministic ODE sampler.

Episodes walk fixed (task, init state) pairs in order, task-major: pair k is task k % num_tasks,
init state k // num_tasks, so any number of episodes covers the tasks evenly and two runs with
the same count score exactly the same pairs.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from pi0lab.envs import VectorEnv


@dataclass
class EvalResult:
    suite: str
    successes: dict[int, list[bool]] = field(default_factory=dict)  # task id -> one flag per episode
    episode_lens: list[int] = field(default_factory=list)
    descriptions: dict[int, str] = field(default_factory=dict)

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


def evaluation_pairs(num_episodes: int, num_tasks: int, num_init_states: Callable[[int], int]) -> list[tuple[int, int]]:
    """The first `num_episodes` (task, init state) pairs in task-major order."""
    pairs = []
    for k in range(num_episodes):
        task, init = k % num_tasks, k // num_tasks
        if init >= num_init_states(task):
            raise ValueError(f"{num_episodes} episodes need init state {init} of task {task}, "
                             f"which has only {num_init_states(task)}")
        pairs.append((task, init))
    return pairs


def evaluate(
    act: Callable[[dict], np.ndarray],
    envs: VectorEnv,
    num_episodes: int,
    chunk: int,
    on_step: Callable[[dict, np.ndarray, dict], None] | None = None,
    progress: bool = True,
    on_round: Callable[[int], None] | None = None,
) -> EvalResult:
    """Score `act` (env obs -> actions [N,C,7]) on the first `num_episodes` fixed pairs.

    Envs must not auto-reset: each round resets all envs to the next pairs and steps until every
    episode has ended. The last round may hold fewer pairs; its spare envs replay pair 0, unscored.
    `on_round(start)`, if given, is called before each round with the index of its first pair.
    """
    if envs.auto_reset:
        raise ValueError("evaluate() needs envs built with auto_reset=False (it resets them to fixed pairs)")
    pairs = evaluation_pairs(num_episodes, envs.num_tasks, envs.num_init_states)
    result = EvalResult(envs.suite)
    max_chunks = -(-envs.max_episode_steps // chunk)
    bar = tqdm(total=num_episodes, desc=f"eval {envs.suite}", unit="ep", disable=not progress)
    for start in range(0, len(pairs), envs.num_envs):
        round_pairs = pairs[start : start + envs.num_envs]
        padded = round_pairs + [pairs[0]] * (envs.num_envs - len(round_pairs))
        if on_round is not None:
            on_round(start)
        obs = envs.reset([p[0] for p in padded], [p[1] for p in padded])
        info = {}
        for _ in range(max_chunks):
            obs, rewards, terminated, truncated, info = envs.step(act(obs))
            if on_step is not None:
                on_step(obs, rewards, info)
            if (terminated | truncated)[:, -1].all():
                break
        for i, (task, _) in enumerate(round_pairs):
            result.successes.setdefault(task, []).append(bool(info["success_once"][i]))
            result.episode_lens.append(int(info["episode_len"][i]))
            result.descriptions[task] = envs.task_description(task)
        bar.update(len(round_pairs))
    bar.close()
    return result


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
) -> EvalResult:
    """Score a `Pi0Policy` with its deterministic ODE sampler (initial noise from a generator seeded `seed`).

    reseed_each_round: restart the generator before each round, from (seed, the round's first pair), so
    that two runs on the same pairs draw the same noise for each pair's k-th chunk even when their rounds
    last different numbers of chunks (default False: one generator for the whole run, as `pi0lab eval`).
    """
    generator = torch.Generator(policy.device).manual_seed(seed)

    def reseed(start: int) -> None:
        generator.manual_seed(int(np.random.SeedSequence([seed, start]).generate_state(1, np.uint64)[0]))

    was_training = policy.training
    policy.eval()
    try:
        return evaluate(lambda obs: policy.rollout(obs, deterministic=True, generator=generator)["actions"].cpu().numpy(),
                        envs, num_episodes, policy.action_chunk, on_step=on_step, progress=progress,
                        on_round=reseed if reseed_each_round else None)
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
) -> EvalResult:
    """Load a checkpoint (any layout `load_pi0` reads) and score it on `suite` with the ODE sampler
    (started from x_1 ~ N(0, I), or from x_1 = 0 with initial_noise="zero": then the score is deterministic).
    `privileged_state`: the tabletop's state-based control, for checkpoints trained with it."""
    from pi0lab.envs import make_env
    from pi0lab.models.policy import Pi0Policy

    policy = Pi0Policy.from_checkpoint(path, action_chunk=chunk, num_steps=num_steps, precision=precision,
                                       initial_noise=initial_noise)
    policy.to("cuda" if torch.cuda.is_available() else "cpu")
    envs = make_env(suite, min(num_envs, num_episodes), image_size=image_size or policy.model.config.vision.image_size,
                    seed=seed, privileged_state=privileged_state)
    try:
        return evaluate_policy(policy, envs, num_episodes, seed, progress=progress)
    finally:
        envs.close()
