"""Live training curves and a background training session with a Stop button.

Widget callbacks only run while the kernel is idle, so training runs in a background thread: the
cell that starts it returns at once, the curves update in place as iterations finish, and Stop asks
the trainer to finish its iteration, checkpoint and end.
"""

import math
import threading
import traceback
from pathlib import Path

import ipywidgets as widgets
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pi0lab.lab.placement import timeline_figure
from pi0lab.lab.video import show_video
from pi0lab.runtime.spans import read_spans


class LiveCurves:
    """A FigureWidget with one line per metric, extended in place as values arrive."""

    def __init__(self, names: list[str], columns: int = 3, title: str | None = None):
        self.names = list(names)
        rows = math.ceil(len(names) / columns)
        base = make_subplots(rows=rows, cols=columns, subplot_titles=self.names)
        for i, name in enumerate(self.names):
            base.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name=name, showlegend=False),
                           row=i // columns + 1, col=i % columns + 1)
        base.update_layout(height=220 * rows, margin=dict(t=60, l=40, r=20, b=30), title=title)
        self.figure = go.FigureWidget(base)

    def update(self, step: int, metrics: dict[str, float]) -> None:
        """Append (step, value) to every curve whose metric is in `metrics`."""
        with self.figure.batch_update():
            for trace, name in zip(self.figure.data, self.names):
                if metrics.get(name) is not None:
                    trace.x = tuple(trace.x) + (step,)
                    trace.y = tuple(trace.y) + (metrics[name],)


class TrainingSession:
    """Runs `trainer.iterate()` in a thread; shows live curves, the latest rollout video and a Stop button."""

    def __init__(self, trainer, names: list[str], timeline: bool = False):
        """timeline: also draw every process's time spans (`pi0lab.runtime.spans`), redrawn after each iteration."""
        self.trainer = trainer
        self.curves = LiveCurves(names, title=trainer.cfg.runner.logger.experiment_name)
        self.timeline = go.FigureWidget(timeline_figure([])) if timeline else None
        self.status = widgets.HTML("not started")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop")
        self.stop_button.on_click(lambda _: self.stop())
        self.video = widgets.Output()
        self.events = []
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested = False

    def widget(self) -> widgets.Widget:
        parts = [widgets.HBox([self.stop_button, self.status]), self.curves.figure, self.video]
        return widgets.VBox(parts + ([self.timeline] if self.timeline is not None else []))

    def start(self) -> widgets.Widget:
        """Start training in the background and return the dashboard to display."""
        if self._thread is not None:
            raise RuntimeError("this session has already been started; make a new TrainingSession")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self.widget()

    def _run(self) -> None:
        self.status.value = "training..."
        try:
            for event in self.trainer.iterate():
                self.events.append(event)
                self.curves.update(event.iteration, event.metrics)
                self.status.value = (f"iteration {event.iteration} / {self.trainer.cfg.runner.max_epochs}: "
                                     f"success {event.metrics['env/success_once']:.0%}")
                if self.timeline is not None:
                    self._redraw_timeline()
                if event.video is not None:
                    self.video.clear_output(wait=True)
                    self.video.append_display_data(show_video(event.video, width=384))
            self.status.value += " - stopped" if self._stop_requested else " - finished"
        except BaseException as err:  # shown in the dashboard; wait() re-raises it in the notebook
            self.error = err
            self.status.value = f"<b>failed:</b> {type(err).__name__}: {err}"
            traceback.print_exc()
        finally:
            self.stop_button.disabled = True

    def _redraw_timeline(self) -> None:
        fresh = timeline_figure(read_spans(Path(self.trainer.cfg.runner.logger.log_path)))
        with self.timeline.batch_update():
            self.timeline.data = []
            self.timeline.add_traces(fresh.data)
            self.timeline.layout = fresh.layout

    def stop(self) -> None:
        self._stop_requested = True
        self.trainer.request_stop()
        self.status.value += " - stopping after this iteration"

    def wait(self) -> list:
        """Block until training ends (the Stop button cannot respond while this waits); return the events."""
        if self._thread is None:
            raise RuntimeError("start() the session first")
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.events
