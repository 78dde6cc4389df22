"""Search-space widgets: one row per config key, a fixed value or a searched range, as its type calls for.

    space = SearchSpaceWidgets(cfg, ["actor.optim.lr", "algorithm.update_epoch", "actor.model.openpi.noise_method"])
    space.box                      # display: log slider for rates, range sliders for bounds, toggles for choices
    space.overrides()              # fixed keys the user changed, as key=value
    space.space()                  # searched keys as SearchParams (pi0lab.lab.search)

Each row has a fixed / searched switch (hidden with `searchable=False`, as `config_widgets` builds it for a
single training run). The ranges start from `pi0lab.lab.search.DEFAULT_SPACE` (or the schema's choices),
widened to hold the config's own value.
"""

import math
from typing import Any

import ipywidgets as widgets
from omegaconf import DictConfig, OmegaConf

from pi0lab.lab.search import SearchParam, default_param, format_value, parse_spec

_STYLE = {"description_width": "initial"}


class ParamControl:
    """The widgets of one key: `value_widget` (fixed), `range_widget` (searched), `mode` (the switch)."""

    def __init__(self, key: str, value: Any, param: SearchParam, searchable: bool = True):
        self.key, self.initial, self.kind = key, value, param.kind
        self.mode = widgets.ToggleButtons(options=["fixed", "searched"], value="fixed",
                                          style={"button_width": "70px"},
                                          layout=widgets.Layout(display=None if searchable else "none"))
        self.choices = _choices(param, value)
        self.value_widget, self.range_widget = _widgets_for(param, value, self.choices)
        self.label = widgets.Label(key, layout=widgets.Layout(width="260px"))
        self.box = widgets.HBox([self.label, self.mode, self.value_widget, self.range_widget])
        self.mode.observe(lambda _: self._show(), names="value")
        self._show()

    def _show(self) -> None:
        searched = self.mode.value == "searched"
        self.value_widget.layout.display = "none" if searched else None
        self.range_widget.layout.display = None if searched else "none"

    @property
    def searched(self) -> bool:
        return self.mode.value == "searched"

    def value(self) -> Any:
        """The fixed value."""
        return self.value_widget.value

    def param(self) -> SearchParam:
        """The searched range or choices, as a SearchParam."""
        if self.kind == "choice":
            chosen = tuple(c for c, b in zip(self.choices, self.range_widget.children) if b.value)
            return SearchParam(self.key, "choice", choices=chosen)
        low, high = self.range_widget.value
        if self.kind == "log":
            low, high = (float(f"{10.0 ** b:.12g}") for b in (low, high))  # 1e-06, not 9.999999999999999e-07
        return SearchParam(self.key, self.kind, float(low), float(high))

    def set_range(self, param: SearchParam) -> None:
        """Search `param`'s range or choices (switches the row to searched)."""
        if param.kind != self.kind:
            raise ValueError(f"{self.key}: the row searches a {self.kind} range, got {param.spec}")
        if self.kind == "choice":
            for choice, button in zip(self.choices, self.range_widget.children):
                button.value = choice in param.choices
        else:
            bounds = (math.log10(param.low), math.log10(param.high)) if self.kind == "log" else (param.low, param.high)
            self.range_widget.min = min(self.range_widget.min, bounds[0])
            self.range_widget.max = max(self.range_widget.max, bounds[1])
            self.range_widget.value = bounds
        self.mode.value = "searched"


def _choices(param: SearchParam, value: Any) -> list:
    """A choice's options: its choices, and the config's value when it is not one of them."""
    if param.kind != "choice":
        return []
    return list(param.choices) + ([value] if value not in param.choices else [])


def _widgets_for(param: SearchParam, value: Any, choices: list) -> tuple[widgets.Widget, widgets.Widget]:
    """(fixed-value widget, searched-range widget) of a parameter; slider extents hold both range and value."""
    layout = lambda: widgets.Layout(width="360px")
    if param.kind == "choice":
        fixed = widgets.ToggleButtons(options=[(format_value(c), c) for c in choices], value=value,
                                      style={"button_width": "auto"})
        buttons = [widgets.ToggleButton(value=c in param.choices, description=format_value(c),
                                        layout=widgets.Layout(width="auto")) for c in choices]
        return fixed, widgets.HBox(buttons)
    if param.kind == "log":
        low, high = math.floor(math.log10(min(param.low, value))), math.ceil(math.log10(max(param.high, value)))
        fixed = widgets.FloatLogSlider(value=value, base=10, min=low, max=high, step=0.05, readout_format=".2e",
                                       layout=layout(), style=_STYLE)
        searched = widgets.FloatRangeSlider(value=(math.log10(param.low), math.log10(param.high)), min=low, max=high,
                                            step=0.05, description="log10", readout_format=".2f", layout=layout(),
                                            style=_STYLE)
        return fixed, searched
    low, high = min(param.low, value), max(param.high, value)
    if param.kind == "int":
        return (widgets.IntSlider(value=value, min=int(low), max=int(high), layout=layout()),
                widgets.IntRangeSlider(value=(int(param.low), int(param.high)), min=int(low), max=int(high),
                                       layout=layout()))
    step = (high - low) / 200
    return (widgets.FloatSlider(value=value, min=low, max=high, step=step, readout_format=".4g", layout=layout()),
            widgets.FloatRangeSlider(value=(param.low, param.high), min=low, max=high, step=step,
                                     readout_format=".4g", layout=layout()))


class SearchSpaceWidgets:
    """One `ParamControl` per key of `cfg`; `specs` ({key: SPEC}) replace the default ranges, `searched` keys
    start switched to searched."""

    def __init__(self, cfg: DictConfig, keys: list[str], specs: dict[str, str] | None = None,
                 searched: list[str] | None = None, searchable: bool = True):
        specs = specs or {}
        unknown = sorted(set(specs) - set(keys)) + sorted(set(searched or []) - set(keys))
        if unknown:
            raise ValueError(f"{', '.join(unknown)} not among the keys {keys}")
        self.controls: dict[str, ParamControl] = {}
        for key in keys:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
            param = parse_spec(key, specs[key]) if key in specs else default_param(key)
            self.controls[key] = ParamControl(key, value, param, searchable)
            if key in (searched or []):
                self.controls[key].set_range(param)
        self.box = widgets.VBox([c.box for c in self.controls.values()])

    @property
    def inputs(self) -> dict[str, widgets.Widget]:
        """{key: the fixed-value widget}."""
        return {key: c.value_widget for key, c in self.controls.items()}

    def overrides(self) -> list[str]:
        """`key=value` for every fixed key whose value differs from the config's (pass to load_config)."""
        return [f"{key}={format_value(c.value())}" for key, c in self.controls.items()
                if not c.searched and c.value() != c.initial]

    def space(self) -> list[SearchParam]:
        """The searched keys' ranges and choices."""
        return [c.param() for c in self.controls.values() if c.searched]


def config_widgets(cfg: DictConfig, keys: list[str]) -> SearchSpaceWidgets:
    """Fixed-value widgets for `keys` of `cfg` (no search switch); display `.box`, then
    `load_config(name, overrides + form.overrides())`."""
    return SearchSpaceWidgets(cfg, keys, searchable=False)
