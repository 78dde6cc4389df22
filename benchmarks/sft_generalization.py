"""Does an SFT checkpoint find the objects in scenes it has not seen? The first-chunk probe.

    python benchmarks/sft_generalization.py runs/tabletop_sft_nano/model --suite tabletop_spatial

From each initial scene the expert's first chunk of C actions depends only on where things are, so
the policy's first chunk (ODE sampler) against the expert's measures localisation without any
closed-loop compounding:

    error = mean over tasks, scenes, steps c < C and dims d in {x, y, z} of |a_policy - a_expert|

printed for the demo scenes (`--train-inits`, where `write_demos` takes them: the last initial
states), for held-out scenes (`--heldout-inits`, where evaluation takes them: the first ones), and
for the baseline that predicts each task's mean expert chunk over the demo scenes (no looking).
"""

import argparse

import numpy as np
import torch

from pi0lab.envs import make_env
from pi0lab.envs.tabletop.suites import check_suite
from pi0lab.models.policy import Pi0Policy


def first_chunks(env, init_state_id: int, policy: Pi0Policy | None, chunk: int) -> np.ndarray:
    """xyz of the first `chunk` actions [num_tasks, chunk, 3] from one initial state of every task:
    the policy's (ODE, noise seed 0), or the expert's when policy is None."""
    obs = env.reset(list(range(env.num_tasks)), [init_state_id] * env.num_tasks)
    if policy is None:
        return env.expert_actions(chunk)[..., :3]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return policy.rollout(obs, deterministic=True, generator=generator)["actions"].numpy()[..., :3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--suite", default="tabletop_spatial")
    parser.add_argument("--chunk", type=int, default=5)
    parser.add_argument("--train-inits", type=int, nargs=2, default=(40, 50), metavar=("FIRST", "END"))
    parser.add_argument("--heldout-inits", type=int, nargs=2, default=(0, 10), metavar=("FIRST", "END"))
    args = parser.parse_args()
    policy = Pi0Policy.from_checkpoint(args.checkpoint, action_chunk=args.chunk)
    policy.eval()
    env = make_env(args.suite, len(check_suite(args.suite)), image_size=policy.model.config.vision.image_size)
    splits = {"demo scenes": range(*args.train_inits), "held-out scenes": range(*args.heldout_inits)}
    expert = {name: np.stack([first_chunks(env, k, None, args.chunk) for k in inits]) for name, inits in splits.items()}
    task_mean = expert["demo scenes"].mean(axis=0, keepdims=True)  # [1, tasks, chunk, 3]
    print(f"first-chunk xyz error, {args.suite}, chunk {args.chunk} (actions in [-1, 1])")
    for name, inits in splits.items():
        predicted = np.stack([first_chunks(env, k, policy, args.chunk) for k in inits])
        print(f"  {name:16s} policy {np.abs(predicted - expert[name]).mean():.3f}   "
              f"per-task mean baseline {np.abs(task_mean - expert[name]).mean():.3f}")


if __name__ == "__main__":
    main()
