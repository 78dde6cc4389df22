"""A hyperparameter search space over config keys, checked by the config schema.

A `SearchParam` is one searched key: a log-uniform rate, a uniform float, an integer range or a set of
choices. It is written as a SPEC on the command line and in the panel:

    log:1e-6:1e-4          log-uniform in [1e-6, 1e-4] (rates)
    float:0.1:0.3          uniform in [0.1, 0.3]
    int:1:8                integer in [1, 8]
    choice:flow_sde,reinflow

    space = [parse_search("actor.optim.lr=log:1e-6:1e-4"), default_param("algorithm.update_epoch")]
    check_space("tabletop_ppo_nano", overrides, space)      # every bound and choice passes load_config
    values = suggest(trial, space)                          # one Optuna trial's values
    cfg = trial_config("tabletop_ppo_nano", overrides, values)  # the same validation, before the trial runs

`DEFAULT_SPACE` holds ranges that suit RL fine-tuning of flow policies (PPO / GRPO on pi0, DSRL's SAC);
a key without one gets its choices from the schema when its type is a Literal or a bool.
"""

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal

import optuna
from omegaconf import OmegaConf

from pi0lab.train.config import ConfigError, TrainConfig, load_config

Kind = Literal["log", "float", "int", "choice"]
KINDS: tuple[str, ...] = typing.get_args(Kind)

# Ranges for the usual RL knobs (key paths as in pi0lab/configs/*.yaml). Rates are log-uniform; the policy lr
# spans the recipe's 5e-6 and the tabletop's 2e-5; clip ratios stay near PPO's 0.2; noise_level around the
# recipe's 0.5; GRPO's group size must divide env.train.total_num_envs, so it is a choice of powers of two.
DEFAULT_SPACE: dict[str, str] = {
    "actor.optim.lr": "log:1e-6:1e-4",
    "actor.optim.value_lr": "log:1e-5:3e-3",
    "algorithm.clip_ratio_low": "float:0.05:0.3",
    "algorithm.clip_ratio_high": "float:0.05:0.4",
    "algorithm.value_clip": "float:0.1:0.5",
    "actor.model.openpi.noise_level": "float:0.2:1.0",
    "actor.model.openpi.noise_method": "choice:flow_sde,reinflow",
    "actor.model.num_steps": "int:2:8",
    "algorithm.gamma": "float:0.95:0.999",
    "algorithm.gae_lambda": "float:0.9:1.0",
    "algorithm.group_size": "choice:2,4,8",
    "algorithm.update_epoch": "int:1:8",
    "algorithm.entropy_bonus": "float:0.0:0.01",
    "algorithm.target_kl": "log:0.01:0.2",
    "algorithm.sac.actor_lr": "log:1e-5:1e-3",
    "algorithm.sac.critic_lr": "log:3e-5:3e-3",
    "algorithm.sac.noise_bound": "float:0.5:2.5",
}


@dataclass(frozen=True)
class SearchParam:
    """One searched config key: `low`/`high` bound a log, float or int range; `choices` list a choice's values."""

    key: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"{self.key}: unknown kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.kind == "choice":
            if not self.choices:
                raise ConfigError(f"{self.key}: a choice needs at least one value, e.g. choice:flow_sde,reinflow")
            return
        if self.low is None or self.high is None or not self.low < self.high:
            raise ConfigError(f"{self.key}: {self.kind} needs LOW < HIGH, got {self.low} and {self.high}")
        if self.kind == "log" and self.low <= 0:
            raise ConfigError(f"{self.key}: a log range needs LOW > 0, got {self.low} (use float:{self.low}:{self.high})")
        if self.kind == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ConfigError(f"{self.key}: int bounds must be integers, got {self.low} and {self.high}")

    @property
    def spec(self) -> str:
        """The SPEC text this parameter parses from (`parse_spec(key, param.spec) == param`)."""
        if self.kind == "choice":
            return "choice:" + ",".join(format_value(c) for c in self.choices)
        return f"{self.kind}:{format_value(self.low)}:{format_value(self.high)}"

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """The Optuna distribution this parameter samples from (the parameter's name is its key)."""
        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high))
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.kind == "log")

    def bound_values(self) -> list:
        """The extreme values a trial can take (both bounds, or every choice): what `check_space` validates."""
        if self.kind == "choice":
            return list(self.choices)
        return [int(self.low), int(self.high)] if self.kind == "int" else [self.low, self.high]


def parse_value(text: str) -> Any:
    """A value as the command line's `key=value` reads it (OmegaConf's YAML: 1e-4 is a float, true a bool)."""
    return OmegaConf.create({"v": text} if text == "" else f"v: {text}")["v"]


def parse_spec(key: str, spec: str) -> SearchParam:
    """`log:1e-6:1e-4`, `float:0.1:0.3`, `int:1:8` or `choice:a,b,...` -> a SearchParam of `key`."""
    kind, _, rest = spec.partition(":")
    if kind not in KINDS or not rest:
        raise ConfigError(f"{key}={spec}: a SPEC is log:LOW:HIGH, float:LOW:HIGH, int:LOW:HIGH or choice:A,B,...")
    if kind == "choice":
        return SearchParam(key, "choice", choices=tuple(parse_value(c.strip()) for c in rest.split(",")))
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise ConfigError(f"{key}={spec}: {kind} takes two bounds, {kind}:LOW:HIGH")
    try:
        low, high = (float(b) for b in bounds)
    except ValueError:
        raise ConfigError(f"{key}={spec}: the bounds of {kind} must be numbers") from None
    return SearchParam(key, kind, low, high)


def parse_search(text: str) -> SearchParam:
    """`KEY=SPEC` (as `pi0lab tune --search` takes it), or `KEY` alone for its default range."""
    key, sep, spec = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--search {text!r}: give KEY=SPEC, e.g. actor.optim.lr=log:1e-6:1e-4")
    return parse_spec(key, spec.strip()) if sep else default_param(key)


def schema_type(key: str) -> Any:
    """The schema's type hint of a dotted config key (ConfigError, with the closest name, for an unknown key)."""
    hint: Any = TrainConfig
    for i, part in enumerate(key.split(".")):
        if not dataclasses.is_dataclass(hint):
            raise ConfigError(f"unknown config key {key!r}: {'.'.join(key.split('.')[:i])} is not a group")
        hints = typing.get_type_hints(hint)
        if part not in hints:
            close = difflib.get_close_matches(part, list(hints), n=1)
            raise ConfigError(f"unknown config key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                              + f"; valid keys of {'.'.join(key.split('.')[:i]) or 'the config'}: {', '.join(hints)}")
        hint = hints[part]
    return hint


def default_param(key: str) -> SearchParam:
    """The default search range of `key`: `DEFAULT_SPACE`, else the choices its schema type allows."""
    if key in DEFAULT_SPACE:
        return parse_spec(key, DEFAULT_SPACE[key])
    hint = schema_type(key)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is Literal:
        return SearchParam(key, "choice", choices=tuple(args))
    if hint is bool:
        return SearchParam(key, "choice", choices=(False, True))
    raise ConfigError(f"{key} has no default search range: give one, e.g. {key}=float:LOW:HIGH "
                      f"(keys with defaults: {', '.join(DEFAULT_SPACE)})")


def check_space(config: str, overrides: list[str], space: list[SearchParam]) -> None:
    """Refuse a space that load_config would refuse: each bound / choice of each key, the others fixed.

    A key may appear once; a searched key may not also be fixed by `overrides`.
    """
    keys = [p.key for p in space]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConfigError(f"searched twice: {', '.join(twice)}")
    fixed = {o.partition("=")[0] for o in overrides}
    both = sorted(fixed & set(keys))
    if both:
        raise ConfigError(f"{', '.join(both)} is both fixed (k=v) and searched (--search): drop one")
    load_config(config, overrides)
    for param in space:
        schema_type(param.key)
        for value in param.bound_values():
            try:
                load_config(config, overrides + [f"{param.key}={format_value(value)}"])
            except ConfigError as err:
                raise ConfigError(f"{param.key}={param.spec}: the value {format_value(value)} is refused: {err}") from None


def suggest(trial: optuna.Trial, space: list[SearchParam]) -> dict[str, Any]:
    """One value per parameter from an Optuna trial (the parameter's name in the study is its config key)."""
    values = {}
    for p in space:
        if p.kind == "choice":
            values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
        elif p.kind == "int":
            values[p.key] = trial.suggest_int(p.key, int(p.low), int(p.high))
        else:
            values[p.key] = trial.suggest_float(p.key, p.low, p.high, log=p.kind == "log")
    return values


def value_overrides(values: dict[str, Any]) -> list[str]:
    """{key: value} -> ["key=value", ...] in the command line's syntax (round-trips through `parse_value`)."""
    return [f"{key}={format_value(value)}" for key, value in values.items()]


def trial_config(config: str, overrides: list[str], values: dict[str, Any]):
    """The validated config of one trial (ConfigError for a combination load_config refuses)."""
    return load_config(config, overrides + value_overrides(values))


def format_value(value: Any) -> str:
    """A value as `key=value` text: floats keep every digit, bools are true / false, None is null."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)
