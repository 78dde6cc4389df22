"""The RL trainer end to end at toy size: seed metric names, stop + resume = one uninterrupted run,
GRPO, guards, and skipped non-finite steps."""

import json

import numpy as np
import pytest
import torch

from pi0lab.train.config import load_config
from pi0lab.train.trainer import RLTrainer

SEED_METRICS = [
    "actor/loss", "actor/value_loss", "actor/grad_norm", "actor/approx_kl", "actor/pg_clipfrac",
    "actor/value_clip_ratio", "rollout/returns_mean", "rollout/advantages_mean", "env/episode_len",
    "env/return", "env/success_once",
]


@pytest.fixture
def checkpoint(random_nano_checkpoint):
    return random_nano_checkpoint


def _config(name, checkpoint, run_dir, *extra):
    return load_config(name, [
        f"actor.model.model_path={checkpoint}", f"runner.logger.log_path={run_dir}",
        "env.train.task_suite_name=tabletop_goal", "env.train.total_num_envs=4",
        "env.train.video_cfg.save_video=false", "env.eval.video_cfg.save_video=false",
        "runner.max_epochs=2", "runner.val_check_interval=-1", "runner.save_interval=-1",
        "actor.global_batch_size=32", "actor.micro_batch_size=16", "algorithm.update_epoch=1", *extra,
    ])


def test_ppo_iterations_log_the_seed_metrics(checkpoint, tmp_path):
    trainer = RLTrainer(_config("tabletop_ppo_nano", checkpoint, tmp_path, "actor.optim.critic_warmup_steps=0",
                                "env.train.video_cfg.save_video=true"), progress=False)
    events = list(trainer.iterate())
    trainer.close()
    assert [e.iteration for e in events] == [1, 2]
    for name in SEED_METRICS + ["time/env", "time/rollout", "time/update"]:
        assert np.isfinite(events[-1].metrics[name]), name
    assert events[0].video[4:8] == b"ftyp"  # an mp4 of a training episode
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_000002"


def test_stop_then_resume_equals_one_uninterrupted_run(checkpoint, tmp_path):
    straight = RLTrainer(_config("tabletop_ppo_nano", checkpoint, tmp_path / "a"), progress=False)
    expected = list(straight.iterate())[-1].metrics
    straight.close()

    first = RLTrainer(_config("tabletop_ppo_nano", checkpoint, tmp_path / "b"), progress=False)
    for _ in first.iterate():
        first.request_stop()  # as a notebook's Stop button would, between iterations
    first.close()
    assert (tmp_path / "b" / "checkpoints" / "latest").read_text().strip() == "step_000001"
    resumed = RLTrainer(_config("tabletop_ppo_nano", checkpoint, tmp_path / "b"), resume=True, progress=False)
    events = list(resumed.iterate())
    resumed.close()
    assert [e.iteration for e in events] == [2]
    for name in ("actor/loss", "actor/value_loss", "actor/approx_kl", "env/return", "rollout/advantages_mean"):
        assert events[0].metrics[name] == expected[name], name
    for a, b in zip(straight.policy.parameters(), resumed.policy.parameters()):
        assert torch.equal(a, b)


def test_grpo_iteration_uses_groups_and_no_critic(checkpoint, tmp_path):
    # without the filter, all-fail groups of a random policy stay in (with advantage 0)
    cfg = _config("tabletop_grpo_nano", checkpoint, tmp_path, "algorithm.group_size=2", "runner.max_epochs=1",
                  "algorithm.filter_rewards=false")
    trainer = RLTrainer(cfg, progress=False)
    obs = trainer.env.reset()
    assert obs["task_descriptions"][0] == obs["task_descriptions"][1]
    assert np.array_equal(obs["main_images"][0], obs["main_images"][1])  # same task and initial state
    event = next(trainer.iterate())
    trainer.close()
    assert event.metrics["actor/num_samples"] > 0 and np.isfinite(event.metrics["actor/loss"])
    assert "actor/value_loss" not in event.metrics and not hasattr(trainer.policy.model, "value_head")


def test_a_used_run_directory_needs_resume(checkpoint, tmp_path):
    trainer = RLTrainer(_config("tabletop_ppo_nano", checkpoint, tmp_path, "runner.max_epochs=1"), progress=False)
    list(trainer.iterate())
    trainer.close()
    with pytest.raises(FileExistsError, match="resume it"):
        RLTrainer(_config("tabletop_ppo_nano", checkpoint, tmp_path), progress=False)


def test_non_finite_gradients_skip_the_step(checkpoint, tmp_path, monkeypatch):
    trainer = RLTrainer(_config("tabletop_ppo_nano", checkpoint, tmp_path, "runner.max_epochs=1",
                                "actor.optim.critic_warmup_steps=0"), progress=False)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    evaluate = trainer.policy.evaluate

    def poisoned(*args, **kwargs):
        out = evaluate(*args, **kwargs)
        out["logprobs"] = out["logprobs"] * float("nan")
        return out

    monkeypatch.setattr(trainer.policy, "evaluate", poisoned)
    event = next(trainer.iterate())
    trainer.close()
    assert event.metrics["actor/skipped_steps"] >= 1 and event.metrics["actor/optimizer_steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))


def test_bf16_on_cpu_and_missing_checkpoint_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="bf16 needs a CUDA device"):
        RLTrainer(_config("tabletop_ppo_nano", tmp_path / "none", tmp_path, "actor.model.precision=bf16"), device="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RLTrainer(_config("tabletop_ppo_nano", tmp_path / "none", tmp_path), device="cpu")
