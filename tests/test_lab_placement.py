"""The placement form, grid and timeline without a browser: set widget values, read the figures' data."""

from pi0lab.lab import PlacementForm, placement_grid, timeline_figure
from pi0lab.runtime.plan import plan_run
from pi0lab.runtime.spans import busy_fractions, chrome_trace
from pi0lab.train.config import load_config


def test_the_grid_names_the_rank_of_every_component_on_every_device():
    plan = plan_run(load_config("tabletop_ppo_nano", ["cluster.num_devices=4", "rollout.pipeline_stage_num=2",
                                                      "cluster.component_placement={env: 0-1, rollout: 2-3, actor: 0-3}"]))
    grid = placement_grid(plan).data[0]
    assert list(grid.y) == ["env", "rollout", "actor"] and list(grid.x) == ["cpu 0", "cpu 1", "cpu 2", "cpu 3"]
    assert [list(row) for row in grid.text] == [["rank 0", "rank 1", "", ""], ["", "", "rank 2", "rank 3"],
                                                ["rank 4", "rank 5", "rank 6", "rank 7"]]


def test_the_form_replans_on_every_change_and_shows_refusals():
    form = PlacementForm("tabletop_ppo_nano", ["env.train.total_num_envs=8"], preset="disaggregated")
    assert "rank 2  cpu 2  actor" in form.message.value
    form.preset.value = "collocated"
    assert form.devices.value == 2 and "env,rollout,actor" in form.message.value
    assert [list(r) for r in form.grid.data[0].text][0] == ["rank 0 (fused)", "rank 1 (fused)"]
    form.placement.value = "{env: 0-2, 'rollout,actor': 0}"
    assert "refused" in form.message.value and "only 0-1 exist" in form.message.value
    form.devices.value = 3
    assert form.overrides()[-4:] == ["cluster.num_devices=3", "cluster.component_placement={env: 0-2, 'rollout,actor': 0}",
                                     "rollout.pipeline_stage_num=1", "actor.data_parallel=ddp"]
    assert "refused" in form.message.value and "does not split over the 3 env processes" in form.message.value
    form.preset.value = "disaggregated"  # one actor process: FSDP2 has nothing to shard over
    form.data_parallel.value = "fsdp2"
    assert "refused" in form.message.value and "place actor on >= 2 devices" in form.message.value
    form.preset.value = "collocated"
    assert "refused" not in form.message.value


def test_timeline_trace_and_busy_fractions_of_hand_made_spans():
    rows = [{"process": "env rank 0", "rank": 0, "phase": "env", "start": 10.0, "end": 11.0},
            {"process": "rollout rank 1", "rank": 1, "phase": "env wait", "start": 10.0, "end": 11.0},
            {"process": "rollout rank 1", "rank": 1, "phase": "rollout", "start": 11.0, "end": 13.0}]
    fig = timeline_figure(rows)
    bars = {t.name: t for t in fig.data}
    assert list(bars["rollout"].base) == [1.0] and list(bars["rollout"].x) == [2.0]
    assert busy_fractions(rows) == {"env rank 0": 1.0, "rollout rank 1": 2.0 / 3.0}
    events = chrome_trace(rows)["traceEvents"]
    assert [e["ts"] for e in events if e["ph"] == "X"] == [0.0, 0.0, 1e6]
    assert {e["args"]["name"] for e in events if e["ph"] == "M"} == {"env rank 0", "rollout rank 1"}
