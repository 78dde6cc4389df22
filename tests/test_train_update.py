"""The actor's update: the frozen prefix reused from the rollout, the step-size knobs, lr warm-up."""

import copy
import math

import pytest
import torch

from pi0lab.train.config import ConfigError, load_config
from pi0lab.train.trainer import RLTrainer


def _trainer(checkpoint, run_dir, *extra):
    cfg = load_config("tabletop_ppo_nano", [
        f"actor.model.model_path={checkpoint}", f"runner.logger.log_path={run_dir}",
        "env.train.task_suite_name=tabletop_goal", "env.train.total_num_envs=4",
        "env.train.video_cfg.save_video=false", "runner.val_check_interval=-1", "runner.save_interval=-1",
        "actor.global_batch_size=8", "actor.micro_batch_size=4", "algorithm.update_epoch=2",
        "actor.optim.critic_warmup_steps=0", "algorithm.target_kl=null", "runner.logger.logger_backends=[]", *extra,
    ])
    return RLTrainer(cfg, progress=False)


def _one_rollout(trainer):
    from pi0lab.train.rollout import collect_rollout

    trajectory, _ = collect_rollout(trainer.env, trainer.rollout, trainer.max_chunk_steps)
    return trajectory, trainer.advantages(trajectory)


def test_stored_prefix_gives_the_log_probs_and_values_of_a_recomputed_one(random_nano_checkpoint, tmp_path):
    trainer = _trainer(random_nano_checkpoint, tmp_path)
    traj, _ = _one_rollout(trainer)
    assert traj.prefix is not None  # train_expert_only: the rollout keeps its prefix
    t, n = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 2, 3])
    obs = {key: traj.obs[key][t.numpy(), n.numpy()] for key in ("main_images", "wrist_images", "states")}
    obs["task_descriptions"] = [traj.task_descriptions[i] for i in n.tolist()]
    policy = trainer.policy
    recomputed = policy.evaluate(obs, traj.chains[t, n], traj.noisy_steps[t, n])
    stored = policy.evaluate({"states": obs["states"]}, traj.chains[t, n], traj.noisy_steps[t, n],
                             traj.prefix_at(t, n, policy.device))
    for key in ("logprobs", "values", "entropy"):
        torch.testing.assert_close(stored[key], recomputed[key], rtol=0, atol=1e-5)
    torch.testing.assert_close(stored["logprobs"], traj.logprobs[t, n], rtol=0, atol=1e-5)  # = the rollout's
    trainer.close()


def test_update_with_the_stored_prefix_equals_the_update_that_recomputes_it(random_nano_checkpoint, tmp_path):
    trainer = _trainer(random_nano_checkpoint, tmp_path, "actor.optim.lr=1e-3")
    traj, adv = _one_rollout(trainer)
    start = copy.deepcopy(trainer.policy.state_dict())
    generator_state = trainer.actor_generator.get_state()
    with_prefix = trainer.actor.update(traj, adv, iteration=0)
    weights_with = copy.deepcopy(trainer.policy.state_dict())

    trainer.policy.load_state_dict(start)
    trainer.actor.optimizer = type(trainer.actor.optimizer)(trainer.actor.optimizer.param_groups)  # fresh moments
    trainer.actor.optimizer.state.clear()
    trainer.actor_generator.set_state(generator_state)
    traj.prefix = None  # the update recomputes SigLIP + VLM for every micro-batch
    without = trainer.actor.update(traj, adv, iteration=0)
    assert with_prefix["actor/optimizer_steps"] == without["actor/optimizer_steps"] > 0
    for key in ("actor/loss", "actor/policy_loss", "actor/value_loss", "actor/approx_kl"):
        assert math.isclose(with_prefix[key], without[key], abs_tol=1e-5), key
    for name, value in trainer.policy.state_dict().items():
        torch.testing.assert_close(value, weights_with[name], rtol=0, atol=1e-5, msg=name)
    trainer.close()


def test_mean_reduction_divides_the_summed_log_prob_by_the_dims(random_nano_checkpoint, tmp_path):
    summed = _trainer(random_nano_checkpoint, tmp_path / "sum")
    mean = _trainer(random_nano_checkpoint, tmp_path / "mean", "actor.model.openpi.logprob_reduction=mean")
    traj, _ = _one_rollout(summed)
    t, n = torch.tensor([0, 1]), torch.tensor([0, 1])
    obs = {"states": traj.obs["states"][t.numpy(), n.numpy()]}
    args = (traj.chains[t, n], traj.noisy_steps[t, n], traj.prefix_at(t, n, summed.policy.device))
    dims = traj.noisy_steps.shape[-1] * summed.policy.action_chunk * summed.policy.action_env_dim  # K * C * E = 1 * 5 * 7
    torch.testing.assert_close(mean.policy.evaluate(obs, *args)["logprobs"] * dims,
                               summed.policy.evaluate(obs, *args)["logprobs"], rtol=1e-5, atol=1e-4)
    summed.close()
    mean.close()


def test_std_floor_and_noise_on_every_step(random_nano_checkpoint, tmp_path):
    trainer = _trainer(random_nano_checkpoint, tmp_path, "actor.model.openpi.noise_std_min=0.3",
                       "actor.model.openpi.noise_steps=all")
    obs = trainer.env.reset()
    policy = trainer.policy
    out = policy.rollout(obs, generator=torch.Generator().manual_seed(0))
    assert out["noisy_steps"].shape[1] == policy.num_steps  # every denoise step is noisy
    recomputed = policy.evaluate({"states": obs["states"]}, out["chain"], out["noisy_steps"], out["prefix"])
    torch.testing.assert_close(recomputed["logprobs"], out["logprobs"], rtol=0, atol=1e-4)
    # every transition's std is at least the floor: its Gaussian entropy is at least that of N(0, 0.3^2)
    assert float(recomputed["entropy"].min()) >= 0.5 * math.log(2 * math.pi * math.e * 0.3**2) - 1e-6
    trainer.close()


def test_lr_warms_up_linearly_over_optimiser_steps(random_nano_checkpoint, tmp_path):
    trainer = _trainer(random_nano_checkpoint, tmp_path, "actor.optim.lr=1e-4", "actor.optim.lr_warmup_steps=100")
    traj, adv = _one_rollout(trainer)
    metrics = trainer.actor.update(traj, adv, iteration=0)
    steps = int(metrics["actor/optimizer_steps"])
    groups = trainer.actor.optimizer.param_groups
    assert groups[0]["lr"] == pytest.approx(1e-4 * steps / 100)  # the last step k = steps - 1 used (k + 1) / 100
    assert groups[1]["lr"] == pytest.approx(trainer.cfg.actor.optim.value_lr)  # the critic does not warm up
    trainer.close()


@pytest.mark.parametrize("override, key", [
    ("actor.model.openpi.noise_std_min=-0.1", "noise_std_min"),
    ("actor.optim.lr_warmup_steps=-1", "lr_warmup_steps"),
    ("actor.model.openpi.logprob_reduction=median", "logprob_reduction"),
    ("actor.model.openpi.noise_steps=two", "noise_steps"),
])
def test_bad_step_size_settings_are_refused_by_name(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config("tabletop_ppo_nano", [override])


def test_noise_on_the_first_step_only(random_nano_checkpoint, tmp_path):
    trainer = _trainer(random_nano_checkpoint, tmp_path, "actor.model.openpi.noise_steps=first",
                       "actor.model.openpi.initial_noise=zero")
    obs = trainer.env.reset()
    out = trainer.policy.rollout(obs, generator=torch.Generator().manual_seed(0))
    assert out["noisy_steps"].tolist() == [[0]] * 4  # t = 1 -> 1 - 1/N, for every sample
    assert (out["chain"][:, 0] == 0).all() and (out["chain"][:, 1] != 0).all()  # x_1 = 0, then the credited noise
    trainer.close()
