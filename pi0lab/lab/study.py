"""Hyperparameter studies on Optuna (ask-and-tell): each trial is an ordinary training run of one config.

    study = TuningStudy("tabletop_ppo_nano", ["runner.max_epochs=30"], [parse_search("actor.optim.lr")],
                        name="ppo_lr")                       # sqlite:///runs/tune/ppo_lr.db, trials in runs/tune/ppo_lr/
    study.run(8)                                             # a later TuningStudy with the same name adds trials
    study.dataframe()                                        # one row per trial (pandas)
    best = study.rescore(k=3, num_episodes=200)              # the best 3 again, on 200 fixed evaluation pairs
    study.export_config(best, "best.yaml")                   # `pi0lab train best.yaml`

A trial asks Optuna for values, validates its config with `load_config` (a refused combination is a FAIL
that never starts), then trains with `make_trainer(cfg).iterate()` in `<run_root>/trial_NNNN` (its own
metrics.jsonl, checkpoints and videos). After each iteration it reports its smoothed training success

    smoothed_i = mean(success_once[i-w+1 .. i]),   w = ceil(budget / 3)

to the pruner, whose warm-up is w iterations (nothing is pruned before a third of the budget; a
40-episode success has a standard error of ~8 points, hence the smoothing). A finished trial scores

    score = mean(success_once over the last ceil(n / 3) of its n iterations)

and a stopped one (Stop, Ctrl-C) ends as FAIL with the iteration it reached in `user_attrs["stopped_at"]`;
its run directory holds a checkpoint to resume from. Before one trial is called best, the best k are
scored again by the deterministic policy on the same fixed (task, init) pairs (`rescore`).

Storage: SQLite with a busy timeout (several processes may share a file) or any database URL. A thread
records each running trial's heartbeat; opening a study marks RUNNING trials whose heartbeat stopped
(a dead kernel or process) as FAIL.
"""

import math
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from pi0lab.lab.search import SearchParam, check_space, suggest, value_overrides
from pi0lab.train.config import ConfigError, load_config
from pi0lab.train.stages import make_trainer

PRUNERS = ("median", "sha", "none")
SUCCESS = "env/success_once"
HEARTBEAT_INTERVAL_S = 10  # a running trial's heartbeat; one silent for 2x this (grace) is stale
MIN_RESCORE_EPISODES = 200
PRUNE_FLAG = "prune_requested"  # a trial's user attribute: end it as PRUNED after its iteration


def default_storage(name: str) -> str:
    """sqlite:///runs/tune/<name>.db (relative to the working directory)."""
    return f"sqlite:///runs/tune/{name}.db"


def open_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
                 grace_period: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats; a SQLite file gets its directory and a 60 s busy timeout."""
    engine_kwargs = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                                          grace_period=grace_period)


def warmup_iterations(budget: int) -> int:
    """Iterations before any pruning decision, and the smoothing window: ceil(budget / 3)."""
    return max(1, math.ceil(budget / 3))


def make_pruner(kind: str, budget: int) -> optuna.pruners.BasePruner:
    """median: prune below the median of earlier trials at the same iteration (after 2 finished trials);
    sha: successive halving with its first rung at the warm-up; none: never prune."""
    warmup = warmup_iterations(budget)
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup)
    if kind == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup, reduction_factor=3)
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {kind!r}; valid: {', '.join(PRUNERS)}")


def smoothed_success(successes: list[float], budget: int) -> float:
    """Mean training success over the last `warmup_iterations(budget)` iterations (what the pruner sees)."""
    return float(np.mean(successes[-warmup_iterations(budget):]))


def trial_score(successes: list[float]) -> float:
    """A trial's score: mean training success over the last third of its iterations (at least one)."""
    return float(np.mean(successes[-math.ceil(len(successes) / 3):]))


def report_success(trial: optuna.Trial, successes: list[float], budget: int) -> bool:
    """Report iteration len(successes)'s smoothed success; True if the pruner says to stop the trial."""
    trial.report(smoothed_success(successes, budget), len(successes))
    return bool(trial.should_prune())


@dataclass
class TrialUpdate:
    """What a study tells its watcher: a trial started (iteration 0), finished an iteration, or ended."""

    trial: int  # Optuna's trial number
    state: str  # RUNNING, COMPLETE, PRUNED or FAIL
    iteration: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # why a trial ended early (pruned, stopped, refused config, error)


@dataclass
class Rescore:
    trial: int
    training_score: float
    success: float  # the deterministic policy on `episodes` fixed evaluation pairs
    episodes: int


class TuningStudy:
    """An Optuna study of `space` over `config` + `overrides`; `run(n)` adds n trials, one after another."""

    def __init__(self, config: str, overrides: list[str], space: list[SearchParam], name: str | None = None,
                 storage: str | None = None, pruner: str = "median", run_root: str | Path | None = None,
                 heartbeat_interval: int = HEARTBEAT_INTERVAL_S, grace_period: int | None = None):
        self.config, self.overrides, self.space = config, list(overrides), list(space)
        self.name = name or Path(config).stem
        check_space(config, self.overrides, self.space)
        self.budget = load_config(config, self.overrides).runner.max_epochs
        self.pruner_kind = pruner
        self.storage_url = storage or default_storage(self.name)
        self.storage = open_storage(self.storage_url, heartbeat_interval, grace_period)
        self.study = optuna.create_study(study_name=self.name, storage=self.storage, direction="maximize",
                                         pruner=make_pruner(pruner, self.budget), load_if_exists=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)
        stored = self.study.user_attrs.get("config")
        if stored is not None and stored != str(config):
            raise ConfigError(f"study {self.name!r} in {self.storage_url} tunes {stored!r}, not {config!r}: "
                              "give another --study name or the same config")
        self.study.set_user_attr("config", str(config))
        self.study.set_user_attr("overrides", self.overrides)
        self.study.set_user_attr("space", {p.key: p.spec for p in self.space})
        self.run_root = Path(run_root) if run_root else _default_run_root(self.storage_url, self.name)
        self._stop = threading.Event()
        self.current: int | None = None  # the number of the running trial

    # ------------------------------------------------------------------------------------- running

    def run(self, n_trials: int, on_update: Callable[[TrialUpdate], None] | None = None) -> list[FrozenTrial]:
        """Run up to n_trials more trials (fewer after `request_stop`); return the trials this call ran."""
        self._stop.clear()
        done = []
        for _ in range(n_trials):
            if self._stop.is_set():
                break
            done.append(self.run_trial(on_update or (lambda update: None)))
        return done

    def request_stop(self) -> None:
        """Finish the running trial's current iteration, end it as FAIL (stopped) and start no other."""
        self._stop.set()

    def prune_current(self) -> None:
        """End this process's running trial as PRUNED after its current iteration (the study goes on)."""
        if self.current is not None:
            self.request_prune(self.current)

    def request_prune(self, number: int) -> None:
        """End trial `number` as PRUNED after its current iteration, whichever process runs it: a flag on the
        trial in the storage that the process reads after each iteration (nothing if it has ended)."""
        trial = self.study.trials[number]
        if trial.state == TrialState.RUNNING:
            try:
                self.storage.set_trial_user_attr(trial._trial_id, PRUNE_FLAG, True)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # it ended meanwhile

    def _prune_requested(self, trial: optuna.Trial) -> bool:
        return bool(self.storage.get_trial(trial._trial_id).user_attrs.get(PRUNE_FLAG))

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run_trial(self, on_update: Callable[[TrialUpdate], None]) -> FrozenTrial:
        """Ask, validate, train with reports to the pruner, tell. Returns the finished trial."""
        with warnings.catch_warnings():  # the heartbeat is this module's own thread, not Study.optimize's
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
            trial = self.study.ask()
        values = suggest(trial, self.space)
        run_dir = self.run_root / f"trial_{trial.number:04d}"
        trial.set_user_attr("overrides", value_overrides(values))
        trial.set_user_attr("run_dir", str(run_dir))
        self.current = trial.number
        try:
            cfg = load_config(self.config, self.overrides + value_overrides(values) + [
                f"runner.logger.log_path={run_dir}", f"runner.logger.experiment_name={self.name}-trial{trial.number}"])
        except ConfigError as err:  # refused before it starts: the sampler learns to avoid it
            trial.set_user_attr("error", str(err))
            return self._tell(trial, TrialState.FAIL, None, on_update, values, 0, f"refused: {err}")
        on_update(TrialUpdate(trial.number, "RUNNING", params=values))
        successes: list[float] = []
        with _Heartbeat(self.storage, trial._trial_id):
            try:
                state, note = self._train(trial, cfg, values, successes, on_update)
            except BaseException as err:
                trial.set_user_attr("error", f"{type(err).__name__}: {err}")
                self._tell(trial, TrialState.FAIL, None, on_update, values, len(successes),
                           f"error: {type(err).__name__}: {err}")
                raise
        trial.set_user_attr("iterations", len(successes))
        value = trial_score(successes) if state == TrialState.COMPLETE else None
        return self._tell(trial, state, value, on_update, values, len(successes), note)

    def _train(self, trial, cfg, values, successes, on_update) -> tuple[TrialState, str]:
        trainer = make_trainer(cfg, progress=False)
        state, note = TrialState.COMPLETE, ""
        try:
            iterations = trainer.iterate()
            for event in iterations:
                successes.append(event.metrics[SUCCESS])
                prune = report_success(trial, successes, self.budget)
                on_update(TrialUpdate(trial.number, "RUNNING", event.iteration, event.metrics, values))
                if self._stop.is_set() and event.iteration < self.budget:
                    trial.set_user_attr("stopped_at", event.iteration)
                    state, note = TrialState.FAIL, f"stopped at iteration {event.iteration}"
                elif event.iteration < self.budget and self._prune_requested(trial):
                    state, note = TrialState.PRUNED, f"pruned by hand at iteration {event.iteration}"
                elif prune:
                    state, note = TrialState.PRUNED, f"pruned at iteration {event.iteration}"
                if state != TrialState.COMPLETE:
                    break
            iterations.close()  # writes the last checkpoint
        finally:
            trainer.logger.close()
            trainer.close()
        return state, note

    def _tell(self, trial, state, value, on_update, values, iteration, note) -> FrozenTrial:
        self.study.tell(trial, value, state=state)
        self.current = None
        on_update(TrialUpdate(trial.number, state.name, iteration, params=values, note=note))
        return self.study.trials[trial.number]

    # ------------------------------------------------------------------------------------- results

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def dataframe(self) -> pd.DataFrame:
        """The study as a DataFrame: number, state, value (score), params_<key>, duration, user attributes."""
        return self.study.trials_dataframe(attrs=("number", "state", "value", "params", "duration", "user_attrs"))

    def trial_overrides(self, trial: FrozenTrial | int) -> list[str]:
        """Everything that sets a trial's config apart from `config`: the fixed overrides, then its values."""
        trial = self._trial(trial)
        return self.overrides + list(trial.user_attrs.get("overrides", []))

    def rescore(self, k: int = 3, num_episodes: int = MIN_RESCORE_EPISODES) -> FrozenTrial:
        """Score the k best finished trials again, each from its last checkpoint, with the deterministic policy
        on the same `num_episodes` fixed evaluation pairs; return the one that scores highest (stored in the
        study's user attribute "rescores", which `best_trial` reads). Use >= 200 pairs (smoke runs fewer)."""
        finished = sorted((t for t in self.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)[:k]
        if not finished:
            raise RuntimeError(f"study {self.name!r} has no finished trial to rescore")
        rescores = dict(self.study.user_attrs.get("rescores", {}))
        for trial in finished:
            cfg = load_config(self.config, self.trial_overrides(trial) + [
                f"runner.logger.log_path={trial.user_attrs['run_dir']}"])
            trainer = make_trainer(cfg, resume=True, progress=False)
            try:
                result = trainer.evaluate(num_episodes)
            finally:
                trainer.logger.close()
                trainer.close()
            rescores[str(trial.number)] = {"success": result.success_rate, "episodes": result.num_episodes}
        self.study.set_user_attr("rescores", rescores)
        return self.best_trial()

    def rescores(self) -> list[Rescore]:
        """Every rescored trial, best first."""
        rows = [Rescore(int(n), self._trial(int(n)).value, r["success"], r["episodes"])
                for n, r in self.study.user_attrs.get("rescores", {}).items()]
        return sorted(rows, key=lambda r: -r.success)

    def best_trial(self) -> FrozenTrial:
        """The rescored trial with the highest evaluation success (call `rescore` first)."""
        rows = self.rescores()
        if not rows:
            raise RuntimeError("no trial has been rescored yet: call rescore(k, num_episodes) before naming a best")
        return self._trial(rows[0].trial)

    def export_config(self, trial: FrozenTrial | int, path: str | Path, log_path: str | None = None) -> Path:
        """Write a YAML config that `pi0lab train PATH` runs: `defaults: [config]` plus the trial's overrides,
        with its own run directory (default `<run_root>/best_trial_NNNN`)."""
        trial = self._trial(trial)
        base = self.config if not str(self.config).endswith((".yaml", ".yml")) else str(Path(self.config).resolve())
        log_path = log_path or str(self.run_root / f"best_trial_{trial.number:04d}")
        values = OmegaConf.from_dotlist(self.trial_overrides(trial) + [f"runner.logger.log_path={log_path}"])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = f"# study {self.name!r} ({self.storage_url}), trial {trial.number}: score {trial.value}\n"
        path.write_text(header + OmegaConf.to_yaml(OmegaConf.merge({"defaults": [base]}, values)))
        load_config(path)  # what `pi0lab train` will do with it
        return path

    def _trial(self, trial: FrozenTrial | int) -> FrozenTrial:
        return self.trials[trial] if isinstance(trial, int) else trial


def _default_run_root(storage_url: str, name: str) -> Path:
    """Next to a SQLite file (runs/tune/<name>/ for the default storage), else runs/tune/<name>."""
    if storage_url.startswith("sqlite:///"):
        return Path(storage_url.removeprefix("sqlite:///")).parent / name
    return Path("runs/tune") / name


class _Heartbeat:
    """Records a trial's heartbeat every interval in a daemon thread while the `with` block runs."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            self.storage.record_heartbeat(self.trial_id)
            if self._done.wait(self.storage.get_heartbeat_interval()):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
