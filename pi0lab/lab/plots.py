"""Plotly figures of training metrics and evaluation results."""

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pi0lab.train.evaluate import EvalResult


def metric_figure(records: list[dict], names: list[str], columns: int = 3, title: str | None = None) -> go.Figure:
    """One small line plot per metric name, x = step; records are `read_metrics` rows ({"step": s, name: v})."""
    rows = math.ceil(len(names) / columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=names)
    for i, name in enumerate(names):
        points = [(r["step"], r[name]) for r in records if r.get(name) is not None]
        mode = "lines" if len(points) > 100 else "lines+markers"  # markers only while they stay readable
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode=mode,
                                 name=name, showlegend=False), row=i // columns + 1, col=i % columns + 1)
    fig.update_layout(height=220 * rows, margin=dict(t=60, l=40, r=20, b=30), title=title)
    return fig


def success_figure(rates: dict[str, dict[str, float]], title: str = "Success rate") -> go.Figure:
    """Grouped bars: one group per suite (or task), one bar per model; rates in [0, 1]."""
    fig = go.Figure()
    for model, cells in rates.items():
        fig.add_trace(go.Bar(name=model, x=list(cells), y=[100 * v for v in cells.values()]))
    fig.update_layout(barmode="group", yaxis=dict(title="success %", range=[0, 100]), title=title, height=350)
    return fig


def task_success_figure(results: dict[str, EvalResult], title: str = "Success per task") -> go.Figure:
    """One bar per task of each evaluated suite (one colour per suite): success % with the episode count on
    the bar and the task's instruction on hover; results are `evaluate_checkpoint` results by suite."""
    fig = go.Figure()
    for suite, result in results.items():
        tasks = sorted(result.successes)
        fig.add_trace(go.Bar(
            name=suite, x=[f"{suite}<br>task {t}" for t in tasks], y=[100 * result.per_task[t] for t in tasks],
            text=[f"{sum(result.successes[t])}/{len(result.successes[t])}" for t in tasks],
            hovertext=[result.descriptions[t] for t in tasks]))
    fig.update_layout(yaxis=dict(title="success %", range=[0, 100]), title=title, height=380)
    return fig
