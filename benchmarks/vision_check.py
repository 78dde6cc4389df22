"""Does a policy see? Its score with its own images against its score with another scene's images.

    .venv/bin/python benchmarks/vision_check.py runs/tabletop_sft_nano/model --suite tabletop_spatial \
        --episodes 400 --initial-noise zero --seed 0

The checkpoint is scored, with the deterministic ODE sampler, on the first `--episodes` fixed (task, init)
pairs of `pi0lab eval` (`pi0lab.train.evaluate.evaluation_pairs`), twice:

  1. own images: the normal score (the same as `pi0lab eval` for --initial-noise zero);
  2. swapped images: each env scoring (task, k) has a shadow env in (task, k'), k' = (k + offset) mod
     num_init_states (offset 1 by default). The shadow executes exactly the actions the real env
     executes; the policy gets the shadow's main and wrist images with the real env's instruction and
     robot state, and success, rewards and episode ends are the real env's. A shadow episode that ends
     first (it succeeded) stays frozen on its last frame, as any ended env does, while the real one goes on.

Both runs draw the same initial noise for each pair's k-th chunk (`evaluate_policy(reseed_each_round=True)`).
The reference is a blind replay on the same pairs: the scripted expert's actions from (task, k') executed
in (task, k) (`benchmarks/env_speed.py`, chunk 10). A policy that sees loses at least half of its margin
over blind replay when its images come from another scene:

    margin = own - blind,   sees iff own - swapped >= margin / 2.

Rates are over the n pairs (pi0lab eval's mean over tasks when n is a multiple of the task count); standard
errors are over the n pairs too (of the flags for a rate, of the per-pair differences for the drop and margin).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from env_speed import blind_replay
from pi0lab.choices import INITIAL_NOISES
from pi0lab.envs import make_env
from pi0lab.models.policy import Pi0Policy
from pi0lab.train.evaluate import evaluate_policy, evaluation_pairs


def other_init(envs, task: int, init: int, offset: int) -> int:
    """The shadow's init state k' = (k + offset) mod num_init_states(task)."""
    return (init + offset) % envs.num_init_states(task)


class SwappedImages:
    """A vector env (same reset / step contract) that returns the real env's states, rewards, flags and
    info with the images of a shadow env set to another init state of the same task and stepped by
    the same actions."""

    def __init__(self, real, shadow, offset: int):
        self.real, self.shadow, self.offset = real, shadow, offset

    def __getattr__(self, name):  # suite, num_envs, num_tasks, auto_reset, num_init_states, ...: the real env's
        return getattr(self.real, name)

    def reset(self, task_ids, init_state_ids):
        obs = self.real.reset(task_ids, init_state_ids)
        others = [other_init(self.real, t, k, self.offset) for t, k in zip(task_ids, init_state_ids)]
        return self.swap(obs, self.shadow.reset(task_ids, others))

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.real.step(actions)
        return self.swap(obs, self.shadow.step(actions)[0]), rewards, terminated, truncated, info

    @staticmethod
    def swap(obs: dict, seen: dict) -> dict:
        return {**obs, "main_images": seen["main_images"], "wrist_images": seen["wrist_images"]}

    def close(self):
        self.real.close()
        self.shadow.close()


def standard_error(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--suite", required=True)
    parser.add_argument("--episodes", type=int, default=400, help="(task, init) pairs (default: %(default)s)")
    parser.add_argument("--initial-noise", choices=INITIAL_NOISES, default="gaussian")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default: %(default)s)")
    parser.add_argument("--offset", type=int, default=1, help="shadow init k' = (k + offset) mod num_init_states")
    parser.add_argument("--num-envs", type=int, default=50)
    parser.add_argument("--chunk", type=int, default=5)
    parser.add_argument("--num-steps", type=int, default=4)
    parser.add_argument("--no-blind", action="store_true", help="skip the blind-replay reference")
    args = parser.parse_args(argv)

    policy = Pi0Policy.from_checkpoint(args.checkpoint, action_chunk=args.chunk, num_steps=args.num_steps,
                                       initial_noise=args.initial_noise)
    policy.to("cuda" if torch.cuda.is_available() else "cpu")

    def env():
        return make_env(args.suite, min(args.num_envs, args.episodes), image_size=policy.model.config.vision.image_size,
                        seed=args.seed)

    def success_flags(envs) -> np.ndarray:  # [n] in pair order
        try:
            result = evaluate_policy(policy, envs, args.episodes, args.seed, progress=False, reseed_each_round=True)
        finally:
            envs.close()
        return np.array([result.successes[task][init] for task, init in pairs], dtype=float)

    probe = env()
    pairs = evaluation_pairs(args.episodes, probe.num_tasks, probe.num_init_states)
    others = [other_init(probe, task, init, args.offset) for task, init in pairs]
    own, swapped = success_flags(probe), success_flags(SwappedImages(env(), env(), args.offset))
    drop = own.mean() - swapped.mean()

    def line(label: str, value: float, x: np.ndarray, unit: str = "%", paired: bool = False) -> None:
        print(f"  {label:48s} {100 * value:5.1f}{unit} +- {100 * standard_error(x):.1f}" + (" (paired)" * paired))

    print(f"vision check of {args.checkpoint} on {args.suite}: {len(pairs)} (task, init k) pairs, ODE "
          f"{args.num_steps} steps, chunk {args.chunk}, initial noise {args.initial_noise} (seed {args.seed}, "
          "the same in both runs)")
    line("own images", own.mean(), own)
    line(f"images of init k' = (k + {args.offset}) mod num_init_states", swapped.mean(), swapped)
    line("drop (own - swapped)", drop, own - swapped, " points", paired=True)
    out = {"pairs": pairs, "others": others, "own": own, "swapped": swapped, "blind": None}
    if args.no_blind:
        return out
    blind = blind_replay(args.suite, [t for t, _ in pairs], [k for _, k in pairs], others).astype(float)
    margin = own.mean() - blind.mean()
    sees = bool(drop >= 0.5 * margin)
    line("blind replay (expert's actions of k' in k)", blind.mean(), blind)
    line("margin over blind replay (own - blind)", margin, own - blind, " points", paired=True)
    print(f"a policy that sees loses at least half of its margin over blind replay: this one "
          f"{'does' if sees else 'does not'} (drop {100 * drop:.1f} {'>=' if sees else '<'} margin / 2 = "
          f"{50 * margin:.1f} points)" + ("; its margin is not positive, so this says nothing" if margin <= 0 else ""))
    return {**out, "blind": blind, "margin": margin, "sees": sees}


if __name__ == "__main__":
    main()
