"""TuningPanel without a browser: set widget values, click its buttons, read the figure, table and status."""

import re
import time
from types import SimpleNamespace

import plotly.graph_objects as go
import pytest
from lab_tiny import tiny_overrides
from optuna.trial import TrialState

from pi0lab.lab import TuningPanel

KEYS = ["actor.optim.lr", "algorithm.clip_ratio_high", "actor.model.openpi.noise_method"]


@pytest.fixture
def tiny(random_nano_checkpoint):
    return tiny_overrides(random_nano_checkpoint, iterations=2)


def _panel(tiny, tmp_path, **kwargs) -> TuningPanel:
    return TuningPanel("tabletop_ppo_nano", tiny, keys=KEYS, study="t", storage=f"sqlite:///{tmp_path}/t.db",
                       **kwargs)


def _rows(panel: TuningPanel) -> dict[int, list[str]]:
    rows = re.findall(r'<tr data-trial="(\d+)"[^>]*>(.*?)</tr>', panel.table.value)
    return {int(n): re.findall(r"<td>(.*?)</td>", cells) for n, cells in rows}


def test_a_study_runs_in_the_background_and_draws_every_trial(tiny, tmp_path):
    panel = _panel(tiny, tmp_path, trials=2, searched=["actor.optim.lr"])
    assert [b.description for b in (panel.start_button, panel.stop_button, panel.prune_button)] == \
        ["Start", "Stop", "Prune trial"]
    assert "pi0lab-study-status" in panel.status._dom_classes
    panel.space.controls["algorithm.clip_ratio_high"].value_widget.value = 0.25  # a fixed value for every trial
    panel.start_button.click()
    assert "running" in panel.status.value and panel.start_button.disabled
    trials = panel.wait()
    assert "finished" in panel.status.value and not panel.start_button.disabled
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert isinstance(panel.figure, go.FigureWidget)
    assert [d.name for d in panel.figure.data] == ["trial 0", "trial 0", "trial 1", "trial 1"]
    for trial, (success, metric) in zip(trials, zip(panel.figure.data[::2], panel.figure.data[1::2])):
        assert success.x == (1, 2) and metric.x == (1, 2) and metric.yaxis == "y2"
        assert trial.value == pytest.approx(success.y[-1])  # last third of 2 iterations = the last one
        assert trial.params["actor.optim.lr"] and "algorithm.clip_ratio_high=0.25" in panel.study.trial_overrides(trial)
    rows = _rows(panel)
    assert sorted(rows) == [0, 1] and rows[0][1] == "COMPLETE" and rows[0][2].startswith("lr=")
    best = max(trials, key=lambda t: t.value)
    assert panel.figure.data[2 * best.number].line.color == "crimson"

    panel.selector.value = 1  # a row: its curve thickens, its overrides show
    assert panel.figure.data[2].line.width == 6 and panel.figure.data[0].line.width < 6
    assert "actor.optim.lr=" in panel.selected.value and 'data-trial="1" style=' in panel.table.value
    panel.figure.data[0]._dispatch_on_click(SimpleNamespace(point_inds=[1]), None)  # a click on trial 0's curve
    assert panel.selector.value == 0 and panel.figure.data[0].line.width == 6
    panel.metric.value = "actor/loss"  # the second row redraws from the trials' iterations
    assert panel.figure.layout.annotations[1].text == "actor/loss" and len(panel.figure.data[1].y) == 2
    figures = panel.analysis_figures()
    assert set(figures) == {"history", "parallel coordinates", "importance"}
    assert all(isinstance(w, go.FigureWidget) for w in panel.analysis.children[1:])

    again = _panel(tiny, tmp_path)  # e.g. after a kernel restart: the stored study and its searched key come back
    assert "reattached" in again.status.value and again.space.controls["actor.optim.lr"].searched
    assert [d.name for d in again.figure.data] == ["trial 0", "trial 0", "trial 1", "trial 1"]
    assert again.figure.data[0].x == (1, 2) and sorted(_rows(again)) == [0, 1]


def test_stop_and_prune_buttons_end_trials_after_their_iteration(tiny, tmp_path):
    panel = _panel(tiny, tmp_path, trials=5, searched=["actor.optim.lr"])
    on_update = panel._on_update

    def click(update):  # as a person would while the trials run: prune trial 0, stop during trial 1
        on_update(update)
        if update.state == "RUNNING" and update.iteration == 1:
            (panel.prune_button if update.trial == 0 else panel.stop_button).click()

    panel._on_update = click
    panel.start()
    trials = panel.wait()
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.FAIL]
    assert "stopped" in panel.status.value and "running" not in panel.status.value
    assert [panel.figure.data[i].line.color for i in (0, 2)] == ["lightgrey", "lightgrey"]
    rows = _rows(panel)
    assert rows[0][1] == "PRUNED" and rows[1][1] == "FAIL (stopped at 1)"
    assert panel.stop_button.disabled and not panel.start_button.disabled


def test_start_is_refused_with_nothing_searched_or_an_invalid_space(tiny, tmp_path):
    panel = _panel(tiny, tmp_path)
    panel.start()
    assert panel.status.value.startswith("refused: no key is searched") and not panel.running
    method = panel.space.controls["actor.model.openpi.noise_method"]
    method.mode.value = "searched"
    for button in method.range_widget.children:
        button.value = False
    panel.start_button.click()
    assert "refused" in panel.status.value and "at least one value" in panel.status.value


def _wait_for(condition, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_two_processes_run_trials_at_once_and_the_panel_draws_them_from_the_storage(tiny, tmp_path):
    panel = _panel(tiny, tmp_path, trials=2, searched=["actor.optim.lr"], processes=2)
    panel.start()
    trials = panel.wait()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 and "finished" in panel.status.value
    first, second = trials
    assert first.datetime_start < second.datetime_complete and second.datetime_start < first.datetime_complete
    assert {t.user_attrs["run_dir"] for t in trials} == {str(tmp_path / "t" / "trial_0000"),
                                                          str(tmp_path / "t" / "trial_0001")}
    for trial, success in zip(trials, panel.figure.data[::2]):  # the curves came from the trials' metrics.jsonl
        assert success.name == f"trial {trial.number}" and success.x == (1, 2)
        assert trial.value == pytest.approx(success.y[-1])
    assert sorted(_rows(panel)) == [0, 1] and all(row[1] == "COMPLETE" for row in _rows(panel).values())
    assert sorted(p.name for p in (tmp_path / "t" / "workers").iterdir()) == ["worker_0.log", "worker_1.log"]


def test_prune_reaches_the_selected_trial_in_its_process_and_stop_ends_every_worker(random_nano_checkpoint, tmp_path):
    panel = _panel(tiny_overrides(random_nano_checkpoint, iterations=8), tmp_path, trials=4,
                   searched=["actor.optim.lr"], processes=2, pruner="none")
    panel.start()
    _wait_for(lambda: len(panel._live) == 2 and min(panel._live.values()) >= 1)
    target = max(panel._live)
    panel.selector.value = target
    panel.prune_button.click()
    _wait_for(lambda: panel._trials[target].state == TrialState.PRUNED)
    panel.stop_button.click()
    trials = panel.wait()
    assert "stopped" in panel.status.value
    states = {t.number: t.state for t in trials}
    assert states.pop(target) == TrialState.PRUNED and len(trials) <= 3  # the 4th trial never started
    assert set(states.values()) == {TrialState.FAIL}
    assert all("stopped_at" in t.user_attrs for t in trials if t.state == TrialState.FAIL)
