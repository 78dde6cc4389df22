"""Step-size study: how each update knob moves the policy (approx_kl, clipfrac, the critic, success).

    python benchmarks/step_size.py CHECKPOINT --variants recipe mean_clip    # one process per core:
    OMP_NUM_THREADS=1 python benchmarks/step_size.py CHECKPOINT --variants recipe &
    OMP_NUM_THREADS=1 python benchmarks/step_size.py CHECKPOINT --variants mean_clip &
    python benchmarks/step_size.py --table                                    # the table of what ran so far

Every variant is `pi0lab train <config> actor.model.model_path=CHECKPOINT <its overrides> <extra>` for
--iterations iterations on the checkpoint's suite, rollouts and evaluation from x_1 = 0 (the
tabletop configs' `actor.model.openpi.initial_noise: zero`, so the ODE evaluation is deterministic and
the SFT start is scored the same way), then scored on the fixed evaluation pairs (`env.eval.num_episodes`, 400). Each
variant writes <out>/<variant>/result.json; `--table` prints them all with the mean / max approx_kl
per iteration, clipfrac, the critic's explained variance over the last half, optimiser steps per
iteration, the training success of the first and last 5 iterations, and the evaluation score.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pi0lab.train.config import load_config
from pi0lab.train.trainer import RLTrainer

# The tabletop PPO settings before the study (40 episodes an iteration, 4 epochs): every variant but "wide" starts here.
EARLIER = ["env.train.total_num_envs=40", "actor.optim.lr=1e-5", "algorithm.update_epoch=4", "actor.global_batch_size=256",
           "actor.micro_batch_size=64", "actor.optim.lr_warmup_steps=0"]
MEAN = ["actor.model.openpi.logprob_reduction=mean", "algorithm.clip_ratio_low=0.02", "algorithm.clip_ratio_high=0.02"]
VARIANTS = {  # name -> (config, overrides)
    "recipe": ("tabletop_ppo_nano", EARLIER),
    "lr1e-4": ("tabletop_ppo_nano", [*EARLIER, "actor.optim.lr=1e-4"]),
    "mean": ("tabletop_ppo_nano", [*EARLIER, *MEAN, "actor.optim.lr=1e-4", "algorithm.target_kl=null"]),
    "mean_floor": ("tabletop_ppo_nano", [*EARLIER, *MEAN, "actor.optim.lr=1e-4", "algorithm.target_kl=null",
                                         "actor.model.openpi.noise_std_min=0.2"]),
    "first": ("tabletop_ppo_nano", [*EARLIER, "actor.model.openpi.noise_steps=first"]),
    # 3x the episodes, half the epochs, lr 2e-5 with warm-up: the shipped tabletop_ppo_nano since this study
    "wide": ("tabletop_ppo_nano", ["env.train.total_num_envs=120", "actor.optim.lr=2e-5", "algorithm.update_epoch=2",
                                   "actor.global_batch_size=512", "actor.micro_batch_size=128",
                                   "actor.optim.lr_warmup_steps=10"]),
    "grpo": ("tabletop_grpo_nano", []),
    # the shipped tabletop_ppo_nano ("wide") with a 2.5x larger step
    "wide_lr5e-5": ("tabletop_ppo_nano", ["actor.optim.lr=5e-5"]),
    # wide_lr5e-5's step with 4x the episodes and batch: less gradient noise per step at the same lr
    "big_batch": ("tabletop_ppo_nano", ["env.train.total_num_envs=480", "actor.global_batch_size=2048",
                                        "actor.optim.lr=5e-5"]),
    "big_batch_lr1e-4": ("tabletop_ppo_nano", ["env.train.total_num_envs=480", "actor.global_batch_size=2048",
                                               "actor.optim.lr=1e-4"]),
    "big_batch_lr2e-4": ("tabletop_ppo_nano", ["env.train.total_num_envs=480", "actor.global_batch_size=2048",
                                               "actor.optim.lr=2e-4"]),
    # GRPO at the shipped PPO's budget: 120 envs = 15 scenes x 8, the same batch, lr and warm-up
    "grpo_wide": ("tabletop_grpo_nano", ["env.train.total_num_envs=120", "actor.optim.lr=2e-5",
                                         "actor.global_batch_size=512", "actor.micro_batch_size=128",
                                         "actor.optim.lr_warmup_steps=10"]),
}


def run_variant(name: str, checkpoint: str, iterations: int, out: Path, extra: list[str]) -> dict:
    config, overrides = VARIANTS[name]
    command = [config, f"actor.model.model_path={checkpoint}", *overrides, *extra]
    cfg = load_config(config, command[1:] + [f"runner.max_epochs={iterations}", f"runner.logger.log_path={out / name}",
                                             "runner.val_check_interval=-1", "runner.save_interval=-1"])
    start = time.perf_counter()
    trainer = RLTrainer(cfg)
    try:
        rows = [event.metrics for event in trainer.iterate()]
        score = trainer.evaluate()
    finally:
        trainer.close()
    series = {key: [row.get(key, float("nan")) for row in rows] for key in (
        "actor/approx_kl", "actor/pg_clipfrac", "actor/explained_variance", "actor/optimizer_steps", "env/success_once")}
    result = {"command": "pi0lab train " + " ".join(command), "iterations": iterations,
              "minutes": (time.perf_counter() - start) / 60, "eval_success": score.success_rate,
              "eval_episodes": score.num_episodes, "series": series}
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / name / "result.json").write_text(json.dumps(result, indent=1))
    return result


def print_table(out: Path) -> None:
    results = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))}
    if not results:
        raise SystemExit(f"no results in {out}: run some variants first")
    print("| variant | approx_kl mean / max | clipfrac | explained var. (last half) | optimiser steps / iter "
          "| training success first 5 / last 5 | eval success | minutes |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        s = r["series"]
        half = len(s["actor/explained_variance"]) // 2
        ev = np.nanmean(s["actor/explained_variance"][half:]) if half else float("nan")
        print(f"| {name} | {np.nanmean(s['actor/approx_kl']):.4f} / {np.nanmax(s['actor/approx_kl']):.4f} "
              f"| {np.nanmean(s['actor/pg_clipfrac']):.3f} | {ev:.2f} | {np.nanmean(s['actor/optimizer_steps']):.1f} "
              f"| {np.mean(s['env/success_once'][:5]):.1%} / {np.mean(s['env/success_once'][-5:]):.1%} "
              f"| {r['eval_success']:.1%} ({r['eval_episodes']}) | {r['minutes']:.1f} |")
    print()
    for name, r in results.items():
        print(f"- {name}: `{r['command']} runner.max_epochs={r['iterations']}`")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", nargs="?", help="the SFT checkpoint RL starts from")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark-step-size"))
    parser.add_argument("--table", action="store_true", help="print the table of the results in --out and stop")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every variant")
    args = parser.parse_intermixed_args()
    if not args.table:
        if args.checkpoint is None:
            parser.error("CHECKPOINT is required unless --table")
        for name in args.variants:
            r = run_variant(name, args.checkpoint, args.iterations, args.out, args.overrides)
            print(json.dumps({name: round(r["eval_success"], 3), "minutes": round(r["minutes"], 1)}), flush=True)
    print_table(args.out)


if __name__ == "__main__":
    main()
