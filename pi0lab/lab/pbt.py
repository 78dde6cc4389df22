"""Population-based training (PBT): N runs of one config that, every K iterations, copy the better ones.

    pbt = PopulationTraining("tabletop_ppo_nano", ["runner.max_epochs=30"], population=4, interval=5)
    lineage = pbt.run()            # one LineageStep per member and generation
    lineage_figure(lineage)        # who continued from whom, coloured by score

Each member is an ordinary training run in `<run_root>/member_N` (its own metrics.jsonl and checkpoints).
It starts from values drawn from `space` (lr, noise_level, entropy bonus: continuous knobs; structural
knobs such as num_steps or batch sizes belong to a search). At the end of every generation of K
iterations the members are ranked by their mean training success over those K iterations; each of the
worst `ceil(fraction * N)` members (exploit) continues from the checkpoint of a random member of the
best as many (weights and optimiser state), with

    explore: value' = clip(value * choice(0.8, 1.25), low, high), or, with probability resample_probability,
             a fresh draw from the parameter's range (so a 0 entropy bonus can become positive),

and a fresh RNG stream (`RLTrainer.reseed`), so that a copy does not replay its source.
"""

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from pi0lab.lab.search import SearchParam, check_space, default_param, value_overrides
from pi0lab.train.config import ConfigError, load_config
from pi0lab.train.stages import make_trainer
from pi0lab.train.trainer import IterationEvent, RLTrainer

PERTURBED_KEYS = ("actor.optim.lr", "actor.model.openpi.noise_level", "algorithm.entropy_bonus")
PERTURB_FACTORS = (0.8, 1.25)


@dataclass
class LineageStep:
    """One member at the end of one generation."""

    generation: int  # 1-based
    iteration: int  # iterations done by then
    member: int
    score: float  # mean training success over the generation's iterations
    values: dict[str, Any]  # the values it trained with during the generation
    copied_from: int | None = None  # the member whose checkpoint it continues from in the next generation


def draw(param: SearchParam, rng: np.random.Generator) -> Any:
    """A random value of a parameter's range (log-uniform for log, uniform otherwise)."""
    if param.kind == "choice":
        return param.choices[rng.integers(len(param.choices))]
    if param.kind == "int":
        return int(rng.integers(int(param.low), int(param.high) + 1))
    if param.kind == "log":
        return float(math.exp(rng.uniform(math.log(param.low), math.log(param.high))))
    return float(rng.uniform(param.low, param.high))


def perturb(param: SearchParam, value: Any, rng: np.random.Generator, resample_probability: float) -> Any:
    """PBT's explore step for one continuous parameter (see the module docstring)."""
    if param.kind not in ("log", "float"):
        raise ConfigError(f"{param.key}: PBT perturbs continuous knobs (log / float), not {param.kind}")
    if rng.uniform() < resample_probability:
        return draw(param, rng)
    return float(np.clip(value * PERTURB_FACTORS[rng.integers(2)], param.low, param.high))


def exploit(scores: list[float], fraction: float, rng: np.random.Generator) -> dict[int, int]:
    """{loser: winner}: each of the ceil(fraction * N) lowest-scoring members gets a random one of as many
    highest-scoring members (ties keep the lower index on top). No copy in a population of one."""
    n = len(scores)
    count = min(math.ceil(fraction * n), n // 2)
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    top, bottom = order[:count], order[n - count:]
    return {loser: top[rng.integers(count)] for loser in bottom}


class _Member:
    def __init__(self, index: int, values: dict[str, Any], trainer: RLTrainer):
        self.index, self.values, self.trainer = index, values, trainer
        self.iterations = trainer.iterate()
        self.successes: list[float] = []

    def close(self) -> None:
        self.iterations.close()  # saves a checkpoint of where it stopped
        self.trainer.logger.close()
        self.trainer.close()


class PopulationTraining:
    """N members of `config` + `overrides`, trained K iterations at a time in turn, the worse copying the better."""

    def __init__(self, config: str, overrides: list[str], population: int = 4, interval: int = 5,
                 space: list[SearchParam] | None = None, run_root: str | Path = "runs/pbt", fraction: float = 0.25,
                 resample_probability: float = 0.25, seed: int = 0):
        self.config, self.overrides = config, list(overrides)
        self.space = space if space is not None else [default_param(k) for k in PERTURBED_KEYS]
        discrete = [p.key for p in self.space if p.kind not in ("log", "float")]
        if discrete:
            raise ConfigError(f"PBT perturbs continuous knobs (log / float ranges), not {', '.join(discrete)}: "
                              "search structural knobs with a study instead")
        check_space(config, self.overrides, self.space)
        base = load_config(config, self.overrides)
        if base.algorithm.adv_type == "embodied_sac":
            raise ConfigError("population-based training runs PPO / GRPO configs (it perturbs the policy lr, "
                              "noise_level and entropy bonus); DSRL's SAC has other knobs")
        if population < 1 or interval < 1:
            raise ConfigError(f"population ({population}) and interval ({interval}) must be >= 1")
        self.population, self.interval, self.budget = population, interval, base.runner.max_epochs
        self.seed, self.actor_seed = seed, base.actor.seed
        self.run_root, self.fraction, self.resample_probability = Path(run_root), fraction, resample_probability
        self.rng = np.random.default_rng(seed)
        self.lineage: list[LineageStep] = []
        self._stop = threading.Event()

    def request_stop(self) -> None:
        """Finish the iteration in progress, checkpoint every member and end."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(self, on_event: Callable[[int, IterationEvent], None] | None = None) -> list[LineageStep]:
        """Train every member to `runner.max_epochs` (or a stop request); `on_event(member, event)` after each
        iteration. Returns the lineage."""
        members = [self._member(i, {p.key: draw(p, self.rng) for p in self.space}) for i in range(self.population)]
        generation = 0
        try:
            while members[0].trainer.iteration < self.budget and not self._stop.is_set():
                generation += 1
                for member in members:
                    member.successes = []
                    for event in _take(member.iterations, self.interval, self._stop):
                        member.successes.append(event.metrics["env/success_once"])
                        if on_event is not None:
                            on_event(member.index, event)
                if any(not m.successes for m in members):  # stopped before every member ran this generation
                    break
                scores = [float(np.mean(m.successes)) for m in members]
                copies = exploit(scores, self.fraction, self.rng) if members[0].trainer.iteration < self.budget else {}
                iteration = members[0].trainer.iteration
                self.lineage += [LineageStep(generation, iteration, m.index, scores[m.index], dict(m.values),
                                             copies.get(m.index)) for m in members]
                for loser, winner in copies.items():
                    members[loser] = self._copy(members[loser], members[winner], generation)
        finally:
            for member in members:
                member.close()
        return self.lineage

    def _member(self, index: int, values: dict[str, Any], resume: str | None = None) -> _Member:
        cfg = load_config(self.config, self.overrides + value_overrides(values) + [
            f"runner.logger.log_path={self.run_root / f'member_{index}'}",
            f"runner.logger.experiment_name=pbt-member{index}", f"actor.seed={self.actor_seed + index}"])
        return _Member(index, values, make_trainer(cfg, resume=resume, progress=False))

    def _copy(self, loser: _Member, winner: _Member, generation: int) -> _Member:
        """The loser continues in its own run directory from the winner's fresh checkpoint (weights, optimiser),
        with perturbed values and a fresh RNG stream; its run directory's latest checkpoint is that start."""
        checkpoint = winner.trainer.save()
        loser.close()
        values = {p.key: perturb(p, winner.values[p.key], self.rng, self.resample_probability) for p in self.space}
        member = self._member(loser.index, values, resume=str(checkpoint))
        member.trainer.reseed(int(np.random.SeedSequence([self.seed, loser.index, generation]).generate_state(1)[0]))
        member.trainer.save()
        return member


def _take(iterations, count: int, stop: threading.Event):
    """Up to `count` events of a trainer's iterator, fewer once it ends or `stop` is set."""
    for _ in range(count):
        if stop.is_set():
            return
        event = next(iterations, None)
        if event is None:
            return
        yield event


def lineage_figure(lineage: list[LineageStep], title: str = "PBT lineage") -> go.Figure:
    """Members (y) over iterations (x), a marker per generation coloured by score; a line joins each member's
    consecutive generations, dashed where it continued from another member's checkpoint."""
    fig = go.Figure()
    by_key = {(s.generation, s.member): s for s in lineage}
    for step in lineage:
        before = by_key.get((step.generation - 1, step.member))
        if before is None:
            continue
        source = by_key[(step.generation - 1, before.copied_from)] if before.copied_from is not None else before
        fig.add_trace(go.Scatter(x=[source.iteration, step.iteration], y=[source.member, step.member], mode="lines",
                                 line=dict(color="grey", dash="dash" if before.copied_from is not None else "solid"),
                                 hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(
        x=[s.iteration for s in lineage], y=[s.member for s in lineage], mode="markers", name="members",
        marker=dict(size=14, color=[s.score for s in lineage], colorscale="Viridis", cmin=0, cmax=1,
                    colorbar=dict(title="success")),
        text=[f"member {s.member}, generation {s.generation}: success {s.score:.2f}<br>"
              + "<br>".join(f"{k} = {v:.3g}" for k, v in s.values.items()) for s in lineage],
        hoverinfo="text", showlegend=False))
    fig.update_layout(title=title, xaxis_title="iteration", yaxis=dict(title="member", dtick=1), height=300)
    return fig
