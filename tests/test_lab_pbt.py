"""Population-based training: exploit / explore by hand, and a tiny population whose copy is checked on disk."""

import numpy as np
import pytest
import torch
from lab_tiny import tiny_overrides

from pi0lab.lab.pbt import LineageStep, PopulationTraining, exploit, lineage_figure, perturb
from pi0lab.lab.search import SearchParam, parse_search
from pi0lab.models.checkpoint import load_pi0
from pi0lab.train.checkpoint import load_checkpoint_state
from pi0lab.train.config import ConfigError


def test_the_worst_copy_one_of_the_best():
    rng = np.random.default_rng(0)
    assert exploit([0.1, 0.9, 0.5, 0.3], 0.25, rng) == {0: 1}  # ceil(0.25 * 4) = 1 loser, 1 winner
    copies = exploit([0.1, 0.9, 0.5, 0.3], 0.5, rng)  # losers 3 and 0, each gets 1 or 2
    assert sorted(copies) == [0, 3] and set(copies.values()) <= {1, 2}
    assert exploit([0.2, 0.2], 0.25, rng) == {1: 0}  # a tie keeps the lower index on top
    assert exploit([0.4], 0.25, rng) == {}


def test_explore_scales_or_resamples_within_the_range():
    lr = SearchParam("actor.optim.lr", "log", 1e-6, 1e-4)
    rng = np.random.default_rng(0)
    scaled = {perturb(lr, 1e-5, rng, 0.0) for _ in range(20)}
    assert scaled == {1e-5 * 0.8, 1e-5 * 1.25}
    assert perturb(lr, 1e-4, np.random.default_rng(1), 0.0) in (0.8e-4, 1e-4)  # 1.25e-4 is clipped to the bound
    entropy = SearchParam("algorithm.entropy_bonus", "float", 0.0, 0.01)
    drawn = [perturb(entropy, 0.0, rng, 1.0) for _ in range(5)]  # resampling moves a 0 off 0
    assert all(0.0 < v <= 0.01 for v in drawn)
    with pytest.raises(ConfigError, match="continuous"):
        perturb(SearchParam("algorithm.update_epoch", "int", 1, 4), 2, rng, 0.0)


def test_discrete_knobs_are_refused(random_nano_checkpoint):
    with pytest.raises(ConfigError, match="algorithm.update_epoch"):
        PopulationTraining("tabletop_ppo_nano", tiny_overrides(random_nano_checkpoint),
                           space=[parse_search("algorithm.update_epoch=int:1:4")])


def test_a_loser_continues_from_the_winners_checkpoint_with_its_own_values_and_rng(random_nano_checkpoint, tmp_path):
    pbt = PopulationTraining("tabletop_ppo_nano", tiny_overrides(random_nano_checkpoint, iterations=2), population=2,
                             interval=1, run_root=tmp_path)
    events = []
    lineage = pbt.run(lambda member, event: events.append((member, event.iteration)))
    assert events == [(0, 1), (1, 1), (0, 2), (1, 2)]
    assert [(s.generation, s.iteration, s.member) for s in lineage] == [(1, 1, 0), (1, 1, 1), (2, 2, 0), (2, 2, 1)]
    (copy,) = [s for s in lineage if s.copied_from is not None]
    loser, winner = copy.member, copy.copied_from
    assert copy.generation == 1 and lineage[1 - loser].score >= copy.score
    after = next(s for s in lineage if s.generation == 2 and s.member == loser)
    for key, value in after.values.items():  # winner's values, each scaled by 0.8 / 1.25 (or redrawn)
        assert value != lineage[winner].values[key]

    source = tmp_path / f"member_{winner}" / "checkpoints" / "step_000001"
    start = tmp_path / f"member_{loser}" / "checkpoints" / "step_000001"  # the loser's start after the copy
    for a, b in zip(load_pi0(source / "model").state_dict().values(), load_pi0(start / "model").state_dict().values()):
        assert torch.equal(a, b)
    source_state, start_state = load_checkpoint_state(source), load_checkpoint_state(start)
    moments = lambda state: [s["exp_avg"] for s in state["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(moments(source_state), moments(start_state)))
    assert start_state["optimizer"]["param_groups"][0]["lr"] == after.values["actor.optim.lr"]
    assert not torch.equal(source_state["processes"][0]["rollout_generator"], start_state["processes"][0]["rollout_generator"])
    assert start_state["processes"][0]["envs"] != source_state["processes"][0]["envs"]
    assert (tmp_path / f"member_{loser}" / "checkpoints" / "latest").read_text().strip() == "step_000002"

    fig = lineage_figure(lineage)
    edges = [(d.x, d.y, d.line.dash) for d in fig.data if d.mode == "lines"]
    assert ((1, 2), (winner, loser), "dash") in edges and ((1, 2), (winner, winner), "solid") in edges
    assert fig.data[-1].marker.color == tuple(s.score for s in lineage)


def test_lineage_figure_of_hand_made_steps():
    lineage = [LineageStep(1, 5, 0, 0.2, {"actor.optim.lr": 1e-5}, copied_from=1),
               LineageStep(1, 5, 1, 0.6, {"actor.optim.lr": 2e-5}),
               LineageStep(2, 10, 0, 0.7, {"actor.optim.lr": 2.5e-5}),
               LineageStep(2, 10, 1, 0.5, {"actor.optim.lr": 2e-5})]
    edges = [(d.x, d.y, d.line.dash) for d in lineage_figure(lineage).data if d.mode == "lines"]
    assert edges == [((5, 10), (1, 0), "dash"), ((5, 10), (1, 1), "solid")]


def test_the_population_panel_draws_each_member_and_the_lineage_and_stops(random_nano_checkpoint, tmp_path):
    from pi0lab.lab import PopulationPanel

    panel = PopulationPanel("tabletop_ppo_nano", tiny_overrides(random_nano_checkpoint, iterations=2), population=2,
                            interval=1, run_root=tmp_path / "pbt")
    assert "pi0lab-pbt-status" in panel.status._dom_classes
    panel.start_button.click()
    lineage = panel.wait()
    assert "finished: 2 generations" in panel.status.value and not panel.start_button.disabled
    assert [d.name for d in panel.curves.data] == ["member 0", "member 1"]
    assert all(d.x == (1, 2) and len(d.marker.symbol) == 2 for d in panel.curves.data)
    copied = [s.member for s in lineage if s.generation == 1 and s.copied_from is not None]
    assert copied and panel.curves.data[copied[0]].marker.symbol == ("circle", "diamond")  # where the copy starts
    markers = panel.lineage.data[-1]
    assert markers.x == tuple(s.iteration for s in lineage) and len(markers.x) == 4  # 2 members x 2 generations

    stopping = PopulationPanel("tabletop_ppo_nano", tiny_overrides(random_nano_checkpoint, iterations=4),
                               population=2, interval=1, run_root=tmp_path / "stop")
    on_event = stopping._on_event

    def click(member, event):  # Stop after member 0's first iteration
        on_event(member, event)
        stopping.stop_button.click()

    stopping._on_event = click
    stopping.start()
    stopping.wait()
    assert stopping.status.value.startswith("stopped") and [d.x for d in stopping.curves.data] == [(1,), ()]
