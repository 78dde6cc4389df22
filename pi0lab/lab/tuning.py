"""`TuningPanel`: a hyperparameter study in the notebook — search space, Start / Stop / Prune trial, live
comparison of every trial, the trial table and Optuna's analysis figures.

    panel = TuningPanel("tabletop_ppo_nano", ["runner.max_epochs=30"], study="ppo_lr", trials=8,
                        keys=["actor.optim.lr", "algorithm.update_epoch"], searched=["actor.optim.lr"])
    panel                     # display it; Start runs trials in a background thread (the kernel stays free)
    panel.start()             # the same from code; panel.wait() blocks until the trials are done

With `processes` > 1 the trials run in that many worker processes at once (`pi0lab.lab.workers`), and the
panel draws them from the storage and each trial's metrics.jsonl, polled every second: the same figure,
table and buttons. Stop ends every running trial after its iteration; Prune trial ends the trial picked
in the `trial` dropdown if it runs, else the running trial with the lowest number.

The study is a `pi0lab.lab.study.TuningStudy` (SQLite under runs/tune/ by default): a panel built with the
name of an existing study reattaches to it and draws its trials; Start adds `trials` more. The comparison
figure has two rows (training success, and the metric chosen in the dropdown) and a pair of traces named
`trial N` per trial, extended in place as iterations finish; pruned and failed trials turn grey, the best
finished trial is drawn thick and red, the trial picked in the `trial` dropdown (or by a click on its curve)
thicker still, with its row highlighted and its overrides shown under the table. The table is an HTML <table class="pi0lab-trial-table"> with one
<tr data-trial="N"> per trial; the status line (CSS class pi0lab-study-status) says running / finished /
stopped / refused / failed.
"""

import html
import threading
import time
import traceback
import warnings
from datetime import datetime
from pathlib import Path

import ipywidgets as widgets
import optuna
import plotly.colors
import plotly.graph_objects as go
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from pi0lab.lab.search import format_value
from pi0lab.lab.study import PRUNERS, SUCCESS, TrialUpdate, TuningStudy, default_storage
from pi0lab.lab.widgets import SearchSpaceWidgets
from pi0lab.lab.workers import StudyWorkers, default_processes
from pi0lab.train.config import ConfigError, load_config
from pi0lab.train.loggers import read_metrics

DEFAULT_KEYS = ["actor.optim.lr", "actor.optim.value_lr", "algorithm.clip_ratio_high", "algorithm.update_epoch",
                "actor.model.openpi.noise_level", "actor.model.openpi.noise_method", "algorithm.entropy_bonus"]
METRICS = ["actor/approx_kl", "actor/loss", "actor/value_loss", "actor/pg_clipfrac", "actor/grad_norm",
           "actor/entropy", "actor/explained_variance", "env/return", "env/episode_len", "time/iteration"]
_PALETTE = plotly.colors.qualitative.Plotly
_ENDED_EARLY = ("PRUNED", "FAIL")
POLL_S = 1.0  # how often the panel reads the storage while worker processes run trials


class TuningPanel:
    """A study of `config` + `overrides` over the keys switched to searched in the panel."""

    def __init__(self, config: str, overrides: list[str] = (), keys: list[str] = DEFAULT_KEYS,
                 searched: list[str] | None = None, specs: dict[str, str] | None = None, study: str | None = None,
                 storage: str | None = None, trials: int = 8, pruner: str = "median", metric: str = METRICS[0],
                 run_root: str | Path | None = None, processes: int = 1):
        self.config, self.overrides, self.run_root = config, list(overrides), run_root
        self.name = study or Path(config).stem
        self.storage = storage or default_storage(self.name)
        stored = _stored_space(self.storage, self.name)  # a reattached study keeps its searched keys and ranges
        keys = list(keys) + [k for k in stored if k not in keys]
        searched = list(searched or []) + [k for k in stored if k not in (searched or [])]
        specs = {**{k: v for k, v in stored.items() if k not in (specs or {})}, **(specs or {})}
        self.space = SearchSpaceWidgets(load_config(config, self.overrides), keys, specs, searched)
        self.n_trials = widgets.BoundedIntText(value=trials, min=1, max=10_000, description="trials",
                                               layout=widgets.Layout(width="160px"))
        self.processes = widgets.BoundedIntText(value=processes, min=1, max=max(processes, 2 * default_processes()),
                                                description="processes", layout=widgets.Layout(width="180px"))
        self.pruner = widgets.ToggleButtons(options=list(PRUNERS), value=pruner, description="pruner")
        self.metric = widgets.Dropdown(options=sorted(set(METRICS) | {metric}), value=metric, description="metric")
        self.start_button = widgets.Button(description="Start", button_style="success", icon="play")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.prune_button = widgets.Button(description="Prune trial", button_style="warning", icon="cut",
                                           disabled=True)
        self.status = widgets.HTML("not started").add_class("pi0lab-study-status")
        self.figure = go.FigureWidget(_comparison_layout(metric))
        self.table = widgets.HTML(_table_html([], None, {}))
        self.selector = widgets.Dropdown(options=[("-", None)], value=None, description="trial")
        self.selected = widgets.HTML()
        self.analysis_button = widgets.Button(description="Analysis", icon="bar-chart")
        self.analysis = widgets.VBox([])
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.prune_button.on_click(lambda _: self.prune())
        self.analysis_button.on_click(lambda _: self.show_analysis())
        self.selector.observe(lambda _: self._select(), names="value")
        self.metric.observe(lambda _: self._redraw_metric(), names="value")
        self.box = widgets.VBox([
            self.space.box, widgets.HBox([self.n_trials, self.processes, self.pruner, self.metric]),
            widgets.HBox([self.start_button, self.stop_button, self.prune_button, self.status]),
            self.figure, self.table, widgets.HBox([self.selector, self.analysis_button]), self.selected, self.analysis])
        self.study: TuningStudy | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._workers: StudyWorkers | None = None
        self._lock = threading.RLock()
        self._trials: dict[int, FrozenTrial] = {}  # the storage's trials, read at trial boundaries
        self._curves: dict[int, list[dict]] = {}  # trial -> its iterations' metrics ({"step": i, name: value})
        self._traces: dict[int, tuple[int, int]] = {}  # trial -> indices of its success and metric traces
        self._live: dict[int, int] = {}  # running trial -> iterations done
        if stored or _study_exists(self.storage, self.name):
            self.reattach()

    def _repr_mimebundle_(self, **kwargs):
        return self.box._repr_mimebundle_(**kwargs)

    # ------------------------------------------------------------------------------------- study

    def open_study(self) -> TuningStudy:
        """The study with the panel's current space, fixed values and pruner (ConfigError if refused)."""
        space = self.space.space()
        if not space:
            raise ConfigError("no key is searched: switch at least one row to 'searched'")
        return TuningStudy(self.config, self.overrides + self.space.overrides(), space, self.name, self.storage,
                           self.pruner.value, self.run_root)

    def reattach(self) -> None:
        """Open the stored study (marking trials of dead processes FAIL) and draw its trials."""
        self.study = self.open_study()
        self._sync_trials()
        for number, trial in self._trials.items():
            self._curves[number] = _stored_curve(trial)
            self._ensure_traces(number)
            self._extend(number, self._curves[number])
        self._restyle()
        self.status.value = f"study {html.escape(self.name)}: {len(self._trials)} trials stored (reattached)"

    # ------------------------------------------------------------------------------------- buttons

    def start(self) -> None:
        """Add `trials` trials to the study in a background thread, or in `processes` worker processes watched
        by one (nothing if a run is going on)."""
        if self.running:
            return
        try:
            self.study = self.open_study()
        except (ConfigError, ValueError) as err:
            self.status.value = f"refused: {html.escape(str(err))}"
            return
        self.error = None
        self.start_button.disabled, self.stop_button.disabled, self.prune_button.disabled = True, False, False
        self.status.value = f"running: study {html.escape(self.name)}, starting a trial"
        run = self._run if self.processes.value == 1 else self._run_processes
        self._thread = threading.Thread(target=run, args=(self.study, self.n_trials.value), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the running trials after their iteration (they are marked FAIL, stopped) and start no other."""
        if self.study is not None and self.running:
            if self._workers is not None:
                self._workers.request_stop()
            self.study.request_stop()
            self.status.value = "stop requested: ending after this iteration"

    def prune(self) -> None:
        """Prune a running trial after its iteration (the selected one if it runs, else the first running one);
        the study goes on with the next."""
        if self.study is None or not self.running:
            return
        with self._lock:
            live = sorted(self._live)
        if self.selector.value in live:
            self.study.request_prune(self.selector.value)
        elif live:
            self.study.request_prune(live[0])

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> list[FrozenTrial]:
        """Block until the trials started by Start are done (the buttons cannot respond meanwhile); re-raise a
        trial's error; return every trial of the study."""
        if self._thread is None:
            raise RuntimeError("start() the study first")
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.study.trials

    def _run(self, study: TuningStudy, n_trials: int) -> None:
        try:
            done = study.run(n_trials, on_update=self._on_update)
            self._finish(study, len(done), n_trials)
        except BaseException as err:  # shown in the panel; wait() re-raises it in the notebook
            self.error = err
            self.status.value = f"<b>failed:</b> {html.escape(type(err).__name__)}: {html.escape(str(err))}"
            traceback.print_exc()
        finally:
            self.start_button.disabled, self.stop_button.disabled, self.prune_button.disabled = False, True, True

    def _run_processes(self, study: TuningStudy, n_trials: int) -> None:
        """Worker processes run the trials; this thread draws them from the storage until all have ended."""
        first = len(study.trials)
        try:
            self._workers = StudyWorkers(study, n_trials, self.processes.value)
            self._workers.start()
            while self._workers.alive():
                self._poll()
                time.sleep(POLL_S)
            self._workers.join()
            self._poll()
            failures = self._workers.failures()
            if failures:
                raise RuntimeError("; ".join(failures))
            self._finish(study, len(study.trials) - first, n_trials)
        except BaseException as err:
            self.error = err
            self.status.value = f"<b>failed:</b> {html.escape(type(err).__name__)}: {html.escape(str(err))}"
            traceback.print_exc()
        finally:
            self._workers = None
            self.start_button.disabled, self.stop_button.disabled, self.prune_button.disabled = False, True, True

    def _finish(self, study: TuningStudy, ran: int, n_trials: int) -> None:
        self._sync_trials()
        if study.stopped:
            self.status.value = f"stopped: {ran} of {n_trials} trials ran"
        else:
            self.status.value = f"finished: {n_trials} trials; {self._best_text()}"
        self.show_analysis()

    # ------------------------------------------------------------------------------------- live view

    def _on_update(self, update: TrialUpdate) -> None:
        """Called by the study (in the background thread) when a trial starts, iterates or ends."""
        with self._lock:
            n = update.trial
            if update.state == "RUNNING" and update.iteration == 0:
                self._sync_trials()
                self._curves[n], self._live[n] = [], 0
                self._ensure_traces(n)
                self._restyle()
            elif update.state == "RUNNING":
                point = {"step": update.iteration, **update.metrics}
                self._curves[n].append(point)
                self._live[n] = update.iteration
                self._extend(n, [point])
                self.status.value = (f"running: trial {n}, iteration {update.iteration} / {self.study.budget}, "
                                     f"success {update.metrics.get(SUCCESS, float('nan')):.0%}")
            else:
                self._live.pop(n, None)
                self._sync_trials()
                self._ensure_traces(n)
                self._restyle()
            self.table.value = _table_html(list(self._trials.values()), self.study.budget, self._live,
                                           self.selector.value)

    def _poll(self) -> None:
        """Draw what the worker processes stored since the last poll: new trials, new iterations, ends."""
        with self._lock:
            before = {n: t.state for n, t in self._trials.items()}
            self._sync_trials()
            for n, trial in self._trials.items():
                if n not in self._traces:
                    self._curves[n] = []
                    self._ensure_traces(n)
                if trial.state == TrialState.RUNNING or before.get(n) != trial.state:  # ended: its last rows
                    points = _stored_curve(trial)[len(self._curves[n]):]
                    self._curves[n] += points
                    self._extend(n, points)
                if trial.state == TrialState.RUNNING:
                    self._live[n] = self._curves[n][-1]["step"] if self._curves[n] else 0
                else:
                    self._live.pop(n, None)
            if before != {n: t.state for n, t in self._trials.items()}:
                self._restyle()
            if self._live and not self.study.stopped:
                running = ", ".join(f"trial {n} at {i} / {self.study.budget}" for n, i in sorted(self._live.items()))
                self.status.value = f"running ({self.processes.value} processes): {running}"
            self.table.value = _table_html(list(self._trials.values()), self.study.budget, self._live,
                                           self.selector.value)

    def _sync_trials(self) -> None:
        self._trials = {t.number: t for t in self.study.trials}
        options = [("-", None)] + [(f"trial {n}", n) for n in self._trials]
        if [o[1] for o in self.selector.options] != [o[1] for o in options]:
            self.selector.options = options
        self.table.value = _table_html(list(self._trials.values()), self.study.budget, self._live,
                                       self.selector.value)

    def _ensure_traces(self, n: int) -> None:
        if n in self._traces:
            return
        color = _PALETTE[n % len(_PALETTE)]
        for row in (1, 2):
            self.figure.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name=f"trial {n}", legendgroup=str(n),
                                             showlegend=row == 1, line=dict(color=color, width=2)), row=row, col=1)
        self._traces[n] = (len(self.figure.data) - 2, len(self.figure.data) - 1)
        for i in self._traces[n]:  # a click on a point of its curve selects the trial, as the dropdown does
            self.figure.data[i].on_click(lambda trace, points, state, n=n: self._click(n, points))

    def _click(self, n: int, points) -> None:
        if points.point_inds:
            self.selector.value = n

    def _extend(self, n: int, points: list[dict]) -> None:
        """Append iterations to trial n's two traces (in place, one message)."""
        success, metric = (self.figure.data[i] for i in self._traces[n])
        name = self.metric.value
        with self.figure.batch_update():
            success.x = tuple(success.x) + tuple(p["step"] for p in points if p.get(SUCCESS) is not None)
            success.y = tuple(success.y) + tuple(p[SUCCESS] for p in points if p.get(SUCCESS) is not None)
            metric.x = tuple(metric.x) + tuple(p["step"] for p in points if p.get(name) is not None)
            metric.y = tuple(metric.y) + tuple(p[name] for p in points if p.get(name) is not None)

    def _redraw_metric(self) -> None:
        with self._lock, self.figure.batch_update():
            name = self.metric.value
            self.figure.layout.annotations[1].text = name
            for n, (_, index) in self._traces.items():
                points = [p for p in self._curves.get(n, []) if p.get(name) is not None]
                self.figure.data[index].x = tuple(p["step"] for p in points)
                self.figure.data[index].y = tuple(p[name] for p in points)

    def _restyle(self) -> None:
        """Grey for pruned / failed trials, thick red for the best finished one, thicker for the selected one."""
        best = self._best()
        with self.figure.batch_update():
            for n, indices in self._traces.items():
                state = self._trials[n].state.name if n in self._trials else "RUNNING"
                color, width, dash = _PALETTE[n % len(_PALETTE)], 2, None
                if state in _ENDED_EARLY:
                    color, dash = "lightgrey", "dot"
                if best is not None and n == best.number:
                    color, width = "crimson", 4
                if n == self.selector.value:
                    width = 6
                for i in indices:
                    self.figure.data[i].line = dict(color=color, width=width, dash=dash)

    def _select(self) -> None:
        with self._lock:
            self._restyle()
            n = self.selector.value
            self.table.value = _table_html(list(self._trials.values()), self.study.budget if self.study else None,
                                           self._live, n)
            if n is None or self.study is None:
                self.selected.value = ""
                return
            overrides = " ".join(self.study.trial_overrides(self._trials[n]))
            self.selected.value = (f"<b>trial {n}</b> overrides: <code>{html.escape(overrides)}</code><br>"
                                   f"run directory: <code>{html.escape(self._trials[n].user_attrs.get('run_dir', ''))}"
                                   "</code>")

    def _best(self) -> FrozenTrial | None:
        complete = [t for t in self._trials.values() if t.state == TrialState.COMPLETE]
        return max(complete, key=lambda t: t.value) if complete else None

    def _best_text(self) -> str:
        best = self._best()
        return "no finished trial" if best is None else f"best score {best.value:.3f} (trial {best.number})"

    # ------------------------------------------------------------------------------------- analysis

    def analysis_figures(self) -> dict[str, go.Figure]:
        """Optuna's figures of the study: history (>= 1 finished trial), parallel coordinates and parameter
        importance (>= 2 finished trials)."""
        if self.study is None:
            return {}
        study = self.study.study
        complete = [t for t in self.study.trials if t.state == TrialState.COMPLETE]
        figures = {}
        if complete:
            figures["history"] = optuna.visualization.plot_optimization_history(study)
            figures["parallel coordinates"] = optuna.visualization.plot_parallel_coordinate(study)
        if len(complete) >= 2:
            with warnings.catch_warnings(record=True) as caught:  # e.g. "importances will be equal" (few trials)
                warnings.simplefilter("always")
                figures["importance"] = optuna.visualization.plot_param_importances(study)
            if caught:
                figures["importance"].update_layout(title="Hyperparameter importances<br><sub>"
                                                    + "; ".join(str(w.message) for w in caught) + "</sub>")
        return figures

    def show_analysis(self) -> None:
        """Draw the analysis figures under the panel (as FigureWidgets: plotly.js comes with the widget, no CDN)."""
        figures = self.analysis_figures()
        note = "" if "importance" in figures else "<i>parameter importance needs 2 finished trials</i>"
        self.analysis.children = [widgets.HTML(note)] + [go.FigureWidget(f.update_layout(height=350))
                                                         for f in figures.values()]


def _comparison_layout(metric: str) -> go.Figure:
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=(f"training success ({SUCCESS})", metric))
    fig.update_layout(height=520, margin=dict(t=40, l=50, r=20, b=40), legend=dict(title="trials"))
    fig.update_xaxes(title_text="iteration", row=2, col=1)
    return fig


def _stored_curve(trial: FrozenTrial) -> list[dict]:
    """A stored trial's iterations from its run directory's metrics.jsonl (none if that is gone)."""
    run_dir = trial.user_attrs.get("run_dir")
    if run_dir is None or not (Path(run_dir) / "metrics.jsonl").is_file():
        return []
    return read_metrics(run_dir)


def _stored_space(storage: str, name: str) -> dict[str, str]:
    """{key: SPEC} of a stored study's last search space ({} when there is no such study)."""
    if not _study_exists(storage, name):
        return {}
    return dict(optuna.load_study(study_name=name, storage=storage).user_attrs.get("space", {}))


def _study_exists(storage: str, name: str) -> bool:
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        return False
    return name in optuna.study.get_all_study_names(storage)


def _table_html(trials: list[FrozenTrial], budget: int | None, live: dict[int, int], selected: int | None = None) -> str:
    """The trial table: trial, state, parameters, score, duration; one <tr data-trial="N"> per trial."""
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        state = t.state.name
        if t.number in live:
            state += f" ({live[t.number]} / {budget})"
        elif "stopped_at" in t.user_attrs:
            state += f" (stopped at {t.user_attrs['stopped_at']})"
        elif "error" in t.user_attrs:
            state += f" ({t.user_attrs['error'][:120]})"
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={format_value(v) if not isinstance(v, float) else f'{v:.3g}'}"
                           for k, v in t.params.items())
        score = "" if t.value is None else f"{t.value:.3f}"
        end = t.datetime_complete or (datetime.now() if t.datetime_start else None)
        duration = f"{(end - t.datetime_start).total_seconds():.0f} s" if t.datetime_start and end else ""
        style = ' style="font-weight:bold;background:#fde8e8"' if t.number == selected else ""
        cells = [str(t.number), state, params, score, duration]
        rows.append(f'<tr data-trial="{t.number}"{style}>' + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{c}</th>" for c in ("trial", "state", "parameters", "score", "duration"))
    return (f'<table class="pi0lab-trial-table" style="border-collapse:collapse"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")
