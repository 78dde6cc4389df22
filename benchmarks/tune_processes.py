"""Wall-clock of one study's trials run one after another against several at once (`pi0lab tune --processes`).

    python benchmarks/tune_processes.py --trials 4 --iterations 3 --processes 1 2

Each row adds `--trials` trials of PPO on the tabletop (16 envs, a fresh nano, `--iterations` iterations
each, lr searched) to a new study in a temporary SQLite file, with `--processes` worker processes (1: the
trials in this process, one after another). Each worker gets cores // processes torch threads, so the rows
compare the same machine used by one trial at a time or by several.

Recorded on the 2-core machine, nothing else running (`--trials 4 --iterations 3 --processes 1 2`): 1 process
24.5 s (9.8 trials / minute), 2 processes 17.7 s (13.6 trials / minute, 1.38x; each worker's start, ~3 s of
imports, included).
"""

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

from pi0lab.cli import main as pi0lab
from placement import nano_checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = nano_checkpoint(tmp)
        print("| processes | trials | iterations each | wall-clock s | trials / minute |")
        print("|---|---|---|---|---|")
        for processes in args.processes:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = pi0lab(["tune", "tabletop_ppo_nano", f"actor.model.model_path={checkpoint}",
                               f"runner.max_epochs={args.iterations}", "env.train.total_num_envs=16",
                               "env.train.video_cfg.save_video=false", "runner.val_check_interval=-1",
                               "runner.save_interval=-1", "actor.global_batch_size=64", "actor.micro_batch_size=16",
                               "--trials", str(args.trials), "--processes", str(processes), "--pruner", "none",
                               "--study", f"p{processes}", "--storage", f"sqlite:///{tmp}/p{processes}.db",
                               "--search", "actor.optim.lr=log:1e-6:1e-4"])
            seconds = time.perf_counter() - start
            if code != 0:
                raise SystemExit(f"pi0lab tune --processes {processes} exited with {code}")
            print(f"| {processes} | {args.trials} | {args.iterations} | {seconds:.1f} | {60 * args.trials / seconds:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
