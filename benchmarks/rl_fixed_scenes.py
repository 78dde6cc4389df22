"""Does RL improve the scenes it practises? RL on a few fixed (task, init) pairs, training success per window.

    python benchmarks/rl_fixed_scenes.py CHECKPOINT                                   # GRPO, 5 scenes, 100 iterations
    python benchmarks/rl_fixed_scenes.py CHECKPOINT actor.model.openpi.initial_noise=zero
    python benchmarks/rl_fixed_scenes.py CHECKPOINT --config tabletop_ppo_nano --iterations 60

The trainer runs as usual except that every iteration's envs start from the same scenes: task k at
init state 3k mod 40 for k < --scenes, each repeated over the envs (8 times for 40 envs and 5
scenes), so a scene gets the practice that a full suite spreads over its 500. Prints the mean
training (flow-SDE) success of every --window iterations.
"""

import argparse

import numpy as np

from pi0lab.train.config import load_config
from pi0lab.train.trainer import RLTrainer


def fixed_reset(env_role, scenes: list[tuple[int, int]]):
    """A reset for an EnvRole that gives group g the scene g mod len(scenes), every iteration."""
    groups = env_role.num_envs // env_role.group_size
    tasks = np.repeat([scenes[g % len(scenes)][0] for g in range(groups)], env_role.group_size)
    inits = np.repeat([scenes[g % len(scenes)][1] for g in range(groups)], env_role.group_size)
    return lambda: env_role.envs.reset(tasks, inits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="the SFT checkpoint RL starts from")
    parser.add_argument("--config", default="tabletop_grpo_nano")
    parser.add_argument("--scenes", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--out", default="runs/rl-fixed-scenes")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    args = parser.parse_intermixed_args()
    cfg = load_config(args.config, [
        f"actor.model.model_path={args.checkpoint}", f"runner.max_epochs={args.iterations}",
        f"runner.logger.log_path={args.out}", "runner.val_check_interval=-1", "runner.save_interval=-1",
        "env.train.video_cfg.save_video=false", *args.overrides])
    scenes = [(task, 3 * task % 40) for task in range(args.scenes)]
    trainer = RLTrainer(cfg)
    trainer.env.reset = fixed_reset(trainer.env, scenes)
    success = []
    try:
        for event in trainer.iterate():
            success.append(event.metrics["env/success_once"])
            if len(success) % args.window == 0:
                print(f"iterations {len(success) - args.window + 1}-{len(success)}: training success "
                      f"{np.mean(success[-args.window:]):.1%}", flush=True)
    finally:
        trainer.close()


if __name__ == "__main__":
    main()
