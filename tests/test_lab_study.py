"""Studies: scores and pruning on hand-made curves, trials as training runs, persistence, stop / prune,
refused combinations, heartbeats, rescoring and the exported config."""

import time

import optuna
import pytest
from lab_tiny import tiny_overrides
from optuna.trial import TrialState

from pi0lab.lab.search import parse_search
from pi0lab.lab.study import (TuningStudy, make_pruner, open_storage, report_success, smoothed_success, trial_score,
                              warmup_iterations)
from pi0lab.train.config import load_config
from pi0lab.train.loggers import read_metrics


def test_scores_average_the_last_third():
    assert trial_score([0, 0, 0, 1, 1, 1]) == 1.0
    assert trial_score([0.2, 0.4, 0.6, 0.8]) == pytest.approx(0.7)  # the last ceil(4/3) = 2
    assert trial_score([0.3]) == 0.3
    assert warmup_iterations(6) == 2 and warmup_iterations(10) == 4 and warmup_iterations(1) == 1
    assert smoothed_success([0.0, 0.2, 0.4, 0.9], budget=6) == pytest.approx(0.65)


def _finished_study(kind: str, budget: int, curves: list[list[float]]) -> optuna.Study:
    study = optuna.create_study(direction="maximize", pruner=make_pruner(kind, budget))
    for curve in curves:
        trial = study.ask()
        for i in range(len(curve)):
            report_success(trial, curve[: i + 1], budget)
        study.tell(trial, trial_score(curve))
    return study


def _decisions(study: optuna.Study, curve: list[float], budget: int) -> list[bool]:
    trial = study.ask()
    decisions = [report_success(trial, curve[: i + 1], budget) for i in range(len(curve))]
    study.tell(trial, state=TrialState.PRUNED)
    return decisions


def test_median_pruning_waits_a_third_of_the_budget_and_judges_smoothed_success():
    study = _finished_study("median", 6, [[0.2] * 6, [0.5] * 6])
    assert study.trials[0].intermediate_values == {i: pytest.approx(0.2) for i in range(1, 7)}
    # a trial that fails everything is only judged at iteration 2 (= ceil(6 / 3)), and then pruned
    assert _decisions(study, [0.0] * 6, 6) == [False, True, True, True, True, True]
    # one lucky iteration does not save it: the decision is on the mean of the last 2
    assert _decisions(study, [0.0, 0.6, 0.0, 0.0, 0.0, 0.0], 6)[:2] == [False, True]
    assert _decisions(study, [0.0, 0.8, 0.8, 0.8, 0.8, 0.8], 6) == [False] * 6  # mean 0.4 > median 0.35
    assert not any(_decisions(study, [0.9] * 6, 6))


def test_successive_halving_judges_at_its_rungs_and_none_never_prunes():
    study = _finished_study("sha", 6, [[0.2] * 6, [0.5] * 6, [0.8] * 6])
    assert _decisions(study, [0.1] * 6, 6)[:2] == [False, True]  # first rung at the warm-up
    assert not any(_decisions(study, [0.95] * 6, 6))
    study = _finished_study("none", 6, [[0.5] * 6, [0.5] * 6])
    assert not any(_decisions(study, [0.0] * 6, 6))


@pytest.fixture
def tiny(random_nano_checkpoint):
    return tiny_overrides(random_nano_checkpoint, iterations=2)


def test_trials_are_training_runs_and_a_second_study_run_adds_trials(tiny, tmp_path):
    storage = f"sqlite:///{tmp_path}/studies/s.db"
    space = [parse_search("actor.optim.lr"), parse_search("algorithm.clip_ratio_high")]
    first = TuningStudy("tabletop_ppo_nano", tiny, space, name="s", storage=storage)
    updates = []
    first.run(1, on_update=updates.append)
    assert [(u.state, u.iteration) for u in updates] == [("RUNNING", 0), ("RUNNING", 1), ("RUNNING", 2), ("COMPLETE", 2)]
    second = TuningStudy("tabletop_ppo_nano", tiny, space, name="s", storage=storage)  # e.g. after a kernel restart
    second.run(1)
    trials = TuningStudy("tabletop_ppo_nano", tiny, space, name="s", storage=storage).trials
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE)]
    for trial, update_metrics in zip(trials, [updates[1:3], None]):
        run_dir = tmp_path / "studies" / "s" / f"trial_{trial.number:04d}"
        assert trial.user_attrs["run_dir"] == str(run_dir)
        assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_000002"
        cfg = load_config(run_dir / "config.yaml")
        assert cfg.actor.optim.lr == trial.params["actor.optim.lr"]
        successes = [r["env/success_once"] for r in read_metrics(run_dir)]
        assert trial.value == pytest.approx(trial_score(successes))
        if update_metrics is not None:
            assert successes == [u.metrics["env/success_once"] for u in update_metrics]
    frame = second.dataframe()
    assert list(frame["number"]) == [0, 1] and "params_actor.optim.lr" in frame and "duration" in frame


def test_prune_and_stop_requests_end_trials_after_their_iteration(tiny, tmp_path):
    study = TuningStudy("tabletop_ppo_nano", tiny, [parse_search("actor.optim.lr")], name="p",
                        storage=f"sqlite:///{tmp_path}/p.db")

    def on_update(update):
        if update.state == "RUNNING" and update.iteration == 1:
            if update.trial == 0:
                study.prune_current()
            elif update.trial == 2:
                study.request_stop()

    done = study.run(5, on_update=on_update)
    assert [t.state for t in done] == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL]
    assert done[0].user_attrs["iterations"] == 1 and done[2].user_attrs["stopped_at"] == 1
    assert (tmp_path / "p" / "trial_0002" / "checkpoints" / "latest").read_text().strip() == "step_000001"


def test_an_invalid_combination_fails_before_the_trial_starts(tiny, tmp_path):
    space = [parse_search("actor.micro_batch_size=choice:64,256"), parse_search("actor.global_batch_size=choice:256,384")]
    fixed = [o for o in tiny if "batch_size" not in o]  # each choice alone passes (with 128 / 512 of the config)
    study = TuningStudy("tabletop_ppo_nano", fixed, space, name="c", storage=f"sqlite:///{tmp_path}/c.db")
    study.study.enqueue_trial({"actor.micro_batch_size": 256, "actor.global_batch_size": 384})
    updates = []
    (trial,) = study.run(1, on_update=updates.append)
    assert trial.state == TrialState.FAIL and "does not divide" in trial.user_attrs["error"]
    assert [u.state for u in updates] == ["FAIL"] and not (tmp_path / "c" / "trial_0000").exists()


def test_reopening_marks_trials_of_a_dead_process_failed(tiny, tmp_path):
    storage = f"sqlite:///{tmp_path}/h.db"
    study = TuningStudy("tabletop_ppo_nano", tiny, [parse_search("actor.optim.lr")], name="h", storage=storage,
                        heartbeat_interval=1, grace_period=1)
    with pytest.warns(UserWarning, match="Heartbeat"):  # a trial that beat once, then its process died
        trial = study.study.ask()
    open_storage(storage, heartbeat_interval=1).record_heartbeat(trial._trial_id)
    assert study.trials[0].state == TrialState.RUNNING
    time.sleep(2.5)
    reopened = TuningStudy("tabletop_ppo_nano", tiny, [parse_search("actor.optim.lr")], name="h", storage=storage,
                           heartbeat_interval=1, grace_period=1)
    assert reopened.trials[0].state == TrialState.FAIL


def test_the_best_is_named_after_rescoring_and_exports_a_config_train_accepts(tiny, tmp_path):
    study = TuningStudy("tabletop_ppo_nano", tiny, [parse_search("algorithm.clip_ratio_high")], name="b",
                        storage=f"sqlite:///{tmp_path}/b.db")
    study.run(1)
    with pytest.raises(RuntimeError, match="rescore"):
        study.best_trial()
    best = study.rescore(k=2, num_episodes=4)
    (row,) = study.rescores()
    assert row.trial == best.number == 0 and row.episodes == 4 and 0 <= row.success <= 1
    path = study.export_config(best, tmp_path / "best.yaml")
    exported = load_config(path)
    trial_cfg = load_config("tabletop_ppo_nano", study.trial_overrides(best))
    assert exported.algorithm.clip_ratio_high == best.params["algorithm.clip_ratio_high"]
    assert exported.runner.logger.log_path == str(tmp_path / "b" / "best_trial_0000")
    exported.runner.logger.log_path = trial_cfg.runner.logger.log_path
    assert exported == trial_cfg
