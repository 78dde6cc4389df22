"""Where do episodes of several sub-goals fail? The share of evaluation episodes in which each sub-goal
of the task held at some step, for a checkpoint on a tabletop suite (the long suite has two per task).

    python benchmarks/subgoals.py runs/benchmark-learning/tabletop_long/sft/model --episodes 200

Same sampler and (task, init) pairs as `pi0lab eval` (ODE, task-major pairs from init state 0).
"""

import argparse

import numpy as np

from pi0lab.envs.tabletop import TabletopVectorEnv
from pi0lab.envs.tabletop.suites import holds
from pi0lab.models.policy import Pi0Policy
from pi0lab.train.evaluate import evaluate_policy


class SubgoalEnvs(TabletopVectorEnv):
    """Tabletop envs that keep, per evaluation round, which of each env's goals has held so far."""

    def __init__(self, suite: str, num_envs: int):
        super().__init__(suite, num_envs)
        self.rounds: list[np.ndarray] = []  # one bool [num_envs, goals] per reset

    def reset(self, task_ids, init_state_ids):
        obs = super().reset(task_ids, init_state_ids)
        self.rounds.append(np.zeros((self.num_envs, max(len(e.goals) for e in self.envs)), bool))
        return obs

    def record(self, *_) -> None:
        for i, env in enumerate(self.envs):
            for j, goal in enumerate(env.goals):
                self.rounds[-1][i, j] |= holds(env.world, goal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--suite", default="tabletop_long")
    parser.add_argument("--episodes", type=int, default=200, help="a multiple of --envs (default: %(default)s)")
    parser.add_argument("--envs", type=int, default=50)
    args = parser.parse_args()
    if args.episodes % args.envs:
        raise SystemExit(f"--episodes {args.episodes} must be a multiple of --envs {args.envs} (no unscored spares)")
    policy = Pi0Policy.from_checkpoint(args.checkpoint, action_chunk=5, num_steps=4)
    envs = SubgoalEnvs(args.suite, args.envs)
    try:
        result = evaluate_policy(policy, envs, args.episodes, on_step=envs.record)
    finally:
        envs.close()
    held = np.concatenate(envs.rounds)  # [episodes, goals], task-major pairs as in evaluate
    tasks = np.arange(args.episodes) % envs.num_tasks
    print(f"success {result.success_rate:.1%}; sub-goal held at some step: "
          + ", ".join(f"goal {j + 1} {held[:, j].mean():.1%}" for j in range(held.shape[1]))
          + f", all {held.all(1).mean():.1%}")
    for task in range(envs.num_tasks):
        rates = " / ".join(f"{r:.0%}" for r in held[tasks == task].mean(0))
        print(f"task {task}: {rates} (success {result.per_task[task]:.0%}) {envs.task_description(task)}")


if __name__ == "__main__":
    main()
