"""Learning benchmark: few-shot SFT, then PPO, GRPO and DSRL from the same SFT checkpoint, per tabletop suite.

    python benchmarks/learning.py                        # all four suites (hours on a 2-core CPU)
    python benchmarks/learning.py runner.max_epochs=20 --suites tabletop_goal   # overrides before --suites
    python benchmarks/learning.py --table                # only print the table of the results so far
    python benchmarks/learning.py --base runs/tabletop_pretrain_nano/model   # SFT from the pretrained base, its tower fixed
    python benchmarks/learning.py --privileged-state --out runs/benchmark-learning-state   # the state-based control arm
    python benchmarks/learning.py --stages ppo dsrl      # a subset of the RL stages

Each suite's numbers go to <out>/<suite>/result.json after every stage, so suites can run as separate
processes (one per core, OMP_NUM_THREADS=1) into the same --out, and a rerun goes on from the stages done. Prints the reference recipe's table with
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
from pi0lab.train.evaluate import evaluate_policy, results_table
from pi0lab.train.roles import build_envs, build_policy
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


def sft_stage(cfg, suite: str, privileged_state: bool, checkpoint: Path) -> dict:
    """Demos + few-shot SFT; when an interrupted run of this benchmark already saved the SFT checkpoint, that
    checkpoint is scored again on the same pairs instead (its training minutes are then unknown: null)."""
    start = time.perf_counter()
    if not (checkpoint / "model.safetensors").is_file():
        write_demos(suite, cfg.sft.demo_path, episodes_per_task=cfg.sft.demos_per_task,
                    noise_std=cfg.sft.demo_action_noise, privileged_state=privileged_state)
    demos = read_demo_index(cfg.sft.demo_path)["episodes"]
    if (checkpoint / "model.safetensors").is_file():
        print(f"{checkpoint} exists: scoring it instead of training SFT again", flush=True)
        envs = build_envs(cfg.env.eval, cfg.runner.seed)
        try:
            evaluation = evaluate_policy(build_policy(cfg.actor.model, override_path=checkpoint), envs,
                                         cfg.env.eval.num_episodes or cfg.env.eval.total_num_envs, cfg.runner.seed)
        finally:
            envs.close()
        minutes = None
    else:
        sft = run_sft(cfg)
        evaluation, minutes = sft.evaluations[max(sft.evaluations)], (time.perf_counter() - start) / 60
    return {"success": evaluation.success_rate, "env_steps": sum(e["length"] for e in demos), "episodes": len(demos),
            "minutes": minutes, "per_task": evaluation.per_task}


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
        result_path = out / "result.json"  # written after every stage: a rerun goes on where one stopped
        result = json.loads(result_path.read_text()) if result_path.is_file() else {}
        checkpoint = Path(sft_cfg.sft.save_path)
        if "sft" not in result:
            result["sft"] = sft_stage(sft_cfg, suite, args.privileged_state, checkpoint)
            result_path.write_text(json.dumps(result, indent=1))
        for stage, (config, _) in RL_STAGES.items():
            if stage in args.stages and stage not in result:
                result[stage] = rl_stage(config, suite, checkpoint, out / stage, shared[1:])
                result_path.write_text(json.dumps(result, indent=1))
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
                 f"{_minutes(r[stage]['minutes'])}" if stage in r else "-" for r in results.values()]
        print(f"| {stage} | " + " | ".join(cells) + " |")


def _minutes(minutes: float | None) -> str:
    return "? min (an interrupted run's SFT)" if minutes is None else f"{minutes:.0f} min"


if __name__ == "__main__":
    main()
