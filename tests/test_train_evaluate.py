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
