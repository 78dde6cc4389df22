"""benchmarks/vision_check.py: the swapped run feeds the shadow scene's images and scores the real scene."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pi0lab.envs import make_env
from pi0lab.envs.tabletop import TabletopEnv
from pi0lab.train.evaluate import evaluate, evaluate_policy, evaluation_pairs

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def vision_check(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its neighbour env_speed
    module = importlib.import_module("vision_check")
    yield module
    sys.modules.pop("vision_check", None)


@pytest.fixture
def recorded(vision_check, monkeypatch):
    """One list per evaluate_policy call of main: (obs the policy got, actions it returned), call by call."""
    runs = []
    evaluate_policy_ = vision_check.evaluate_policy

    def recording(policy, envs, *args, **kwargs):
        calls, rollout = [], policy.rollout
        runs.append(calls)

        def recorded_rollout(obs, **options):
            out = rollout(obs, **options)
            calls.append((obs, out["actions"].cpu().numpy()))
            return out

        policy.rollout = recorded_rollout
        try:
            return evaluate_policy_(policy, envs, *args, **kwargs)
        finally:
            del policy.rollout

    monkeypatch.setattr(vision_check, "evaluate_policy", recording)
    return runs


def test_the_policy_sees_the_shadow_scene_and_is_scored_on_its_own(vision_check, recorded, random_nano_checkpoint):
    suite = "tabletop_spatial"
    out = vision_check.main([str(random_nano_checkpoint), "--suite", suite, "--episodes", "3", "--no-blind",
                             "--initial-noise", "zero"])
    assert out["pairs"] == [(0, 0), (1, 0), (2, 0)] and out["others"] == [1, 1, 1]
    own_calls, swapped_calls = recorded
    assert len(swapped_calls) > 1  # one round, several chunks
    # independent route: single envs (not the vector env, not the wrapper) replay the executed actions
    real = [TabletopEnv(suite, 64) for _ in out["pairs"]]
    shadow = [TabletopEnv(suite, 64) for _ in out["pairs"]]
    real_obs = [env.reset(task, init) for env, (task, init) in zip(real, out["pairs"])]
    shadow_obs = [env.reset(task, other) for env, (task, _), other in zip(shadow, out["pairs"], out["others"])]
    for obs, actions in swapped_calls:
        for i in range(len(real)):
            assert np.array_equal(obs["main_images"][i], shadow_obs[i]["main_image"])
            assert np.array_equal(obs["wrist_images"][i], shadow_obs[i]["wrist_image"])
            assert not np.array_equal(obs["main_images"][i], real_obs[i]["main_image"])
            assert np.allclose(obs["states"][i], real_obs[i]["state"])  # the real robot state
            assert obs["task_descriptions"][i] == real_obs[i]["task_description"]
        real_obs = [env.step_chunk(a)[0] for env, a in zip(real, actions)]
        shadow_obs = [env.step_chunk(a)[0] for env, a in zip(shadow, actions)]
    # the own run saw the real scene
    assert np.array_equal(own_calls[0][0]["main_images"][0], TabletopEnv(suite, 64).reset(0, 0)["main_image"])


def test_offset_zero_scores_exactly_the_own_run(vision_check, recorded, random_nano_checkpoint):
    out = vision_check.main([str(random_nano_checkpoint), "--suite", "tabletop_goal", "--episodes", "5",
                             "--num-envs", "2", "--offset", "0", "--initial-noise", "gaussian", "--seed", "3"])
    own_calls, swapped_calls = recorded
    assert len(own_calls) == len(swapped_calls) > 3  # three rounds
    for (own_obs, own_actions), (obs, actions) in zip(own_calls, swapped_calls):
        assert all(np.array_equal(own_obs[key], obs[key]) for key in ("main_images", "wrist_images", "states"))
        assert np.array_equal(own_actions, actions)
    assert np.array_equal(out["own"], out["swapped"])
    assert out["blind"].shape == (5,)


def test_wrapper_with_the_shadows_expert_is_the_blind_replay(vision_check):
    """Acting with the shadow scene's expert through the wrapper scores the real scene: the shadow succeeds,
    only the real env counts, and the score is env_speed's blind replay on the same pairs."""
    suite, n = "tabletop_goal", 20
    real, shadow = make_env(suite, 10), make_env(suite, 10)
    result = evaluate(lambda obs: shadow.expert_actions(5), vision_check.SwappedImages(real, shadow, 1), n, 5,
                      progress=False)
    pairs = evaluation_pairs(n, real.num_tasks, real.num_init_states)
    flags = [result.successes[task][init] for task, init in pairs]
    blind = vision_check.blind_replay(suite, [t for t, _ in pairs], [k for _, k in pairs],
                                      [vision_check.other_init(real, t, k, 1) for t, k in pairs], chunk=5)
    assert flags == blind.tolist() and 0 < np.mean(flags) < 1


class NoiseProbe:
    """A stand-in policy that records each rollout's first noise draw with the round's tasks, and acts as the
    expert or idles."""

    device, training, action_chunk = torch.device("cpu"), False, 5
    initial_noise = "gaussian"  # it draws its noise from the generator (so every env is asked for an action)

    def __init__(self, envs, expert: bool):
        self.envs, self.expert, self.draws = envs, expert, []

    def eval(self):
        pass

    def train(self, mode=True):
        pass

    def rollout(self, obs, deterministic, generator):
        self.draws.append((tuple(self.envs.task_ids.tolist()), torch.randn(1, generator=generator).item()))
        actions = self.envs.expert_actions(5) if self.expert else np.zeros((self.envs.num_envs, 5, 7))
        return {"actions": torch.as_tensor(actions)}


@pytest.mark.parametrize("reseed", [True, False])
def test_reseeding_gives_each_round_the_same_noise_whatever_the_episode_lengths(reseed):
    first_draws, calls = [], []  # per run: {the round's tasks: its first draw}, number of rollouts
    for expert in (True, False):  # the expert ends its episodes early, idling runs to the step limit
        envs = make_env("tabletop_goal", 2)
        probe = NoiseProbe(envs, expert)
        evaluate_policy(probe, envs, 4, seed=0, progress=False, reseed_each_round=reseed)
        first_draws.append({})
        for tasks, draw in probe.draws:
            first_draws[-1].setdefault(tasks, draw)
        calls.append(len(probe.draws))
    fast, slow = first_draws
    assert calls[0] < calls[1] and list(fast) == list(slow) == [(0, 1), (2, 3)]
    assert fast[(0, 1)] == slow[(0, 1)] and (fast[(2, 3)] == slow[(2, 3)]) == reseed
