"""Hyperparameter widgets: a form over chosen config keys that yields `key=value` overrides."""

import ipywidgets as widgets
from omegaconf import DictConfig, OmegaConf


class ConfigForm:
    """One widget per config key (type from the current value); `overrides()` lists the edited keys."""

    def __init__(self, cfg: DictConfig, keys: list[str]):
        self.initial = {key: OmegaConf.select(cfg, key, throw_on_missing=True) for key in keys}
        self.inputs = {key: _widget_for(key, value) for key, value in self.initial.items()}
        self.box = widgets.VBox(list(self.inputs.values()))

    def values(self) -> dict:
        return {key: w.value for key, w in self.inputs.items()}

    def overrides(self) -> list[str]:
        """`key=value` for every key whose widget differs from the config (pass to load_config)."""
        return [f"{k}={v}" for k, v in self.values().items() if v != self.initial[k]]


def _widget_for(key: str, value) -> widgets.Widget:
    style = {"description_width": "220px"}
    layout = widgets.Layout(width="420px")
    if isinstance(value, bool):
        return widgets.Checkbox(value=value, description=key, style=style, layout=layout)
    if isinstance(value, int):
        return widgets.IntText(value=value, description=key, style=style, layout=layout)
    if isinstance(value, float):
        return widgets.FloatText(value=value, description=key, style=style, layout=layout)
    if isinstance(value, str):
        return widgets.Text(value=value, description=key, style=style, layout=layout)
    raise ValueError(f"config key {key!r} holds {type(value).__name__}; forms take bool, int, float or str keys")


def config_widgets(cfg: DictConfig, keys: list[str]) -> ConfigForm:
    """A `ConfigForm` for `keys` of `cfg`; display `form.box`, then `load_config(name, form.overrides())`."""
    return ConfigForm(cfg, keys)
