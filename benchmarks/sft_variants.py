"""Few-shot SFT variants side by side: what moves held-out success (augmentation, patch size, demos, DART, precision).

    python benchmarks/sft_variants.py --out runs/sft-variants --steps 6000          # every variant, in parallel
    python benchmarks/sft_variants.py --variants spatial spatial_aug --jobs 2 --steps 3000
    python benchmarks/sft_variants.py --out runs/sft-variants --table                 # results so far

Each variant is `pi0lab sft tabletop_sft_nano` with a few overrides, run as its own process (on the GPU
when there is one) with evaluations on the held-out (task, init) pairs every `--eval-interval` steps,
written to <out>/<variant>/metrics.jsonl as they happen, so a stopped sweep keeps what it measured.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pi0lab.envs.demos import write_demos
from pi0lab.train.loggers import read_metrics

DART_NOISE = 0.1  # std of the executed action noise for the DART demos (dims 0-5, actions in [-1, 1])
MAX_DEMOS = 20  # per task: every variant's demos are the first k of one recording of this many

# name -> (suite, demo noise, overrides)
VARIANTS = {
    "spatial": ("tabletop_spatial", 0.0, []),
    "spatial_aug": ("tabletop_spatial", 0.0, ["sft.augment=true"]),
    "spatial_aug_patch8": ("tabletop_spatial", 0.0, ["sft.augment=true", "sft.model.patch_size=8"]),
    "spatial_dart": ("tabletop_spatial", DART_NOISE, []),
    "spatial_aug_dart": ("tabletop_spatial", DART_NOISE, ["sft.augment=true"]),
    "spatial_aug_20demos": ("tabletop_spatial", 0.0, ["sft.augment=true", "sft.demos_per_task=20"]),
    "spatial_aug_bf16": ("tabletop_spatial", 0.0, ["sft.augment=true", "actor.model.precision=bf16"]),
    "object_aug": ("tabletop_object", 0.0, ["sft.augment=true"]),
    "goal": ("tabletop_goal", 0.0, []),
    "goal_aug": ("tabletop_goal", 0.0, ["sft.augment=true"]),
}


def demo_path(out: Path, suite: str, noise: float) -> Path:
    """Write (once) MAX_DEMOS demos per task of a suite, DART-style when noise > 0."""
    path = out / "demos" / (suite if noise == 0 else f"{suite}_dart{noise:g}")
    if not (path / "index.json").exists():
        write_demos(suite, path, episodes_per_task=MAX_DEMOS, noise_std=noise)
    return path


def launch(name: str, out: Path, steps: int, eval_interval: int, threads: int) -> subprocess.Popen:
    suite, noise, overrides = VARIANTS[name]
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    args = ["tabletop_sft_nano", f"env.train.task_suite_name={suite}", f"sft.demo_path={demo_path(out, suite, noise)}",
            f"sft.num_steps={steps}", f"sft.eval_interval={eval_interval}", f"runner.logger.log_path={run_dir}",
            "runner.logger.logger_backends=[]", *overrides]
    code = "import sys; from pi0lab.cli import main; sys.argv = ['pi0lab', 'sft', *sys.argv[1:]]; sys.exit(main())"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(run_dir / "stdout.log", "w") as log:  # the child keeps its own handle
        return subprocess.Popen([sys.executable, "-c", code, *args], stdout=log, stderr=subprocess.STDOUT, env=env)


def table(out: Path) -> str:
    """Markdown: held-out success per variant at every evaluation, with the run's wall-clock."""
    rows, steps = {}, set()
    for name in VARIANTS:
        if not (out / name / "metrics.jsonl").exists():
            continue
        evals = {r["step"]: r["eval/success"] for r in read_metrics(out / name) if r.get("eval/success") is not None}
        info = out / name / "run.json"
        minutes = json.loads(info.read_text())["minutes"] if info.exists() else None
        rows[name] = (evals, minutes)
        steps |= set(evals)
    steps = sorted(steps)
    header = ["variant", *(f"step {s}" for s in steps), "minutes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, (evals, minutes) in rows.items():
        cells = [name, *(f"{evals[s]:.0%}" if s in evals else "-" for s in steps),
                 "-" if minutes is None else f"{minutes:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("runs/sft-variants"))
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--eval-interval", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=len(VARIANTS), help="variants run at once")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per variant")
    parser.add_argument("--table", action="store_true", help="print the table of the results in --out and stop")
    args = parser.parse_args()
    pending, running = list([] if args.table else args.variants), {}
    for name in pending:  # every demo set before any training starts
        demo_path(args.out, *VARIANTS[name][:2])
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            running[name] = (launch(name, args.out, args.steps, args.eval_interval, args.threads), time.perf_counter())
        time.sleep(2)
        for name, (process, start) in list(running.items()):
            if process.poll() is not None:
                minutes = (time.perf_counter() - start) / 60
                (args.out / name / "run.json").write_text(json.dumps({"returncode": process.returncode, "minutes": minutes}))
                print(f"{name}: exit {process.returncode} after {minutes:.1f} min", flush=True)
                del running[name]
    print(table(args.out))


if __name__ == "__main__":
    main()
