"""Configs: every shipped YAML validates, and bad keys / types / combinations fail before any work."""

import pytest

from pi0lab.train.config import ConfigError, available_configs, load_config

SHIPPED = available_configs()


def test_the_named_configs_exist():
    expected = {"tabletop_sft_nano", "tabletop_ppo_nano", "tabletop_grpo_nano"} | {
        f"libero_{s}_{a}_openpi" for s in ("spatial", "object", "goal", "10") for a in ("ppo", "grpo")
    }
    assert expected <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_validate(name):
    cfg = load_config(name)
    assert cfg.actor.model.openpi.action_chunk == cfg.actor.model.num_action_chunks


def test_reference_recipe_values_for_libero_10():
    ppo, grpo = load_config("libero_10_ppo_openpi"), load_config("libero_10_grpo_openpi")
    assert ppo.actor.model.num_action_chunks == 10 and ppo.actor.model.num_steps == 4
    assert ppo.env.train.max_episode_steps == 480 and ppo.algorithm.update_epoch == 4
    assert (ppo.actor.optim.lr, ppo.actor.optim.value_lr, ppo.actor.optim.clip_grad) == (5e-6, 1e-4, 2.0)
    assert (ppo.actor.global_batch_size, ppo.actor.micro_batch_size) == (2048, 128)
    assert ppo.algorithm.huber_delta == 10.0 and ppo.actor.model.openpi.noise_level == 0.5
    assert grpo.algorithm.group_size == 8 and grpo.env.train.group_size == 8 and grpo.algorithm.update_epoch == 2
    assert grpo.algorithm.filter_rewards and not grpo.actor.model.add_value_head
    assert load_config("libero_spatial_ppo_openpi").actor.model.num_action_chunks == 5
    assert load_config("libero_goal_grpo_openpi").env.train.max_episode_steps == 320


def test_interpolation_follows_overrides():
    cfg = load_config("libero_10_ppo_openpi", ["actor.model.num_action_chunks=5", "runner.logger.log_path=/tmp/x"])
    assert cfg.actor.model.openpi.action_chunk == 5
    assert cfg.env.train.video_cfg.video_base_dir == "/tmp/x/video/train"


def test_overrides_as_a_python_dict():
    cfg = load_config("libero_10_grpo_openpi", {"algorithm.update_epoch": 3, "env": {"train": {"total_num_envs": 16}}})
    assert cfg.algorithm.update_epoch == 3 and cfg.env.train.total_num_envs == 16


@pytest.mark.parametrize(
    "override, message",
    [
        ("algorithm.clip_ratio_hihg=0.3", r"unknown config key 'algorithm.clip_ratio_hihg' \(did you mean 'clip_ratio_high'\?\)"),
        ("algorithm.gamma=abc", "algorithm.gamma must be a number"),
        ("env.train.init_states=[30,10]", r"env.train.init_states=\[30, 10\] must be \[first, stop\]"),
        ("env.eval.init_states=[30]", r"env.eval.init_states=\[30\] must be \[first, stop\]"),
        ("algorithm.adv_type=reinforce", r"must be one of \['gae', 'grpo', 'embodied_sac'\]"),
        ("actor.model.openpi.noise_method=ddpm", r"one of \['flow_sde', 'reinflow'\]"),
        ("env.train.total_num_envs=60", "group_size=8 does not divide env.train.total_num_envs=60"),
        ("actor.model.num_action_chunks=99", r"num_action_chunks=99 must be in \[1, "),
        ("actor.model.action_dim=6", "does not match the env's action dims"),
        ("cluster.component_placement={env: 0-9, rollout: all, actor: all}", "only 0-7 exist"),
        ("runner.logger.logger_backends=[mlflow]", "unknown backend 'mlflow'"),
        ("actor.micro_batch_size=100", "does not divide actor.global_batch_size=2048"),
        ("sft.demo_action_noise=-0.2", "sft.demo_action_noise must be >= 0"),
        ("env.train.video_cfg.interval=0", r"env.train.video_cfg.interval must be >= 1"),
    ],
)
def test_bad_values_fail_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("libero_10_grpo_openpi", [override])


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="did you mean 'libero_10_ppo_openpi'"):
        load_config("libero_10_ppo_openp")


def test_gae_without_a_value_head_is_rejected():
    with pytest.raises(ConfigError, match="needs a critic"):
        load_config("libero_10_ppo_openpi", ["actor.model.add_value_head=false"])


def test_a_placement_override_replaces_the_whole_mapping():
    cfg = load_config("libero_10_ppo_openpi", ["cluster.component_placement={env: 0-3, rollout: 4-7, actor: all}"])
    assert dict(cfg.cluster.component_placement) == {"env": "0-3", "rollout": "4-7", "actor": "all"}
