"""Every tutorial and notebook, opened in JupyterLab in Chromium and run cell by cell (smoke mode), shows no error.

The tuning notebook is run by test_tuning_in_browser.py, which also checks its panel.
"""

import json

import pytest

from lab_browser import REPO

TUNING_NOTEBOOK = "notebooks/hyperparameter_tuning.ipynb"
NOTEBOOKS = [str(p.relative_to(REPO)) for p in sorted(REPO.glob("tutorials/*.ipynb")) + sorted(REPO.glob("notebooks/*.ipynb"))
             if str(p.relative_to(REPO)) != TUNING_NOTEBOOK]


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.notebook(p), id=p) for p in NOTEBOOKS])
def test_notebook_runs_in_the_browser_without_an_error_output(open_notebook, path):
    notebook = open_notebook(path)
    notebook.run_and_check()
    notebook.screenshot("done")


def test_an_error_output_is_seen_and_later_cells_are_not_run(lab, open_notebook):
    """The check above is not blind: a raising cell fails it, with the traceback's text."""
    cells = [{"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None,
              "id": f"c{i}"} for i, source in enumerate(["import sys\nprint('a warning', file=sys.stderr)",
                                                         "raise ValueError('a broken cell')", "x = 1"])]
    notebook_json = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                 "language": "python"}},
                     "nbformat": 4, "nbformat_minor": 5}
    (lab.root / "checks").mkdir(exist_ok=True)
    (lab.root / "checks" / "broken.ipynb").write_text(json.dumps(notebook_json))
    notebook = open_notebook("checks/broken.ipynb")
    with pytest.raises(AssertionError, match=r"1 error output\(s\); prompts \['\[1\]:', '\[2\]:', '\[ \]:'\]"
                                             r"(.|\n)*ValueError(.|\n)*a broken cell"):
        notebook.run_and_check()
