"""Learning benchmark: few-shot SFT, then PPO, GRPO and DSRL from the same SFT checkpoint, per tabletop suite.

    python benchmarks/learning.py                        # all four suites (hours on a 2-core CPU)
    python benchmarks/learning.py runner.max_epochs=20 --suites tabletop_goal   # overrides before --suites
    python benchmarks/learning.py --table                # only print the table of the results so far
    python benchmarks/learning.py --base runs/tabletop_pretrain_nano/model   # SFT from the pretrained base, its tower fixed
    python benchmarks/learning.py --privileged-state --out runs/benchmark-learning-state   # the state-based control arm
    python benchmarks/learning.py --stages ppo dsrl      # a subset of the RL stages

Each suite's numbers go to <out>/<suite>/result.json, so suites can run as separate processes
(one per core, OMP_NUM_THREADS=1) into the same --out. Prints the reference recipe's table with
every suite found there, plus env steps and wall-clock per stage. Success is the ODE sampler's on
the same fixed (task, init) pairs for every row (`env.eval.num_episodes` of them), started from
x_1 = 0 (the tabletop configs' `actor.model.openpi.initial_noise: zero`: deterministic scores; DSRL
starts it from its noise policy's mean). `--privileged-state` runs the control arm: the things' true poses appended to the
robot state in demos, SFT, RL and evaluation (`env.*.privileged_state`); it is a control, not pi0.
"""

import argparse
import json
import time
from pathlib import Path

from pi0lab.envs.demos import read_demo_index, write_demos
from pi0lab.train.config import load_config
from pi0lab.train.evaluate import results_table
from pi0lab.train.sft import run_sft
from pi0lab.train.stages import train_and_evaluate

SUITES = ["tabletop_spatial", "tabletop_object", "tabletop_goal", "tabletop_long"]

RL_STAGES = {"ppo": ("tabletop_ppo_nano", "PPO"), "grpo": ("tabletop_grpo_nano", "GRPO"),
             "dsrl": ("tabletop_dsrl_nano", "DSRL")}


def rl_stage(config: str, suite: str, checkpoint: Path, out: Path, overrides: list[str]) -> dict:
    result = train_and_evaluate(config, [f"env.train.task_suite_name={suite}", f"actor.model.model_path={checkpoint}",
                                         f"runner.logger.log_path={out}", "runner.val_check_interval=-1", *overrides])
    return {"success": result.evaluation.success_rate, "env_steps": result.env_steps, "episodes": result.episodes,
            "minutes": result.minutes,
            "per_task": result.evaluation.per_task}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", nargs="+", default=SUITES, choices=SUITES)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark-learning"))
    parser.add_argument("--table", action="store_true", help="print the table of the results in --out and stop")
    parser.add_argument("--base", type=Path, default=None,
                        help="SFT starts from this base (`pi0lab pretrain tabletop_pretrain_nano`), not random weights, "
                             "and keeps its vision tower fixed (sft.freeze_vision)")
    parser.add_argument("--stages", nargs="+", default=list(RL_STAGES), choices=list(RL_STAGES),
                        help="RL stages to run from the SFT checkpoint (default: all)")
    parser.add_argument("--privileged-state", action="store_true",
                        help="the state-based control arm: things' poses in the state (not pi0)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every config")
    args = parser.parse_args()
    for suite in [] if args.table else args.suites:
        out = args.out / suite
        shared = [f"env.train.task_suite_name={suite}",
                  f"env.train.privileged_state={args.privileged_state}", f"env.eval.privileged_state={args.privileged_state}",
                  *args.overrides]
        sft_cfg = load_config("tabletop_sft_nano", [f"runner.logger.log_path={out}/sft", f"sft.demo_path={out}/demos",
                                                    "sft.eval_interval=-1", f"sft.init_path={args.base or 'null'}",
                                                    f"sft.freeze_vision={args.base is not None}",
                                                    *shared])
        start = time.perf_counter()
        write_demos(suite, sft_cfg.sft.demo_path, episodes_per_task=sft_cfg.sft.demos_per_task,
                    noise_std=sft_cfg.sft.demo_action_noise, privileged_state=args.privileged_state)
        demos = read_demo_index(sft_cfg.sft.demo_path)["episodes"]
        sft = run_sft(sft_cfg)
        result = {
            "sft": {"success": sft.success_rate, "env_steps": sum(e["length"] for e in demos), "episodes": len(demos),
                    "minutes": (time.perf_counter() - start) / 60,
                    "per_task": sft.evaluations[max(sft.evaluations)].per_task},
            **{stage: rl_stage(config, suite, sft.checkpoint, out / stage, shared[1:])
               for stage, (config, _) in RL_STAGES.items() if stage in args.stages},
        }
        (out / "result.json").write_text(json.dumps(result, indent=1))
        print(json.dumps({suite: {stage: round(result[stage]["success"], 3) for stage in result}}), flush=True)
    print_table(args.out)


def print_table(out: Path) -> None:
    """The reference-style success table and the cost per stage of every suite with a result in `out`."""
    results = {suite: json.loads((out / suite / "result.json").read_text())
               for suite in SUITES if (out / suite / "result.json").is_file()}
    if not results:
        raise SystemExit(f"no results in {out}: run the benchmark first")
    labels = {"sft": "pi0 nano, few-shot SFT", **{stage: label for stage, (_, label) in RL_STAGES.items()}}
    stages = [stage for stage in labels if any(stage in r for r in results.values())]
    rows = {labels[stage]: {suite: r[stage]["success"] for suite, r in results.items() if stage in r} for stage in stages}
    print(results_table(rows, list(results)))
    print("\n| Stage | " + " | ".join(results) + " |\n|---|" + "---|" * len(results))
    for stage in stages:
        cells = [f"{r[stage]['env_steps']:,} steps, {r[stage].get('episodes', '?')} episodes, "
                 f"{r[stage]['minutes']:.0f} min" if stage in r else "-" for r in results.values()]
        print(f"| {stage} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
