"""The main job (`make demo`): expert demos -> few-shot SFT -> PPO and DSRL -> before / after table and report.

Everything runs on the CPU with the nano pi0 on a built-in tabletop suite:

    1. write scripted-expert demos (pi0lab.envs.demos)
    2. few-shot SFT from those demos (config tabletop_sft_nano), evaluated with the ODE sampler
    3. from the SFT checkpoint, side by side (one process and one torch thread each):
       PPO (config tabletop_ppo_nano: the policy's weights move) and
       DSRL (config tabletop_dsrl_nano: pi0 stays frozen, SAC learns its initial noise)
    4. print the results table with the paired standard error of each difference, write
       build/demo_report.html (curves, videos) and tensorboard logs

The RL stages run what fits the main job's 20 minutes beside a 12-minute SFT: PPO's shipped 30
iterations, and DSRL shortened to 100 iterations of 50 SAC updates in its own process (`DEMO_BUDGET`,
~3 minutes on one thread). The shipped DSRL recipe, 288 iterations of 32 envs and 200 updates with the
updates in a second process, is what lifts (+18.2 points in docs/learning.md) and takes 9-12 minutes of both cores:
`OMP_NUM_THREADS=1 pi0lab train tabletop_dsrl_nano actor.model.model_path=<the demo's sft/model>`.

Every row uses one evaluation protocol: the same fixed (task, init) pairs and the ODE sampler started
from x_1 = 0 (the tabletop configs' `actor.model.openpi.initial_noise: zero`: deterministic scores); DSRL's row
starts it from its noise policy's mean instead. PPO's rollouts start from x_1 = 0 too, and their
randomness is all in the noisy denoise steps it credits.

Extra `key=value` arguments override every config (e.g. `runner.max_epochs=10`).
"""

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pi0lab.envs.demos import write_demos
from pi0lab.lab import metric_figure, success_figure, write_report
from pi0lab.train.config import load_config
from pi0lab.train.evaluate import paired_difference, results_table
from pi0lab.train.loggers import read_metrics
from pi0lab.train.sft import run_sft
from pi0lab.train.stages import train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
SFT_CURVES = ["sft/loss", "sft/grad_norm", "eval/success"]
PPO_CURVES = ["env/success_once", "actor/loss", "actor/value_loss", "actor/approx_kl",
              "actor/pg_clipfrac", "actor/explained_variance", "rollout/advantages_mean", "env/episode_len"]
DSRL_CURVES = ["env/success_once", "train/sac/critic_loss", "train/sac/actor_loss", "train/sac/alpha",
               "train/sac/q_mean", "env/episode_len"]
RL_STAGES = {"PPO": "tabletop_ppo_nano", "DSRL": "tabletop_dsrl_nano"}
DEMO_BUDGET = {"PPO": [], "DSRL": ["runner.max_epochs=100", "algorithm.sac.updates_per_iteration=50",
                                   "env.train.total_num_envs=16", "algorithm.sac.update_during_collection=false"]}  # PPO has the other core


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="tabletop_spatial", help="tabletop suite (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: runs/demo-<time>)")
    parser.add_argument("--report", type=Path, default=ROOT / "build" / "demo_report.html")
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every config")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "runs" / time.strftime("demo-%Y%m%d-%H%M%S")
    start = time.perf_counter()

    shared = [f"env.train.task_suite_name={args.suite}", *args.overrides]
    sft_cfg = load_config("tabletop_sft_nano", [f"runner.logger.log_path={out}/sft", f"sft.demo_path={out}/demos",
                                                "sft.eval_interval=-1", *shared])
    print(f"[1/4] expert demos of {args.suite} -> {out}/demos")
    write_demos(args.suite, sft_cfg.sft.demo_path, episodes_per_task=sft_cfg.sft.demos_per_task,
                noise_std=sft_cfg.sft.demo_action_noise)

    print("[2/4] few-shot SFT")
    sft = run_sft(sft_cfg)
    sft_eval = sft.evaluations[max(sft.evaluations)]

    print("[3/4] PPO and DSRL from the SFT checkpoint, side by side")
    stage_overrides = {name: [f"runner.logger.log_path={out}/{name.lower()}", f"actor.model.model_path={sft.checkpoint}",
                              "runner.val_check_interval=-1", *DEMO_BUDGET[name], *shared] for name in RL_STAGES}
    with ProcessPoolExecutor(len(RL_STAGES), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(train_and_evaluate, RL_STAGES[name], overrides, f"[{name}] ", 1)
                   for name, overrides in stage_overrides.items()}
        stages = {name: future.result() for name, future in futures.items()}
    rl = {name: stage.evaluation for name, stage in stages.items()}

    print("[4/4] results")
    rows = {"pi0 nano, few-shot SFT": {args.suite: sft.success_rate}}
    rows.update({name: {args.suite: result.success_rate} for name, result in rl.items()})
    table = results_table(rows, [args.suite])
    lines = []
    for name, result in rl.items():
        diff, se = paired_difference(sft_eval, result)
        lines.append(f"{name} - SFT: {100 * diff:+.1f} points (paired standard error {100 * se:.1f}) after "
                     f"{stages[name].env_steps:,} env steps in {stages[name].episodes:,} training episodes, "
                     f"{stages[name].minutes:.1f} min")
    minutes = (time.perf_counter() - start) / 60
    print(f"\n{table}\n\n" + "\n".join(lines) + f"\non the same {sft_eval.num_episodes} (task, init) pairs; "
          f"{minutes:.1f} minutes in all")
    per_task = {"SFT": {f"task {t}": r for t, r in sft_eval.per_task.items()}}
    per_task.update({name: {f"task {t}": r for t, r in result.per_task.items()} for name, result in rl.items()})
    videos = sorted((out / "ppo" / "video").rglob("*.mp4"))
    report = write_report(args.report, f"pi0lab demo: {args.suite}", [
        ("Success (ODE sampler, fixed task / init pairs)", [table, "; ".join(lines),
                                                            success_figure(per_task, "Success per task")]),
        ("Few-shot SFT", metric_figure(read_metrics(out / "sft"), SFT_CURVES)),
        ("PPO", metric_figure(read_metrics(out / "ppo"), PPO_CURVES)),
        ("DSRL", metric_figure(read_metrics(out / "dsrl"), DSRL_CURVES)),
        ("PPO rollouts (first and last recorded)", [v.read_bytes() for v in videos[:1] + videos[-1:]]),
    ])
    print(f"report: {report}\ntensorboard --logdir {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
