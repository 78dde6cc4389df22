import random

import numpy as np
import pytest
import torch

from pi0lab.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_atomically,
)


def test_rng_state_round_trip_continues_the_same_streams():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_checkpoints_are_complete_and_latest_points_to_the_newest(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for step in (10, 20):
        save_checkpoint(tmp_path, step, {"value": step}, lambda d: (d.mkdir(), (d / "w").write_text("x")))
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step_000020" and (latest / "model" / "w").read_text() == "x"
    assert load_checkpoint_state(latest)["value"] == 20


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path):
    save_checkpoint(tmp_path, 1, {"value": 1}, lambda d: d.mkdir())

    def crash(d):
        d.mkdir()
        (d / "partial").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, {"value": 2}, crash)
    assert latest_checkpoint(tmp_path).name == "step_000001"
    assert not (tmp_path / "checkpoints" / "step_000002").exists()


def test_write_atomically_replaces_an_existing_file(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    write_atomically(target, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a pi0lab training checkpoint"):
        load_checkpoint_state(tmp_path)
