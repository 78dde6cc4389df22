"""One RL stage run to its end: the trainer its config asks for (PPO / GRPO or DSRL), then its score.

    result = train_and_evaluate("tabletop_ppo_nano", ["actor.model.model_path=runs/tabletop_sft_nano/model"])
    result.evaluation.success_rate, result.env_steps, result.episodes, result.minutes

`make_trainer` picks the trainer from `algorithm.adv_type` (`embodied_sac` -> `DSRLTrainer`, else
`RLTrainer`); the CLI, the demo and the learning benchmark share it. `train_and_evaluate` is a plain
module-level function so that it also runs in a spawned process (the demo trains PPO and DSRL side by
side, one process and one torch thread each).
"""

import time
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from pi0lab.train.config import load_config
from pi0lab.train.evaluate import EvalResult
from pi0lab.train.loggers import read_metrics


@dataclass
class StageResult:
    evaluation: EvalResult  # the trained policy on the fixed pairs of env.eval
    env_steps: int  # env steps of every training rollout
    episodes: int  # training episodes that ended (success or step limit)
    minutes: float  # wall-clock of training and evaluation


def make_trainer(cfg: DictConfig, **kwargs):
    """The trainer of `cfg`: `DSRLTrainer` for `algorithm.adv_type=embodied_sac`, `PlacedTrainer` when
    `cluster.component_placement` plans several processes, else `RLTrainer` (PPO / GRPO in this process)."""
    from pi0lab.runtime.plan import plan_run
    from pi0lab.train.dsrl import DSRLTrainer
    from pi0lab.train.placed import PlacedTrainer, cuda_device_count
    from pi0lab.train.trainer import RLTrainer

    if cfg.algorithm.adv_type == "embodied_sac":
        return DSRLTrainer(cfg, **kwargs)
    if plan_run(cfg, cuda_device_count()).world_size > 1:
        return PlacedTrainer(cfg, **kwargs)
    return RLTrainer(cfg, **kwargs)


def train_and_evaluate(config: str, overrides: list[str], label: str = "", threads: int | None = None) -> StageResult:
    """Train `config` with `overrides` for `runner.max_epochs` iterations (Ctrl-C: finish, save, stop), then score it.

    threads: torch threads for this process (None: leave as is); label: starts each progress line.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    cfg = load_config(config, overrides)
    start = time.perf_counter()
    trainer = make_trainer(cfg)
    try:
        trainer.run(label=label)
        evaluation = trainer.evaluate()
    finally:
        trainer.close()
    records = read_metrics(cfg.runner.logger.log_path)
    steps = sum(int(r.get("env/steps", 0)) for r in records)
    # env/episode_len is the mean length of the iteration's episodes: steps / mean length counts them
    episodes = sum(round(r["env/steps"] / r["env/episode_len"]) for r in records if r.get("env/episode_len"))
    return StageResult(evaluation, steps, episodes, (time.perf_counter() - start) / 60)
