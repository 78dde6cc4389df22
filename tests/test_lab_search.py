"""Search spaces: SPEC parsing, defaults that name real config keys, validation by load_config, the widgets."""

import ipywidgets as widgets
import optuna
import pytest

from pi0lab.lab.search import (DEFAULT_SPACE, SearchParam, check_space, default_param, parse_search, parse_spec,
                               schema_type, suggest, trial_config, value_overrides)
from pi0lab.lab.widgets import SearchSpaceWidgets, config_widgets
from pi0lab.train.config import ConfigError, load_config


@pytest.mark.parametrize("spec, expected", [
    ("log:1e-6:1e-4", SearchParam("actor.optim.lr", "log", 1e-6, 1e-4)),
    ("float:0.1:0.3", SearchParam("actor.optim.lr", "float", 0.1, 0.3)),
    ("int:1:8", SearchParam("actor.optim.lr", "int", 1, 8)),
    ("choice:flow_sde,reinflow", SearchParam("actor.optim.lr", "choice", choices=("flow_sde", "reinflow"))),
    ("choice:1,2,4", SearchParam("actor.optim.lr", "choice", choices=(1, 2, 4))),
    ("choice:true,false", SearchParam("actor.optim.lr", "choice", choices=(True, False))),
])
def test_specs_parse_and_print_back(spec, expected):
    param = parse_spec("actor.optim.lr", spec)
    assert param == expected
    assert parse_spec("actor.optim.lr", param.spec) == param


@pytest.mark.parametrize("text, words", [
    ("actor.optim.lr=exp:1:2", ["actor.optim.lr=exp:1:2", "log:LOW:HIGH"]),
    ("actor.optim.lr=log:0:1e-4", ["actor.optim.lr", "LOW > 0"]),
    ("actor.optim.lr=float:0.3:0.1", ["actor.optim.lr", "LOW < HIGH"]),
    ("algorithm.update_epoch=int:1.5:4", ["algorithm.update_epoch", "integers"]),
    ("algorithm.update_epoch=int:a:4", ["algorithm.update_epoch=int:a:4", "numbers"]),
    ("actor.optim.lr=log:1e-6", ["actor.optim.lr=log:1e-6", "two bounds"]),
    ("actor.optim.adam_eps", ["actor.optim.adam_eps", "no default search range"]),
])
def test_bad_specs_name_the_key_and_the_fix(text, words):
    with pytest.raises(ConfigError) as err:
        parse_search(text)
    for word in words:
        assert word in str(err.value)


def test_unknown_keys_get_the_closest_name():
    with pytest.raises(ConfigError, match=r"unknown config key 'actor\.optim\.lrr' \(did you mean 'lr'\?\)"):
        schema_type("actor.optim.lrr")
    with pytest.raises(ConfigError, match="is not a group"):
        schema_type("actor.optim.lr.low")


def test_every_default_range_names_a_real_key_and_passes_validation():
    ppo = [k for k in DEFAULT_SPACE if not k.startswith("algorithm.sac.") and k != "algorithm.group_size"]
    check_space("tabletop_ppo_nano", [], [default_param(k) for k in ppo])
    check_space("tabletop_grpo_nano", [], [default_param("algorithm.group_size")])
    check_space("tabletop_dsrl_nano", [], [default_param(k) for k in DEFAULT_SPACE if k.startswith("algorithm.sac.")])


def test_keys_without_a_default_take_their_choices_from_the_schema():
    assert default_param("actor.model.openpi.initial_noise").choices == ("gaussian", "zero")
    assert default_param("algorithm.normalize_advantages").choices == (False, True)


def test_check_space_refuses_what_load_config_refuses():
    with pytest.raises(ConfigError, match="the value 3 is refused: env.train.group_size=3 does not divide"):
        check_space("tabletop_grpo_nano", [], [parse_search("algorithm.group_size=choice:3,8")])
    with pytest.raises(ConfigError, match="algorithm.gamma must be in"):
        check_space("tabletop_ppo_nano", [], [parse_search("algorithm.gamma=float:0.9:1.2")])
    with pytest.raises(ConfigError, match="both fixed"):
        check_space("tabletop_ppo_nano", ["actor.optim.lr=1e-5"], [parse_search("actor.optim.lr")])


def test_a_trial_suggests_in_range_and_an_invalid_combination_is_refused_before_it_runs():
    valid = [parse_search("actor.optim.lr=log:1e-6:1e-4"), parse_search("actor.micro_batch_size=choice:64,128"),
             parse_search("actor.global_batch_size=choice:256,384")]  # every combination is valid
    study = optuna.create_study()
    values = suggest(study.ask(), valid)
    assert 1e-6 <= values["actor.optim.lr"] <= 1e-4
    cfg = trial_config("tabletop_ppo_nano", [], values)
    assert cfg.actor.optim.lr == values["actor.optim.lr"]  # every digit survives key=value
    space = [parse_search("actor.optim.lr=log:1e-6:1e-4"), parse_search("actor.micro_batch_size=choice:64,256"),
             parse_search("actor.global_batch_size=choice:256,384")]
    check_space("tabletop_ppo_nano", [], space)  # each value alone is valid, one combination is not
    fixed = optuna.trial.FixedTrial({"actor.optim.lr": 1e-5, "actor.micro_batch_size": 256, "actor.global_batch_size": 384})
    with pytest.raises(ConfigError, match="actor.micro_batch_size=256 does not divide actor.global_batch_size=384"):
        trial_config("tabletop_ppo_nano", [], suggest(fixed, space))


def test_value_overrides_round_trip_through_load_config():
    values = {"actor.optim.lr": 1.2388836761751587e-05, "actor.model.openpi.noise_method": "reinflow",
              "algorithm.normalize_advantages": False, "algorithm.update_epoch": 3}
    cfg = load_config("tabletop_ppo_nano", value_overrides(values))
    assert [cfg.actor.optim.lr, cfg.actor.model.openpi.noise_method, cfg.algorithm.normalize_advantages,
            cfg.algorithm.update_epoch] == list(values.values())


def test_each_type_gets_its_widget_and_the_switch_turns_a_row_into_a_range():
    cfg = load_config("tabletop_ppo_nano")
    space = SearchSpaceWidgets(cfg, ["actor.optim.lr", "algorithm.clip_ratio_high", "algorithm.update_epoch",
                                     "actor.model.openpi.noise_method"], searched=["actor.optim.lr"])
    lr, clip, epochs, method = space.controls.values()
    assert isinstance(lr.value_widget, widgets.FloatLogSlider) and lr.value() == cfg.actor.optim.lr
    assert isinstance(clip.range_widget, widgets.FloatRangeSlider)
    assert isinstance(epochs.range_widget, widgets.IntRangeSlider)
    assert isinstance(method.value_widget, widgets.ToggleButtons)
    assert space.space() == [SearchParam("actor.optim.lr", "log", 1e-6, 1e-4)] and space.overrides() == []

    lr.range_widget.value = (-5, -4.5)
    epochs.mode.value = "searched"
    epochs.range_widget.value = (1, 3)
    method.value_widget.value = "reinflow"
    clip.value_widget.value = 0.3
    assert space.space() == [SearchParam("actor.optim.lr", "log", 1e-5, float(f"{10 ** -4.5:.12g}")),
                             SearchParam("algorithm.update_epoch", "int", 1, 3)]
    assert space.overrides() == ["algorithm.clip_ratio_high=0.3", "actor.model.openpi.noise_method=reinflow"]
    method.mode.value = "searched"
    method.range_widget.children[1].value = False  # un-toggle reinflow
    assert space.space()[-1] == SearchParam("actor.model.openpi.noise_method", "choice", choices=("flow_sde",))
    assert lr.range_widget.layout.display is None and lr.value_widget.layout.display == "none"


def test_fixed_value_widgets_have_no_switch():
    form = config_widgets(load_config("tabletop_ppo_nano"), ["actor.optim.lr"])
    assert form.controls["actor.optim.lr"].mode.layout.display == "none"
    form.inputs["actor.optim.lr"].value = 3e-5
    assert form.overrides() == ["actor.optim.lr=3e-05"]
