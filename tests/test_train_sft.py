"""Few-shot SFT: chunking and loss masking by hand, demo selection, and a tiny end-to-end run."""

import numpy as np
import pytest
import torch

from pi0lab.envs.demos import write_demos
from pi0lab.models.checkpoint import load_pi0
from pi0lab.models.policy import Pi0Policy
from pi0lab.train.config import load_config
from pi0lab.train.sft import action_chunks, load_demo_set, lr_at, masked_flow_loss, run_sft, update_ema


def test_action_chunks_pad_with_the_last_action_and_mask_it():
    actions = np.array([[1.0], [2.0], [3.0]])
    chunks, mask = action_chunks(actions, horizon=2)
    assert chunks[..., 0].tolist() == [[1, 2], [2, 3], [3, 3]]
    assert mask.tolist() == [[True, True], [True, True], [True, False]]


def test_masked_flow_loss_ignores_padding_steps_and_dims():
    elementwise = torch.zeros(1, 2, 4)
    elementwise[0, 0, :2] = 2.0  # valid step, real dims: mean 2
    elementwise[0, 0, 2:] = 100.0  # padded action dims
    elementwise[0, 1] = 50.0  # step past the episode's end
    assert masked_flow_loss(elementwise, torch.tensor([[True, False]]), action_dim=2).item() == 2.0


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    cfg = load_config("tabletop_sft_nano", ["sft.lr=1.0", "sft.warmup_steps=10", "sft.num_steps=110"]).sft
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(110, cfg) == pytest.approx(0.1)


def test_update_ema_moves_each_weight_a_fraction_towards_the_model():
    average, model = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    for avg, param in zip(average.parameters(), model.parameters()):
        avg.data.fill_(0.0)
        param.data.fill_(1.0)
    update_ema(average, model, decay=0.9)
    assert all(torch.allclose(p, torch.full_like(p, 0.1)) for p in average.parameters())
    update_ema(average, model, decay=0.9)  # 0.9 * 0.1 + 0.1 * 1
    assert all(torch.allclose(p, torch.full_like(p, 0.19)) for p in average.parameters())


def test_ema_decay_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match=r"sft.ema_decay must be in \[0, 1\)"):
        load_config("tabletop_sft_nano", ["sft.ema_decay=1.0"])


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demos")
    write_demos("tabletop_goal", out, episodes_per_task=3, task_ids=[0, 1], num_envs=6)
    return out


def test_few_shot_selection_keeps_the_first_k_per_task(demo_dir):
    demos = load_demo_set(demo_dir, demos_per_task=2, horizon=4)
    assert demos.num_episodes == 4 and len(demos) == len(demos.states) == len(demos.instructions)
    assert demos.action_chunks.shape == (len(demos), 4, 7) and demos.main_images.dtype == np.uint8
    with pytest.raises(ValueError, match="fewer than sft.demos_per_task=4"):
        load_demo_set(demo_dir, demos_per_task=4, horizon=4)


def test_a_tiny_sft_run_saves_a_loadable_policy(demo_dir, tmp_path):
    cfg = load_config("tabletop_sft_nano", [
        f"sft.demo_path={demo_dir}", f"runner.logger.log_path={tmp_path}", "sft.num_steps=3", "sft.batch_size=4",
        "sft.demos_per_task=2", "sft.eval_interval=-1", "env.eval.task_suite_name=tabletop_goal",
        "env.eval.num_episodes=2", "env.eval.total_num_envs=2", "runner.logger.logger_backends=[]",
    ])
    losses = []
    result = run_sft(cfg, progress=False, callback=lambda step, metrics: losses.append(metrics["sft/loss"]))
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert result.success_rate is not None and 0.0 <= result.success_rate <= 1.0
    model = load_pi0(result.checkpoint)
    assert model.config.action_horizon == 10 and model.config.vision.patch_size == 16
    assert set(model.norm_stats) == {"state", "actions"} and model.norm_stats["actions"].dim == 7
    policy = Pi0Policy.from_checkpoint(result.checkpoint)
    assert policy.action_chunk == 5


def test_sft_refuses_to_evaluate_on_the_scenes_its_demos_come_from(demo_dir, tmp_path):
    cfg = load_config("tabletop_sft_nano", [
        f"sft.demo_path={demo_dir}", f"runner.logger.log_path={tmp_path}", "sft.demos_per_task=3",
        "env.train.task_suite_name=tabletop_goal", "env.eval.num_episodes=500", "runner.logger.logger_backends=[]",
    ])  # 500 episodes reach init state 49 of every task; the demos start from 49, 48, 47 of tasks 0 and 1
    with pytest.raises(ValueError, match="would score 6 scenes the demos were recorded from"):
        run_sft(cfg, progress=False)
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before any work


def _tiny_sft_cfg(demo_dir, out, *overrides):
    return load_config("tabletop_sft_nano", [
        f"sft.demo_path={demo_dir}", f"runner.logger.log_path={out}", "sft.num_steps=2", "sft.batch_size=4",
        "sft.demos_per_task=2", "sft.eval_interval=0", "runner.logger.logger_backends=[]", *overrides,
    ])


def test_sft_from_a_base_starts_from_its_weights_and_keeps_its_norm_stats(demo_dir, tmp_path):
    base = run_sft(_tiny_sft_cfg(demo_dir, tmp_path / "base", "sft.num_steps=1"), progress=False).checkpoint
    base_model = load_pi0(base)
    before = {name: p.clone() for name, p in base_model.named_parameters()}
    cfg = _tiny_sft_cfg(demo_dir, tmp_path / "tuned", f"sft.init_path={base}", "sft.lr=0", "sft.warmup_steps=1",
                        "sft.demos_per_task=3")  # other demos than the base's: other stats, which must not be used
    tuned = load_pi0(run_sft(cfg, progress=False).checkpoint)  # lr 0: the weights must come back unchanged
    assert all(torch.equal(before[name], p) for name, p in tuned.named_parameters())
    for key in ("state", "actions"):
        np.testing.assert_array_equal(tuned.norm_stats[key].mean, base_model.norm_stats[key].mean)
    fresh = load_pi0(run_sft(_tiny_sft_cfg(demo_dir, tmp_path / "fresh", "sft.lr=0", "sft.warmup_steps=1"),
                             progress=False).checkpoint)
    assert not all(torch.equal(before[name], p) for name, p in fresh.named_parameters())


def test_sft_from_a_base_refuses_a_missing_path_or_another_architecture(demo_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="sft.init_path=.*does not exist"):
        run_sft(_tiny_sft_cfg(demo_dir, tmp_path / "a", f"sft.init_path={tmp_path}/nowhere"), progress=False)
    base = run_sft(_tiny_sft_cfg(demo_dir, tmp_path / "base", "sft.num_steps=1"), progress=False).checkpoint
    with pytest.raises(ValueError, match="action_horizon differ"):
        run_sft(_tiny_sft_cfg(demo_dir, tmp_path / "b", f"sft.init_path={base}", "sft.model.action_horizon=8"),
                progress=False)


def test_the_sft_command_reports_a_run_without_evaluation(demo_dir, tmp_path, capsys):
    from pi0lab.cli import main

    assert main(["sft", "tabletop_sft_nano", f"sft.demo_path={demo_dir}", f"runner.logger.log_path={tmp_path}",
                 "sft.num_steps=1", "sft.batch_size=2", "sft.demos_per_task=2", "sft.eval_interval=0",
                 "runner.logger.logger_backends=[]"]) == 0
    assert "(not evaluated)" in capsys.readouterr().out


def test_the_augment_flag_reaches_the_training_step(demo_dir, tmp_path):
    def first_loss(*overrides):
        losses = []
        run_sft(_tiny_sft_cfg(demo_dir, tmp_path / "_".join(overrides or ["plain"]), "sft.num_steps=1", *overrides),
                progress=False, callback=lambda step, metrics: losses.append(metrics["sft/loss"]))
        return losses[0]

    plain = first_loss()
    assert first_loss() == plain  # same seed, same batch, same noise
    assert first_loss("sft.augment=true") != plain


def test_sft_with_ema_saves_the_average_of_the_trained_weights(demo_dir, tmp_path):
    def weights(name, *overrides):
        model = load_pi0(run_sft(_tiny_sft_cfg(demo_dir, tmp_path / name, *overrides), progress=False).checkpoint)
        return dict(model.named_parameters())

    # the warm-up fixes the first two steps' learning rates whatever num_steps is, so these are one trajectory
    start, step1, step2 = weights("w0", "sft.lr=0"), weights("w1", "sft.num_steps=1"), weights("w2")
    average = weights("ema", "sft.ema_decay=0.5")  # 0.5 * (0.5 * w0 + 0.5 * w1) + 0.5 * w2
    for name, param in average.items():
        expected = 0.25 * start[name] + 0.25 * step1[name] + 0.5 * step2[name]
        torch.testing.assert_close(param, expected, rtol=1e-5, atol=1e-6)
    assert not torch.equal(step1["action_out_proj.weight"], step2["action_out_proj.weight"])


def test_freeze_vision_keeps_the_base_tower_and_trains_the_rest(demo_dir, tmp_path):
    base = run_sft(_tiny_sft_cfg(demo_dir, tmp_path / "base", "sft.num_steps=1"), progress=False).checkpoint
    before = dict(load_pi0(base).named_parameters())
    tuned = load_pi0(run_sft(_tiny_sft_cfg(demo_dir, tmp_path / "tuned", f"sft.init_path={base}",
                                           "sft.freeze_vision=true"), progress=False).checkpoint)
    changed = {name for name, p in tuned.named_parameters() if not torch.equal(before[name], p)}
    assert changed and not any(name.startswith("vision.") for name in changed)
    assert "action_out_proj.weight" in changed


def test_freeze_vision_without_a_base_is_refused():
    with pytest.raises(ValueError, match="sft.freeze_vision=true .* sft.init_path is null"):
        load_config("tabletop_sft_nano", ["sft.freeze_vision=true"])
