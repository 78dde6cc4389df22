"""What an RL run bought, and when: each evaluation with the env steps and training minutes spent to reach it.

Reads the `metrics.jsonl` of finished (or running) `pi0lab train` runs and prints one markdown row per run:
the evaluation success at each `runner.val_check_interval`, its lift over `--base` (the start's own score,
e.g. the SFT checkpoint's from x_1 = 0 on the same pairs), and the env steps and training minutes (the sum
of `time/iteration`: collection and updates, evaluation left out) up to that iteration; the mean seconds
of an iteration after the first `--skip` (collection + updates: the speed of a setting); then the mean
training success (in %; or of any logged `--metric`) over each block of `--block` iterations.

    python benchmarks/rl_curve.py runs/dsrl_a runs/dsrl_b --base 42.5
    python benchmarks/rl_curve.py runs/dsrl_a --metric train/sac/q_mean --block 20
"""

import argparse
from pathlib import Path

from pi0lab.train.loggers import read_metrics


SUCCESS = "env/success_once"


def curve(run: Path, metric: str = SUCCESS) -> tuple[list[tuple[int, float, float, float]], list[float], list[float]]:
    """-> evaluations as (iteration, success %, env steps so far, training minutes so far), `metric` per
    iteration that logged it (training success in %), and seconds per iteration."""
    evaluations, training, iteration_s, steps, seconds = [], [], [], 0.0, 0.0
    for record in read_metrics(run):
        steps += record.get("env/steps", 0.0)
        seconds += record.get("time/iteration", 0.0)
        if "time/iteration" in record:
            iteration_s.append(record["time/iteration"])
        if metric in record:
            training.append(record[metric] * (100 if metric == SUCCESS else 1))
        if "eval/success" in record:
            evaluations.append((record["step"], 100 * record["eval/success"], steps, seconds / 60))
    return evaluations, training, iteration_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (runner.logger.log_path)")
    parser.add_argument("--base", type=float, default=None, help="the start's success in %% (for the lift)")
    parser.add_argument("--block", type=int, default=50, help="iterations per training-success mean")
    parser.add_argument("--metric", default=SUCCESS, help="the logged metric averaged per block (default: %(default)s)")
    parser.add_argument("--skip", type=int, default=10, help="first iterations left out of the seconds per iteration")
    args = parser.parse_args()
    per_block = "training success" if args.metric == SUCCESS else args.metric
    print("| run | evaluations: iteration: success (lift), env steps, training minutes | s / iteration "
          f"| {per_block} per block of {args.block} |")
    print("|---|---|---|---|")
    for run in args.runs:
        evaluations, training, iteration_s = curve(run, args.metric)
        later = iteration_s[args.skip :] or iteration_s
        cells = []
        for iteration, success, steps, minutes in evaluations:
            lift = "" if args.base is None else f" ({success - args.base:+.1f})"
            cells.append(f"{iteration}: {success:.1f}%{lift}, {steps / 1e3:.0f}k, {minutes:.1f} min")
        blocks = [training[i : i + args.block] for i in range(0, len(training), args.block)]
        means = " / ".join(f"{sum(b) / len(b):.{1 if args.metric == SUCCESS else 2}f}" for b in blocks)
        speed = f"{sum(later) / len(later):.2f}" if later else "-"
        print(f"| {run.name} | {'; '.join(cells) or '-'} | {speed} | {means} |")


if __name__ == "__main__":
    main()
