"""The dashboard's cost: widget updates of the TuningPanel (and of TrainingSession's live curves) per training iteration.

    python benchmarks/dashboard_overhead.py [--trials 2] [--iterations 5] [--envs 40] [key=value ...]

Runs a real study in a TuningPanel (PPO trials of tabletop_ppo_nano from a freshly initialised CPU-sized
nano, as benchmarks/rl_throughput.py does) and times everything the panel does when an iteration ends
(`TuningPanel._on_update`: the two traces extended in place, the status line, the trial table) against the
iteration itself (`time/iteration`). The same iterations' metrics are then replayed into the six-curve
`LiveCurves` of TrainingSession. Without a browser attached the widget messages are serialised but not sent,
so a live notebook adds the kernel's socket write (small next to serialisation) on top. Target: <= 2%.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from pi0lab.lab import LiveCurves, TuningPanel
from pi0lab.models import Pi0
from pi0lab.models.checkpoint import save_pi0
from pi0lab.models.normalize import NormStats
from pi0lab.train.config import load_config
from pi0lab.train.sft import fresh_model_config

CURVES = ["env/success_once", "actor/loss", "actor/value_loss", "actor/approx_kl", "actor/pg_clipfrac", "actor/grad_norm"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--envs", type=int, default=40)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = Pi0(fresh_model_config(load_config("tabletop_sft_nano")))
        model.norm_stats = {"state": NormStats(np.zeros(8), np.ones(8)), "actions": NormStats(np.zeros(7), np.ones(7))}
        checkpoint = save_pi0(model, Path(tmp) / "model")
        fixed = [f"actor.model.model_path={checkpoint}", f"runner.max_epochs={args.iterations}",
                 f"env.train.total_num_envs={args.envs}", "runner.val_check_interval=-1", "runner.save_interval=-1",
                 "env.train.video_cfg.save_video=false", "runner.logger.logger_backends=[]", *args.overrides]
        panel = TuningPanel("tabletop_ppo_nano", fixed, keys=["actor.optim.lr"], searched=["actor.optim.lr"],
                            study="overhead", storage=f"sqlite:///{tmp}/overhead.db", trials=args.trials,
                            pruner="none", run_root=f"{tmp}/trials")
        on_update, panel_seconds, iterations = panel._on_update, [], []

        def timed(update):
            start = time.perf_counter()
            on_update(update)
            if update.state == "RUNNING" and update.iteration > 0:
                panel_seconds.append(time.perf_counter() - start)
                iterations.append(update.metrics)

        panel._on_update = timed
        panel.start()
        panel.wait()
        curves, curve_seconds = LiveCurves(CURVES), []
        for step, metrics in enumerate(iterations, 1):
            start = time.perf_counter()
            curves.update(step, metrics)
            curve_seconds.append(time.perf_counter() - start)
    iteration_s = float(np.mean([m["time/iteration"] for m in iterations]))
    print(f"{len(iterations)} iterations ({args.trials} trials x {args.iterations}, {args.envs} envs), "
          f"torch threads {torch.get_num_threads()}: mean iteration {iteration_s:.2f} s")
    for name, seconds in (("TuningPanel update", panel_seconds), ("TrainingSession curves", curve_seconds)):
        mean, worst = float(np.mean(seconds)), float(np.max(seconds))
        print(f"{name}: mean {1e3 * mean:.1f} ms, max {1e3 * worst:.1f} ms per iteration = "
              f"{100 * mean / iteration_s:.2f}% of the iteration time")


if __name__ == "__main__":
    main()
