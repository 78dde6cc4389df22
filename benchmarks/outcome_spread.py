"""How much do a policy's training rollouts disagree with each other on one scene? The signal RL gets.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/outcome_spread.py CHECKPOINT --pairs 100 --repeats 8 \
        --setting one: --setting all:actor.model.openpi.noise_steps=all \
        --setting gaussian_x1:actor.model.openpi.initial_noise=gaussian

Each `--setting NAME:K=V,K=V` is a set of `actor.model.*` overrides of `tabletop_ppo_nano` (noise level,
noisy steps, std floor, initial noise x_1) that build the rollout sampler the RL update would see. For
the first `--pairs` fixed evaluation pairs (task, init) of the checkpoint's suite, every setting plays
`--repeats` stochastic rollouts of each pair (repeat r draws from a generator seeded r) and reports

    success            mean over pairs and repeats (the training success RL starts from)
    mixed pairs        the fraction of pairs whose repeats do not all agree
    mean p(1 - p)      over pairs, p = the pair's success rate over its repeats: the variance of a
                       pair's outcome, what a group advantage (GRPO) or a critic can learn from; 0.25 at most
    best of repeats    the fraction of pairs with at least one success (what steering could reach)

A sampler whose rollouts of a scene all end alike gives a policy gradient nothing to work with on
that scene, whatever the step size.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pi0lab.envs import make_env
from pi0lab.train.config import load_config
from pi0lab.train.evaluate import evaluate, evaluation_pairs
from pi0lab.train.roles import build_policy


def parse_setting(text: str) -> tuple[str, list[str]]:
    """NAME:K=V,K=V -> (NAME, [actor.model.K=V, ...]); NAME: alone is the config's own sampler."""
    name, _, body = text.partition(":")
    return name, [f"actor.model.{kv}" if not kv.startswith("actor.") else kv for kv in body.split(",") if kv]


def outcome_matrix(policy, suite: str, pairs: int, repeats: int, chunk: int, num_envs: int) -> np.ndarray:
    """[pairs, repeats] success flags of stochastic rollouts; repeat r samples from a generator seeded r."""
    flags = np.zeros((pairs, repeats))
    for r in range(repeats):
        envs = make_env(suite, min(num_envs, pairs), image_size=policy.model.config.vision.image_size, seed=r)
        generator = torch.Generator(policy.device).manual_seed(r)
        try:
            with torch.no_grad():
                result = evaluate(lambda obs: policy.rollout(obs, generator=generator)["actions"].cpu().numpy(),
                                  envs, pairs, chunk, progress=False)
            order = evaluation_pairs(pairs, envs.num_tasks, envs.num_init_states)
        finally:
            envs.close()
        flags[:, r] = [result.successes[task][init] for task, init in order]
    return flags


def spread(flags: np.ndarray) -> dict[str, float]:
    p = flags.mean(axis=1)
    return {"success": float(flags.mean()), "mixed_pairs": float(np.mean((p > 0) & (p < 1))),
            "mean_p_1_minus_p": float(np.mean(p * (1 - p))), "best_of_repeats": float(np.mean(p > 0))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--suite", default="tabletop_spatial")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--num-envs", type=int, default=50)
    parser.add_argument("--setting", action="append", required=True, metavar="NAME:K=V,...")
    parser.add_argument("--out", type=Path, default=Path("runs/outcome_spread.json"))
    args = parser.parse_args(argv)

    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    print("| setting | overrides | success | mixed pairs | mean p(1-p) | best of repeats | minutes |")
    print("|---|---|---|---|---|---|---|")
    for text in args.setting:
        name, overrides = parse_setting(text)
        cfg = load_config("tabletop_ppo_nano", [f"actor.model.model_path={args.checkpoint}", *overrides])
        policy = build_policy(cfg.actor.model)
        start = time.perf_counter()
        flags = outcome_matrix(policy, args.suite, args.pairs, args.repeats, cfg.actor.model.num_action_chunks,
                               args.num_envs)
        row = {**spread(flags), "overrides": overrides, "pairs": args.pairs, "repeats": args.repeats,
               "minutes": (time.perf_counter() - start) / 60}
        results[name] = row
        print(f"| {name} | {' '.join(overrides) or '(config)'} | {100 * row['success']:.1f}% | "
              f"{100 * row['mixed_pairs']:.0f}% | {row['mean_p_1_minus_p']:.3f} | {100 * row['best_of_repeats']:.0f}% "
              f"| {row['minutes']:.1f} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
