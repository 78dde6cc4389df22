"""The main job (`make demo`): expert demos -> few-shot SFT -> PPO -> before / after table and report.

Everything runs on the CPU with the nano pi0 on a built-in tabletop suite:

    1. write scripted-expert demos (pi0lab.envs.demos)
    2. few-shot SFT from those demos (config tabletop_sft_nano), evaluated with the ODE sampler
    3. PPO from the SFT checkpoint (config tabletop_ppo_nano), evaluated the same way
    4. print the results table, write build/demo_report.html (curves, videos) and tensorboard logs

Extra `key=value` arguments override both configs (e.g. `runner.max_epochs=10`).
"""

import argparse
import sys
import time
from pathlib import Path

from pi0lab.envs.demos import write_demos
from pi0lab.lab import metric_figure, success_figure, write_report
from pi0lab.train.config import load_config
from pi0lab.train.evaluate import results_table
from pi0lab.train.loggers import read_metrics
from pi0lab.train.sft import run_sft
from pi0lab.train.trainer import RLTrainer

ROOT = Path(__file__).resolve().parents[1]
SFT_CURVES = ["sft/loss", "sft/grad_norm", "eval/success"]
RL_CURVES = ["env/success_once", "actor/loss", "actor/value_loss", "actor/approx_kl",
             "actor/pg_clipfrac", "actor/grad_norm", "rollout/advantages_mean", "env/episode_len"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="tabletop_spatial", help="tabletop suite (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: runs/demo-<time>)")
    parser.add_argument("--report", type=Path, default=ROOT / "build" / "demo_report.html")
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to both configs")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "runs" / time.strftime("demo-%Y%m%d-%H%M%S")
    start = time.perf_counter()

    shared = [f"env.train.task_suite_name={args.suite}", *args.overrides]
    sft_cfg = load_config("tabletop_sft_nano", [f"runner.logger.log_path={out}/sft", f"sft.demo_path={out}/demos",
                                                "sft.eval_interval=-1", *shared])
    print(f"[1/3] expert demos of {args.suite} -> {out}/demos")
    write_demos(args.suite, sft_cfg.sft.demo_path, episodes_per_task=sft_cfg.sft.demos_per_task,
                noise_std=sft_cfg.sft.demo_action_noise)

    print("[2/3] few-shot SFT")
    sft = run_sft(sft_cfg)

    print("[3/3] PPO from the SFT checkpoint")
    ppo_cfg = load_config("tabletop_ppo_nano", [f"runner.logger.log_path={out}/ppo", f"actor.model.model_path={sft.checkpoint}",
                                                "runner.val_check_interval=-1", *shared])
    trainer = RLTrainer(ppo_cfg)
    try:
        trainer.run()
        ppo = trainer.evaluate()
    finally:
        trainer.close()

    rates = {"pi0 nano, few-shot SFT": {args.suite: sft.success_rate}, "PPO": {args.suite: ppo.success_rate}}
    table = results_table(rates, [args.suite])
    minutes = (time.perf_counter() - start) / 60
    print(f"\n{table}\n\n{ppo.num_episodes} evaluation episodes per row; {minutes:.1f} minutes in all")
    per_task = {"SFT": {f"task {t}": r for t, r in sft.evaluations[max(sft.evaluations)].per_task.items()},
                "PPO": {f"task {t}": r for t, r in ppo.per_task.items()}}
    videos = sorted((out / "ppo" / "video").rglob("*.mp4"))
    report = write_report(args.report, f"pi0lab demo: {args.suite}", [
        ("Success (ODE sampler, fixed task / init pairs)", [table, success_figure(per_task, "Success per task")]),
        ("Few-shot SFT", metric_figure(read_metrics(out / "sft"), SFT_CURVES)),
        ("PPO", metric_figure(read_metrics(out / "ppo"), RL_CURVES)),
        ("Rollouts (first and last recorded)", [v.read_bytes() for v in videos[:1] + videos[-1:]]),
    ])
    print(f"report: {report}\ntensorboard --logdir {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
