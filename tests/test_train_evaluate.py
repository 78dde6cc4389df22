"""Evaluation on fixed (task, init) pairs, checked with the scripted expert and a do-nothing policy."""

import numpy as np
import pytest

from pi0lab.envs import make_env
from pi0lab.train.evaluate import evaluate, evaluation_pairs, results_table


def test_pairs_walk_tasks_first_then_init_states():
    assert evaluation_pairs(5, 2, lambda task: 50) == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)]
    with pytest.raises(ValueError, match="has only 1"):
        evaluation_pairs(3, 2, lambda task: 1)


def test_expert_scores_everything_and_idling_scores_nothing():
    envs = make_env("tabletop_goal", 4, seed=0)
    expert = evaluate(lambda obs: envs.expert_actions(5), envs, num_episodes=10, chunk=5, progress=False)
    assert expert.num_episodes == 10 and expert.success_rate == 1.0
    assert sorted(expert.per_task) == list(range(10)) and all(len(f) == 1 for f in expert.successes.values())
    idle = evaluate(lambda obs: np.zeros((4, 5, 7)), envs, num_episodes=6, chunk=5, progress=False)
    assert idle.success_rate == 0.0 and idle.episode_lens == [envs.max_episode_steps] * 6


def test_auto_reset_envs_are_refused():
    envs = make_env("tabletop_goal", 2, auto_reset=True)
    with pytest.raises(ValueError, match="auto_reset=False"):
        evaluate(lambda obs: np.zeros((2, 5, 7)), envs, 2, 5, progress=False)


def test_results_table_has_the_recipe_shape():
    table = results_table({"pi0 (few-shot)": {"Spatial": 0.653, "Goal": 0.5}, "PPO": {"Spatial": 1.0}}, ["Spatial", "Goal"])
    assert table.splitlines() == [
        "| Model | Spatial | Goal | Average |",
        "|---|---|---|---|",
        "| pi0 (few-shot) | 65.3% | 50.0% | 57.6% |",
        "| PPO | 100.0% | - | 100.0% |",
    ]


def test_paired_difference_by_hand():
    from pi0lab.train.evaluate import EvalResult, paired_difference

    before = EvalResult("s", successes={0: [True, False, False], 1: [False, True, False]})
    after = EvalResult("s", successes={0: [True, True, False], 1: [True, True, False]})
    diff, se = paired_difference(before, after)
    d = np.array([0, 1, 0, 1, 0, 0], float)  # per pair: after - before
    assert diff == pytest.approx(d.mean()) == pytest.approx(after.success_rate - before.success_rate)
    assert se == pytest.approx(d.std(ddof=1) / np.sqrt(6))
    with pytest.raises(ValueError, match="same pairs"):
        paired_difference(before, EvalResult("s", successes={0: [True]}))


def test_evaluate_scores_the_envs_init_states_from_their_first():
    from pi0lab.envs import make_env

    envs = make_env("tabletop_goal", 5, seed=0)
    envs.restrict_init_states(30, 40)
    result = evaluate(lambda obs: np.zeros((5, 5, 7), dtype=np.float32), envs, 2 * envs.num_tasks, 5, progress=False)
    envs.close()
    assert result.first_init_state == 30 and result.num_episodes == 2 * envs.num_tasks
    assert result.success(0, 31) == result.successes[0][1]
    with pytest.raises(IndexError):
        result.success(0, 32)


def test_live_only_asks_the_policy_for_the_running_envs_alone_and_scores_the_same():
    """The expert on even tasks (they succeed early) and idling on odd ones (they run to the limit): acting on the
    running envs only must give every pair the same outcome and length, and ask for fewer actions."""
    envs = make_env("tabletop_goal", 4, seed=0)
    seen = {"obs": None, "sizes": []}

    def mixed(obs):
        if len(obs["states"]) == envs.num_envs:  # a round's first chunk: every env plays
            seen["obs"] = obs
        full = envs.expert_actions(5) * (envs.task_ids % 2 == 0)[:, None, None]
        rows = [int(np.flatnonzero((seen["obs"]["states"] == s).all(1))[0]) for s in obs["states"]]
        seen["sizes"].append(len(rows))
        return full[rows]

    def remember(obs, rewards, info):
        seen["obs"] = obs

    every = evaluate(mixed, envs, 12, 5, on_step=remember, progress=False)
    asked_every = sum(seen["sizes"])
    seen["sizes"] = []
    live = evaluate(mixed, envs, 12, 5, on_step=remember, progress=False, live_only=True)
    assert live.successes == every.successes and live.episode_lens == every.episode_lens
    assert 0 < every.success_rate < 1 and sum(seen["sizes"]) < asked_every
    envs.close()


def test_act_on_envs_fills_the_others_with_zeros():
    from pi0lab.train.evaluate import act_on_envs

    obs = {"main_images": np.zeros((3, 2, 2, 3)), "wrist_images": np.zeros((3, 2, 2, 3)),
           "states": np.arange(3.0)[:, None] * np.ones((3, 8)), "task_descriptions": ["a", "b", "c"]}
    actions = act_on_envs(lambda o: o["states"][:, None, :7] + 1, obs, np.array([2, 0]))
    assert actions.shape == (3, 1, 7)
    assert (actions[0] == 1).all() and (actions[1] == 0).all() and (actions[2] == 3).all()
