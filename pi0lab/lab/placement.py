"""Placement in the notebook: a form that builds `cluster.*` overrides, the plan drawn as a device x component
grid, and the processes' time spans drawn as a timeline."""

import ipywidgets as widgets
import plotly.graph_objects as go

from pi0lab.runtime.placement import COMPONENTS
from pi0lab.runtime.plan import PlanError, RunPlan, plan_run
from pi0lab.train.config import load_config

PRESETS = {  # the seed's three shapes, on 4 / 2 / 3 devices
    "shared + pipelining": (4, "{env: 0-1, rollout: 2-3, actor: 0-3}", 2),
    "collocated": (2, "{'env,rollout,actor': all}", 1),
    "disaggregated": (3, "{env: 0, rollout: 1, actor: 2}", 1),
}
PHASE_COLOURS = {"env": "#2ca02c", "rollout": "#1f77b4", "update": "#d62728", "exchange": "#9467bd",
                 "weight sync": "#ff7f0e", "checkpoint": "#8c564b", "eval": "#e377c2", "window": "#bcbd22",
                 "env wait": "#dddddd"}


def placement_grid(plan: RunPlan) -> go.Figure:
    """Devices across, components down; a cell names the rank that runs that component on that device
    (a fused process shows the same rank in several rows)."""
    devices = sorted({w.device for w in plan.workers})
    text = [["" for _ in devices] for _ in COMPONENTS]
    filled = [[0 for _ in devices] for _ in COMPONENTS]
    for w in plan.workers:
        for c in w.components:
            row, col = COMPONENTS.index(c), devices.index(w.device)
            text[row][col] = f"rank {w.rank}" + (" (fused)" if len(w.components) > 1 else "")
            filled[row][col] = 1 + COMPONENTS.index(c)
    fig = go.Figure(go.Heatmap(z=filled, x=[f"{plan.device_type} {d}" for d in devices], y=list(COMPONENTS),
                               text=text, texttemplate="%{text}", showscale=False, xgap=3, ygap=3,
                               colorscale=[[0, "#f4f4f4"], [0.34, "#2ca02c"], [0.67, "#1f77b4"], [1, "#d62728"]],
                               zmin=0, zmax=3))
    fig.update_layout(title=f"{plan.world_size} processes, {plan.num_stages} pipeline stage(s), "
                            f"{len(plan.slices)} env slices", height=260, margin=dict(t=50, l=60, r=20, b=40),
                      yaxis=dict(autorange="reversed"))
    return fig


def timeline_figure(rows: list[dict], title: str = "What every process did") -> go.Figure:
    """A Gantt chart of time spans (`pi0lab.runtime.spans.read_spans` rows): one line per process, one colour
    per phase, seconds since the first span."""
    fig = go.Figure()
    if not rows:
        return fig.update_layout(title=title + " (no spans yet)", height=200)
    origin = min(r["start"] for r in rows)
    processes = sorted({(r["rank"], r["process"]) for r in rows})
    for phase in sorted({r["phase"] for r in rows}):
        mine = [r for r in rows if r["phase"] == phase]
        fig.add_trace(go.Bar(name=phase, orientation="h", y=[r["process"] for r in mine],
                             x=[r["end"] - r["start"] for r in mine], base=[r["start"] - origin for r in mine],
                             marker_color=PHASE_COLOURS.get(phase), hovertemplate=phase + " %{base:.2f}s + %{x:.3f}s"))
    fig.update_layout(barmode="overlay", title=title, xaxis_title="seconds", height=120 + 28 * len(processes),
                      yaxis=dict(categoryorder="array", categoryarray=[p for _, p in processes][::-1]),
                      margin=dict(t=50, l=160, r=20, b=40))
    return fig


class PlacementForm:
    """Widgets for `cluster.num_devices`, `cluster.component_placement`, `rollout.pipeline_stage_num` and
    `actor.data_parallel`; every change re-plans and redraws the grid (or shows why the plan is refused)."""

    def __init__(self, config: str, overrides: list[str], preset: str = "disaggregated"):
        self.config, self.base = config, list(overrides)
        devices, placement, stages = PRESETS[preset]
        style = {"description_width": "150px"}
        self.preset = widgets.Dropdown(options=list(PRESETS), value=preset, description="shape", style=style)
        self.devices = widgets.BoundedIntText(value=devices, min=1, max=64, description="cluster.num_devices", style=style)
        self.placement = widgets.Text(value=placement, description="component_placement", style=style,
                                      layout=widgets.Layout(width="520px"))
        self.stages = widgets.BoundedIntText(value=stages, min=1, max=16, description="pipeline_stage_num", style=style)
        self.data_parallel = widgets.ToggleButtons(options=["ddp", "fsdp2"], value="ddp", description="actor.data_parallel",
                                                   style=style)
        self.message = widgets.HTML()
        self.grid = go.FigureWidget()
        self.preset.observe(self._apply_preset, names="value")
        for w in (self.devices, self.placement, self.stages, self.data_parallel):
            w.observe(lambda _: self.redraw(), names="value")
        self.box = widgets.VBox([self.preset, self.devices, self.placement, self.stages, self.data_parallel,
                                 self.message, self.grid])
        self.redraw()

    def overrides(self) -> list[str]:
        """The form as `key=value` overrides (after the base overrides)."""
        return self.base + [f"cluster.num_devices={self.devices.value}",
                            f"cluster.component_placement={self.placement.value}",
                            f"rollout.pipeline_stage_num={self.stages.value}",
                            f"actor.data_parallel={self.data_parallel.value}"]

    def plan(self) -> RunPlan:
        return plan_run(load_config(self.config, self.overrides()))

    def redraw(self) -> None:
        try:
            plan = self.plan()
        except (PlanError, ValueError) as err:
            self.message.value = f"<span style='color:#b00'>refused: {err}</span>"
            return
        self.message.value = "<pre>" + plan.describe() + "</pre>"
        fresh = placement_grid(plan)
        with self.grid.batch_update():
            self.grid.data = []
            self.grid.add_traces(fresh.data)
            self.grid.layout = fresh.layout

    def _apply_preset(self, change) -> None:
        devices, placement, stages = PRESETS[change["new"]]
        with self.box.hold_trait_notifications():
            self.devices.value, self.placement.value, self.stages.value = devices, placement, stages
        self.redraw()
