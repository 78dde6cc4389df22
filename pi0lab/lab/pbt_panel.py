"""`PopulationPanel`: population-based training in the notebook — Start / Stop, a live success curve per
member, and the lineage redrawn after every generation.

    panel = PopulationPanel("tabletop_ppo_nano", ["runner.max_epochs=30"], population=4, interval=5)
    panel                     # display it; Start trains the population in a background thread
    panel.start(); lineage = panel.wait()

The population is a `pi0lab.lab.pbt.PopulationTraining` (members in `<run_root>/member_N`). The curves
figure has one trace `member N` per member (training success per iteration; a member that continues
from another's checkpoint keeps its own trace, the copy marked by a diamond at its first iteration);
the lineage figure is `lineage_figure`, replaced in place when a generation ends. The status line
(CSS class pi0lab-pbt-status) says running / finished / stopped / failed.
"""

import html
import threading
import traceback
from pathlib import Path

import ipywidgets as widgets
import plotly.colors
import plotly.graph_objects as go

from pi0lab.lab.pbt import LineageStep, PopulationTraining, lineage_figure
from pi0lab.lab.study import SUCCESS
from pi0lab.train.config import ConfigError
from pi0lab.train.trainer import IterationEvent

_PALETTE = plotly.colors.qualitative.Plotly


class PopulationPanel:
    """Population-based training of `config` + `overrides` with the panel's population size and interval."""

    def __init__(self, config: str, overrides: list[str] = (), population: int = 4, interval: int = 5,
                 run_root: str | Path = "runs/pbt", **pbt_kwargs):
        self.config, self.overrides, self.run_root, self.pbt_kwargs = config, list(overrides), run_root, pbt_kwargs
        self.population = widgets.BoundedIntText(value=population, min=1, max=64, description="population",
                                                 layout=widgets.Layout(width="180px"))
        self.interval = widgets.BoundedIntText(value=interval, min=1, max=10_000, description="interval",
                                               layout=widgets.Layout(width="180px"))
        self.start_button = widgets.Button(description="Start", button_style="success", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.status = widgets.HTML("not started").add_class("pi0lab-pbt-status")
        self.curves = go.FigureWidget(layout=dict(title=f"training success ({SUCCESS})", height=320,
                                                  xaxis_title="iteration", yaxis=dict(range=[0, 1]),
                                                  margin=dict(t=40, l=50, r=20, b=40)))
        self.lineage = go.FigureWidget(lineage_figure([]))
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.box = widgets.VBox([widgets.HBox([self.population, self.interval, self.start_button, self.stop_button,
                                               self.status]), self.curves, self.lineage])
        self.pbt: PopulationTraining | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._generations = 0
        self._symbols: list[list[str]] = []  # per member: a marker per iteration, a diamond where a copy starts

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)

    def start(self) -> None:
        """Train a fresh population in a background thread (nothing if one is training)."""
        if self.running:
            return
        try:
            self.pbt = PopulationTraining(self.config, self.overrides, self.population.value, self.interval.value,
                                          run_root=self.run_root, **self.pbt_kwargs)
        except (ConfigError, ValueError) as err:
            self.status.value = f"refused: {html.escape(str(err))}"
            return
        self.error, self._generations = None, 0
        self._symbols = [[] for _ in range(self.population.value)]
        with self.curves.batch_update():
            self.curves.data = ()
            for member in range(self.population.value):
                self.curves.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name=f"member {member}",
                                                 line=dict(color=_PALETTE[member % len(_PALETTE)])))
        self.start_button.disabled, self.stop_button.disabled = True, False
        self.status.value = f"running: {self.population.value} members, {self.pbt.budget} iterations each"
        self._thread = threading.Thread(target=self._run, args=(self.pbt,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the iteration in progress, checkpoint every member and end."""
        if self.pbt is not None and self.running:
            self.pbt.request_stop()
            self.status.value = "stop requested: ending after this iteration"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> list[LineageStep]:
        """Block until the population is done; re-raise its error; return the lineage."""
        if self._thread is None:
            raise RuntimeError("start() the population first")
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.pbt.lineage

    def _run(self, pbt: PopulationTraining) -> None:
        try:
            lineage = pbt.run(on_event=self._on_event)
            self._draw_lineage(lineage)
            done = "stopped" if pbt.stopped else "finished"
            best = max(lineage, key=lambda s: (s.generation, s.score), default=None)
            self.status.value = f"{done}: {self._generations} generations" + (
                f"; best member {best.member}, success {best.score:.0%} in the last generation" if best else "")
        except BaseException as err:
            self.error = err
            self.status.value = f"<b>failed:</b> {html.escape(type(err).__name__)}: {html.escape(str(err))}"
            traceback.print_exc()
        finally:
            self.start_button.disabled, self.stop_button.disabled = False, True

    def _on_event(self, member: int, event: IterationEvent) -> None:
        """After each member's iteration: extend its curve; after a generation: redraw the lineage."""
        with self._lock:
            if len(self.pbt.lineage) // self.population.value > self._generations:
                self._draw_lineage(self.pbt.lineage)
            trace = self.curves.data[member]
            copied = any(s.member == member and s.generation == self._generations and s.copied_from is not None
                         for s in self.pbt.lineage)
            starts_copy = copied and event.iteration == self._generations * self.pbt.interval + 1
            self._symbols[member].append("diamond" if starts_copy else "circle")
            with self.curves.batch_update():
                trace.x = tuple(trace.x) + (event.iteration,)
                trace.y = tuple(trace.y) + (event.metrics[SUCCESS],)
                trace.marker.symbol = tuple(self._symbols[member])
            self.status.value = (f"running: member {member}, iteration {event.iteration} / {self.pbt.budget}, "
                                 f"success {event.metrics[SUCCESS]:.0%}")

    def _draw_lineage(self, lineage: list[LineageStep]) -> None:
        self._generations = len(lineage) // self.population.value
        figure = lineage_figure(lineage)
        with self.lineage.batch_update():
            self.lineage.data = ()
            for trace in figure.data:
                self.lineage.add_trace(trace)
