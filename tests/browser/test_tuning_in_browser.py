"""The tuning notebook in the browser, as a person uses it: run all cells, watch the study finish, read the
comparison plot and the trial table, then add trials with Start and stop them with the Stop button.

The checks read the page through TuningPanel's DOM contract: Start / Stop / "Prune trial" buttons, a plotly
FigureWidget whose traces are named `trial N`, an HTML <table class="pi0lab-trial-table"> with one
<tr data-trial="N"> per trial, and a status line (CSS class `pi0lab-study-status`) that says "running",
"finished" or "stopped". A stand-in panel built on that contract proves the clicking and polling here.
"""

import json
import re

import pytest

from lab_browser import REPO

TUNING_NOTEBOOK = "notebooks/hyperparameter_tuning.ipynb"
SMOKE_TRIALS = 2  # the smoke-mode study of the tuning notebook
STATUS = ".pi0lab-study-status"
STUDY_TIMEOUT_S = 600

# The comparison plot: for each drawn scatter trace (`.scatterlayer .trace`, whose d3 data is plotly's
# calcdata, one entry per drawn point), its name and its number of points; from the plot holding `trial N` traces.
DRAWN_TRACES_JS = """() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(
      gd => (gd.data || []).some(t => /^trial \\d+$/.test(t.name)));
  if (!plots.length) return null;
  return [...plots.pop().querySelectorAll('.scatterlayer .trace')].map(
      g => ({name: g.__data__[0].trace.name, points: g.__data__.filter(p => Number.isFinite(p.x) && Number.isFinite(p.y)).length}));
}"""
TABLE_TRIALS_JS = """() => [...document.querySelectorAll('table.pi0lab-trial-table')].slice(-1).flatMap(
    t => [...t.querySelectorAll('tr[data-trial]')].map(r => Number(r.dataset.trial)))"""


def points_per_trial(notebook) -> dict[int, int]:
    """Trial number -> points drawn for it in the comparison plot (summed over its traces)."""
    drawn = notebook.page.evaluate(DRAWN_TRACES_JS) or []
    points: dict[int, int] = {}
    for trace in drawn:
        if match := re.fullmatch(r"trial (\d+)", trace["name"] or ""):
            points[int(match[1])] = points.get(int(match[1]), 0) + trace["points"]
    return points


def button(notebook, label: str):
    """The first widget button whose text is `label` (an ipywidgets button may carry an icon before it)."""
    return notebook.page.locator("button.jupyter-button", has_text=re.compile(rf"^\s*{label}\s*$")).first


def check_study_in_the_browser(open_notebook, path: str) -> None:
    notebook = open_notebook(path)
    notebook.run_and_check()
    assert "finished" in notebook.wait_for_text(STATUS, "finished", STUDY_TIMEOUT_S)
    points = points_per_trial(notebook)
    assert sorted(points) == list(range(SMOKE_TRIALS)) and all(n > 0 for n in points.values()), points
    assert notebook.page.evaluate(TABLE_TRIALS_JS) == list(range(SMOKE_TRIALS))
    assert not notebook.errors()
    notebook.screenshot("finished")

    # the kernel is idle again: Start adds trials to the study in the background, Stop ends them
    button(notebook, "Start").click()
    notebook.wait_for_text(STATUS, "running", STUDY_TIMEOUT_S)
    button(notebook, "Stop").click()
    assert "stopped" in notebook.wait_for_text(STATUS, "stopped", STUDY_TIMEOUT_S)
    assert len(notebook.page.evaluate(TABLE_TRIALS_JS)) < 2 * SMOKE_TRIALS
    assert not notebook.errors()
    notebook.screenshot("stopped")


@pytest.mark.notebook(TUNING_NOTEBOOK)
@pytest.mark.skipif(not (REPO / TUNING_NOTEBOOK).is_file(), reason=f"{TUNING_NOTEBOOK} is not in this checkout")
def test_tuning_notebook_finishes_compares_and_stops_in_the_browser(open_notebook):
    check_study_in_the_browser(open_notebook, TUNING_NOTEBOOK)


# A stand-in for TuningPanel on the DOM contract: each trial of a study is a thread-run loop of 3 iterations
# (1 s each) that extends its `trial N` trace and then adds its table row.
STAND_IN_SOURCES = [
    "n_trials = 2",
    '''import threading

import ipywidgets as widgets
import plotly.graph_objects as go

figure = go.FigureWidget(layout={"title": "success per trial", "height": 300})
table = widgets.HTML()
status = widgets.HTML("idle")
status.add_class("pi0lab-study-status")
start, stop, prune = (widgets.Button(description=d) for d in ("Start", "Stop", "Prune trial"))
stop_requested = threading.Event()


def run_study(trials):
    stop_requested.clear()
    status.value = "running"
    rows = []
    for n in range(trials):
        trace = figure.add_scatter(name=f"trial {n}", mode="lines+markers", x=[], y=[]).data[-1]
        for step in range(1, 4):
            if stop_requested.wait(1.0):
                status.value = "stopped"
                return
            trace.x, trace.y = trace.x + (step,), trace.y + (0.1 * step * (n + 1),)
        rows.append(f'<tr data-trial="{n}"><td>{n}</td><td>COMPLETE</td><td>lr=1e-5</td><td>0.3</td><td>0.6 s</td></tr>')
        table.value = ('<table class="pi0lab-trial-table"><tr><th>trial</th><th>state</th><th>parameters</th>'
                       '<th>score</th><th>duration</th></tr>' + "".join(rows) + "</table>")
    status.value = "finished"


start.on_click(lambda _: threading.Thread(target=run_study, args=(n_trials,), daemon=True).start())
stop.on_click(lambda _: stop_requested.set())
display(widgets.VBox([widgets.HBox([start, stop, prune]), status, figure, table]))
start.click()''',
]


def test_the_study_checks_work_on_a_stand_in_panel(lab, open_notebook):
    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]} if i == 0 else {}, "source": source,
              "outputs": [], "execution_count": None, "id": f"c{i}"} for i, source in enumerate(STAND_IN_SOURCES)]
    notebook = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    (lab.root / "checks").mkdir(exist_ok=True)
    (lab.root / "checks" / "stand_in_tuning.ipynb").write_text(json.dumps(notebook))
    check_study_in_the_browser(open_notebook, "checks/stand_in_tuning.ipynb")
