"""DSRL: the pi0 hooks it needs (pooled prefix features, rollout from a given x_1), the noise block, the
replay buffer, SAC finding the best noise of a toy bandit, and the trainer end to end at toy size."""

import copy
import json
import multiprocessing

import numpy as np
import pytest
import torch

from pi0lab.envs import make_env
from pi0lab.models.policy import Pi0Policy
from pi0lab.train.config import ConfigError, load_config
from pi0lab.train.dsrl import (DSRLTrainer, EnsembleLinear, NoiseBlock, ReplayBuffer, SacAgent, _WindowStream,
                              sac_updates, streamed_steps)
from pi0lab.train.roles import EnvRole
from pi0lab.train.rollout import Timer

DSRL_METRICS = ["train/sac/critic_loss", "train/sac/actor_loss", "train/sac/alpha", "train/replay_buffer/size",
                "env/success_once", "env/episode_len", "env/return"]


@pytest.fixture(scope="module")
def policy_and_obs(random_nano_checkpoint):
    policy = Pi0Policy.from_checkpoint(random_nano_checkpoint, action_chunk=5, num_steps=4, train_expert_only=True)
    envs = make_env("tabletop_spatial", 3, seed=0)
    return policy, envs.reset()


# ------------------------------------------------------------------------------------------ pi0 hooks


def test_prefix_features_pool_what_the_last_vlm_layer_reads_over_valid_tokens(policy_and_obs):
    policy, obs = policy_and_obs
    model_obs = policy.preprocess(obs)
    seen = []
    hook = policy.model.vlm.layers[-1].input_layernorm.register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        cache = policy.model.prefill(model_obs)
    hook.remove()
    valid = cache.pad_mask.float()[..., None]  # [B,P,1]
    torch.testing.assert_close(cache.features, (seen[0] * valid).sum(1) / valid.sum(1))
    assert cache.features.shape == (3, policy.model.config.vlm.width)
    assert not torch.allclose(cache.features[0], cache.features[1])  # other scene, other features

    wrist = policy.model.config.cameras[1]
    model_obs.image_masks[wrist] = torch.zeros(3, dtype=torch.bool)  # a camera masked out ...
    with torch.no_grad():
        masked = policy.model.prefill(model_obs).features
        model_obs.images[wrist] = torch.rand_like(model_obs.images[wrist]) * 2 - 1  # ... is not read at all
        torch.testing.assert_close(policy.model.prefill(model_obs).features, masked)


def test_rollout_from_a_given_noise_and_a_given_prefix(policy_and_obs):
    policy, obs = policy_and_obs
    shape = (3, policy.model.config.action_horizon, policy.model.config.action_dim)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    cache = policy.prefill(obs)
    from_noise = policy.rollout(obs, deterministic=True, noise=noise)["actions"]
    with_prefix = policy.rollout({"states": obs["states"]}, deterministic=True, noise=noise, prefix=cache)["actions"]
    torch.testing.assert_close(with_prefix, from_noise)  # only the states are needed next to a cache
    assert not torch.allclose(policy.rollout(obs, deterministic=True, noise=-noise)["actions"], from_noise)
    zero_start = policy.rollout(obs, deterministic=True, noise=torch.zeros(shape))["actions"]
    policy.initial_noise = "zero"
    try:
        torch.testing.assert_close(policy.rollout(obs, deterministic=True)["actions"], zero_start)
    finally:
        policy.initial_noise = "gaussian"
    with pytest.raises(ValueError, match="noise must be x_1"):
        policy.rollout(obs, deterministic=True, noise=torch.zeros(3, 2, 32))


# ------------------------------------------------------------------------------------------ parts


def test_noise_block_puts_the_bounded_action_in_the_executed_corner_of_x1():
    block = NoiseBlock(steps=2, dims=3, bound=1.5, horizon=4, model_dims=5)
    action = torch.arange(12.0).reshape(2, 6) / 12
    noise = block.to_noise(action)
    assert block.size == 6 and noise.shape == (2, 4, 5)
    torch.testing.assert_close(noise[:, :2, :3], 1.5 * action.reshape(2, 2, 3))
    assert noise[:, 2:].abs().sum() == 0 and noise[:, :, 3:].abs().sum() == 0  # the rest of x_1 is the prior's mean


def _transitions(start: int, count: int) -> dict[str, torch.Tensor]:
    values = torch.arange(start, start + count, dtype=torch.float32)
    return {"features": values[:, None].repeat(1, 4), "states": values[:, None].repeat(1, 2),
            "actions": values[:, None].repeat(1, 3), "rewards": values, "dones": values > 100,
            "next_features": values[:, None].repeat(1, 4), "next_states": values[:, None].repeat(1, 2)}


def test_replay_buffer_keeps_the_newest_and_round_trips():
    buffer = ReplayBuffer(capacity=4)
    buffer.add(_transitions(0, 3))
    buffer.add(_transitions(3, 3))  # wraps: 0 and 1 are overwritten
    assert buffer.size == 4 and sorted(buffer.storage["rewards"].tolist()) == [2, 3, 4, 5]
    buffer.add(_transitions(10, 6))  # more than capacity at once: only the newest 4 survive
    assert sorted(buffer.storage["rewards"].tolist()) == [12, 13, 14, 15]
    batch = buffer.sample(32, torch.Generator().manual_seed(0))
    assert batch["features"].shape == (32, 4) and set(batch["rewards"].tolist()) <= {12.0, 13.0, 14.0, 15.0}
    restored = ReplayBuffer(capacity=4)
    restored.load_state_dict(buffer.state_dict())
    restored.add(_transitions(20, 1))
    buffer.add(_transitions(20, 1))
    assert all(torch.equal(restored.storage[k], buffer.storage[k]) for k in ReplayBuffer.FIELDS)
    with pytest.raises(ValueError, match="fields"):
        buffer.add({"rewards": torch.zeros(1)})


def test_a_subset_of_heads_is_those_rows_of_the_whole_ensemble():
    sac = load_config(None, ["algorithm.sac.num_q_heads=5", "algorithm.sac.hidden_dims=[16,16]",
                             "algorithm.sac.latent_dim=8"]).algorithm.sac
    torch.manual_seed(0)
    critic = SacAgent(feature_dim=6, state_dim=3, action_dim=4, sac=sac, gamma=0.9).critic
    features, states, actions = torch.randn(7, 6), torch.randn(7, 3), torch.rand(7, 4) * 2 - 1
    heads = torch.tensor([3, 0])
    torch.testing.assert_close(critic(features, states, actions, heads=heads),
                               critic(features, states, actions)[heads], rtol=1e-6, atol=1e-6)


def test_a_layer_normed_critic_is_each_head_written_out_with_normalised_hidden_layers():
    sac = load_config(None, ["algorithm.sac.num_q_heads=3", "algorithm.sac.hidden_dims=[16,16]",
                             "algorithm.sac.latent_dim=8", "algorithm.sac.critic_layer_norm=true"]).algorithm.sac
    torch.manual_seed(0)
    critic = SacAgent(feature_dim=6, state_dim=3, action_dim=4, sac=sac, gamma=0.9).critic
    features, states, actions = torch.randn(7, 6), torch.randn(7, 3), torch.rand(7, 4) * 2 - 1
    linears = [layer for layer in critic.heads if isinstance(layer, EnsembleLinear)]
    x = torch.cat([critic.encoder(features, states), actions], dim=-1)  # [B, 2L + D]
    for head in range(3):
        h = x
        for layer in linears[:-1]:
            z = h @ layer.weight[head] + layer.bias[head]
            h = torch.relu((z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + 1e-5))
        q = (h @ linears[-1].weight[head] + linears[-1].bias[head]).squeeze(-1)
        torch.testing.assert_close(critic(features, states, actions)[head], q, rtol=1e-5, atol=1e-5)


def _reference_sac_update(agent: SacAgent, batch: dict, generator: torch.Generator, update_actor: bool = True) -> None:
    """SAC written out plainly (every head of the target computed, the actor's pass with the critic's weight
    gradients), drawing the same random numbers in the same order as `SacAgent.update`."""
    alpha = agent.log_alpha.exp().detach()
    with torch.no_grad():
        next_action, _ = agent.actor.sample(batch["next_features"], batch["next_states"], generator)
        heads = torch.randperm(agent.critic.num_heads, generator=generator)[: agent.target_q_heads]
        next_q = agent.target_critic(batch["next_features"], batch["next_states"], next_action)[heads]
        target = batch["rewards"] + agent.gamma * (~batch["dones"]).float() * next_q.min(0).values
    q = agent.critic(batch["features"], batch["states"], batch["actions"])
    agent.critic_optimizer.zero_grad()
    (q - target).square().mean().backward()
    agent.critic_optimizer.step()
    if update_actor:
        action, logprob = agent.actor.sample(batch["features"], batch["states"], generator)
        agent.actor_optimizer.zero_grad()
        (alpha * logprob - agent.critic(batch["features"], batch["states"], action).mean(0)).mean().backward()
        agent.actor_optimizer.step()
        agent.alpha_optimizer.zero_grad()
        (-(agent.log_alpha * (logprob.detach() + agent.target_entropy))).mean().backward()
        agent.alpha_optimizer.step()
    with torch.no_grad():
        for target_param, param in zip(agent.target_critic.parameters(), agent.critic.parameters()):
            target_param.mul_(1 - agent.tau).add_(agent.tau * param)


def test_sac_update_equals_sac_written_out_plainly():
    sac = load_config(None, ["algorithm.sac.num_q_heads=5", "algorithm.sac.target_q_heads=2",
                             "algorithm.sac.hidden_dims=[16,16]", "algorithm.sac.latent_dim=8",
                             "algorithm.sac.actor_lr=1e-2", "algorithm.sac.critic_lr=1e-2"]).algorithm.sac
    torch.manual_seed(0)
    agent = SacAgent(feature_dim=6, state_dim=3, action_dim=4, sac=sac, gamma=0.9)
    for param in agent.actor.head[-1].parameters():  # a policy whose output depends on the observation
        torch.nn.init.normal_(param, std=0.1)
    reference = copy.deepcopy(agent)
    buffer = ReplayBuffer(capacity=64)
    buffer.add({"features": torch.randn(64, 6), "states": torch.randn(64, 3), "actions": torch.rand(64, 4) * 2 - 1,
                "rewards": torch.randn(64), "dones": torch.rand(64) < 0.2, "next_features": torch.randn(64, 6),
                "next_states": torch.randn(64, 3)})
    draws, mine, theirs = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    for _ in range(5):
        batch = buffer.sample(16, draws)
        agent.update(batch, mine)
        _reference_sac_update(reference, batch, theirs)
    for (name, got), expected in zip(agent.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_a_critic_actor_ratio_of_3_steps_the_actor_on_updates_0_3_6_of_a_round():
    sac = load_config(None, ["algorithm.sac.num_q_heads=4", "algorithm.sac.hidden_dims=[16,16]",
                             "algorithm.sac.latent_dim=8", "algorithm.sac.actor_lr=1e-2", "algorithm.sac.critic_lr=1e-2",
                             "algorithm.sac.batch_size=16", "algorithm.sac.updates_per_iteration=7",
                             "algorithm.sac.critic_actor_ratio=3"]).algorithm.sac
    torch.manual_seed(0)
    agent = SacAgent(feature_dim=6, state_dim=3, action_dim=4, sac=sac, gamma=0.9)
    reference = copy.deepcopy(agent)
    buffer = ReplayBuffer(capacity=64)
    buffer.add({"features": torch.randn(64, 6), "states": torch.randn(64, 3), "actions": torch.rand(64, 4) * 2 - 1,
                "rewards": torch.randn(64), "dones": torch.rand(64) < 0.2, "next_features": torch.randn(64, 6),
                "next_states": torch.randn(64, 3)})
    mine, theirs = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    metrics = sac_updates(agent, buffer, sac, mine)
    for step in range(7):
        _reference_sac_update(reference, buffer.sample(16, theirs), theirs, update_actor=step % 3 == 0)
    for (name, got), expected in zip(agent.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=name)
    steps = {name: optimizer.state_dict()["state"][0]["step"].item() for name, optimizer in agent.optimizers().items()}
    assert steps == {"actor": 3, "critic": 7, "alpha": 3}
    assert set(metrics) == {"critic_loss", "actor_loss", "alpha", "q_mean", "entropy"}


def test_sac_finds_the_best_noise_of_a_bandit():
    """One state, 2-D noise, reward 1 - |a - a*|^2: a few hundred SAC steps bring tanh(mean) to a*."""
    sac = load_config(None, ["algorithm.sac.num_q_heads=4", "algorithm.sac.hidden_dims=[64,64]",
                             "algorithm.sac.latent_dim=16", "algorithm.sac.actor_lr=3e-3",
                             "algorithm.sac.critic_lr=3e-3", "algorithm.sac.alpha_lr=3e-3",
                             "algorithm.sac.initial_alpha=0.1"]).algorithm.sac
    torch.manual_seed(0)
    agent = SacAgent(feature_dim=4, state_dim=2, action_dim=2, sac=sac, gamma=0.99)
    generator = torch.Generator().manual_seed(0)
    buffer = ReplayBuffer(capacity=2000)
    best = torch.tensor([0.5, -0.3])
    features, states = torch.zeros(32, 4), torch.zeros(32, 2)
    for _ in range(300):
        with torch.no_grad():
            actions, _ = agent.actor.sample(features, states, generator)
        rewards = 1.0 - (actions - best).square().sum(-1)
        buffer.add({"features": features, "states": states, "actions": actions, "rewards": rewards,
                    "dones": torch.ones(32, dtype=torch.bool), "next_features": features, "next_states": states})
        metrics = agent.update(buffer.sample(128, generator), generator)
    found = agent.actor.mean_action(features[:1], states[:1])[0]
    assert (found - best).norm() < 0.1, found
    assert metrics["alpha"] < 0.1  # the policy's entropy went above the target early on, so alpha fell


# ------------------------------------------------------------------------------------------ trainer


def _config(checkpoint, run_dir, *extra):
    return load_config("tabletop_dsrl_nano", [
        f"actor.model.model_path={checkpoint}", f"runner.logger.log_path={run_dir}",
        "env.train.total_num_envs=2", "env.train.max_episode_steps=15", "env.eval.total_num_envs=2",
        "env.eval.num_episodes=2", "env.eval.max_episode_steps=15",
        "env.train.video_cfg.save_video=false", "env.eval.video_cfg.save_video=false",
        "runner.max_epochs=2", "runner.val_check_interval=-1", "runner.save_interval=-1",
        "algorithm.sac.batch_size=16", "algorithm.sac.updates_per_iteration=3", "algorithm.sac.num_q_heads=3",
        "algorithm.sac.hidden_dims=[32,32]", "algorithm.sac.update_during_collection=false",
        "algorithm.sac.critic_warmup_iterations=0", *extra,
    ])


def test_two_iterations_log_the_metric_names(random_nano_checkpoint, tmp_path):
    trainer = DSRLTrainer(_config(random_nano_checkpoint, tmp_path), progress=False)
    events = list(trainer.iterate())
    trainer.close()
    assert [e.iteration for e in events] == [1, 2]
    for name in DSRL_METRICS + ["train/sac/q_mean", "train/sac/entropy", "time/update"]:
        assert np.isfinite(events[-1].metrics[name]), name
    # 2 envs x 3 chunk steps (15 env steps of 5) per window, none succeeding with random weights
    assert [e.metrics["train/replay_buffer/size"] for e in events] == [6.0, 12.0]
    assert events[0].metrics["env/episode_len"] == 15.0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_000002"
    assert (tmp_path / "checkpoints" / "step_000002" / "model" / "dsrl_agent.pt").is_file()


def test_an_n_step_window_stores_summed_rewards_and_the_state_n_steps_on(random_nano_checkpoint, tmp_path):
    windows = {}
    for n in (1, 2):
        trainer = DSRLTrainer(_config(random_nano_checkpoint, tmp_path / str(n), f"algorithm.sac.n_step={n}",
                                      "algorithm.sac.step_penalty=0.25"), progress=False)
        windows[n] = trainer.collect(Timer())[0]  # the same seeds: the same window
        trainer.close()
    one, two = windows[1], windows[2]
    # 2 envs x 3 chunk steps (none ends before the time limit at step 3), stored t-major: row 2t + env
    gamma = load_config("tabletop_dsrl_nano").algorithm.gamma
    step = one["rewards"].reshape(3, 2)
    torch.testing.assert_close(two["rewards"].reshape(3, 2), torch.stack([step[0] + gamma * step[1],
                                                                         step[1] + gamma * step[2], step[2]]))
    assert two["dones"].reshape(3, 2).tolist() == [[False, False], [True, True], [True, True]]
    torch.testing.assert_close(two["next_features"][:2], one["features"][4:])  # step 0 bootstraps from step 2
    torch.testing.assert_close(one["next_features"][:4], one["features"][2:])
    assert torch.equal(one["dones"].reshape(3, 2)[:2], torch.zeros(2, 2, dtype=torch.bool))


def test_the_collection_runs_pi0_for_the_envs_still_playing_only(random_nano_checkpoint, tmp_path):
    trainer = DSRLTrainer(_config(random_nano_checkpoint, tmp_path), progress=False)
    sizes, step = [], trainer.env.step
    act = trainer.act

    def recording_act(obs, generator=None, actor=None):
        sizes.append(len(obs["states"]))
        return act(obs, generator, actor)

    def env_0_succeeds_at_once(actions):
        obs, rewards, terminated, truncated, info = step(actions)
        if len(sizes) == 1:  # after the first chunk step
            rewards[0, -1], terminated[0] = 1.0, True
        return obs, rewards, terminated, truncated, info

    trainer.act, trainer.env.step = recording_act, env_0_succeeds_at_once
    transitions, _ = trainer.collect(Timer())
    trainer.close()
    assert sizes == [2, 1, 1]  # env 0 ended after step 0: pi0 runs for env 1 alone from then on
    # step 0 of both envs, then env 1's steps 1 and 2 (t-major); env 0's one transition ends its episode
    assert transitions["dones"].tolist() == [True, False, False, True]
    assert transitions["rewards"][0] == 1.0 - trainer.cfg.algorithm.sac.step_penalty
    torch.testing.assert_close(transitions["next_features"][1:3], transitions["features"][2:])


def test_normalized_features_are_z_scored_with_the_first_resets_stats_and_kept_on_resume(random_nano_checkpoint,
                                                                                            tmp_path):
    cfg = _config(random_nano_checkpoint, tmp_path, "algorithm.sac.normalize_features=true", "runner.max_epochs=1")
    trainer = DSRLTrainer(cfg, progress=False)
    first = EnvRole(cfg.env.train, seed=cfg.runner.seed).reset()  # the reset the stats come from
    raw = trainer.policy.prefill(first).features.float()
    torch.testing.assert_close(trainer.agent.feature_mean, raw.mean(0))
    torch.testing.assert_close(trainer.agent.feature_std, raw.std(0) + 1e-3)
    obs = trainer.env.reset()
    torch.testing.assert_close(trainer.act(obs)["features"],
                               (trainer.policy.prefill(obs).features.float() - raw.mean(0)) / (raw.std(0) + 1e-3))
    list(trainer.iterate())
    trainer.close()
    resumed = DSRLTrainer(cfg, resume=True, progress=False)
    assert torch.equal(resumed.agent.feature_mean, trainer.agent.feature_mean)
    assert torch.equal(resumed.agent.feature_std, trainer.agent.feature_std)
    resumed.close()


def test_stop_then_resume_equals_one_uninterrupted_run(random_nano_checkpoint, tmp_path):
    straight = DSRLTrainer(_config(random_nano_checkpoint, tmp_path / "a"), progress=False)
    expected = list(straight.iterate())[-1].metrics
    straight.close()

    first = DSRLTrainer(_config(random_nano_checkpoint, tmp_path / "b"), progress=False)
    for _ in first.iterate():
        first.request_stop()
    first.close()
    assert (tmp_path / "b" / "checkpoints" / "latest").read_text().strip() == "step_000001"
    resumed = DSRLTrainer(_config(random_nano_checkpoint, tmp_path / "b"), resume=True, progress=False)
    assert resumed.buffer.size == 6
    events = list(resumed.iterate())
    resumed.close()
    assert [e.iteration for e in events] == [2]
    for name in ("train/sac/critic_loss", "train/sac/actor_loss", "train/sac/alpha", "train/sac/q_mean",
                 "env/return", "rollout/rewards_mean", "train/replay_buffer/size"):
        assert events[0].metrics[name] == expected[name], name
    for (name, a), b in zip(straight.agent.state_dict().items(), resumed.agent.state_dict().values()):
        assert torch.equal(a, b), name


def test_training_videos_are_written_every_interval_iterations(random_nano_checkpoint, tmp_path):
    trainer = DSRLTrainer(_config(random_nano_checkpoint, tmp_path, "runner.max_epochs=3",
                                  "env.train.video_cfg.save_video=true", "env.train.video_cfg.interval=2"),
                          progress=False)
    events = list(trainer.iterate())
    trainer.close()
    assert [e.video is not None for e in events] == [True, False, True]
    assert events[0].video[4:8] == b"ftyp"
    assert sorted(p.name for p in (tmp_path / "video" / "train").iterdir()) == [
        "train_iter_000001_env0.mp4", "train_iter_000003_env0.mp4"]


def test_streamed_steps_spread_a_round_over_the_window():
    # equal sizes: 200 updates over a 12-step window, every 16 or 17 updates one more chunk step, the last 11 of 12
    reads = [streamed_steps(i, 200, [1] * 12) for i in range(200)]
    assert reads[0] == 0 and reads[16] == 0 and reads[17] == 1 and reads[199] == 11
    assert all(b - a in (0, 1) for a, b in zip(reads, reads[1:]))
    assert [streamed_steps(i, 3, [1, 1, 1]) for i in range(3)] == [0, 1, 2]
    # the previous window's transitions per step: 8 + 4 + 2 + 2 = 16; update i reads k steps while S_k <= 16 i / 8
    sizes = [8, 4, 2, 2]
    assert [streamed_steps(i, 8, sizes) for i in range(8)] == [0, 0, 0, 0, 1, 1, 2, 3]
    assert streamed_steps(7, 8, [5]) == 0  # a one-step window: read at the round's end only


def test_the_window_stream_adds_for_each_update_the_steps_it_reads():
    trainer_end, learner_end = multiprocessing.Pipe()
    buffer = ReplayBuffer(100)
    stream = _WindowStream(learner_end, buffer, load_config(None, ["algorithm.sac.updates_per_iteration=8"]).algorithm.sac,
                           [8, 4, 2, 2])  # the previous window's sizes: reads 0 0 0 0 1 1 2 3 (test above)
    first = 0
    for count in (3, 2, 2, 1):  # this window's transitions per chunk step, all sent before the round
        trainer_end.send(("step", _transitions(first, count)))
        first += count
    trainer_end.send(("end", None))
    sizes = []
    for update in range(8):
        stream.before_update(update)
        sizes.append(buffer.size)
    stream.finish()
    assert sizes == [0, 0, 0, 0, 3, 3, 5, 7] and buffer.size == 8
    assert torch.equal(buffer.storage["rewards"][:8], _transitions(0, 8)["rewards"])  # in the window's order


def test_the_learner_process_learns_from_the_window_it_streams(random_nano_checkpoint, tmp_path):
    overlap = "algorithm.sac.update_during_collection=true"
    runs = []
    for name in ("b", "c"):
        trainer = DSRLTrainer(_config(random_nano_checkpoint, tmp_path / name, overlap), progress=False)
        runs.append((trainer, list(trainer.iterate())))
        trainer.close()
    (trainer, events), (again, _) = runs
    for (name, a), b in zip(trainer.agent.state_dict().items(), again.agent.state_dict().values()):
        assert torch.equal(a, b), name  # the processes' timing changes nothing

    # the same by hand in one process: windows of 3 chunk steps, rounds of 3 updates; update i first adds the
    # window's steps `streamed_steps` gives it for the previous window's sizes (equal in the first round; update
    # 0 of the first round: an empty buffer, no step), the rest after the round; one thread, as there
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    by_hand = DSRLTrainer(_config(random_nano_checkpoint, tmp_path / "a"), progress=False)
    sac = by_hand.cfg.algorithm.sac
    sizes = [1, 1, 1]
    for event in events:
        steps, added = [], [0]
        by_hand.collect(Timer(), on_transitions=steps.append)
        assert len(steps) == 3

        def add_until(i, sizes=sizes, steps=steps, added=added):
            for step in steps[added[0]: streamed_steps(i, 3, sizes)]:
                by_hand.buffer.add(step)
            added[0] = max(added[0], streamed_steps(i, 3, sizes))

        metrics = sac_updates(by_hand.agent, by_hand.buffer, sac, by_hand.update_generator, add_until)
        for step in steps[added[0]:]:
            by_hand.buffer.add(step)
        sizes = [len(step["rewards"]) for step in steps]
        assert metrics["critic_loss"] == event.metrics["train/sac/critic_loss"], event.iteration
        assert by_hand.buffer.size == event.metrics["train/replay_buffer/size"]
    by_hand.close()
    torch.set_num_threads(threads)
    assert trainer.window_step_sizes == sizes  # what the next round's schedule reads
    for (name, a), b in zip(by_hand.agent.state_dict().items(), trainer.agent.state_dict().values()):
        assert torch.equal(a, b), name

    first = DSRLTrainer(_config(random_nano_checkpoint, tmp_path / "d", overlap), progress=False)
    for _ in first.iterate():
        first.request_stop()
    first.close()
    resumed = DSRLTrainer(_config(random_nano_checkpoint, tmp_path / "d", overlap), resume=True, progress=False)
    last = list(resumed.iterate())[-1].metrics
    resumed.close()
    for name in ("train/sac/critic_loss", "train/sac/q_mean", "env/return", "train/replay_buffer/size"):
        assert last[name] == events[-1].metrics[name], name
    for (name, a), b in zip(trainer.agent.state_dict().items(), resumed.agent.state_dict().values()):
        assert torch.equal(a, b), name


def test_evaluation_uses_the_mean_noise(random_nano_checkpoint, tmp_path):
    trainer = DSRLTrainer(_config(random_nano_checkpoint, tmp_path), progress=False)
    obs = trainer.env.reset()
    step = trainer.act(obs)  # no generator: the mean
    features = trainer.policy.prefill(obs).features
    states = trainer.policy.preprocess_state(obs["states"])[:, : trainer.state_dim]
    torch.testing.assert_close(step["actions"], trainer.agent.actor.mean_action(features, states))
    assert np.array_equal(trainer.act(obs)["env_actions"], step["env_actions"])
    sampled = trainer.act(obs, torch.Generator().manual_seed(0))["env_actions"]
    assert not np.allclose(sampled, step["env_actions"])
    first, second = trainer.evaluate(), trainer.evaluate()
    trainer.close()
    assert first.num_episodes == 2
    assert first.successes == second.successes and first.episode_lens == second.episode_lens


def test_a_fresh_noise_policy_starts_from_x1_zero_the_sft_checkpoints_deterministic_start(random_nano_checkpoint,
                                                                                          tmp_path):
    trainer = DSRLTrainer(_config(random_nano_checkpoint, tmp_path), progress=False)
    obs = trainer.env.reset()
    step = trainer.act(obs)
    assert torch.equal(step["actions"], torch.zeros_like(step["actions"]))  # the mean noise block is 0
    plain = trainer.policy.rollout(obs, deterministic=True)["actions"].cpu().numpy()  # x_1 = 0 (initial_noise: zero)
    np.testing.assert_allclose(step["env_actions"], plain, atol=1e-6)
    trainer.close()


@pytest.mark.parametrize("initial_std", [0.3, 1.0, 1.5])
def test_a_fresh_noise_policy_has_mean_zero_and_the_initial_std_whatever_the_observation(initial_std):
    sac = load_config(None, ["algorithm.sac.hidden_dims=[16,16]", "algorithm.sac.latent_dim=8",
                             f"algorithm.sac.initial_std={initial_std}"]).algorithm.sac
    agent = SacAgent(feature_dim=6, state_dim=3, action_dim=4, sac=sac, gamma=0.9)
    mean, log_std = agent.actor(torch.randn(50, 6), torch.randn(50, 3))
    assert torch.equal(mean, torch.zeros(50, 4))
    torch.testing.assert_close(log_std.exp(), torch.full((50, 4), initial_std))
    u = torch.atanh(agent.actor.sample(torch.zeros(20000, 6), torch.zeros(20000, 3), torch.Generator())[0])
    assert abs(u.std().item() - initial_std) < 0.02 * initial_std  # the samples' own spread, a second check


def test_no_gradient_step_before_learning_starts(random_nano_checkpoint, tmp_path):
    trainer = DSRLTrainer(_config(random_nano_checkpoint, tmp_path, "algorithm.sac.learning_starts=10"), progress=False)
    start = {k: v.clone() for k, v in trainer.agent.state_dict().items()}
    first, second = list(trainer.iterate())  # the buffer holds 6, then 12 transitions
    trainer.close()
    assert "train/sac/critic_loss" not in first.metrics and "train/sac/critic_loss" in second.metrics
    assert first.metrics["train/replay_buffer/size"] == 6.0
    assert any(not torch.equal(start[k], v) for k, v in trainer.agent.state_dict().items())


@pytest.mark.parametrize("overlap", ["false", "true"])
def test_a_critic_warmup_iteration_steps_the_critic_and_leaves_the_actor_at_its_start(random_nano_checkpoint,
                                                                                       tmp_path, overlap):
    trainer = DSRLTrainer(_config(random_nano_checkpoint, tmp_path, "algorithm.sac.critic_warmup_iterations=1",
                                  f"algorithm.sac.update_during_collection={overlap}"), progress=False)
    actor, critic = (copy.deepcopy(m.state_dict()) for m in (trainer.agent.actor, trainer.agent.critic))
    actors = []
    for event in trainer.iterate():
        actors.append(copy.deepcopy(trainer.agent.actor.state_dict()))
        if event.iteration == 1:
            first = event
    second, after_first = event, actors[0]
    if overlap == "true":
        trainer.learner.fetch_state(trainer.agent, trainer.update_generator)
    steps = {name: o.state_dict()["state"][0]["step"].item() for name, o in trainer.agent.optimizers().items()}
    trainer.close()
    assert all(torch.equal(actor[k], v) for k, v in after_first.items())  # the warm-up round left the actor alone
    assert "train/sac/critic_loss" in first.metrics and "train/sac/actor_loss" not in first.metrics
    assert "train/sac/actor_loss" in second.metrics
    assert any(not torch.equal(actor[k], v) for k, v in trainer.agent.actor.state_dict().items())
    assert any(not torch.equal(critic[k], v) for k, v in trainer.agent.critic.state_dict().items())
    # 3 updates a round, the first of the run on an empty buffer; the actor and alpha step in the second round only
    assert steps == ({"actor": 3, "critic": 5, "alpha": 3} if overlap == "true" else
                     {"actor": 3, "critic": 6, "alpha": 3})


def test_bad_configs_are_refused_by_name(random_nano_checkpoint, tmp_path):
    for override, key in [("algorithm.sac.num_q_heads=0", "algorithm.sac.num_q_heads"),
                          ("algorithm.sac.learning_starts=-1", "algorithm.sac.learning_starts"),
                          ("algorithm.sac.target_q_heads=5", "algorithm.sac.target_q_heads"),
                          ("algorithm.sac.noise_dims=33", "algorithm.sac.noise_dims"),
                          ("algorithm.sac.tau=0", "algorithm.sac.tau"),
                          ("algorithm.sac.n_step=0", "algorithm.sac.n_step"),
                          ("algorithm.sac.critic_warmup_iterations=-1", "algorithm.sac.critic_warmup_iterations"),
                          ("algorithm.sac.hidden_dims=[]", "algorithm.sac.hidden_dims"),
                          ("algorithm.loss_type=actor_critic", "algorithm.loss_type")]:
        with pytest.raises(ConfigError, match=key):
            _config(random_nano_checkpoint, tmp_path, override)
    # the nano model of the recipe has a horizon of 10, known once it is loaded
    with pytest.raises(ValueError, match="algorithm.sac.noise_horizon=11"):
        DSRLTrainer(_config(random_nano_checkpoint, tmp_path, "algorithm.sac.noise_horizon=11"), progress=False)
    with pytest.raises(ConfigError, match="algorithm.sac.initial_std"):
        _config(random_nano_checkpoint, tmp_path, "algorithm.sac.initial_std=0")
    with pytest.raises(ValueError, match="algorithm.sac.initial_std=10"):  # above the std's range e^2
        DSRLTrainer(_config(random_nano_checkpoint, tmp_path, "algorithm.sac.initial_std=10"), progress=False)
    with pytest.raises(FileNotFoundError, match="actor.model.model_path"):
        DSRLTrainer(_config(tmp_path / "none", tmp_path), progress=False)
    with pytest.raises(ValueError, match="model_path is not set"):
        DSRLTrainer(_config(random_nano_checkpoint, tmp_path, "actor.model.model_path=null"), progress=False)
    with pytest.raises(ValueError, match="embodied_sac"):
        DSRLTrainer(load_config("tabletop_ppo_nano", [f"actor.model.model_path={random_nano_checkpoint}"]))


def test_pi0lab_train_dispatches_a_dsrl_config_to_the_dsrl_trainer(random_nano_checkpoint, tmp_path):
    from pi0lab.cli import main

    overrides = [f"actor.model.model_path={random_nano_checkpoint}", f"runner.logger.log_path={tmp_path}",
                 "runner.max_epochs=1", "runner.val_check_interval=-1", "env.train.total_num_envs=2",
                 "env.train.max_episode_steps=5", "env.train.video_cfg.save_video=false",
                 "algorithm.sac.updates_per_iteration=1", "algorithm.sac.batch_size=4"]
    assert main(["train", "tabletop_dsrl_nano", *overrides]) == 0
    assert (tmp_path / "checkpoints" / "step_000001" / "model" / "dsrl_agent.pt").is_file()
