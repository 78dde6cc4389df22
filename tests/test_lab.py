"""The lab layer: live curves, the background session's Stop, config forms and the HTML report."""

import threading
from types import SimpleNamespace

import plotly.graph_objects as go
import pytest

from pi0lab.lab import LiveCurves, TrainingSession, config_widgets, metric_figure, write_report
from pi0lab.lab.report import table_html
from pi0lab.train.config import load_config
from pi0lab.train.trainer import IterationEvent


def test_live_curves_extend_in_place():
    curves = LiveCurves(["a", "b"])
    curves.update(1, {"a": 0.5})
    curves.update(2, {"a": 0.7, "b": 1.0})
    assert curves.figure.data[0].x == (1, 2) and curves.figure.data[0].y == (0.5, 0.7)
    assert curves.figure.data[1].x == (2,)


class _FakeTrainer:
    """Yields iterations until stopped; the first iteration waits until the test has pressed Stop."""

    def __init__(self):
        self.cfg = SimpleNamespace(runner=SimpleNamespace(max_epochs=1000, logger=SimpleNamespace(experiment_name="x")))
        self.stopped = threading.Event()

    def request_stop(self):
        self.stopped.set()

    def iterate(self):
        step = 0
        while not self.stopped.is_set() or step == 0:
            self.stopped.wait(timeout=5)
            step += 1
            yield IterationEvent(step, {"env/success_once": 0.5, "actor/loss": 1.0 / step})


def test_stop_button_ends_a_background_session():
    trainer = _FakeTrainer()
    session = TrainingSession(trainer, ["actor/loss"])
    session.start()
    session.stop_button.click()
    events = session.wait()
    assert len(events) == 1 and session.curves.figure.data[0].y == (1.0,)
    assert session.status.value.endswith("stopped") and session.stop_button.disabled


def test_a_failing_session_reraises_in_wait():
    trainer = _FakeTrainer()
    trainer.iterate = lambda: iter([1 / 0])  # raises inside the thread
    session = TrainingSession(trainer, ["actor/loss"])
    with pytest.raises(ZeroDivisionError):
        session.start()
        session.wait()


def test_config_form_reports_only_edited_keys():
    cfg = load_config("tabletop_ppo_nano")
    form = config_widgets(cfg, ["algorithm.gamma", "algorithm.update_epoch", "actor.model.openpi.noise_method"])
    assert form.overrides() == []
    edited = cfg.algorithm.update_epoch + 1  # any value other than the config's own
    form.inputs["algorithm.update_epoch"].value = edited
    assert form.overrides() == [f"algorithm.update_epoch={edited}"]
    assert load_config("tabletop_ppo_nano", form.overrides()).algorithm.update_epoch == edited


def test_report_holds_table_figure_and_video(tmp_path):
    table = "| Model | Spatial | Average |\n|---|---|---|\n| SFT | 50.0% | 50.0% |"
    figure = metric_figure([{"step": 1, "x": 1.0}, {"step": 2, "x": 2.0}], ["x"])
    path = write_report(tmp_path / "r.html", "Run", [("Results", table), ("Curves", figure), ("Video", b"\x00mp4")])
    text = path.read_text()
    assert "<td>SFT</td><td>50.0%</td>" in text and "data:video/mp4;base64,AG1wNA==" in text
    assert text.count("plotly.js") >= 1 and isinstance(figure, go.Figure)


def test_table_html_escapes_cells():
    assert "<td>&lt;b&gt;</td>" in table_html("| a |\n|---|\n| <b> |")
