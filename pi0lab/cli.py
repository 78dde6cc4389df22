"""Command line: `pi0lab demos | pretrain | sft | train | tune | eval | configs`.

    pi0lab demos --suite tabletop_spatial --per-task 10 --out runs/demos/tabletop_spatial
    pi0lab pretrain tabletop_pretrain_nano
    pi0lab sft tabletop_sft_nano sft.num_steps=500
    pi0lab train tabletop_ppo_nano algorithm.update_epoch=2 runner.max_epochs=20
    pi0lab tune tabletop_ppo_nano runner.max_epochs=30 --trials 8 --search actor.optim.lr=log:1e-6:1e-4
    pi0lab eval runs/tabletop_ppo_nano/checkpoints/step_000020/model --suite tabletop_spatial
"""

import argparse
import signal
import sys
from pathlib import Path

from pi0lab.choices import INITIAL_NOISES, PRECISIONS

OVERRIDES_HELP = "config overrides as key.sub=value (e.g. algorithm.update_epoch=2 env.train.total_num_envs=16)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pi0lab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demos = commands.add_parser("demos", help="write scripted-expert demos of a tabletop suite",
                                description="Roll out the privileged scripted expert and save its episodes for SFT.")
    demos.add_argument("--suite", default="tabletop_spatial", help="tabletop suite (default: %(default)s)")
    demos.add_argument("--per-task", type=int, default=10, help="successful episodes per task (default: %(default)s)")
    demos.add_argument("--out", type=Path, default=None, help="output directory (default: runs/demos/SUITE)")
    demos.add_argument("--image-size", type=int, default=64, help="camera size in pixels (default: %(default)s)")
    demos.add_argument("--action-noise", type=float, default=0.0, help="std of Gaussian noise on expert actions")
    demos.add_argument("--seed", type=int, default=0)
    demos.add_argument("--privileged-state", action="store_true",
                       help="record the state-based control's states (robot 8 dims + the things' true x, y, z, yaw; "
                            "a control, not pi0): SFT on them needs env.train/eval.privileged_state=true")

    pretrain = commands.add_parser("pretrain", help="pretrain the vision tower to localise things (a tabletop base)",
                                   description="Train the SigLIP tower to say where every thing is in scenes of the "
                                               "pretrain suite (config group `pretrain`) and save a base model "
                                               "for sft.init_path (with sft.freeze_vision=true to keep the tower).")
    pretrain.add_argument("config", help="a shipped config name (see `pi0lab configs`) or a YAML path")
    pretrain.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)

    sft = commands.add_parser("sft", help="few-shot flow-matching behaviour cloning from demos",
                              description="Supervised fine-tuning of pi0 on expert demos (config group `sft`).")
    sft.add_argument("config", help="a shipped config name (see `pi0lab configs`) or a YAML path")
    sft.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)

    train = commands.add_parser("train", help="PPO / GRPO / DSRL training from a config",
                                description="Online RL (PPO with GAE, GRPO, or DSRL: SAC on the initial noise of a "
                                            "frozen pi0) of a pi0 checkpoint. Ctrl-C finishes the current iteration, "
                                            "writes a checkpoint and stops.")
    train.add_argument("config", help="a shipped config name (see `pi0lab configs`) or a YAML path")
    train.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    train.add_argument("--resume", action="store_true", help="continue the run in runner.logger.log_path")

    tune = commands.add_parser("tune", help="a hyperparameter study (Optuna): trials are training runs",
                               description="Run trials of a config, each an ordinary training run under "
                                           "runs/tune/STUDY/, scored by its mean training success over the last "
                                           "third of its iterations, and print the trial table. A second call "
                                           "with the same --study and --storage adds trials to the study.")
    tune.add_argument("config", help="a shipped config name (see `pi0lab configs`) or a YAML path")
    tune.add_argument("overrides", nargs="*", help="fixed values: " + OVERRIDES_HELP)
    tune.add_argument("--trials", type=int, required=True, help="trials to add to the study")
    tune.add_argument("--study", default=None, help="study name (default: the config's name)")
    tune.add_argument("--storage", default=None, help="an Optuna database URL (default: sqlite:///runs/tune/STUDY.db)")
    tune.add_argument("--search", action="append", default=[], metavar="KEY=SPEC",
                      help="a searched key, repeatable: SPEC is log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH or "
                           "choice:A,B,...; KEY alone takes its default range")
    tune.add_argument("--pruner", choices=["median", "sha", "none"], default="median",
                      help="median or successive halving (sha), both after a warm-up of a third of the "
                           "iterations (default: %(default)s)")
    tune.add_argument("--processes", type=int, default=1,
                      help="trials run at once, each worker process taking its share of --trials one after another "
                           "(default: %(default)s)")

    evaluate = commands.add_parser("eval", help="success rate of a checkpoint, per task and per suite",
                                   description="Evaluate a checkpoint with the ODE sampler on fixed (task, init) pairs "
                                               "and print a markdown table.")
    evaluate.add_argument("checkpoint", help="a model directory (pi0lab / openpi / lerobot / RLinf)")
    evaluate.add_argument("--suite", nargs="+", required=True, help="one or more suite names")
    evaluate.add_argument("--episodes", type=int, default=100, help="episodes per suite (default: %(default)s)")
    evaluate.add_argument("--num-envs", type=int, default=50, help="parallel envs (default: %(default)s)")
    evaluate.add_argument("--chunk", type=int, default=5, help="actions executed per policy call (default: %(default)s)")
    evaluate.add_argument("--num-steps", type=int, default=4, help="flow steps (default: %(default)s)")
    evaluate.add_argument("--precision", choices=PRECISIONS, default="fp32",
                          help="bf16: autocast on a CUDA GPU (default: %(default)s)")
    evaluate.add_argument("--initial-noise", choices=INITIAL_NOISES, default="gaussian",
                          help="the flow's start x_1: N(0, I) draws, or 0 for a deterministic score (default: %(default)s)")
    evaluate.add_argument("--image-size", type=int, default=None, help="camera size (default: the model's)")
    evaluate.add_argument("--name", default=None, help="row name in the table (default: the checkpoint path)")
    evaluate.add_argument("--init-states", type=int, nargs=2, default=None, metavar=("FIRST", "STOP"),
                          help="score the init states FIRST..STOP-1 of every task (default: from 0)")
    evaluate.add_argument("--privileged-state", action="store_true",
                          help="tabletop control: states carry the things' true poses (for checkpoints trained so)")

    commands.add_parser("configs", help="list the shipped configs")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")

    args = parser.parse_args(argv)
    command = {"demos": _demos, "pretrain": _pretrain, "sft": _sft, "train": _train, "tune": _tune,
               "eval": _eval,
               "configs": _configs}[args.command]
    try:
        return command(args)
    except _user_errors() as err:
        if args.debug:
            raise
        message = str(err) if not isinstance(err, KeyError) else str(err.args[0])
        print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message says what to change (a config key or value, a placement, a path, a checkpoint)."""
    from pi0lab.runtime.supervise import WorkerFailed

    return (ValueError, FileNotFoundError, FileExistsError, KeyError, WorkerFailed)


def _configs(args) -> int:
    from pi0lab.train.config import available_configs

    print("\n".join(available_configs()))
    return 0


def _demos(args) -> int:
    from pi0lab.envs.demos import write_demos

    out = args.out or Path("runs/demos") / args.suite
    index = write_demos(args.suite, out, episodes_per_task=args.per_task, image_size=args.image_size,
                        noise_std=args.action_noise, seed=args.seed, privileged_state=args.privileged_state)
    print(f"wrote {index}")
    return 0


def _pretrain(args) -> int:
    from pi0lab.train.config import load_config
    from pi0lab.train.pretrain import run_pretrain

    print(f"base saved to {run_pretrain(load_config(args.config, args.overrides))}")
    return 0


def _sft(args) -> int:
    from pi0lab.train.config import load_config
    from pi0lab.train.sft import run_sft

    result = run_sft(load_config(args.config, args.overrides))
    score = "not evaluated" if result.success_rate is None else f"eval success {result.success_rate:.1%}"
    print(f"SFT done: {result.checkpoint} ({score})")
    return 0


def _train(args) -> int:
    from pi0lab.train.config import load_config
    from pi0lab.train.placed import run_torchrun_worker, under_torchrun
    from pi0lab.train.stages import make_trainer

    cfg = load_config(args.config, args.overrides)
    if under_torchrun():  # torchrun started this process as one rank of a placed run
        run_torchrun_worker(cfg, resume=args.resume or None)
        return 0
    trainer = make_trainer(cfg, resume=args.resume or None)
    try:
        trainer.run()
    finally:
        trainer.close()
    return 0


def _tune(args) -> int:
    import optuna

    from pi0lab.lab.search import parse_search
    from pi0lab.lab.study import TuningStudy
    from pi0lab.train.config import ConfigError

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial of its own, and the table
    try:  # bad input, found before or when the first trial starts: one line, exit 2
        if args.trials < 1:
            raise ConfigError(f"--trials must be >= 1, got {args.trials}")
        if args.processes < 1:
            raise ConfigError(f"--processes must be >= 1, got {args.processes}")
        if not args.search:
            raise ConfigError("nothing to search: give at least one --search KEY=SPEC (e.g. actor.optim.lr=log:1e-6:1e-4)")
        study = TuningStudy(args.config, args.overrides, [parse_search(s) for s in args.search], args.study,
                            args.storage, args.pruner)
        failed = False
        if args.processes > 1:
            for line in _tune_in_processes(study, args.trials, args.processes):
                print(f"pi0lab tune: {line}", file=sys.stderr)
                failed = True
        else:
            previous = signal.signal(signal.SIGINT, lambda *_: _stop_study(study))
            try:
                study.run(args.trials, on_update=lambda u: print(f"trial {u.trial}: {u.state} {u.note}".rstrip(),
                                                                 flush=True) if u.state != "RUNNING" else None)
            finally:
                signal.signal(signal.SIGINT, previous)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"pi0lab tune: error: {err}", file=sys.stderr)
        return 2
    table = study.dataframe().drop(columns=["user_attrs_overrides", "user_attrs_run_dir"], errors="ignore")
    print(f"study {study.name!r} in {study.storage_url}: {len(table)} trials")
    print(table.to_string(index=False))
    return 1 if failed else 0


def _tune_in_processes(study, n_trials: int, processes: int) -> list[str]:
    """`pi0lab tune --processes N`: worker processes share the trials; Ctrl-C stops them as it stops one."""
    from pi0lab.lab.workers import StudyWorkers

    workers = StudyWorkers(study, n_trials, processes)
    workers.start()
    print(f"{len(workers.procs)} worker processes, {workers.threads} torch thread(s) each; logs in {workers.log_dir}",
          flush=True)

    def on_sigint(*_):
        if study.stopped:
            workers.terminate()
            raise KeyboardInterrupt
        print("\nstopping every trial after its iteration (Ctrl-C again to abort)", flush=True)
        study.request_stop()
        workers.request_stop()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        workers.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    return workers.failures()


def _stop_study(study) -> None:
    """First Ctrl-C: finish the running trial's iteration, mark it stopped, run no more; the second aborts."""
    if study.stopped:
        raise KeyboardInterrupt
    print("\nstopping after this iteration (Ctrl-C again to abort)", flush=True)
    study.request_stop()


def _eval(args) -> int:
    from pi0lab.train.evaluate import evaluate_checkpoint, results_table

    rates = {}
    for suite in args.suite:
        result = evaluate_checkpoint(args.checkpoint, suite, num_episodes=args.episodes, num_envs=args.num_envs,
                                     chunk=args.chunk, num_steps=args.num_steps, image_size=args.image_size,
                                     precision=args.precision, initial_noise=args.initial_noise,
                                     privileged_state=args.privileged_state, init_states=args.init_states)
        rates[suite] = result.success_rate
        for task, rate in result.per_task.items():
            print(f"  {suite} task {task}: {rate:.1%}  {result.descriptions[task]}")
    print(results_table({args.name or args.checkpoint: rates}, list(args.suite)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
