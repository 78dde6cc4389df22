"""Localisation pretraining: targets and loss by hand, the recorded frames against the sim, a tiny run
whose base feeds few-shot SFT, and the config checks."""

import math

import numpy as np
import pytest
import torch

from pi0lab.envs.demos import write_demos
from pi0lab.envs.tabletop.suites import make_world
from pi0lab.models.checkpoint import load_pi0
from pi0lab.train.config import ConfigError, load_config
from pi0lab.train.pretrain import SLOTS, localisation_loss, record_frames, run_pretrain, scene_targets
from pi0lab.train.sft import run_sft


def test_scene_targets_by_hand():
    world = make_world("tabletop_pretrain", task_id=0, init_state_id=0)
    world.eef, world.yaw = np.array([0.1, 0.0, 0.2]), math.pi / 2  # gripper x axis = world +y
    thing = world.things[0]
    thing.pos = np.array([0.05, 0.12, 0.03])
    main, wrist, eef = scene_targets(world)
    slot = SLOTS.index(thing.name)
    np.testing.assert_allclose(main[slot], [1.0, 0.05, 0.12, 0.03])
    # (dx, dy) = (-0.05, 0.12); R(-pi/2) (dx, dy) = (dy, -dx) = (0.12, 0.05): visible (both < 0.15)
    np.testing.assert_allclose(wrist[slot], [1.0, 0.12, 0.05], atol=1e-6)
    np.testing.assert_allclose(eef, [0.1, 0.0, 0.2, 0.0, 1.0], atol=1e-6)
    names = {t.name for t in world.things}
    assert main[:, 0].sum() == len(names) and all(main[SLOTS.index(n), 0] == 1 for n in names)
    absent = [s for s, name in enumerate(SLOTS) if name not in names]
    assert not main[absent].any() and not wrist[absent].any()


def test_scene_targets_mark_far_things_invisible_to_the_wrist():
    world = make_world("tabletop_pretrain", task_id=0, init_state_id=0)
    world.eef, world.yaw = np.array([0.0, 0.0, 0.2]), 0.0
    world.things[0].pos = np.array([0.2, 0.0, 0.03])  # u = 0.2 > 0.15
    _, wrist, _ = scene_targets(world)
    np.testing.assert_allclose(wrist[SLOTS.index(world.things[0].name)], [0.0, 0.2, 0.0], atol=1e-6)


def test_scene_targets_refuse_a_scene_that_repeats_a_name():
    with pytest.raises(ValueError, match="two things named 'red cube'"):
        scene_targets(make_world("tabletop_spatial", task_id=0, init_state_id=0))


def _batch(main_targets, wrist_targets, eef):
    return {"main_targets": main_targets, "wrist_targets": wrist_targets, "eef": eef}


def test_localisation_loss_by_hand():
    s = len(SLOTS)
    main_t, wrist_t = torch.zeros(1, s, 4), torch.zeros(1, s, 3)
    main_t[0, 0] = torch.tensor([1.0, 0.1, 0.2, 0.03])
    wrist_t[0, 0] = torch.tensor([1.0, 0.05, -0.05])
    eef_t = torch.tensor([[0.0, 0.1, 0.2, 1.0, 0.0]])
    big = 50.0  # logits that make both BCE terms ~0
    main_p = torch.full((1, s, 4), -big)
    main_p[0, 0] = torch.tensor([big, 1.0 + 0.3, 2.0, 0.3])  # 3 cm off in x (positions in dm)
    wrist_p = torch.full((1, s, 3), -big)
    wrist_p[0, 0] = torch.tensor([big, 0.5, -0.5 - 0.4])  # 4 cm off in v
    eef_p = torch.tensor([[0.0, 1.0, 2.0, 1.0, 0.0]])
    loss, errors = localisation_loss((main_p, eef_p, wrist_p), _batch(main_t, wrist_t, eef_t))
    assert errors["main_cm"] == pytest.approx(3.0, rel=1e-5) and errors["wrist_cm"] == pytest.approx(4.0, rel=1e-5)
    assert loss.item() == pytest.approx(0.3 ** 2 + 0.4 ** 2, rel=1e-4)


def test_recorded_frames_start_where_the_scenes_do():
    frames = record_frames("tabletop_goal", [3], frame_fraction=1.0, action_noise=0.0, image_size=32, seed=0,
                           progress=False)
    assert frames.main_images.shape[1:] == (32, 32, 3) and len(frames) == len(frames.wrist_targets)
    first = 0
    for task in range(10):  # episodes are recorded side by side: frame k of every episode, then k + 1
        world = make_world("tabletop_goal", task, 3)
        main, wrist, eef = scene_targets(world)
        np.testing.assert_array_equal(frames.main_targets[first + task], main)
        np.testing.assert_array_equal(frames.eef[first + task], eef)
    half = record_frames("tabletop_goal", [3], frame_fraction=0.5, action_noise=0.0, image_size=32, seed=0,
                         progress=False)
    assert 0.3 * len(frames) < len(half) < 0.7 * len(frames)


def _tiny(tmp_path, *overrides):
    return load_config("tabletop_pretrain_nano", [
        f"runner.logger.log_path={tmp_path}", "runner.logger.logger_backends=[]", "pretrain.scenes_per_task=1",
        "pretrain.val_scenes_per_task=1", "pretrain.frame_fraction=0.2", "pretrain.num_steps=3",
        "pretrain.batch_size=4", "pretrain.eval_interval=2", *overrides,
    ])


def test_a_tiny_pretraining_run_trains_only_the_tower_and_its_base_feeds_sft(tmp_path):
    cfg = _tiny(tmp_path / "base")
    base_path = run_pretrain(cfg, progress=False)
    base = load_pi0(base_path)
    assert base.norm_stats is None  # it never saw actions
    torch.manual_seed(cfg.actor.seed)
    from pi0lab.models import Pi0
    from pi0lab.train.sft import fresh_model_config

    untrained = Pi0(fresh_model_config(cfg))
    for name, param in base.named_parameters():
        same = torch.equal(param, dict(untrained.named_parameters())[name])
        assert same != name.startswith("vision."), name  # the tower moved, nothing else did
    lines = (tmp_path / "base" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and "pretrain/held_out_main_cm" in lines[1]

    demo_dir = tmp_path / "demos"
    write_demos("tabletop_goal", demo_dir, episodes_per_task=2, task_ids=[0, 1], num_envs=4)
    tuned = run_sft(load_config("tabletop_sft_nano", [
        f"sft.demo_path={demo_dir}", f"runner.logger.log_path={tmp_path}/sft", "sft.num_steps=1", "sft.batch_size=2",
        "sft.demos_per_task=2", "sft.eval_interval=0", "runner.logger.logger_backends=[]", f"sft.init_path={base_path}",
    ]), progress=False)
    stats = load_pi0(tuned.checkpoint).norm_stats
    assert set(stats) == {"state", "actions"} and stats["actions"].dim == 7  # the demos' stats


@pytest.mark.parametrize("override, message", [
    ("pretrain.frame_fraction=0", r"pretrain.frame_fraction must be in \(0, 1\]"),
    ("pretrain.scenes_per_task=990", r"pretrain.scenes_per_task \+ pretrain.val_scenes_per_task must be in \[2, 1000\]"),
    ("pretrain.suite=libero_10", "pretrain.suite='libero_10' is not a tabletop suite"),
    ("pretrain.num_step=5", "unknown config key 'pretrain.num_step' \\(did you mean 'num_steps'"),
])
def test_bad_pretrain_settings_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tabletop_pretrain_nano", [override])


def test_the_pretrain_command_has_help(capsys):
    from pi0lab.cli import main

    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "sft.init_path" in capsys.readouterr().out
