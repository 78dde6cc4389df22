"""TuningPanel without a browser: set widget values, click its buttons, read the figure, table and status."""

import re

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
