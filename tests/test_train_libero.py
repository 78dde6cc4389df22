"""The LIBERO recipe configs run end to end at smoke size: nano model, 2 envs, 1 iteration, 64 px.

Skipped only when LIBERO is not installed (CI installs the `[libero]` extra).
"""

import importlib.util

import numpy as np
import pytest

from pi0lab.train.config import load_config
from pi0lab.train.trainer import RLTrainer

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libero") is None, reason="LIBERO is not installed")


@pytest.mark.parametrize("name, group", [("libero_10_ppo_openpi", 1), ("libero_10_grpo_openpi", 2)])
def test_recipe_config_runs_one_iteration(name, group, random_nano_checkpoint, tmp_path):
    checkpoint = random_nano_checkpoint
    cfg = load_config(name, [
        f"actor.model.model_path={checkpoint}", "actor.model.size=nano", "actor.model.precision=fp32",
        f"runner.logger.log_path={tmp_path}/run", "runner.max_epochs=1", "runner.logger.logger_backends=[]",
        "cluster.num_devices=1", "env.train.total_num_envs=2", f"algorithm.group_size={group}",
        "env.train.image_size=64", "env.train.max_episode_steps=20", "env.train.video_cfg.save_video=false",
        "actor.global_batch_size=4", "actor.micro_batch_size=2", "algorithm.update_epoch=1",
        "algorithm.filter_rewards=false",
    ])
    trainer = RLTrainer(cfg, progress=False)
    try:
        event = next(trainer.iterate())
    finally:
        trainer.close()
    assert event.metrics["env/episode_len"] == 20  # 2 chunks of 10 actions, no success from a random policy
    assert event.metrics["actor/num_samples"] == 4 and np.isfinite(event.metrics["actor/loss"])


def test_dsrl_recipe_config_runs_one_iteration_on_real_libero_worlds(random_nano_checkpoint, tmp_path):
    from pi0lab.train.dsrl import DSRLTrainer

    cfg = load_config("libero_spatial_dsrl_openpi", [
        f"actor.model.model_path={random_nano_checkpoint}", "actor.model.size=nano", "actor.model.precision=fp32",
        f"runner.logger.log_path={tmp_path}/run", "runner.max_epochs=1", "runner.logger.logger_backends=[]",
        "cluster.num_devices=1", "env.train.total_num_envs=2", "env.train.image_size=64",
        "env.train.max_episode_steps=10", "env.train.video_cfg.save_video=false",
        "algorithm.sac.batch_size=4", "algorithm.sac.updates_per_iteration=2",
    ])
    trainer = DSRLTrainer(cfg, progress=False)
    try:
        event = next(trainer.iterate())
    finally:
        trainer.close()
    assert event.metrics["env/episode_len"] == 10  # 2 chunks of 5 actions, no success from a random policy
    assert event.metrics["train/replay_buffer/size"] == 4  # 2 envs x 2 chunk steps
    assert np.isfinite(event.metrics["train/sac/critic_loss"]) and np.isfinite(event.metrics["train/sac/alpha"])
